import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * Calls gpstage's installed job-runner scripts the way a GenePattern server's AWS Batch job runner does
 * (tests/test_genepattern_server.py; the contract: docs/genepattern-server.md). Facts of the server kept here:
 * a CLEARED environment plus the server's variables (commons-exec replaces the child's environment); submit
 * arguments raw, with cwd = WORKDIR, the whole stdout taken as the job id; status/sync/cancel arguments
 * trimmed and wrapped in literal double quotes when they contain a space; the status output read with stdout
 * and stderr in ONE buffer and parsed as describe-jobs JSON; a 60 s budget for the status call with its
 * syncs; on done/failed the metadata dir synced, then the working dir, then exit_code.txt read, the
 * container's exit code the fallback; cancel followed by a status call within 5 s.
 *
 * Usage: java GpServerHarness SCRIPT_DIR ENV_FILE POLL_S CANCEL(yes|no) TASKLIB WORKDIR JOBDEF JOBNAME INPUTSDIR ARGV...
 * ENV_FILE: KEY=VALUE lines, the server's variables for this job. Prints one line of JSON with the outcome.
 */
public class GpServerHarness {
    static final long STATUS_BUDGET_MS = 60_000;

    record Result(int exit, String out) {}

    static Result call(List<String> argv, Map<String, String> env, File cwd, long timeoutMs) throws Exception {
        ProcessBuilder pb = new ProcessBuilder(argv).redirectErrorStream(true);
        pb.environment().clear();  // commons-exec with an environment map: the map IS the environment
        pb.environment().putAll(env);
        if (cwd != null) pb.directory(cwd);
        Process p = pb.start();
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        Thread reader = new Thread(() -> { try (InputStream in = p.getInputStream()) { in.transferTo(buf); } catch (Exception e) { } });
        reader.start();
        if (!p.waitFor(timeoutMs, TimeUnit.MILLISECONDS)) { p.destroyForcibly(); throw new RuntimeException("timed out: " + argv); }
        reader.join();
        return new Result(p.exitValue(), buf.toString(StandardCharsets.UTF_8));
    }

    /** The server's way with status/sync/cancel arguments. */
    static String arg(String a) { a = a.trim(); return a.contains(" ") ? "\"" + a + "\"" : a; }

    static String mapStatus(Map<String, Object> job) {
        String s = String.valueOf(job.get("status"));
        switch (s) {
            case "SUBMITTED": case "PENDING": case "RUNNABLE": return "queued";
            case "STARTING": case "RUNNING": return "running";
            case "SUCCEEDED": return String.valueOf(job.get("statusReason")).contains("duration exceeded timeout") ? "failed" : "done";
            case "FAILED": return "failed";
            default: return "undetermined";
        }
    }

    public static void main(String[] a) throws Exception {
        String dir = a[0];
        Map<String, String> env = new LinkedHashMap<>();
        for (String line : Files.readAllLines(Path.of(a[1]))) {
            int eq = line.indexOf('=');
            if (eq > 0) env.put(line.substring(0, eq), line.substring(eq + 1));
        }
        long pollMs = (long) (Double.parseDouble(a[2]) * 1000);
        boolean cancel = a[3].equals("yes");
        String workdir = a[5];
        String meta = env.getOrDefault("GP_JOB_METADATA_DIR", workdir + "/.gp_metadata");
        List<String> submit = new ArrayList<>(List.of(dir + "/runOnBatch-v0.4.sh"));
        submit.addAll(Arrays.asList(a).subList(4, a.length));
        Result sub = call(submit, env, new File(workdir), 600_000);
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("submitExit", sub.exit);
        out.put("jobId", sub.out);
        if (sub.exit != 0 || sub.out.isBlank() || sub.out.contains("\n")) { System.out.println(Json.write(out)); return; }
        String id = sub.out;
        Map<String, String> statusEnv = new HashMap<>();
        for (String k : List.of("AWS_PROFILE", "S3_ROOT", "AWS_S3_PREFIX", "GP_LOCAL_PREFIX", "GP_JOB_METADATA_DIR"))
            if (env.containsKey(k)) statusEnv.put(k, env.get(k));
        List<String> seen = new ArrayList<>();
        int polls = 0, unknown = 0;
        long slowest = 0;
        boolean cancelled = false;
        while (true) {
            Thread.sleep(pollMs);
            long t0 = System.currentTimeMillis();
            Result st = call(List.of(dir + "/awsCheckStatus.sh", arg(id)), statusEnv, null, STATUS_BUDGET_MS);
            polls++;
            Map<String, Object> job = null;
            try {
                Object doc = Json.parse(st.out);
                List<?> jobs = (List<?>) ((Map<?, ?>) doc).get("jobs");
                if (st.exit == 0 && jobs != null && !jobs.isEmpty()) job = Json.asMap(jobs.get(0));
            } catch (RuntimeException e) { out.put("badJson", st.out); }
            if (job == null) { unknown++; if (unknown > 5) { out.put("state", "unknown"); break; } continue; }
            String state = mapStatus(job);
            if (seen.isEmpty() || !seen.get(seen.size() - 1).equals(state)) seen.add(state);
            if (cancel && !cancelled && state.equals("running")) {
                Result c = call(List.of(dir + "/awsCancelJob.sh", arg(id)), statusEnv, null, 600_000);
                out.put("cancelOutput", c.out.trim());
                cancelled = true;
                pollMs = Math.min(pollMs, 4_000);  // the server asks again within 5 s
                continue;
            }
            if (state.equals("done") || state.equals("failed")) {
                Result s1 = call(List.of(dir + "/awsSyncDirectory.sh", arg(meta)), statusEnv, null, STATUS_BUDGET_MS);
                Result s2 = call(List.of(dir + "/awsSyncDirectory.sh", arg(workdir)), statusEnv, null, STATUS_BUDGET_MS);
                slowest = Math.max(slowest, System.currentTimeMillis() - t0);
                out.put("syncExits", List.of(s1.exit, s2.exit));
                out.put("state", state);
                out.put("statusReason", job.get("statusReason"));
                Object container = job.get("container");
                Object fallback = container instanceof Map ? ((Map<?, ?>) container).get("exitCode") : null;
                Object code = fallback;
                Path exitFile = Path.of(meta, "exit_code.txt");
                if (Files.exists(exitFile)) code = Json.asMap(Json.parse(Files.readString(exitFile))).get("exit_code");
                out.put("exitCode", code);
                out.put("containerExitCode", fallback);
                for (String k : List.of("createdAt", "startedAt", "stoppedAt", "jobQueue")) out.put(k, job.get(k));
                break;
            }
            slowest = Math.max(slowest, System.currentTimeMillis() - t0);
        }
        out.put("states", seen);
        out.put("polls", polls);
        out.put("slowestStatusMs", slowest);
        System.out.println(Json.write(out));
    }

