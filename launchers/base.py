"""The launcher interface: where the container ENTRY runs — a local process, a container, a Slurm job,
an AWS Batch job. (Where ``exec.sh`` runs is the runner's business: ``container_entry.runners``.)

The model, as dsub's providers have it: a job is plain data (the :class:`~gpstage.spec.JobSpec`); a
launcher starts ``gpstage-entry --spec <spec URL>`` somewhere and can tell how that is going. Everything
else is written once, here, in :class:`Launcher`:

``submit``   record the job (refusing a live ``job_id``), stage its dirs in, :meth:`Launcher.start` it;
``status``   ask the backend (:meth:`Launcher.poll`); once it says the entry ended, the entry's own
             ``status.json`` on storage decides the final state and exit code;
``wait``     poll until terminal, then ``collect``; ``wait_async`` does the same inside a running loop;
``cancel``   :meth:`Launcher.kill` — the entry gets SIGTERM, records CANCELLED and pushes its logs;
``logs``     the module's stdout/stderr (or the entry's log), from the metadata dir, ``follow``-able;
``collect``  stage the ``out`` dirs back to the server's paths; a :class:`JobResult`;
``clean``    remove a finished job's record, scratch and its OWN dirs on storage.

A backend implements only ``start``, ``poll`` and ``kill`` (and optionally ``cleanup``), declares its
settings as a pydantic model (``[launchers.<name>]`` in the settings file, docs/design.md §13) and registers
under the ``gpstage.launchers`` entry-point group. Records survive the process: every method works
from another process than the one that submitted.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from gpstage import aio
from gpstage.errors import BadInput, GpstageError
from gpstage.jobfiles import read_entry_status, read_log, spec_url
from gpstage.jobresult import JobResult, result_of
from gpstage.records import JobRecord, Owner, RecordStore, utcnow
from gpstage.spec import DirSpec, JobSpec
from gpstage.stage import remove_job_dirs
from gpstage.states import EXIT_GPSTAGE_ERROR, EXIT_SIGNAL_BASE, EXIT_TIMEOUT, JobState, Reason
from gpstage.sync import Progress

SIGTERM = 15


class LauncherSettings(BaseModel):
    """Settings every launcher has; each launcher extends this model with its own."""

    model_config = ConfigDict(extra="forbid")

    runner: str | None = Field(None, description="where exec.sh runs when the spec names no runner (default: the launcher's)")
    poll_interval: float = Field(1.0, gt=0, description="seconds between status polls while waiting")
    cancel_timeout: float = Field(60.0, gt=0, description="seconds to wait for a cancelled job to record its end")


@dataclass
class BackendState:
    """What the backend says about the entry: QUEUED, RUNNING, or ended (any terminal state)."""

    state: JobState
    exit_code: int | None = None  # the entry's exit code, when the backend knows it
    message: str | None = None
    timed_out: bool = False  # the backend's own time limit stopped it (time_s + staging grace)


class WaitTimeout(GpstageError):
    exit_code = 124  # as timeout(1): the job goes on; wait again or cancel it


def entry_args(record: JobRecord) -> list[str]:
    """The entry's arguments (after the command itself): the job spec comes from storage."""
    return ["--spec", spec_url(record.spec), "--runner", record.runner]


