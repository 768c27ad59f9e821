"""The Python API for notebooks: run a GenePattern-style module with no server (the seed's deployment 4).

    from launchers import make_job, run
    job = make_job('bash "$TASKLIB/wordcount.sh" "$INPUT_FILES_DIR/words.txt" ./stop 0 0',
                   tasklib="modules/wordcount", inputs=["words.txt"])
    result = run(job)                              # local launcher, process runner, no copies
    result = run(job, storage="s3://bucket/gp")    # stage through S3, as a remote backend would
    handle = run(job, wait=False); result = await handle   # inside Jupyter's running loop

Everything returns plain objects with readable reprs; the same records as the CLI, so
``gpstage status JOB`` in a shell sees a job a notebook started.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpstage.errors import BadInput
from gpstage.jobresult import JobResult
from gpstage.launching import get_launcher
from gpstage.spec import JobSpec
from launchers.base import JobHandle

LOCAL_STORAGE = "nfs:///"  # the default: this machine's disk is "shared" with itself, staging is a no-op


def make_job(command: str, *, tasklib: str | os.PathLike[str] | None = None, inputs: Sequence[str | os.PathLike[str]] = (),
             libraries: Sequence[str | os.PathLike[str]] = (), workdir: str | os.PathLike[str] | None = None,
             job_id: str | None = None, storage: str = LOCAL_STORAGE, **spec_fields: Any) -> JobSpec:
    """A job spec from a command line and a few paths, laid out as a GenePattern server would.

    ``command`` becomes ``exec.sh`` (run with bash in the working dir; ``$TASKLIB``,
    ``$INPUT_FILES_DIR``, ``$WORKING_DIR``, ``$GP_METADATA_DIR`` are set). ``tasklib`` is the module's
    directory. ``inputs`` are files (copied into the job's inputs dir) or directories (used as they
    are). ``workdir`` defaults to ``./gpstage-jobs/<job_id>``. Other spec fields (``image``,
    ``resources``, ``env``, ``runner``, ``module``) pass through.
    """
    for what, paths in (("input", inputs), ("libraries dir", libraries), ("tasklib", [tasklib] if tasklib else [])):
        for p in paths:
            if not Path(p).exists():
                raise BadInput(f"{what} {p} does not exist", "check the path (relative paths are from the current directory)")
    job_id = job_id or f"nb-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    work = Path(workdir) if workdir else Path.cwd() / "gpstage-jobs" / job_id
    work = work.absolute()
    metadata = work / ".gp_metadata"
    metadata.mkdir(parents=True, exist_ok=True)
    (metadata / "exec.sh").write_text(f"#!/bin/bash\n{command}\n")
    dirs: list[dict[str, str]] = [{"role": "workdir", "path": str(work)}]
    if tasklib is not None:
        dirs.append({"role": "tasklib", "path": str(Path(tasklib).absolute())})
    files = [Path(p).absolute() for p in inputs if not Path(p).is_dir()]
    dirs += [{"role": "inputs", "path": str(Path(p).absolute())} for p in inputs if Path(p).is_dir()]
    if files:
        staged = work.parent / f"{work.name}.inputs"
        staged.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, staged / f.name)
        dirs.insert(0, {"role": "inputs", "path": str(staged)})  # the first inputs dir is $INPUT_FILES_DIR
    dirs += [{"role": "libraries", "path": str(Path(p).absolute())} for p in libraries]
    return JobSpec.model_validate({"job_id": job_id, "storage_root": storage, "dirs": dirs, **spec_fields})


def run(job: JobSpec, launcher: str = "local", *, storage: str | None = None, wait: bool = True,
        timeout: float | None = None, **settings: Any) -> JobResult | JobHandle:
    """Submit ``job`` on ``launcher`` (settings as keyword arguments, e.g. ``max_parallel=2``); with
    ``wait`` return the collected :class:`JobResult`, else the :class:`JobHandle` (awaitable)."""
    if storage is not None:
        job = JobSpec.model_validate({**job.model_dump(exclude_none=True), "storage_root": storage})
    handle = get_launcher(launcher, settings).submit(job)
    return handle.wait(timeout) if wait else handle


def job(job_id: str) -> JobHandle:
    """A handle on a recorded job, whoever submitted it (another notebook, the CLI, the server)."""
    from gpstage.launching import launcher_for

    return JobHandle(job_id, launcher_for(job_id))
