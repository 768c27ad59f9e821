"""Benchmark ``gpstage sync`` against ``aws s3 sync``, ``rclone sync``, ``s5cmd sync``, fsspec and obstore, on local S3 servers.

Why this exists: gpstage's sync has performance targets (speed against aws and rclone, CPU, memory,
requests for a no-op). This script measures them the way a user meets them — every tool a separate
process against a real S3 server — and says plainly which targets are met. It starts its own
servers on 127.0.0.1 (SeaweedFS, the primary; moto, the test suite's server) and stops them by pid
at the end, also after Ctrl-C or an error.

Run:  .venv/bin/python benchmarks/bench.py [--quick] [--reps N] [--servers ...] [--datasets ...] [--tools ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import signal
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import datasets
import report
from measure import compile_project, run_measured
from runner import Case, Runner
from servers import SERVERS, Server
from tools import ALL_TOOLS, DEFAULT_TOOLS, VENV_BIN, Aws, hermetic_env, make_tools

HERE = Path(__file__).resolve().parent
DEFAULT_MOTO_DATASETS = "a"  # full run: moto needs ~7 s per tool for 1,000 objects; (c)'s 10,000 would take minutes
QUICK_MOTO_DATASETS = "a,c"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Time gpstage sync against aws s3 sync, rclone sync, s5cmd sync, fsspec (s3fs put/get) and obstore "
                    "on local S3 servers "
                    "that this script starts and stops itself (127.0.0.1 only). Each tool runs as a separate process; "
                    "every run is checked byte for byte (each file's MD5 at the destination against the source's) "
                    "and fails loudly if wrong.",
        epilog="data sets: (a) small = 1,000 x 4 KiB; (b) big = one 256 MiB file; (c) noop = 10,000 small files, no-op "
               "re-sync only; (d) gsea = GenePattern GSEA output, 5,023 files / ~410 MB; (e) huge = one 1 GiB file, "
               "peak RSS, SeaweedFS only, 1 rep.\nops: up (local -> empty prefix), noop (the same up again, nothing "
               "changed), down (prefix -> empty local dir).\nResults: a Markdown table and JSON in --out "
               "(latest.md/.json, the run's date inside; with --quick latest-quick.*), and "
               "the targets' met/missed lines. Exit code 1 if any run failed.")
    p.add_argument("--quick", action="store_true", help="tiny data sets, 1 rep, both servers, every tool (under a minute)")
    p.add_argument("--reps", type=int, default=None, metavar="N", help="repetitions per run on SeaweedFS; the median is "
                   "reported (default 3; 1 with --quick)")
    p.add_argument("--moto-reps", type=int, default=1, metavar="N", help="repetitions on moto (default 1: moto is slow)")
    p.add_argument("--fsspec-gsea-reps", type=int, default=1, metavar="N", help="repetitions of fsspec on (d) gsea "
                   "(default 1: fsspec is the no-sync baseline, in no target, and its ~25 s per repetition would push the "
                   "full run past 10 minutes); capped by --reps")
    p.add_argument("--gpjob-reps", type=int, default=None, metavar="N", help="repetitions on (g) gpjob on SeaweedFS "
                   "(default 7; 1 with --quick): a run there takes ~0.1 s, so a few 10 ms of start-up jitter in one "
                   "repetition moves a median of 3 by a third, and 7 cost ~1 minute; at least --reps")
    p.add_argument("--close-reps", type=int, default=None, metavar="N", help="repetitions on (a) small, (b) big and "
                   "(d) gsea on SeaweedFS (default 7; 1 with --quick): their targets compare within a few per cent, and "
                   "one repetition's time swings by a third with the VM's page allocation (client CPU 0.5 or 1.5 s for "
                   "the same 256 MiB down; 0.59-0.91 s for the same 1,000 small files; gpstage's (d) down 3.03 s in one "
                   "run of 3 and 3.65 s in the next), so 3 leave the median to chance; at least --reps")
    p.add_argument("--large-reps", type=int, default=None, metavar="N", help="repetitions on (e) huge on SeaweedFS "
                   "(default 7; 1 with --quick): it swings like (b); each repetition stores ~9 GiB on the local "
                   "server, deleted and vacuumed before the next; at least --reps")
    p.add_argument("--servers", default="seaweedfs,moto", help="comma list of seaweedfs, moto (default both)")
    p.add_argument("--datasets", default="all", help="comma list of a-g or small,big,noop,gsea,huge,noop100k,gpjob "
                   "(default all; --quick has no (f) noop100k)")
    p.add_argument("--moto-datasets", default=None, help=f"data sets run on moto (default {DEFAULT_MOTO_DATASETS!r}; "
                   f"with --quick {QUICK_MOTO_DATASETS!r}); intersected with --datasets; e never runs on moto")
    p.add_argument("--tools", default=",".join(DEFAULT_TOOLS), help=f"comma list of {', '.join(ALL_TOOLS)} (default: "
                   "all but obstore; rclone includes the rclone --size-only --fast-list no-op reference, s5cmd its run "
                   "with gpstage's number of workers)")
    p.add_argument("--out", type=Path, default=HERE / "results", help="directory for the results (default benchmarks/results)")
    p.add_argument("--drop-data", action="store_true", help="delete the generated data sets at the end (otherwise "
                   "cached in the work dir for the next run: ~1.8 GB for the full run)")
    p.add_argument("--work", type=Path, default=HERE / "work", help="work dir: data set cache, aws CLI venv, server data "
                   "(default benchmarks/work)")
    args = p.parse_args(argv)
    args.reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    args.gpjob_reps = max(args.reps, args.gpjob_reps if args.gpjob_reps is not None else (1 if args.quick else 7))
    args.close_reps = max(args.reps, args.close_reps if args.close_reps is not None else (1 if args.quick else 7))
    args.large_reps = max(args.reps, args.large_reps if args.large_reps is not None else (1 if args.quick else 7))
    if min(args.reps, args.moto_reps, args.fsspec_gsea_reps) < 1:
        p.error("--reps, --moto-reps and --fsspec-gsea-reps must be at least 1")
    args.servers = _choose(p, "--servers", args.servers, list(SERVERS))
    args.tools = _choose(p, "--tools", args.tools, list(ALL_TOOLS))
    return args


def _choose(p: argparse.ArgumentParser, flag: str, value: str, allowed: list[str]) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        p.error(f"{flag}: unknown {bad or 'empty list'}; choose from {', '.join(allowed)}")
    return [a for a in allowed if a in names]


def _dataset_names(p_value: str, all_sets: dict[str, datasets.Dataset]) -> list[str]:
    if p_value == "all":
        return list(all_sets)
    by_key = {d.key: d.name for d in all_sets.values()}
    names = [by_key.get(v.strip(), v.strip()) for v in p_value.split(",") if v.strip()]
    bad = [n for n in names if n not in all_sets]
    if bad:
        known = ", ".join(f"{d.key} ({n})" for n, d in all_sets.items())
        raise SystemExit(f"bench.py: unknown data set(s) {bad}; choose from {known}")
    return [n for n in all_sets if n in names]


def machine_info() -> dict[str, str]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "0")
    return {"cores": str(os.cpu_count()), "cpu": model, "memory": f"{int(mem) / 2**20:.1f} GiB", "os": platform.platform(),
            "python": platform.python_version()}


def time_help(work: Path, server: Server) -> float:
    """``gpstage --help`` as a user starts it: median wall of 5 runs (after one warm-up)."""
    log, env = work / "help.log", hermetic_env(server, work)
    walls = [run_measured([str(VENV_BIN / "gpstage"), "--help"], env, log, 30).wall_s for _ in range(6)][1:]
    return statistics.median(walls)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the finally that stops the servers


def plan(args: argparse.Namespace, server: str, all_sets: dict[str, datasets.Dataset]) -> list[str]:
    """The data sets a server runs: SeaweedFS every chosen one, moto only --moto-datasets (never e)."""
    chosen = _dataset_names(args.datasets, all_sets)
    if server == "seaweedfs":
        return chosen
    moto = _dataset_names(args.moto_datasets or (QUICK_MOTO_DATASETS if args.quick else DEFAULT_MOTO_DATASETS), all_sets)
    return [n for n in chosen if n in moto and not all_sets[n].seaweedfs_only]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")

    def say(text: str) -> None:
        print(f"[{time.monotonic() - t0:5.0f}s] {text}", flush=True)

    signal.signal(signal.SIGTERM, _interrupted)
    work = args.work.resolve()
    rundir = work / f"run-{stamp}"
    rundir.mkdir(parents=True, exist_ok=True)

    all_sets = datasets.build(args.quick)
    chosen = _dataset_names(args.datasets, all_sets)
    tools = make_tools(args.tools, work)
    missing = [f"{t.name}: {m}" for t in tools if (m := t.missing())]
    if missing:
        raise SystemExit("bench.py: missing " + "; ".join(missing))
    compile_project()  # start-up as installed, not from source
    with ThreadPoolExecutor(1) as pool:  # the aws CLI venv installs while the data sets are generated
        aws_ready = [pool.submit(t.ensure, say) for t in tools if isinstance(t, Aws)]
        say(f"generating/reusing data sets under {work / 'data'}")
        sources = {n: datasets.materialise(all_sets[n], work / "data", args.quick) for n in chosen}
        for future in aws_ready:
            future.result()
    setup_s = time.monotonic() - t0

    servers = {name: SERVERS[name](rundir / name) for name in args.servers}
    runner = Runner(tools, rundir, f"bench-{stamp}", say)
    try:
        for name, server in servers.items():
            say(f"starting {name} ...")
            server.start()
            say(f"   {name} pid {server.pid} at {server.endpoint}")
        help_s = time_help(rundir, next(iter(servers.values())))
        for name, server in servers.items():
            runner.run_cases([Case(server, all_sets[n], sources[n], case_reps(args, name, n),
                                   {"fsspec": args.fsspec_gsea_reps} if n == "gsea" else {})
                              for n in plan(args, name, all_sets)])
    finally:
        for name, server in servers.items():
            if server.proc is not None:
                say(f"stopping {name} (pid {server.pid})")
            server.stop()
        for spent in ("dl", "spent"):  # the downloads, also when the run failed (its logs stay)
            shutil.rmtree(rundir / spent, ignore_errors=True)
    if args.drop_data:
        datasets.drop(work / "data", [all_sets[n] for n in chosen], args.quick)

    failed = [r for r in runner.runs if not r.ok]
    versions = {t.name: t.version() for t in tools if t.name != "rclone-sizeonly"}
    versions.update({s.name: s.version() for s in servers.values()})
    ds_keys = {d.name: d.key for d in all_sets.values()}
    rows = report.summarise(runner.runs, ds_keys)
    checks = report.targets(rows, help_s, all_sets)
    meta = {"date_utc": stamp, "command": " ".join([Path(sys.executable).name, "benchmarks/bench.py", *argv]),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": machine_info(), "versions": versions, "request_counting": {s.name: s.counting for s in servers.values()},
            "datasets": {n: all_sets[n].describe() for n in chosen}, "plan": {n: plan(args, n, all_sets) for n in servers},
            "gpstage_help_s": help_s, "setup_s": setup_s, "total_s": time.monotonic() - t0}
    markdown = render(meta, args, rows, checks, failed, ds_keys)
    print("\n" + markdown)
    paths = report.write(args.out, markdown, {"meta": meta, "summary": [r.to_dict() for r in rows],
                                                     "targets": checks, "runs": [r.to_dict() for r in runner.runs]},
                         "-quick" if args.quick else "")
    say(f"written: {', '.join(str(p) for p in paths)}")
    if failed:
        say(f"{len(failed)} run(s) FAILED; logs kept in {rundir / 'logs'}")
        return 1
    shutil.rmtree(rundir, ignore_errors=True)
    return 0


def case_reps(args: argparse.Namespace, server: str, dataset: str) -> int:
    """Repetitions of one data set on one server (moto is slow; (g) is all start-up, (a)'s, (b)'s and (d)'s targets
    are within a few per cent, and the large files swing with the VM's memory: those need more)."""
    if server == "moto":
        return args.moto_reps
    return {"gpjob": args.gpjob_reps, "small": args.close_reps, "big": args.close_reps, "gsea": args.close_reps,
            "huge": args.large_reps}.get(dataset, args.reps)


def render(meta: dict, args: argparse.Namespace, rows: list[report.Row], checks: list[dict], failed: list,
           ds_keys: dict[str, str]) -> str:
    m = meta["machine"]
    quick = " (quick: tiny data sets, so the targets are only indicative)" if args.quick else ""
    plan = "; ".join(f"{s}: {', '.join(f'({ds_keys[n]}) {n}' for n in sets)}" for s, sets in meta["plan"].items())
    counting = "; ".join(f"{k}: {v}" for k, v in meta["request_counting"].items())
    bullets = [
        f"command: `{meta['command']}`{quick}",
        f"machine: {m['cores']} cores ({m['cpu']}), {m['memory']} RAM, {m['os']}, Python {m['python']}",
        "versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items()),
        (f"repetitions: {args.reps} on SeaweedFS ({args.gpjob_reps} on (g) gpjob, {args.close_reps} on (a), (b) and (d), "
         f"{args.large_reps} on (e)), "
         f"{args.moto_reps} on moto, fsspec "
         f"on (d) {min(args.fsspec_gsea_reps, args.reps)}; medians reported, peak RSS is the max; the tool order rotates "
         "each repetition and runs backwards every other one; an untimed warm-up write precedes the first run on each server, "
         "and os.sync() each timed run"),
        f"plan: {plan}",
        "data sets: " + "; ".join(meta["datasets"].values()),
        f"requests are counted by the server, outside the timed window: {counting}",
        ("client CPU = user+sys of the tool's process tree and peak RSS = its max resident set (os.wait4, from a ~5 MiB "
         "helper that forks and execs the tool); server CPU = the server process's user+sys during the run (client "
         "and server share the same cores)"),
        ("moto is single-threaded Python (a few hundred objects/s at best) and caps every client, so only the plan's "
         "data sets run there; SeaweedFS is the server that shows what a client costs"),
        ("tools: aws runs with --only-show-errors; rclone with its defaults (plus --s3-upload-cutoff 5G on moto); "
         "rclone-sizeonly = rclone sync --size-only --fast-list, the no-op reference; s5cmd sync at its defaults and "
         "s5cmd-matched with gpstage's 32 workers; fsspec and obstore copy without comparing, so no no-op; "
         "py-floor (on (a), (g), (b), (e)) = benchmarks/stdlib_copy.py under python -I -S, the least a Python client does, and "
         "py-floor-asyncio (on (a), (g)) the same plus import asyncio, py-floor-command that one started as an installed command "
         "(site and the venv's .pth files first, as before gpstage's console script): floors, never rivals; "
         "for (c) each tool first uploads its own copy (untimed, in parallel), then only the no-op is timed"),
        (f"gpstage --help: {meta['gpstage_help_s']:.3f} s (median of 5); setup (aws CLI venv, data sets): "
         f"{meta['setup_s']:.0f} s; whole run: {meta['total_s']:.0f} s"),
    ]
    lines = [f"# gpstage sync benchmark — {meta['date_utc']}", "", *(f"- {b}" for b in bullets), "",
             report.table(rows, ds_keys), "", "## Targets (computed from the SeaweedFS rows)", "",
             *report.target_lines(checks)]
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += [f"- {r.tool} {r.op} ({r.server}, {r.dataset}, rep {r.rep}): {r.error}" for r in failed]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("bench.py: interrupted; the servers were stopped (logs stay in the work dir's run-* dir)", file=sys.stderr)
        sys.exit(130)
