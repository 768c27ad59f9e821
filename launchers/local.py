"""The ``local`` launcher — the embedded default: ``gpstage-entry`` as a process on this machine.

A submitted job goes into the state dir's queue; ONE dispatcher per state dir (launchers/local_queue.py,
started on demand, gone when idle, adopted by the next one after a crash) runs at most ``max_parallel``
entries, each in its own session, and records each exit code. A queued job costs a file, not an
interpreter. The entry gets the submitter's environment — the non-secret part in the job's
``entry-env.json``, the credentials as one 0600 file it reads in-process (docs/design.md §11).
``wait`` reacts to the entry's end at once (a pidfd), not on the next poll. With the ``process``
runner this needs nothing but Python and bash: a laptop is enough.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time

from pydantic import Field

from gpstage.credfile import gather, split, write
from gpstage.records import JobRecord
from gpstage.states import EXIT_SIGNAL_BASE, JobState
from launchers.base import BackendState, Launcher, LauncherSettings, entry_args
from launchers.entry_fork import entry_executable
from launchers.local_queue import (
    CANCEL_FILE,
    CREDENTIALS_FILE,
    ENV_FILE,
    claimed_file,
    enqueue,
    ensure_dispatcher,
    entry_alive,
    queued_file,
    read_backend,
    unqueue,
    write_backend,
)

CLAIM_WAIT_S = 5.0  # a cancel that finds its job claimed waits this long for the entry to start

__all__ = ["LocalLauncher", "LocalSettings", "entry_command"]
entry_command = entry_executable  # gpstage-entry beside this Python: the slurm launcher's default


class LocalSettings(LauncherSettings):
    max_parallel: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1,
                              description="jobs running at once on this machine; the rest wait QUEUED")
    poll_interval: float = Field(0.2, gt=0)
    log_push_interval: float | None = Field(None, ge=0, description="the entry's live log pushes (default: its own, 30 s)")
    kill_grace: float | None = Field(None, ge=0, description="the entry's TERM→KILL grace (default: its own, 10 s)")


class LocalLauncher(Launcher):
    name = "local"
    Settings = LocalSettings
    shares_filesystem = True

    @property
    def settings_(self) -> LocalSettings:
        assert isinstance(self.settings, LocalSettings)
        return self.settings

    def start(self, record: JobRecord) -> str:
        job_dir = self.store.job_dir(record.job_id)
        secrets, env = split(os.environ)
        for name, value in (("GPSTAGE_LOG_PUSH_INTERVAL", self.settings_.log_push_interval),
                            ("GPSTAGE_KILL_GRACE", self.settings_.kill_grace)):
            if value is not None:
                env[name] = str(value)
        (job_dir / ENV_FILE).write_text(json.dumps(env))
        doc = gather(os.environ)
        if doc:
            write(str(job_dir / CREDENTIALS_FILE), doc)
        write_backend(job_dir, phase="queued")
        enqueue(self.store.root, record.job_id, self.settings_.max_parallel, entry_args(record))
        ensure_dispatcher(self.store.root)
        return record.job_id

    def poll(self, record: JobRecord) -> BackendState:
        job_dir = self.store.job_dir(record.job_id)
        for _ in range(2):  # the dispatcher may move the job on between two reads
            backend = read_backend(job_dir)
            phase = backend.get("phase")
            if phase == "exited":
                code = backend["exit_code"]
                return BackendState(JobState.SUCCEEDED if code == 0 else JobState.FAILED, code, backend.get("error"))
            if phase == "running" and entry_alive(backend):
                return BackendState(JobState.RUNNING)
            if phase == "queued" and (queued_file(self.store.root, record.job_id)
                                      or claimed_file(self.store.root, record.job_id)):
                ensure_dispatcher(self.store.root)  # none runs after a crash: the next one adopts the queue
                return BackendState(JobState.QUEUED)
        if phase in ("running", "lost"):  # decided by the entry's own status.json when it recorded one
            return BackendState(JobState.ERROR, None, f"the entry (pid {backend.get('entry_pid')}) ended while no "
                                f"dispatcher watched it; see {job_dir / 'entry.log'}")
        return BackendState(JobState.ERROR, None, f"the job left the local queue without starting; see "
                            f"{self.store.root / 'local-dispatcher.log'}")

    def kill(self, record: JobRecord) -> None:
        job_dir = self.store.job_dir(record.job_id)
        (job_dir / CANCEL_FILE).touch()  # first: a dispatcher that claims it from now on does not start it
        if unqueue(self.store.root, record.job_id):  # never started: it ends here
            write_backend(job_dir, phase="exited", exit_code=EXIT_SIGNAL_BASE + signal.SIGTERM)
            return
        deadline = time.monotonic() + CLAIM_WAIT_S
        while read_backend(job_dir).get("phase") == "queued" and time.monotonic() < deadline:
            time.sleep(0.02)  # claimed: the dispatcher starts it (or sees the cancel request) in a moment
        backend = read_backend(job_dir)
        if backend.get("phase") == "running" and entry_alive(backend):
            with contextlib.suppress(ProcessLookupError):
                os.kill(backend["entry_pid"], signal.SIGTERM)  # the entry records CANCELLED and pushes its logs

    def find(self, record: JobRecord) -> str | None:
        """start() writes the job's account before it queues it: a submitter killed right after left a
        job that is queued, running or done all the same."""
        return record.job_id if read_backend(self.store.job_dir(record.job_id)) else None

    def cleanup(self, record: JobRecord) -> None:
        job_dir = self.store.job_dir(record.job_id)
        (job_dir / CREDENTIALS_FILE).unlink(missing_ok=True)
        (job_dir / ENV_FILE).unlink(missing_ok=True)

    def pause(self, record: JobRecord, limit: float | None) -> None:
        """Until the job's phase changes or ``limit`` (at most 5 s): while it is queued, its backend.json
        is re-read at 10 ms, backing off to ``poll_interval`` (a job that is started next is seen at
        once, and the caller's status call records it RUNNING); while its entry runs, a pidfd wakes us
        as it ends."""
        job_dir = self.store.job_dir(record.job_id)
        deadline = time.monotonic() + (5.0 if limit is None else min(5.0, limit))
        backend = read_backend(job_dir)
        if backend.get("phase") == "queued":
            step = 0.01
            while (backend := read_backend(job_dir)).get("phase") == "queued" and time.monotonic() + step <= deadline:
                time.sleep(step)
                step = min(step * 1.5, self.settings.poll_interval)
            return  # started (or ended): the next status call records it RUNNING before we sleep on it
        pid = backend.get("entry_pid")
        if backend.get("phase") != "running" or record.state is not JobState.RUNNING:
            return  # ended already, or started since the caller's status call: poll now, which records it
        if not isinstance(pid, int) or not hasattr(os, "pidfd_open"):  # no pidfd on this system: plain polling
            return super().pause(record, max(0.0, deadline - time.monotonic()))
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return  # already gone: poll again
        try:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)
        settle = time.monotonic() + 1.0  # the dispatcher records the exit code within a tick
        while time.monotonic() < settle:
            now = read_backend(job_dir)
            if now.get("phase") != "running" or entry_alive(now):
                return
            time.sleep(0.005)
