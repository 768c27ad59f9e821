"""The ``local`` launcher — the embedded default: ``gpstage-entry`` as a process on this machine.

Each job gets a small background worker (``python -m launchers.local JOB_ID``, its own session, so it
outlives the submitting process): it waits QUEUED for one of ``max_parallel`` slots — lock files that
the kernel releases when a worker dies, so no crash leaks a slot — then runs the entry, forwarding a
SIGTERM to it, and writes the entry's exit code to its ``backend.json``. With the ``process`` runner
this needs nothing but Python and bash: a laptop is enough.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from gpstage.errors import GpstageError
from gpstage.procs import process_alive, start_ticks, this_host
from gpstage.records import JobRecord, RecordStore
from gpstage.states import EXIT_SIGNAL_BASE, JobState
from launchers.base import BackendState, Launcher, LauncherSettings, entry_args

# the worker's own account: {"phase": queued|running|exited, "pid", "host", "started", "exit_code"}
BACKEND_FILE = "backend.json"
SLOT_POLL_S = 0.2


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

    def start(self, record: JobRecord) -> str:
        job_dir = self.store.job_dir(record.job_id)
        with open(job_dir / "worker.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "launchers.local", record.job_id, str(self.store.root)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return str(proc.pid)

    def poll(self, record: JobRecord) -> BackendState:
        job_dir = self.store.job_dir(record.job_id)
        backend = _read_backend(job_dir)
        if backend.get("phase") == "exited":
            return BackendState(JobState.SUCCEEDED if backend["exit_code"] == 0 else JobState.FAILED, backend["exit_code"])
        if record.backend_id and _worker_alive(int(record.backend_id), backend):
            return BackendState(JobState.RUNNING if backend.get("phase") == "running" else JobState.QUEUED)
        # The worker may have written "exited" between the two reads.
        if _read_backend(job_dir).get("phase") == "exited":
            return self.poll(record)
        return BackendState(JobState.ERROR, None, f"the local worker (pid {record.backend_id}) died; see "
                            f"{job_dir / 'worker.log'}")

    def kill(self, record: JobRecord) -> None:
        if record.backend_id and _worker_alive(int(record.backend_id), _read_backend(self.store.job_dir(record.job_id))):
            os.kill(int(record.backend_id), signal.SIGTERM)  # the worker forwards it to the entry

    def find(self, record: JobRecord) -> str | None:
        """The worker writes its pid before anything else: a submitter killed right after starting it
        left a worker that is running the job (or has run it) all the same."""
        backend = _read_backend(self.store.job_dir(record.job_id))
        pid = backend.get("pid")
        if isinstance(pid, int) and (backend.get("phase") == "exited" or _worker_alive(pid, backend)):
            return str(pid)
        return None


def _worker_alive(pid: int, backend: dict[str, Any]) -> bool:
    """The worker ``pid`` runs — the same process that wrote ``backend`` (pid and start time), when it
    has written it yet; a pid alone may have been reused."""
    if backend.get("pid") == pid:
        return process_alive(pid, backend.get("host") or this_host(), backend.get("started"))
    return process_alive(pid, this_host(), None)


def _read_backend(job_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((job_dir / BACKEND_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _write_backend(job_dir: Path, **values: Any) -> None:
    tmp = job_dir / f".{BACKEND_FILE}.tmp"
    me = {"pid": os.getpid(), "host": this_host(), "started": start_ticks(os.getpid())}
    tmp.write_text(json.dumps({**me, **values}))
    os.replace(tmp, job_dir / BACKEND_FILE)


# ---- the worker -------------------------------------------------------------------------------
class _Stop(Exception):
    pass


def _take_slot(slots_dir: Path, count: int) -> Any:
    """Block until one of ``count`` slot locks is ours; the open file holds it until the process ends."""
    slots_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for i in range(count):
            f = open(slots_dir / f"slot-{i}", "a")  # noqa: SIM115 - held open: the lock lives with it
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return f
            except BlockingIOError:
                f.close()
        time.sleep(SLOT_POLL_S)


def entry_command() -> str:
    beside = Path(sys.executable).parent / "gpstage-entry"
    return str(beside) if beside.exists() else "gpstage-entry"


def work(job_id: str, root: Path) -> int:
    """Run one job: wait for a slot, run the entry, record its exit code. The worker's exit code is the entry's."""
    store = RecordStore(root)
    record = store.load(job_id)
    if record.state.terminal:  # declared over before it began (its submitter died before recording it)
        return 0
    settings = LocalSettings.model_validate(record.settings)
    job_dir = store.job_dir(job_id)
    entry: subprocess.Popen[bytes] | None = None

    def on_term(signum: int, _frame: object) -> None:
        if entry is None:
            raise _Stop()
        entry.send_signal(signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        _write_backend(job_dir, phase="queued")
        slot = _take_slot(root / "local-slots", settings.max_parallel)
        env = dict(os.environ)
        for name, value in (("GPSTAGE_LOG_PUSH_INTERVAL", settings.log_push_interval),
                            ("GPSTAGE_KILL_GRACE", settings.kill_grace)):
            if value is not None:
                env[name] = str(value)
        with open(job_dir / "entry.log", "ab") as log:
            entry = subprocess.Popen([entry_command(), *entry_args(record)], env=env,
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        _write_backend(job_dir, phase="running", entry_pid=entry.pid)
        code = entry.wait()
        slot.close()
    except _Stop:
        code = EXIT_SIGNAL_BASE + signal.SIGTERM
    except (GpstageError, OSError) as e:
        print(f"gpstage local worker: {e}", file=sys.stderr)
        code = 125
    _write_backend(job_dir, phase="exited", exit_code=code if code >= 0 else EXIT_SIGNAL_BASE - code)
    return code


if __name__ == "__main__":
    sys.exit(work(sys.argv[1], Path(sys.argv[2])))
