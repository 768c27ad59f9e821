"""Job records (docs/design.md §14): what was submitted where, so that ANY process can ask about a job later.

The GenePattern server submits with one call and polls with others; a notebook may restart. One
store under ``$GPSTAGE_STATE_DIR`` (default ``~/.local/state/gpstage``), one directory per ``job_id``
holding ``record.json`` and the launcher's scratch files. Every read-modify-write holds an exclusive
``flock`` on the job's lock file and replaces the record atomically, so concurrent writers (a
submitter, a background worker, a ``cancel`` from another shell) never corrupt it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpstage.errors import BadInput
from gpstage.spec import JobSpec
from gpstage.statedir import state_dir
from gpstage.states import JobState, Reason

RECORD_NAME = "record.json"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Owner(BaseModel):
    """The process that submitted a job, while it stages and starts it: the job's only keeper until the
    backend knows it. Known by pid, host and start time, never by pid alone."""

    model_config = ConfigDict(extra="forbid")

    pid: int
    host: str
    started: int | None = Field(None, description="start time in clock ticks since boot (/proc/PID/stat)")

    @classmethod
    def current(cls) -> Owner:
        from gpstage.procs import start_ticks, this_host

        return cls(pid=os.getpid(), host=this_host(), started=start_ticks(os.getpid()))

    def alive(self) -> bool:
        from gpstage.procs import process_alive

        return process_alive(self.pid, self.host, self.started)

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


class JobRecord(BaseModel):
    """One job as its launcher knows it. Settings hold no secrets (they never do: docs/design.md §11)."""

    model_config = ConfigDict(extra="forbid")

    record_version: int = 1
    job_id: str
    launcher: str
    runner: str
    settings: dict[str, Any] = Field(default_factory=dict, description="the launcher settings used")
    backend_id: str | None = Field(None, description="the backend's own id: pid, container id, Slurm or Batch job id")
    state: JobState = JobState.QUEUED
    exit_code: int | None = None
    reason: Reason | None = None
    message: str | None = None
    failed_phase: str | None = None
    module_exit_code: int | None = None
    submitted_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    owner: Owner | None = Field(None, description="the submitting process, while the job has no backend id")
    cancel_requested: bool = False
    collected: bool = False
    entry_bundle: dict[str, str] | None = Field(None, description="the entry bundle mounted into the module's image: "
                                                "path, version, hash, machine, extras (docs/entry-bundle.md)")
    spec: JobSpec
    transfers: list[dict[str, Any]] = Field(default_factory=list, description="stage-in and stage-out reports")


class RecordStore:
    """Records under ``root/jobs/<job_id>/``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else state_dir()

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    @contextmanager
    def _locked(self, job_id: str) -> Iterator[Path]:
        d = self.job_dir(job_id)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield d
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def collecting(self, job_id: str) -> Iterator[None]:
        """Held while a job's outputs are staged back: a second collector waits, then finds them collected.
        The kernel releases it when its holder dies, so a killed collect blocks nobody."""
        with open(self.job_dir(job_id) / "collect.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, d: Path, job_id: str) -> JobRecord | None:
        try:
            text = (d / RECORD_NAME).read_text()
        except FileNotFoundError:
            return None
        try:
            return JobRecord.model_validate_json(text)
        except ValidationError as err:
            raise BadInput(f"job record {d / RECORD_NAME} is damaged ({err.error_count()} errors)",
                           f"remove it with `gpstage clean {job_id} --force`") from None

    @staticmethod
    def _write(d: Path, record: JobRecord) -> None:
        tmp = d / f".{RECORD_NAME}.{os.getpid()}"
        tmp.write_text(record.model_dump_json(indent=2))
        os.replace(tmp, d / RECORD_NAME)

    def create(self, record: JobRecord) -> None:
        """Store a new record; refuse a ``job_id`` whose job is still live (a finished one is replaced)."""
        with self._locked(record.job_id) as d:
            old = self._read(d, record.job_id)
            if old is not None and not old.state.terminal:
                raise BadInput(f"job {record.job_id} is still {old.state.value} on the {old.launcher} launcher",
                               "wait for it, cancel it, or submit with another job_id")
            for leftover in d.iterdir():  # a finished job's scratch files must not leak into the new one
                if leftover.name != "lock":
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
            self._write(d, record)

    def load(self, job_id: str) -> JobRecord:
        d = self.job_dir(job_id)
        record = self._read(d, job_id) if d.exists() else None
        if record is None:
            raise BadInput(f"no job {job_id!r} in {self.root}",
                           "check the job id (`gpstage jobs` lists them) or GPSTAGE_STATE_DIR")
        return record

    def update(self, job_id: str, change: Callable[[JobRecord], None]) -> JobRecord:
        """Apply ``change`` to the current record under the lock and store it."""
        with self._locked(job_id) as d:
            record = self._read(d, job_id)
            if record is None:
                raise BadInput(f"no job {job_id!r} in {self.root}", "check the job id")
            change(record)
            self._write(d, record)
            return record

    def all(self) -> list[JobRecord]:
        jobs = self.root / "jobs"
        out = []
        for d in sorted(jobs.iterdir()) if jobs.exists() else ():
            record = self._read(d, d.name)
            if record is not None:
                out.append(record)
        return sorted(out, key=lambda r: r.submitted_at)

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
