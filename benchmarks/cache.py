#!/usr/bin/env python3
"""The input cache (issue 21): what ``input_cache: true`` saves, and what it costs, on local S3 servers.

    .venv/bin/python benchmarks/cache.py [--quick] [--servers seaweedfs,moto] [--reps N] [--out DIR]

On each server (SeaweedFS and moto, started here on 127.0.0.1 one after the other, stopped by pid), ``--reps``
interleaved repetitions (the configurations' order flips every repetition), each configuration with a fresh
storage prefix and a fresh state dir (an empty hash index); medians are reported:

(1) two jobs with the same 1 GiB file of random bytes, the second job's inputs dir holding a COPY of it (a new
    inode, as a notebook's make_job makes it): each stage-in's wall and the bytes it SENT. Goals: the second
    sends ≤ 1 % of the file and takes ≤ 0.1 × the first's wall.
(2) the cost of the cache on a first stage-in (hash, upload to the cache, server-side copy to the job's key):
    job 1 of (1) against a plain stage-in of the same file (``input_cache: false``). Goal: ≤ 1.15 ×.
(3) benchmarks/datasets.py's (d) gsea dir (5,023 files: 4,900 × 1–40 KiB, 121 × 1–5 MiB, 2 × 20–40 MiB)
    staged by two jobs (the second a copy of the dir), with the cache at ``input_cache_min_size = 0`` (meant:
    every file through it) and without. No goal: reported.

How: each stage-in runs ``gpstage.stage.stage_in`` in a fresh child interpreter (this script with ``--child``),
which times only that call and counts the bytes it sends by wrapping ``socket.socket.send``/``sendall``/
``sendmsg``/``sendto`` (and ``os.sendfile`` to a socket): aiohttp writes through asyncio's selector transport,
i.e. ``sock.send``. ``/proc/self/io`` ``wchar`` cannot: the kernel counts write(2) there, not send(2) (0 bytes
for 100 MiB sent, measured), so it is kept in the JSON only as the bytes written to files (the index). Sent
bytes include HTTP headers and small bodies (markers, job.json): a plain upload's count is the file plus a
little, which checks the counter. "of which hashing" = time in ``InputCache.prepare`` (hashing, ``jobs/<id>.json``).
``files_from_cache``/``bytes_from_cache`` come from the inputs dir's stage-in report. Also timed, outside the
stage-ins: one boto3 CopyObject of the 1 GiB cache object per repetition (what the store's copy costs); and
the 1-min load average before each stage-in is recorded. After the first repetition's last job of each
configuration its inputs dir is pulled back with ``gpstage.sync.sync`` (in a child, untimed) and every file's
MD5 compared with the source's.

Writes ``cache.md``/``cache.json`` (``--quick``: a 64 MiB file, 500 files, 1 repetition, < 60 s:
``cache-quick.*``) to benchmarks/results; MET/MISSED lines are never adjusted. Everything runs in a temporary
dir, removed at the end; every child has a timeout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MiB, GiB = 2**20, 2**30
CHILD_TIMEOUT_S = 1200  # one stage-in or pull; a full 1 GiB stage-in takes well under a minute


def child_stage(spec_path: str, out_path: str) -> None:
    """Stage ``spec_path`` in; write wall, bytes sent, bytes written to files, hashing time and the inputs report."""
    import socket
    import stat

    import gpstage.storage.s3client  # noqa: F401 - imported outside the timed window
    from gpstage.inputcache.place import InputCache
    from gpstage.spec import load_spec
    from gpstage.stage import stage_in

    sent = [0]

    def count(name: str, size: Any) -> None:
        orig = getattr(socket.socket, name)

        def wrapper(self: socket.socket, *args: Any, **kw: Any) -> Any:
            n = orig(self, *args, **kw)
            sent[0] += size(n, args)
            return n

        setattr(socket.socket, name, wrapper)

    for name in ("send", "sendto", "sendmsg"):
        count(name, lambda n, args: n)
    count("sendall", lambda n, args: memoryview(args[0]).nbytes)
    sendfile = os.sendfile

    def counted_sendfile(out_fd: int, *args: Any, **kw: Any) -> int:
        n = sendfile(out_fd, *args, **kw)
        if stat.S_ISSOCK(os.fstat(out_fd).st_mode):
            sent[0] += n
        return n

    os.sendfile = counted_sendfile
    hashing = [0.0]
    prepare = InputCache.prepare

    async def timed_prepare(self: InputCache, entries: list) -> None:
        t = time.perf_counter()
        try:
            await prepare(self, entries)
        finally:
            hashing[0] += time.perf_counter() - t

    InputCache.prepare = timed_prepare  # type: ignore[method-assign]
    spec = load_spec(spec_path)
    w0, t0 = wchar(), time.perf_counter()
    transfers = stage_in(spec)
    wall, w1 = time.perf_counter() - t0, wchar()
    inputs = next(t for t in transfers if t.role == "inputs")
    Path(out_path).write_text(json.dumps({"wall_s": wall, "sent_bytes": sent[0], "file_bytes_written": w1 - w0,
                                          "hashing_s": hashing[0], "inputs": inputs.report.to_dict()}))


def wchar() -> int:
    return int(next(line for line in Path("/proc/self/io").read_text().splitlines() if line.startswith("wchar")).split()[1])


def run_child(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], env=env, capture_output=True,
                          timeout=CHILD_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)
    if done.returncode:
        raise SystemExit(f"cache.py {' '.join(argv[:2])} failed ({done.returncode}): {done.stderr.decode()[-1500:]}")


def code_digest() -> str:
    """Of gpstage/*.py: that code is edited concurrently, and a change during the run is reported."""
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted((HERE.parent / "gpstage").rglob("*.py")))).hexdigest()[:12]


def many_files(quick: bool) -> Path:
    """benchmarks/datasets.py's (d) gsea (5,023 files), or 500 files of the same shape, cached in benchmarks/work/data."""
    import datasets

    if not quick:
        return datasets.materialise(datasets.build(False)["gsea"], HERE / "work" / "data", False)
    sizes = datasets._gsea(480, 20, 0, 48 * MiB, random.Random(datasets.SEED))
    ds = datasets.Dataset("q", "cache-quick-500", "GSEA-like, 500 files", ("up",), sizes)
    return datasets.materialise(ds, HERE / "work" / "data", False)


def stage(base: Path, env: dict[str, str], job_id: str, root: str, inputs: Path, cache: bool) -> tuple[dict, str]:
    """One job's stage-in in a child; its measurements and the URL of its inputs dir."""
    from gpstage.spec import JobSpec, Role

    work = base / "jobs" / job_id
    spec = JobSpec.model_validate({"job_id": job_id, "storage_root": root, "input_cache": cache, "dirs": [
        {"role": "workdir", "path": str(work)}, {"role": "metadata", "path": str(work / ".gp_metadata")},
        {"role": "inputs", "path": str(inputs)}]})
    spec_path, out = base / "specs" / f"{job_id}.json", base / "specs" / f"{job_id}.out.json"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(spec.to_json())
    os.sync()  # the copies just made are on disk: no write-back during the timed run
    load = os.getloadavg()[0]  # other work on the machine shows here
    run_child(["--child", str(spec_path), str(out)], env)
    return {**json.loads(out.read_text()), "load1": load}, spec.url_of(spec.dir(Role.INPUTS))


def verify(base: Path, env: dict[str, str], url: str, source: Path) -> str | None:
    """Pull ``url`` into an empty dir; None if every file's MD5 equals the source's, else what differs."""
    import datasets
    import s3util

    pulled = base / "pulled"
    shutil.rmtree(pulled, ignore_errors=True)
    run_child(["--pull", url, str(pulled)], env)
    try:
        return s3util.difference(datasets.source_digests(source), datasets.local_digests(pulled), "MD5")
    finally:
        shutil.rmtree(pulled, ignore_errors=True)


def copy_object(s3: Any, prefix: str) -> float:
    """One server-side CopyObject of the cache's (only) object by boto3, timed: what the store's copy costs."""
    from tools import BUCKET

    key = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/.gpstage-cache/sha256/")["Contents"][0]["Key"]
    t = time.perf_counter()
    s3.copy_object(Bucket=BUCKET, Key=f"{prefix}/copy-object-probe", CopySource={"Bucket": BUCKET, "Key": key})
    return time.perf_counter() - t


# configuration -> (input_cache, the inputs dirs of its jobs: "src"/"copy" of "big"/"many")
CONFIGS = {"big-cache": (True, ["big/src", "big/copy"]), "big-plain": (False, ["big/src"]),
           "many-cache": (True, ["many/src", "many/copy"]), "many-plain": (False, ["many/src", "many/copy"])}


def run_server(server: Any, base: Path, dirs: dict[str, Path], reps: int, say: Any, ready: Any) -> dict:
    import s3util
    from tools import BUCKET, hermetic_env

    name = server.name
    runs: dict[str, list[dict]] = {}
    checks: dict[str, str | None] = {}
    copies: list[float] = []
    s3 = s3util.client(server)
    s3util.ensure_bucket(s3)
    s3util.warm_up(s3, "cache-bench-warm-up")
    env = {**hermetic_env(server, base), "GPSTAGE_CONFIG": str(base / "config.toml")}
    ready()
    for rep in range(reps):
        order = list(CONFIGS) if rep % 2 == 0 else ["big-plain", "big-cache", "many-plain", "many-cache"]
        for config in order:
            cache, inputs = CONFIGS[config]
            prefix = f"cache-bench/{name}-r{rep}/{config}"
            state = base / "state" / f"{name}-r{rep}-{config}"
            e = {**env, "GPSTAGE_STATE_DIR": str(state)}
            url = ""
            for i, key in enumerate(inputs, 1):
                got, url = stage(base, e, f"{config}-{i}-r{rep}", f"s3://{BUCKET}/{prefix}", dirs[key], cache)
                runs.setdefault(f"{config}-{i}", []).append(got)
                say(f"   {name} rep {rep + 1}/{reps} {config} job {i}: {got['wall_s']:.2f} s, "
                    f"sent {got['sent_bytes']:,} B, from cache {got['inputs']['files_from_cache']} files")
            if config == "big-cache":
                copies.append(copy_object(s3, prefix))
                say(f"   {name} CopyObject of the big file's cache object (boto3): {copies[-1]:.2f} s")
            if rep == 0:
                checks[config] = verify(base, e, url, dirs[inputs[-1]])
                say(f"   {name} {config}: pulled back, {checks[config] or 'byte-identical'}")
            s3util.delete_prefix(s3, prefix)  # moto keeps objects in memory: one repetition's at a time
            shutil.rmtree(state, ignore_errors=True)
    return {"server": name, "version": server.version(), "runs": runs, "byte_identical": checks, "copy_object_s": copies}


def med(runs: list[dict], key: str) -> float:
    return statistics.median(r["inputs"][key] if key in r["inputs"] else r[key] for r in runs)


def summarise(result: dict, big: int, n_files: int) -> tuple[list[dict], list[dict]]:
    """Table rows and goal checks of one server."""
    runs = result["runs"]

    def row(label: str, key: str, ratio: float | None = None, ratio_of: str = "", goal: float | None = None) -> dict:
        r = runs[key]
        return {"row": label, "key": key, "wall_s": med(r, "wall_s"), "hashing_s": med(r, "hashing_s"),
                "sent_bytes": med(r, "sent_bytes"), "files_from_cache": med(r, "files_from_cache"),
                "bytes_from_cache": med(r, "bytes_from_cache"), "ratio": ratio, "ratio_of": ratio_of, "goal": goal,
                "met": None if goal is None or ratio is None else ratio <= goal}

    w = {k: med(v, "wall_s") for k, v in runs.items()}
    sent2 = med(runs["big-cache-2"], "sent_bytes")
    n = f"{n_files:,} files"
    rows = [
        row(f"(1) {hb(big)}, job 1 (cache on, empty)", "big-cache-1"),
        row(f"(1) {hb(big)}, job 2 (a copy of the file): wall", "big-cache-2", w["big-cache-2"] / w["big-cache-1"],
            "× job 1's wall", 0.10),
        row(f"(1) {hb(big)}, job 2: bytes sent", "big-cache-2", sent2 / big, "× the file's size", 0.01),
        row(f"(2) {hb(big)}, plain (cache off)", "big-plain-1"),
        row("(2) first stage-in with the cache (hash, upload, copy) / plain", "big-cache-1", w["big-cache-1"] / w["big-plain-1"],
            "× plain's wall", 1.15),
        row(f"(3) {n}, cache on (min size 0), job 1", "many-cache-1", w["many-cache-1"] / w["many-plain-1"],
            "× plain job 1"),
        row(f"(3) {n}, cache on (min size 0), job 2 (a copy)", "many-cache-2", w["many-cache-2"] / w["many-plain-2"],
            "× plain job 2"),
        row(f"(3) {n}, cache off, job 1", "many-plain-1"),
        row(f"(3) {n}, cache off, job 2 (a copy)", "many-plain-2"),
    ]
    checks = [{"server": result["server"], "target": r["row"], "value": r["ratio"], "limit": r["goal"], "met": r["met"]}
              for r in rows if r["goal"] is not None]
    return rows, checks


def hb(n: float) -> str:
    from datasets import _human

    return _human(int(n))


def table(rows: list[dict]) -> list[str]:
    out = ["| row | median wall s | of which hashing s | bytes sent | from cache (files / bytes) | ratio | goal | |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio']:.3g} {r['ratio_of']}" if r["ratio"] is not None else ""
        goal = f"≤ {r['goal']:g}" if r["goal"] is not None else ""
        verdict = "" if r["met"] is None else ("MET" if r["met"] else "MISSED")
        out.append(f"| {r['row']} | {r['wall_s']:.2f} | {r['hashing_s']:.2f} | {hb(r['sent_bytes'])} "
                   f"| {r['files_from_cache']:,.0f} / {hb(r['bytes_from_cache'])} | {ratio} | {goal} | {verdict} |")
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        child_stage(argv[1], argv[2])
        return 0
    if argv[:1] == ["--pull"]:  # the check's download, in a child so that a timeout bounds it
        from gpstage.sync import sync

        sync(argv[1], argv[2])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a 64 MiB file and 500 files, 1 repetition (a smoke run)")
    ap.add_argument("--servers", default="seaweedfs,moto", help="comma list of seaweedfs, moto (default both)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per server (default 3; 1 with --quick)")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="where the results go (default benchmarks/results)")
    args = ap.parse_args(argv)
    from bench import _choose, _interrupted, machine_info
    from datasets import local_sizes
    from servers import SERVERS
    from tools import BUCKET, Gpstage

    servers = _choose(ap, "--servers", args.servers, list(SERVERS))
    reps = args.reps or (1 if args.quick else 3)
    big = 64 * MiB if args.quick else GiB
    t_start, code = time.monotonic(), code_digest()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - t_start:5.0f}s] {text}", flush=True)

    signal.signal(signal.SIGTERM, _interrupted)
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gpstage-cache-bench-") as tmp:
        base = Path(tmp)
        (base / "config.toml").write_text(f'[storage."s3://{BUCKET}/"]\ninput_cache_min_size = 0\n')
        say(f"writing a {hb(big)} file of random bytes and copying it; copying the many-files dir")
        dirs = {k: base / k for k in ("big/src", "big/copy", "many/copy")} | {"many/src": many_files(args.quick)}
        dirs["big/src"].mkdir(parents=True)
        dirs["big/copy"].mkdir()
        (dirs["big/src"] / "input.bin").write_bytes(os.urandom(big))
        shutil.copyfile(dirs["big/src"] / "input.bin", dirs["big/copy"] / "input.bin")
        shutil.copytree(dirs["many/src"], dirs["many/copy"])
        sizes = local_sizes(dirs["many/src"])
        running: list[Any] = []
        stopping = threading.Thread()  # a server stops (SeaweedFS takes ~5 s) while the next starts, not while it is timed
        stopping.start()
        try:
            for name in servers:
                running.append(server := SERVERS[name](base / name))
                say(f"starting {name}")
                server.start()
                say(f"   {name} pid {server.pid} at {server.endpoint}")
                results.append(run_server(server, base, dirs, reps, say, stopping.join))
                say(f"stopping {name} (pid {server.pid})")
                stopping = threading.Thread(target=server.stop)
                stopping.start()
        finally:
            stopping.join()
            for server in running:
                server.stop()  # a no-op for a stopped one
    summary = {r["server"]: summarise(r, big, len(sizes)) for r in results}
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    m = machine_info()
    lines = [f"# Input cache benchmark — {stamp}", "",
             f"- command: `{' '.join(['python', 'benchmarks/cache.py', *argv])}`"
             + (" (quick: small data, 1 repetition, indicative only)" if args.quick else ""),
             f"- machine: {m['cores']} cores ({m['cpu']}), {m['memory']} RAM, {m['os']}, Python {m['python']}",
             f"- versions: {Gpstage(HERE).version()}; " + "; ".join(f"{r['server']}: {r['version']}" for r in results),
             f"- {reps} interleaved repetition(s) per server, medians; fresh storage prefix and state dir (empty hash "
             "index) per repetition and configuration; each stage-in in a fresh child interpreter, its wall = the "
             "stage_in call only",
             f"- data: one {hb(big)} file of random bytes (job 2: a copy, new inode); {len(sizes):,} files / "
             f"{hb(sum(sizes.values()))} (GSEA-like, fixed seed; job 2: a copy of the dir); input_cache_min_size = 0",
             "- bytes sent: counted in the child by wrapping socket send/sendall/sendmsg/sendto (aiohttp's writes), "
             "headers and small bodies included; /proc/self/io wchar misses send(2)",
             f"- whole run: {time.monotonic() - t_start:.0f} s; gpstage/*.py digest {code}"
             + ("" if code == code_digest() else f", CHANGED during the run to {code_digest()}: numbers may mix versions")]
    for r in results:
        rows, _ = summary[r["server"]]
        loads = [x["load1"] for v in r["runs"].values() for x in v]
        lines += ["", f"## {r['server']} ({r['version']})", "", *table(rows), "",
                  f"- server-side CopyObject of the {hb(big)} cache object, by boto3 (outside the stage-ins): median "
                  f"{statistics.median(r['copy_object_s']):.2f} s of {len(r['copy_object_s'])}",
                  f"- 1-min load average before each stage-in: median {statistics.median(loads):.1f}, max {max(loads):.1f} "
                  f"({m['cores']} cores)"]
    lines += ["", "## Targets", ""]
    for r in results:
        for c in summary[r["server"]][1]:
            lines.append(f"- {'MET   ' if c['met'] else 'MISSED'} {r['server']}: {c['target']} — {c['value']:.4g} vs "
                         f"{c['limit']:g}")
    lines += ["", "## Checks", ""]
    for r in results:
        for config, diff in r["byte_identical"].items():
            lines.append(f"- {r['server']} {config}: last job's inputs pulled back with gpstage.sync.sync: "
                         + (f"DIFFERENT: {diff}" if diff else "byte-identical (MD5 of every file)"))
        got = med(r["runs"]["many-cache-2"], "files_from_cache")
        lines.append(f"- {r['server']} many-cache job 2: {got:,.0f} of {len(sizes):,} files placed from the cache "
                     f"(min size 0: all expected)")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "cache-quick" if args.quick else "cache"
    (args.out / f"{name}.md").write_text(text)
    (args.out / f"{name}.json").write_text(json.dumps({
        "date_utc": stamp, "command": argv, "machine": m, "gpstage_code": [code, code_digest()], "reps": reps,
        "big_bytes": big, "many_files": len(sizes), "many_bytes": sum(sizes.values()), "servers": {r["server"]: {
            "version": r["version"], "rows": summary[r["server"]][0], "targets": summary[r["server"]][1],
            "byte_identical": r["byte_identical"], "copy_object_s": r["copy_object_s"],
            "runs": r["runs"]} for r in results}}, indent=2) + "\n")
    say(f"written: {args.out / name}.md, .json")
    bad = [c for r in results for c in r["byte_identical"].values() if c]
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("cache.py: interrupted; the servers were stopped", file=sys.stderr)
        sys.exit(130)
