"""Lay out the sample GenePattern-style module as a job, the way a GenePattern server would.

``lay_out_job(base, storage_root)`` copies the module into ``base`` — TASKLIB, an input file, a
libraries dir, and the metadata dir holding the ``exec.sh`` the server writes — and returns the job
spec. Used by the tests of every backend and by the README's demo (``examples/demo.py``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from gpstage.spec import JobSpec

MODULE = Path(__file__).resolve().parent / "sample_module"

# What the module writes: into the working dir, and into its own TASKLIB.
OUTPUTS = ("counts.txt", "results/summary.txt")
TASKLIB_OUTPUT = ".cache/last_run.txt"


def job_paths(base: Path, libraries_in_tasklib: bool = False) -> dict[str, Path]:
    """GenePattern-like locations under ``base`` (which may contain spaces). runS3OnBatch.sh stages no
    libraries dir: for legacy mode, ``libraries_in_tasklib`` puts it inside TASKLIB instead."""
    tasklib = base / "gp" / "taskLib" / "wordcount.1.0"
    return {
        "tasklib": tasklib,
        "inputs": base / "gp" / "users" / "test user" / "uploads",
        "libraries": tasklib / "lib" if libraries_in_tasklib else base / "gp" / "libraries" / "stopwords",
        "workdir": base / "gp" / "jobResults" / "1",
    }


def lay_out_job(base: Path, storage_root: str, *, job_id: str = "sample-1", exit_code: int = 0, sleep_s: float = 0,
                libraries_in_tasklib: bool = False, **spec_fields: Any) -> JobSpec:
    """Create the job's dirs under ``base`` and return its spec (extra fields, e.g. ``resources``, pass through)."""
    paths = job_paths(base, libraries_in_tasklib)
    for role in ("tasklib", "inputs", "libraries"):
        shutil.copytree(MODULE / role, paths[role], dirs_exist_ok=True)
    metadata = paths["workdir"] / ".gp_metadata"
    metadata.mkdir(parents=True, exist_ok=True)
    exec_sh = (MODULE / "exec.sh.in").read_text()
    for key, value in (("TASKLIB", paths["tasklib"]), ("INPUTS", paths["inputs"]), ("LIBRARIES", paths["libraries"]),
                       ("EXIT_CODE", exit_code), ("SLEEP", sleep_s)):
        exec_sh = exec_sh.replace(f"@{key}@", str(value))
    (metadata / "exec.sh").write_text(exec_sh)
    return JobSpec.model_validate({
        "job_id": job_id,
        "storage_root": storage_root,
        "dirs": [{"role": role, "path": str(path)} for role, path in paths.items()
                 if not (libraries_in_tasklib and role == "libraries")],
        "module": {"name": "wordcount", "version": "1.0"},
        **spec_fields,
    })


def expected_counts() -> str:
    """counts.txt as the module must produce it from the sample input (computed here independently)."""
    stop = set((MODULE / "libraries" / "stopwords.txt").read_text().split())
    words = [w.lower() for w in "".join(c if c.isalpha() else " " for c in (MODULE / "inputs" / "words.txt").read_text()).split()]
    counts: dict[str, int] = {}
    for w in words:
        if w not in stop:
            counts[w] = counts.get(w, 0) + 1
    return "".join(f"{w}\t{n}\n" for w, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