class Launcher(ABC):
    """Base of every launcher; subclasses set ``name``, ``Settings`` and implement start/poll/kill."""

    name: ClassVar[str]
    Settings: ClassVar[type[LauncherSettings]] = LauncherSettings
    default_runner: ClassVar[str] = "process"
    runners: ClassVar[tuple[str, ...] | None] = None  # the runners it can start the entry with; None: any
    starts_module_image: ClassVar[bool] = False  # the entry runs in the spec's image, which must then be set
    shares_filesystem: ClassVar[bool] = False  # the entry writes the server's own paths (logs readable locally)

    def __init__(self, settings: LauncherSettings | None = None, store: RecordStore | None = None) -> None:
        self.settings = settings or self.Settings()
        self.store = store or RecordStore()

    # ---- what a backend implements ------------------------------------------------------------
    @abstractmethod
    def start(self, record: JobRecord) -> str:
        """Start ``gpstage-entry --spec <spec_url(record.spec)> --runner <record.runner>`` on the backend
        (the dirs are already staged in) and return the backend's id for it. Must not wait for the job."""

    @abstractmethod
    def poll(self, record: JobRecord) -> BackendState:
        """The backend's view of the entry started for ``record`` (``record.backend_id``). Cheap: called
        every ``poll_interval`` while someone waits. An entry that is gone without a trace is ERROR."""

    @abstractmethod
    def kill(self, record: JobRecord) -> None:
        """Stop the job: SIGTERM to the entry first (it forwards it, records CANCELLED, pushes the logs),
        the backend's hard kill only after a grace. A no-op if it already ended."""

    def ended_within(self, record: JobRecord, seconds: float) -> bool:
        """Whether the backend reports ``record``'s job ended within ``seconds`` (asked every poll interval, at
        most 0.5 s): a :meth:`kill` that asked the entry first waits this long before the backend's hard kill."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.poll(record).state.terminal:
                return True
            time.sleep(min(self.settings.poll_interval, 0.5))
        return False

    def find(self, record: JobRecord) -> str | None:
        """The backend id of the entry started for ``record`` when the submitter died before recording it
        (a container labelled with the job id, a Batch job by name…), or None: nothing was started."""
        return None

    def poll_many(self, records: list[JobRecord]) -> dict[str, BackendState]:
        """:meth:`poll` for several jobs; a backend with a batch API overrides this (one call per 100 jobs)."""
        return {r.job_id: self.poll(r) for r in records}

    def cleanup(self, record: JobRecord) -> None:  # noqa: B027 - optional: a local process leaves nothing
        """Remove what the backend keeps for a finished job (containers, scripts); default: nothing.
        Called once the end is recorded, again by ``collect`` and ``clean``: it must be idempotent."""

    # ---- the shared flow ------------------------------------------------------------------------
    def check(self, spec: JobSpec, runner: str) -> None:
        """Refuse, before anything is recorded or copied, a job this launcher cannot run."""
        from container_entry.api import RUNNERS

        if runner not in RUNNERS:
            raise BadInput(f"unknown runner {runner!r}", f"use one of: {', '.join(RUNNERS.names())}")
        if self.runners is not None and runner not in self.runners:
            raise BadInput(f"the {self.name} launcher starts the entry with the {'/'.join(self.runners)} runner, not {runner}",
                           f"use runner={self.runners[0]} ({self.name}+{self.runners[0]})")
        if self.starts_module_image and not spec.image:
            raise BadInput(f"{self.name}+{runner} starts the module's image, and the spec names none",
                           "set `image` to the module's image")

    def runs_in_image(self, runner: str) -> bool:
        """Whether the module runs in the spec's ``image`` on this launcher with ``runner``: a container runner,
        or a launcher that starts the image itself with the entry in it (docker, batch + process)."""
        return runner in ("docker", "apptainer")

    def entry_bundle(self, spec: JobSpec, runner: str) -> dict[str, str] | None:
        """The entry bundle a job of ``runner`` will mount (docs/entry-bundle.md), checked before anything is
        staged — it exists, has this gpstage's format, runs on the backend's machine — as the job record
        keeps it; None when the entry is not a mounted bundle. Default: None."""
        return None

    def submit(self, spec: JobSpec, progress: Callable[[DirSpec], Progress | None] | None = None) -> JobHandle:
        """Record, stage in and start ``spec``. ``progress``: as :func:`gpstage.stage.stage_in`'s, a
        :class:`~gpstage.sync.Progress` for each dir it syncs (None: no reports)."""
        from gpstage.stage import check_storage, stage_in

        check_storage(spec)
        runner = spec.runner or self.settings.runner or self.default_runner
        self.check(spec, runner)
        bundle = self.entry_bundle(spec, runner)
        self.store.create(JobRecord(job_id=spec.job_id, launcher=self.name, runner=runner, state=JobState.STAGING,
                                    settings=self.settings.model_dump(mode="json"), spec=spec, owner=Owner.current(),
                                    entry_bundle=bundle))
        try:
            transfers = stage_in(spec, progress=progress)
            record = self._update(spec.job_id, state=JobState.QUEUED,
                                  transfers=[{"phase": "in", **t.to_dict()} for t in transfers])
            if record.cancel_requested:  # cancelled from elsewhere while its dirs were staged
                self._update(spec.job_id, **self._final(record, BackendState(JobState.CANCELLED)), ended_at=utcnow())
                return JobHandle(spec.job_id, self)
            backend_id = self.start(record)
        except GpstageError as e:
            self._update(spec.job_id, state=JobState.ERROR, exit_code=EXIT_GPSTAGE_ERROR, reason=Reason.ERROR,
                         message=str(e), ended_at=utcnow())
            raise
        self._update(spec.job_id, backend_id=backend_id)
        return JobHandle(spec.job_id, self)

    def status(self, job_id: str) -> JobRecord:
        """The job's record, refreshed from the backend (and, once it ended, from the entry's status.json)."""
        return self.status_many([job_id])[0]

    def status_many(self, job_ids: list[str]) -> list[JobRecord]:
        """:meth:`status` for several jobs, asking the backend once (:meth:`poll_many`)."""
        records = [self._adopt_orphan(self.store.load(j)) for j in job_ids]
        live = [r for r in records if not r.state.terminal and r.backend_id is not None]
        seen = self.poll_many(live) if live else {}
        return [self._refresh(r, seen[r.job_id]) if r.job_id in seen else r for r in records]

    def _adopt_orphan(self, record: JobRecord) -> JobRecord:
        """A live job without a backend id whose submitter died: started after all (adopt its backend
        id), or never started (final: CANCELLED if that was asked, else ERROR with the reason)."""
        if record.state.terminal or record.backend_id is not None or record.owner is None or record.owner.alive():
            return record
        found = self.find(record)
        if found is not None:
            return self._update(record.job_id, backend_id=found)
        if record.cancel_requested:
            final = {"state": JobState.CANCELLED, "exit_code": EXIT_SIGNAL_BASE + SIGTERM, "reason": Reason.CANCELLED,
                     "message": "cancelled before it started"}
        else:
            final = {"state": JobState.ERROR, "exit_code": EXIT_GPSTAGE_ERROR, "reason": Reason.ERROR,
                     "message": f"the submitting process ({record.owner}) died while the job was "
                                f"{record.state.value}; nothing was started for it — submit it again"}
        return self._update(record.job_id, **final, ended_at=utcnow())

    def _refresh(self, record: JobRecord, seen: BackendState) -> JobRecord:
        job_id = record.job_id
        if not seen.state.terminal:
            if seen.state is not record.state:
                started = record.started_at or (utcnow() if seen.state is JobState.RUNNING else None)
                record = self._update(job_id, state=seen.state, started_at=started)
            return record
        record = self._update(job_id, **self._final(record, seen), ended_at=utcnow())
        self.cleanup(record)  # the backend's leftovers go as soon as the end is recorded
        return record

    def _final(self, record: JobRecord, seen: BackendState) -> dict[str, Any]:
        entry = read_entry_status(record.spec)
        if entry is not None and entry.state.terminal:
            message = entry.message
            if seen.exit_code is not None and entry.exit_code is not None and seen.exit_code != entry.exit_code:
                seen_codes = f"the backend reports exit code {seen.exit_code}, exit_code.txt {entry.exit_code}"
                message = "; ".join(filter(None, (message, seen_codes)))
            return {"state": entry.state, "exit_code": entry.exit_code, "reason": entry.reason, "message": message,
                    "failed_phase": entry.failed_phase, "module_exit_code": entry.module_exit_code,
                    "started_at": record.started_at or entry.started_at}  # a job too quick for any poll to see run
        if seen.timed_out:  # the backend's limit struck before the entry could record (GenePattern's GP-9100)
            return {"state": JobState.FAILED, "exit_code": EXIT_TIMEOUT, "reason": Reason.TIMEOUT,
                    "message": f"stopped by the backend's time limit: {seen.message or ''}".rstrip(": ")}
        if record.cancel_requested:
            return {"state": JobState.CANCELLED, "exit_code": EXIT_SIGNAL_BASE + SIGTERM, "reason": Reason.CANCELLED,
                    "message": "cancelled before the entry recorded an end"}
        why = seen.message or f"the backend reports exit code {seen.exit_code}"
        return {"state": JobState.ERROR, "exit_code": EXIT_GPSTAGE_ERROR, "reason": Reason.ERROR,
                "message": f"the entry ended without recording a status: {why}"}

    def wait(self, job_id: str, timeout: float | None = None) -> JobResult:
        """Block until the job ended, collect its outputs, return the result."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (record := self.status(job_id)).state.terminal:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(f"job {job_id} has not ended after {timeout:g} s", "wait again, or cancel it")
            self.pause(record, remaining)
        return self.collect(job_id)

    def pause(self, record: JobRecord, limit: float | None) -> None:
        """Between two polls while someone waits for ``record``: ``poll_interval`` (at most ``limit``).
        A backend that can be told of a job's end overrides this to return at once when it comes."""
        time.sleep(self.settings.poll_interval if limit is None else min(self.settings.poll_interval, limit))

    async def wait_async(self, job_id: str, timeout: float | None = None) -> JobResult:
        """:meth:`wait` as a coroutine (Jupyter's running loop): polls without blocking the loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (await aio.to_thread(self.status, job_id)).state.terminal:
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} has not ended after {timeout:g} s", "wait again, or cancel it")
            await aio.sleep(self.settings.poll_interval)
        return await aio.to_thread(self.collect, job_id)

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a live job and wait (up to ``cancel_timeout``) for it to record its end."""
        record = self.store.load(job_id)
        if record.state.terminal:
            return record
        record = self._update(job_id, cancel_requested=True)
        if record.backend_id is None:
            return record  # still staging in: submit sees the request and does not start it
        self.kill(record)
        deadline = time.monotonic() + self.settings.cancel_timeout
        while not (record := self.status(job_id)).state.terminal and time.monotonic() < deadline:
            time.sleep(min(self.settings.poll_interval, 0.2))
        return record

    def logs(self, job_id: str, stream: str = "stdout", follow: bool = False) -> Iterator[bytes]:
        """The job's ``stdout``, ``stderr`` or ``entry`` log; with ``follow``, new output until the job ends."""
        record = self.store.load(job_id)
        offset = 0
        while True:
            ended = self.status(job_id).state.terminal if follow else True
            data = read_log(record.spec, stream, self.shares_filesystem) or b""
            if len(data) > offset:
                yield data[offset:]
                offset = len(data)
            if ended:
                return
            time.sleep(self.settings.poll_interval)

    def collect(self, job_id: str) -> JobResult:
        """Stage the job's out dirs back to the server's paths (once) and describe the result."""
        from gpstage.stage import stage_out

        record = self.status(job_id)
        if record.state.terminal and not record.collected and record.backend_id is not None:  # it ran: bring it back
            with self.store.collecting(job_id):  # one collector at a time; a killed one is simply redone
                record = self.store.load(job_id)
                if not record.collected:
                    transfers = stage_out(record.spec)
                    record = self._update(job_id, collected=True, transfers=[
                        *record.transfers, *({"phase": "out", **t.to_dict()} for t in transfers)])
                    self.cleanup(record)  # again: a submitter killed right after recording the end left it undone
        return result_of(record)

    def clean(self, job_id: str) -> list[str]:
        """Remove a finished job: its record and scratch, and its own dirs on storage (never tasklib or
        libraries, which other jobs share). Returns the URLs removed."""
        record = self.status(job_id)
        if not record.state.terminal:
            raise GpstageError(f"job {job_id} is still {record.state.value}", "cancel it first")
        self.cleanup(record)
        removed = remove_job_dirs(record.spec)
        self.store.delete(job_id)
        return removed

    def _update(self, job_id: str, **fields: Any) -> JobRecord:
        def change(r: JobRecord) -> None:
            for k, v in fields.items():
                setattr(r, k, v)

        return self.store.update(job_id, change)


class JobHandle:
    """A submitted job: its id and its launcher. What ``submit`` and ``run(..., wait=False)`` return."""

    def __init__(self, job_id: str, launcher: Launcher) -> None:
        self.job_id = job_id
        self.launcher = launcher

    def status(self) -> JobRecord:
        return self.launcher.status(self.job_id)

    def wait(self, timeout: float | None = None) -> JobResult:
        return self.launcher.wait(self.job_id, timeout)

    async def wait_async(self, timeout: float | None = None) -> JobResult:
        return await self.launcher.wait_async(self.job_id, timeout)

    def __await__(self):  # type: ignore[no-untyped-def]
        return self.wait_async().__await__()

    def cancel(self) -> JobRecord:
        return self.launcher.cancel(self.job_id)

    def logs(self, stream: str = "stdout", follow: bool = False) -> str:
        return b"".join(self.launcher.logs(self.job_id, stream, follow)).decode(errors="replace")

    def collect(self) -> JobResult:
        return self.launcher.collect(self.job_id)

    def __repr__(self) -> str:
        return f"<JobHandle {self.job_id} on {self.launcher.name}: {self.launcher.store.load(self.job_id).state.value}>"
