"""The local launcher's queue and its ONE dispatcher per state dir (``python -m launchers.local_queue ROOT``).

A submitted job is a file in ``ROOT/local-queue/`` (named by its submit time, so the oldest runs first)
and its account in ``ROOT/jobs/<id>/backend.json``: ``{"phase": queued|running|exited|lost, …}``. The
dispatcher claims a file by renaming it into ``claimed/`` (atomic: a cancel that unlinks the queued file
and the dispatcher cannot both win), starts ``gpstage-entry`` in its own session with the job's
environment — forked from the dispatcher, which imported the entry's code once (launchers/entry_fork.py)
— keeps at most ``max_parallel`` entries running, and writes each exit code when it reaps the entry.
A queued job costs a file, not an interpreter; a byte in the ``local-dispatcher.wake`` FIFO tells the
dispatcher at once.

It is started on demand by a submit or a status call that finds queued work and no dispatcher (an
exclusive ``flock`` on ``ROOT/local-dispatcher.lock`` says one runs), and it exits when idle. Crash-safe:
entries run in their own sessions and outlive a dead dispatcher; the next one adopts the queue and
counts the entries still running against ``max_parallel``; an entry that ended while no dispatcher
watched is marked ``lost`` and its job is decided by the entry's own ``status.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import stat
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from gpstage.exitcodes import EXIT_GPSTAGE_ERROR, EXIT_SIGNAL_BASE
from gpstage.procs import process_alive, start_ticks, this_host
from launchers.entry_fork import fork_entry, warm

QUEUE_DIR = "local-queue"
LOCK_FILE = "local-dispatcher.lock"
LOG_FILE = "local-dispatcher.log"
BACKEND_FILE = "backend.json"  # per job: the dispatcher's account of it
ENV_FILE = "entry-env.json"  # per job: the submitter's environment without credentials
CREDENTIALS_FILE = "credentials.json"  # per job, 0600: the submitter's credentials (docs/design.md §11)
CANCEL_FILE = "cancel-requested"  # per job: written by a cancel before anything else; a queued job never starts
WAKE_FIFO = "local-dispatcher.wake"  # a byte written here by a submit wakes the dispatcher before its next tick
TICK_S = 0.05  # how often the dispatcher looks for new work and ended entries
IDLE_EXIT_S = 2.0  # an idle dispatcher exits after this long
ENTRY_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # held until the entry handles them


# ---- the job's account ------------------------------------------------------------------------
def read_backend(job_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((job_dir / BACKEND_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def write_backend(job_dir: Path, **values: Any) -> None:
    tmp = job_dir / f".{BACKEND_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(values))
    os.replace(tmp, job_dir / BACKEND_FILE)


def entry_alive(backend: dict[str, Any]) -> bool:
    """The entry a ``running`` account names still runs (pid, host and start time: a reused pid is not it)."""
    pid = backend.get("entry_pid")
    return isinstance(pid, int) and process_alive(pid, backend.get("host") or this_host(), backend.get("entry_started"))


# ---- the queue --------------------------------------------------------------------------------
def enqueue(root: Path, job_id: str, max_parallel: int, entry_args: list[str]) -> None:
    """Queue ``job_id``; ``entry_args`` are the entry's arguments, decided by the submitter so that the
    dispatcher reads no job record (it starts fast: docs/design.md §19)."""
    queue = root / QUEUE_DIR
    (queue / "claimed").mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{job_id}.json"
    tmp = queue / f".{name}.tmp"
    tmp.write_text(json.dumps({"job_id": job_id, "max_parallel": max_parallel, "entry_args": entry_args}))
    os.replace(tmp, queue / name)
    wake(root)


def wake(root: Path) -> None:
    """Tell a running dispatcher that a job was queued, so that it starts it now, not at its next tick.
    Nothing happens when none runs (no reader: the open fails) or when it was woken already (the pipe is full)."""
    try:
        fd = os.open(root / WAKE_FIFO, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, b"\0")
    except OSError:
        pass
    finally:
        os.close(fd)


def open_wake_fifo(root: Path) -> int | None:
    """The dispatcher's end of ``WAKE_FIFO``, made if missing; None where a FIFO cannot be made (then ticks
    alone). Opened read-write, so it never reads end-of-file between two submits."""
    path = root / WAKE_FIFO
    with contextlib.suppress(OSError):  # made by an earlier dispatcher, or not possible here
        os.mkfifo(path, 0o600)
    try:
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            return None
        return os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        return None


def queued_file(root: Path, job_id: str) -> Path | None:
    """The job's file in the queue (not yet claimed), if any."""
    return next(iter(sorted((root / QUEUE_DIR).glob(f"*-{job_id}.json"))), None)


