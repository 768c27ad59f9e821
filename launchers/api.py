"""The Python API for notebooks: run a GenePattern-style module with no server (the seed's deployment 4).

    from launchers import make_job, run
    job = make_job('bash "$TASKLIB/wordcount.sh" "$INPUT_FILES_DIR/words.txt" ./stop 0 0',
                   tasklib="modules/wordcount", inputs=["words.txt"])
    result = run(job)                              # local launcher, process runner, no copies
    result = run(job, storage="s3://bucket/gp")    # stage through S3, as a remote backend would
    handle = run(job, wait=False); result = await handle   # inside Jupyter's running loop
    handle = await submit_async(job, storage="s3://bucket/gp", progress=lambda done, total: ...)
    job = make_job("wc -l $INPUT_FILES_DIR/words.txt", inputs=["s3://other-bucket/words.txt"])  # a URL input

Everything returns plain objects with readable reprs; the same records as the CLI, so
``gpstage status JOB`` in a shell sees a job a notebook started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gpstage.errors import BadInput
from gpstage.jobresult import JobResult
from gpstage.launching import get_launcher
from gpstage.spec import DirSpec, InputSource, JobSpec
from launchers.base import JobHandle

ProgressCallback = Callable[[int, int], None]  # progress(done_bytes, total_bytes)

LOCAL_STORAGE = "nfs:///"  # the default: this machine's disk is "shared" with itself, staging is a no-op


def make_job(command: str, *, tasklib: str | os.PathLike[str] | None = None,
             inputs: Sequence[str | os.PathLike[str] | InputSource] = (),
             libraries: Sequence[str | os.PathLike[str]] = (), workdir: str | os.PathLike[str] | None = None,
             job_id: str | None = None, storage: str = LOCAL_STORAGE, **spec_fields: Any) -> JobSpec:
    """A job spec from a command line and a few paths, laid out as a GenePattern server would.

    ``command`` becomes ``exec.sh`` (run with bash in the working dir; ``$TASKLIB``,
    ``$INPUT_FILES_DIR``, ``$WORKING_DIR``, ``$GP_METADATA_DIR`` are set). ``tasklib`` is the module's
    directory. ``inputs`` are files (copied into the job's inputs dir) or directories (used as they
    are) or URLs: an entry with ``://`` in it (``s3://bucket/dir/words.txt``, ``gs://…``,
    ``file:///…``) is not looked for on this disk but listed as a source of the job's inputs dir
    (:class:`~gpstage.spec.InputSource`), placed there under its last part (``words.txt``) when the job
    is staged in; an :class:`InputSource` names it otherwise. That inputs dir, ``$INPUT_FILES_DIR``, is
    ``<workdir>.inputs`` whenever there are input files or URLs. ``workdir`` defaults to
    ``./gpstage-jobs/<job_id>``. Other spec fields (``image``, ``resources``, ``env``, ``runner``,
    ``module``) pass through. Nothing is created when a path is missing or a URL is not a file's.
    """
    sources: list[InputSource] = []
    local: list[Path] = []
    for p in inputs:
        if isinstance(p, InputSource):
            sources.append(p)
        elif "://" in os.fspath(p):
            try:
                sources.append(InputSource(source=os.fspath(p)))
            except ValidationError as err:
                raise BadInput(f"input {os.fspath(p)}: {err.errors()[0]['msg']}",
                               "give the URL of a file: scheme://bucket/path/name") from None
        else:
            local.append(Path(p))
    for what, paths in (("input", local), ("libraries dir", libraries), ("tasklib", [tasklib] if tasklib else [])):
        for p in paths:
            if not Path(p).exists():
                raise BadInput(f"{what} {p} does not exist", "check the path (relative paths are from the current directory)")
    files = [p.absolute() for p in local if not p.is_dir()]
    names = [f.name for f in files]
    for s in sources:
        if s.rel in names:
            raise BadInput(f"input {s.source} would be {s.rel} in the inputs dir, as another input is",
                           "give one of them another name: InputSource(source=url, name=...)")
        names.append(s.rel)
    job_id = job_id or f"nb-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    work = Path(workdir) if workdir else Path.cwd() / "gpstage-jobs" / job_id
    work = work.absolute()
    metadata = work / ".gp_metadata"
    metadata.mkdir(parents=True, exist_ok=True)
    (metadata / "exec.sh").write_text(f"#!/bin/bash\n{command}\n")
    dirs: list[dict[str, Any]] = [{"role": "workdir", "path": str(work)}]
    if tasklib is not None:
        dirs.append({"role": "tasklib", "path": str(Path(tasklib).absolute())})
    dirs += [{"role": "inputs", "path": str(p.absolute())} for p in local if p.is_dir()]
    if files or sources:
        staged = work.parent / f"{work.name}.inputs"
        staged.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, staged / f.name)
        first: dict[str, Any] = {"role": "inputs", "path": str(staged)}
        if sources:
            first["sources"] = [s.model_dump(exclude_none=True) for s in sources]
        dirs.insert(0, first)  # the first inputs dir is $INPUT_FILES_DIR
    dirs += [{"role": "libraries", "path": str(Path(p).absolute())} for p in libraries]
    return JobSpec.model_validate({"job_id": job_id, "storage_root": storage, "dirs": dirs, **spec_fields})


def run(job: JobSpec, launcher: str = "local", *, storage: str | None = None, wait: bool = True,
        timeout: float | None = None, progress: ProgressCallback | None = None, **settings: Any) -> JobResult | JobHandle:
    """Submit ``job`` on ``launcher`` (settings as keyword arguments, e.g. ``max_parallel=2``); with
    ``wait`` return the collected :class:`JobResult`, else the :class:`JobHandle` (awaitable).

    ``progress(done_bytes, total_bytes)``, if given, is told how the stage-in goes (see
    :class:`ByteProgress`); here it is called from the thread that stages, as this call blocks. In a
    running event loop, :func:`submit_async` stages without blocking it and calls ``progress`` on it."""
    handle = _submit(job, launcher, storage, ByteProgress(progress) if progress else None, settings)
    return handle.wait(timeout) if wait else handle


async def submit_async(job: JobSpec, launcher: str = "local", *, storage: str | None = None,
                       progress: ProgressCallback | None = None, **settings: Any) -> JobHandle:
    """:func:`run` with ``wait=False`` for a running event loop (a notebook cell): records, stages in and
    starts ``job`` in a worker thread, so the loop keeps running (widgets, other cells' tasks), and
    returns the same :class:`JobHandle` — ``await handle`` for the result.

    ``progress(done_bytes, total_bytes)`` is called on the loop's thread, as the stage-in goes: after
    each file copied to storage, and when a dir's sync starts — the total grows then, as each dir's
    bytes to copy are known only when its sync has compared both sides (:class:`ByteProgress`). Files
    already on storage count in neither. An exception it raises goes to the loop's exception handler.

    Cancelling the awaiting task does not stop the submission: a thread cannot be interrupted, so the
    task still waits for it to end before it raises :class:`asyncio.CancelledError`. The job is then
    recorded and started as if the task had not been cancelled (or recorded as failed, if staging
    failed): ``launchers.job(job.job_id)`` is its handle, to wait for it or cancel it.
    """
    loop = asyncio.get_running_loop()
    factory = None
    if progress is not None:
        def on_loop(done: int, total: int) -> None:
            with contextlib.suppress(RuntimeError):  # a loop closed without waiting for its threads: no one to tell
                loop.call_soon_threadsafe(progress, done, total)

        factory = ByteProgress(on_loop)
    submitting = asyncio.ensure_future(asyncio.to_thread(_submit, job, launcher, storage, factory, settings))
    try:
        return await asyncio.shield(submitting)
    except asyncio.CancelledError:
        while not submitting.done():  # the job is recorded whole before the cancellation goes on
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({submitting})
        if not submitting.cancelled():
            submitting.exception()  # retrieved, not raised: the job's record says how it went
        raise


class ByteProgress:
    """The stage-in's :class:`~gpstage.sync.Progress` reports, summed over all its dirs, as
    ``callback(done_bytes, total_bytes)``; the instance is the ``progress`` factory that
    :meth:`Launcher.submit <launchers.base.Launcher.submit>` gives to :func:`~gpstage.stage.stage_in`.

    ``total_bytes`` is the bytes to copy of the dirs whose sync has STARTED: it grows as each dir's sync
    starts (a dir's count is known only once its sync compared both sides), so ``done == total`` also
    between two dirs. The callback is called whenever either count grows, never with the same pair
    twice: ``done`` never decreases, grows only as files are copied, and ends at ``total`` (unless a copy
    failed: then the stage-in fails). A callback that raises is warned about and not called again: the
    stage-in goes on, a job is never left half-submitted by its progress report."""

    def __init__(self, callback: ProgressCallback) -> None:
        self.callback: ProgressCallback | None = callback
        self.done = 0
        self.total = 0
        self._lock = threading.Lock()  # dirs are synced one after another; the lock keeps counts whole if not

    def __call__(self, d: DirSpec) -> ByteProgress:
        return self  # one accumulator for every dir

    def start(self, files: int, nbytes: int) -> None:
        self._add(0, nbytes)

    def advance(self, nbytes: int) -> None:
        self._add(nbytes, 0)

    def finish(self) -> None:
        pass

    def _add(self, done: int, total: int) -> None:
        if not (done or total):
            return
        with self._lock:
            self.done += done
            self.total += total
            if self.callback is None:
                return
            try:
                self.callback(self.done, self.total)
            except Exception as err:  # noqa: BLE001 - a report's failure must not fail the job
                warnings.warn(f"progress callback failed, no more reports: {err!r}", RuntimeWarning, stacklevel=2)
                self.callback = None


def _submit(job: JobSpec, launcher: str, storage: str | None, progress: ByteProgress | None,
            settings: dict[str, Any]) -> JobHandle:
    if storage is not None:
        job = JobSpec.model_validate({**job.model_dump(exclude_none=True), "storage_root": storage})
    return get_launcher(launcher, settings).submit(job, progress=progress)


def job(job_id: str) -> JobHandle:
    """A handle on a recorded job, whoever submitted it (another notebook, the CLI, the server)."""
    from gpstage.launching import launcher_for

    return JobHandle(job_id, launcher_for(job_id))
