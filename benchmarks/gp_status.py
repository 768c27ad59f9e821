#!/usr/bin/env python3
"""What a GenePattern server's status poll costs with gpstage's drop-in scripts (docs/genepattern-server.md):
100 live jobs, each asked about once through the installed ``awsCheckStatus.sh`` with a cleared
environment, as the server calls it.

    .venv/bin/python benchmarks/gp_status.py [--jobs 100] [--out DIR]

Jobs run on the embedded default (local launcher, ``nfs:///`` storage, ``max_parallel = 2``: the rest wait
QUEUED, which is also a live job to the server), each module sleeping until it is cancelled. Reports the
median, 95th percentile and maximum wall time of one status call and of one sweep over every job (the
server asks about each live job on each poll), then cancels and removes the jobs. Writes
``gp-status.md`` and ``.json`` to benchmarks/results. No storage is involved until a job ends: a status
call reads the job's record and asks the backend (here: is the worker alive).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLI = [sys.executable, "-m", "frontends.genepattern"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100, help="live jobs (default 100)")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="where the results go (default benchmarks/results)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="gpstage-gp-status-") as tmp:
        base = Path(tmp)
        (base / "config.toml").write_text("[launchers.local]\nmax_parallel = 2\n")
        subprocess.run([*CLI, "install-scripts", str(base / "scripts"), "--config", str(base / "config.toml"),
                        "--state-dir", str(base / "state"), "--storage-root", "nfs:///"], check=True, capture_output=True,
                       cwd=ROOT)
        ids = []
        t0 = time.perf_counter()
        for n in range(args.jobs):
            work = base / "jobs" / str(n)
            work.mkdir(parents=True)
            done = subprocess.run([str(base / "scripts" / "runOnBatch-v0.4.sh"), str(base), str(work), "def", f"GP_Job_{n}",
                                   str(work), "sleep", "3600"], env={"GP_JOB_ID": str(n)}, cwd=work, capture_output=True,
                                  text=True, check=True)
            ids.append(done.stdout)
        submit_s = time.perf_counter() - t0
        calls, sweeps = [], []
        try:
            for _ in range(2):
                s0 = time.perf_counter()
                for job_id in ids:
                    c0 = time.perf_counter()
                    out = subprocess.run([str(base / "scripts" / "awsCheckStatus.sh"), job_id], env={},
                                         capture_output=True, text=True)
                    calls.append(time.perf_counter() - c0)
                    status = json.loads(out.stdout)["jobs"][0]["status"]
                    if status not in ("RUNNABLE", "STARTING", "RUNNING"):
                        raise SystemExit(f"{job_id} is {status}, not live")
                sweeps.append(time.perf_counter() - s0)
        finally:
            for job_id in ids:
                subprocess.run([str(base / "scripts" / "awsCancelJob.sh"), job_id], env={}, capture_output=True)
    calls.sort()
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "jobs": args.jobs,
              "machine": {"cores": os.cpu_count(), "os": platform.platform()},
              "status_call_s": {"median": statistics.median(calls), "p95": calls[int(len(calls) * 0.95) - 1],
                                "max": calls[-1]},
              "sweep_s": sweeps, "submit_s_each": submit_s / args.jobs}
    text = (f"# GenePattern status calls — {result['date']}\n\n{args.jobs} live jobs (local launcher, nfs:///), each asked "
            "about through awsCheckStatus.sh with a cleared environment, twice.\n\n| measure | seconds |\n|---|---|\n"
            f"| one status call, median | {result['status_call_s']['median']:.3f} |\n"
            f"| one status call, 95th percentile | {result['status_call_s']['p95']:.3f} |\n"
            f"| one status call, max | {result['status_call_s']['max']:.3f} |\n"
            f"| a sweep over all {args.jobs} jobs | {', '.join(f'{s:.1f}' for s in sweeps)} |\n"
            f"| one submit (staging on nfs:///: none) | {result['submit_s_each']:.3f} |\n")
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gp-status.md").write_text(text)
    (args.out / "gp-status.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
