#!/usr/bin/env python3
"""The entry bundle's benchmark (docs/entry-bundle.md): its size per extras set, and what mounting it costs
a job — an empty job on ``docker+process`` with the bundle mounted into a bash-only image, against the same
job in ``gpstage/runtime`` with the entry inside (``entry = "image"``), side by side in one run.

    .venv/bin/python benchmarks/entry_bundle.py [--reps N] [--out DIR]

Uses the private dockerd of ``scripts/services.py`` (started here if it is not running, and then stopped
again by pid), builds what is missing with images/build.py (the bundles into ``benchmarks/work/bundles``),
and writes ``entry-bundle.md`` and ``entry-bundle.json`` to ``benchmarks/results``. Each repetition runs
the two variants in alternating order; the table gives the median and the spread of the wall time from
``submit`` to the end of ``wait`` (poll interval 0.05 s for both). Goal (issue 18): the bundle adds at
most 0.1 s. Exit code 1 when the goal or the size goal (≤ 60 MiB with the s3 extra) is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

EXTRAS_SETS = [("s3",), ("s3", "gcs", "azure")]
SIZE_GOAL_MIB = 60.0  # with the s3 extra
OVERHEAD_GOAL_S = 0.1


def services(*args: str) -> str:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "services.py"), *args], capture_output=True, text=True,
                          check=True, timeout=300).stdout


def empty_job(base: Path, image: str, n: int):
    from gpstage.spec import JobSpec

    work, meta = base / f"j{n}" / "work", base / f"j{n}" / "work" / ".gp_metadata"
    meta.mkdir(parents=True)
    (meta / "exec.sh").write_text("exit 0\n")
    return JobSpec.model_validate({"job_id": f"bench-{os.getpid()}-{n}", "storage_root": f"file://{base}/store",
                                   "image": image, "dirs": [{"role": "workdir", "path": str(work)},
                                                            {"role": "metadata", "path": str(meta)}]})


def time_job(launcher, spec) -> float:
    t0 = time.perf_counter()
    result = launcher.submit(spec).wait(timeout=120)
    elapsed = time.perf_counter() - t0
    if not result.ok:
        raise SystemExit(f"benchmark job {spec.job_id} failed: {result.message}")
    launcher.clean(spec.job_id)
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=15, help="empty jobs per variant (default 15)")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="where the results go (default benchmarks/results)")
    args = ap.parse_args()
    from fixtures_docker import load_image_builder

    from gpstage.launching import get_launcher

    build = load_image_builder()
    tmp = ""
    started = "GPSTAGE_TEST_DOCKER_HOST" not in services("env")
    services("start", "docker")
    try:
        host = dict(line.split("=", 1) for line in services("env").splitlines() if "=" in line)["GPSTAGE_TEST_DOCKER_HOST"]
        images = build.ensure_images(host, which=("bash-module", "runtime"))
        docker, sizes = build.Docker(host), []
        for extras in EXTRAS_SETS:
            path = build.ensure_entry_bundle(docker, print, extras, HERE / "work" / "bundles" / "-".join(extras))
            sizes.append({"extras": ",".join(extras), "path": path, "mib": round(build.bundle.size_mib(Path(path)), 1),
                          "files": sum(1 for p in Path(path).rglob("*") if p.is_file())})
        default_bundle = sizes[-1]["path"]
        tmp = tempfile.mkdtemp(prefix="gpstage-bench-")
        (Path(tmp) / "config.toml").write_text("")  # no user settings; records in tmp
        os.environ.update(GPSTAGE_STATE_DIR=f"{tmp}/state", GPSTAGE_CONFIG=f"{tmp}/config.toml")
        common = {"runner": "process", "docker_host": host, "network": "host", "poll_interval": 0.05, "log_push_interval": 0}
        variants = {
            "bundle (bash-module, entry mounted)": (get_launcher("docker", {**common, "entry_bundle": default_bundle}),
                                                    images["bash-module"]),
            "image (gpstage/runtime, entry inside)": (get_launcher("docker", {**common, "entry": "image"}), images["runtime"]),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for name, (launcher, image) in variants.items():  # one untimed warm-up each
            time_job(launcher, empty_job(Path(tmp) / "warm" / name[:6], image, 0))
        for rep in range(args.reps):
            order = list(variants) if rep % 2 == 0 else list(reversed(variants))
            for name in order:
                launcher, image = variants[name]
                times[name].append(time_job(launcher, empty_job(Path(tmp) / name[:6], image, rep + 1)))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        if started:
            services("stop", "docker")
    medians = {name: statistics.median(t) for name, t in times.items()}
    bundle_name, image_name = list(variants)
    overhead = medians[bundle_name] - medians[image_name]
    s3_size = sizes[0]["mib"]
    checks = [{"goal": f"bundle adds ≤ {OVERHEAD_GOAL_S} s to an empty job", "value": f"{overhead:+.3f} s",
               "met": overhead <= OVERHEAD_GOAL_S},
              {"goal": f"bundle with the s3 extra ≤ {SIZE_GOAL_MIB:.0f} MiB", "value": f"{s3_size} MiB",
               "met": s3_size <= SIZE_GOAL_MIB}]
    meta = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "reps": args.reps,
            "machine": {"cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version()}}
    lines = [f"# Entry bundle — {meta['date']}", "", f"{args.reps} empty jobs per variant on docker+process (private "
             "dockerd, file storage bind-mounted), alternating order; wall time from submit to the end of wait.", "",
             "| variant | median s | min s | max s |", "|---|---|---|---|"]
    lines += [f"| {n} | {medians[n]:.3f} | {min(t):.3f} | {max(t):.3f} |" for n, t in times.items()]
    lines += ["", "| bundle extras | size MiB | files |", "|---|---|---|"]
    lines += [f"| {s['extras']} | {s['mib']} | {s['files']} |" for s in sizes]
    lines += ["", "| goal | measured | met |", "|---|---|---|"]
    lines += [f"| {c['goal']} | {c['value']} | {'yes' if c['met'] else 'NO'} |" for c in checks]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "entry-bundle.md").write_text(text)
    (args.out / "entry-bundle.json").write_text(json.dumps({**meta, "times": times, "medians": medians, "sizes": sizes,
                                                            "checks": checks}, indent=2) + "\n")
    return 0 if all(c["met"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