def claimed_file(root: Path, job_id: str) -> Path | None:
    return next(iter(sorted((root / QUEUE_DIR / "claimed").glob(f"*-{job_id}.json"))), None)


def unqueue(root: Path, job_id: str) -> bool:
    """Take a job out of the queue before the dispatcher claims it; False when it was claimed already."""
    path = queued_file(root, job_id)
    if path is None:
        return False
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def prestart() -> None:
    """Start the state dir's dispatcher now, before the job is read: ``gpstage run`` calls this first, so
    that the dispatcher imports the entry's code (~0.2 s) while the command imports and validates the
    spec, on another core (docs/design.md §16). Unused, it exits when idle. A state dir that cannot be
    written is reported by the submit that follows, not here."""
    from gpstage.statedir import state_dir

    with contextlib.suppress(OSError):
        ensure_dispatcher(state_dir())


def ensure_dispatcher(root: Path) -> None:
    """Start a dispatcher for ``root`` unless one runs (it holds the lock). Cheap: one ``flock`` attempt.
    The lock is taken HERE and handed to the new process (the same open file), so no second dispatcher
    starts in the moment before the first one runs."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # one runs
        from gpstage.credfile import split

        with open(root / LOG_FILE, "ab") as log:  # no credential in its environment: each job brings its own
            subprocess.Popen([sys.executable, "-m", "launchers.local_queue", str(root), str(lock.fileno())],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                             pass_fds=(lock.fileno(),), env=split(os.environ)[1])


# ---- the dispatcher ---------------------------------------------------------------------------
class Dispatcher:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.queue = root / QUEUE_DIR
        self.wake_fd = open_wake_fifo(root)
        self.children: dict[str, tuple[int, Path, int | None]] = {}  # job id -> (entry pid, claimed file, pidfd)
        self.limit = 1

    def run(self, lock: Any) -> int:
        idle_since = time.monotonic()
        while True:
            self._reap()
            adopted = self._adopted()
            self._start_what_fits(len(self.children) + adopted)
            if self.children or adopted or self._waiting():
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > IDLE_EXIT_S:
                fcntl.flock(lock, fcntl.LOCK_UN)  # then look once more: a submit may have queued meanwhile
                if not self._waiting():
                    return 0
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return 0  # that submit started another dispatcher
            self._pause()

    def _pause(self) -> None:
        """A tick, cut short when an entry ends (its pidfd: its exit code is recorded at once, and a
        ``wait`` on it returns without waiting for the next tick) or when a submit wakes us (the FIFO)."""
        fds = [fd for _, _, fd in self.children.values() if fd is not None]
        if self.wake_fd is not None:
            fds.append(self.wake_fd)
        if not fds:
            time.sleep(TICK_S)
            return
        ready, _, _ = select.select(fds, [], [], TICK_S)
        if self.wake_fd in ready:
            with contextlib.suppress(OSError):
                while os.read(self.wake_fd, 4096):  # drained: each submit's byte has done its work
                    pass

    def _waiting(self) -> list[Path]:
        return sorted(p for p in self.queue.glob("*.json"))

    def _adopted(self) -> int:
        """Claimed jobs of an earlier dispatcher: still running (they count), or ended unseen (``lost``)."""
        count = 0
        for claimed in (self.queue / "claimed").glob("*.json"):
            job_id = claimed.name.split("-", 1)[1][: -len(".json")]
            if job_id in self.children:
                continue
            job_dir = self.root / "jobs" / job_id
            backend = read_backend(job_dir)
            if backend.get("phase") == "running" and entry_alive(backend):
                count += 1
                continue
            if backend.get("phase") == "queued":  # claimed, never started: back in the queue, at its place
                with contextlib.suppress(FileNotFoundError):
                    claimed.rename(self.queue / claimed.name)
                continue
            if backend.get("phase") == "running" and job_dir.is_dir():
                write_backend(job_dir, **{**backend, "phase": "lost"})
            claimed.unlink(missing_ok=True)
        return count

    def _start_what_fits(self, running: int) -> None:
        for path in self._waiting():
            try:
                self.limit = int(json.loads(path.read_text()).get("max_parallel") or 1)
            except (OSError, ValueError):
                pass
            if running >= self.limit:
                return
            target = self.queue / "claimed" / path.name
            try:
                path.rename(target)  # the claim: a cancel that unlinked it first wins
            except FileNotFoundError:
                continue
            if self._start(target):
                running += 1

    def _start(self, claimed: Path) -> bool:
        """Start the claimed job's entry, unless a cancel came first (its marker file): a cancel that
        comes later waits for the entry to run and signals it, and the entry records the cancel."""
        from gpstage.credfile import ENV_NAME

        job_id = claimed.name.split("-", 1)[1][: -len(".json")]
        job_dir = self.root / "jobs" / job_id
        try:
            args = json.loads(claimed.read_text())["entry_args"]
            env = json.loads((job_dir / ENV_FILE).read_text())
        except (OSError, ValueError, KeyError) as e:
            if job_dir.is_dir():  # a job cleaned away meanwhile has nowhere to be told
                write_backend(job_dir, phase="exited", exit_code=EXIT_GPSTAGE_ERROR, error=f"cannot start: {e!r}")
            claimed.unlink(missing_ok=True)
            return False
        if (job_dir / CANCEL_FILE).exists():  # cancelled while it waited
            write_backend(job_dir, phase="exited", exit_code=EXIT_SIGNAL_BASE + signal.SIGTERM)
            claimed.unlink(missing_ok=True)
            return False
        if (job_dir / CREDENTIALS_FILE).exists():
            env[ENV_NAME] = str(job_dir / CREDENTIALS_FILE)
        with open(job_dir / "entry.log", "ab") as log:
            # The entry starts with SIGTERM & co. blocked and unblocks them once its handlers are set: a
            # cancel that comes between its start and then is held, not fatal to an entry that records nothing.
            held = signal.pthread_sigmask(signal.SIG_BLOCK, ENTRY_SIGNALS)
            try:
                pid = fork_entry(args, env, log.fileno(), ENTRY_SIGNALS)
            except OSError as e:
                write_backend(job_dir, phase="exited", exit_code=EXIT_GPSTAGE_ERROR, error=f"cannot start the entry: {e}")
                claimed.unlink(missing_ok=True)
                return False
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
        write_backend(job_dir, phase="running", entry_pid=pid, entry_started=start_ticks(pid), host=this_host())
        self.children[job_id] = (pid, claimed, _pidfd(pid))
        return True

    def _reap(self) -> None:
        for job_id, (pid, claimed, fd) in list(self.children.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done:
                continue
            code = os.waitstatus_to_exitcode(status)
            job_dir = self.root / "jobs" / job_id
            backend = read_backend(job_dir)
            write_backend(job_dir, **{**backend, "phase": "exited",
                                      "exit_code": code if code >= 0 else EXIT_SIGNAL_BASE - code})
            claimed.unlink(missing_ok=True)
            if fd is not None:
                os.close(fd)
            del self.children[job_id]


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` ends (Linux 5.3+), or None: then ticks alone."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def main(root: Path, lock_fd: int | None = None) -> int:
    """Run the dispatcher; ``lock_fd``: the lock, already taken by the process that started this one."""
    root.mkdir(parents=True, exist_ok=True)
    (root / QUEUE_DIR / "claimed").mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a") if lock_fd is None else os.fdopen(lock_fd, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a no-op on the handed-over lock
        except BlockingIOError:
            return 0  # another dispatcher runs
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # the entries live on; the next dispatcher adopts
            signal.signal(sig, lambda *_: sys.exit(0))
        try:
            warm()  # before the first fork: every entry then starts without importing its code
        except Exception:  # noqa: BLE001 - each forked entry imports it again and reports why in its entry.log
            traceback.print_exc()
        with contextlib.suppress(SystemExit):
            return Dispatcher(root).run(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None))