    /** The little JSON the harness needs (the server uses a library; the shapes are what matter). */
    static final class Json {
        private final String s; private int i;
        private Json(String s) { this.s = s; }
        static Object parse(String text) { Json j = new Json(text.trim()); Object v = j.value(); if (j.i != j.s.length()) throw new RuntimeException("trailing text"); return v; }
        @SuppressWarnings("unchecked") static Map<String, Object> asMap(Object o) { return (Map<String, Object>) o; }
        private void ws() { while (i < s.length() && Character.isWhitespace(s.charAt(i))) i++; }
        private Object value() {
            ws();
            if (i >= s.length()) throw new RuntimeException("end of input");
            char c = s.charAt(i);
            if (c == '{') { i++; Map<String, Object> m = new LinkedHashMap<>(); ws(); if (s.charAt(i) == '}') { i++; return m; }
                while (true) { ws(); String k = string(); ws(); expect(':'); m.put(k, value()); ws(); if (s.charAt(i) == ',') { i++; continue; } expect('}'); return m; } }
            if (c == '[') { i++; List<Object> l = new ArrayList<>(); ws(); if (s.charAt(i) == ']') { i++; return l; }
                while (true) { l.add(value()); ws(); if (s.charAt(i) == ',') { i++; continue; } expect(']'); return l; } }
            if (c == '"') return string();
            if (s.startsWith("true", i)) { i += 4; return true; }
            if (s.startsWith("false", i)) { i += 5; return false; }
            if (s.startsWith("null", i)) { i += 4; return null; }
            int start = i;
            while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) i++;
            if (start == i) throw new RuntimeException("unexpected " + c);
            String num = s.substring(start, i);
            return num.matches("-?\\d+") ? (Object) Long.parseLong(num) : (Object) Double.parseDouble(num);
        }
        private void expect(char c) { if (s.charAt(i) != c) throw new RuntimeException("expected " + c); i++; }
        private String string() {
            expect('"'); StringBuilder b = new StringBuilder();
            while (s.charAt(i) != '"') {
                char c = s.charAt(i++);
                if (c == '\\') { char e = s.charAt(i++); switch (e) { case 'n': b.append('\n'); break; case 't': b.append('\t'); break;
                    case 'u': b.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; break; default: b.append(e); } }
                else b.append(c);
            }
            i++; return b.toString();
        }
        static String write(Object o) {
            if (o == null) return "null";
            if (o instanceof String str) return "\"" + str.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n") + "\"";
            if (o instanceof Map<?, ?> m) { List<String> parts = new ArrayList<>(); m.forEach((k, v) -> parts.add(write(String.valueOf(k)) + ":" + write(v))); return "{" + String.join(",", parts) + "}"; }
            if (o instanceof List<?> l) { List<String> parts = new ArrayList<>(); l.forEach(v -> parts.add(write(v))); return "[" + String.join(",", parts) + "]"; }
            return String.valueOf(o);
        }
    }
}
