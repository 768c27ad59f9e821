"""The local launcher's queue (launchers/local_queue.py): one dispatcher per state dir, however many jobs
wait; a dispatcher killed mid-run is replaced and its running entries adopted; a cancelled queued job
never starts. On ``nfs:///`` (nothing copied) with the process runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from examples.sample_job import expected_counts, lay_out_job
from gpstage.launching import get_launcher
from gpstage.procs import stat_fields
from gpstage.records import RecordStore
from gpstage.states import JobState

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("isolated_state")]


def processes(pattern: str) -> list[int]:
    done = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return [int(p) for p in done.stdout.split()]


def dispatchers_and_entries() -> tuple[list[int], list[int]]:
    """An entry is forked from the dispatcher, so both show the dispatcher's command line: a dispatcher
    is a match whose parent is not one, an entry a match whose parent is a dispatcher (an entry's own
    child between its fork and its exec is neither)."""
    pids = processes(f"launchers.local_queue {RecordStore().root}")
    parents = {p: int(fields[1]) for p in pids if (fields := stat_fields(p)) is not None}
    found = [p for p, parent in parents.items() if parent not in parents]
    return found, [p for p, parent in parents.items() if parent in found]


def dispatchers() -> list[int]:
    return dispatchers_and_entries()[0]


def test_many_queued_jobs_are_one_dispatcher_and_at_most_max_parallel_entries(tmp_path: Path) -> None:
    launcher = get_launcher("local", {"max_parallel": 2, "poll_interval": 0.1})
    specs = [lay_out_job(tmp_path / f"j{i}", "nfs:///", job_id=f"q{i}", sleep_s=0.5) for i in range(12)]
    handles = [launcher.submit(s) for s in specs]
    most_entries, most_dispatchers = 0, 0
    while not all(launcher.status(s.job_id).state.terminal for s in specs):
        found, entries = dispatchers_and_entries()
        most_entries, most_dispatchers = max(most_entries, len(entries)), max(most_dispatchers, len(found))
        time.sleep(0.05)
    assert 1 <= most_entries <= 2 and most_dispatchers == 1
    assert not processes(f"launchers.local {RecordStore().root}")  # no per-job worker interpreters
    results = [h.wait(timeout=60) for h in handles]
    assert all(r.ok for r in results)
    assert all(Path(s.workdir, "counts.txt").read_text() == expected_counts() for s in specs)
    deadline = time.monotonic() + 10
    while dispatchers() and time.monotonic() < deadline:  # idle: it goes
        time.sleep(0.1)
    assert not dispatchers()


def test_a_forked_entry_has_the_jobs_environment_and_nothing_of_the_dispatchers(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The second job is forked from a dispatcher started for the first, in another environment: it sees
    its own submitter's variables only (TMPDIR included: the standard library's cache of it is reset),
    runs as ``gpstage-entry`` in its own session, holds no descriptor of the dispatcher's (the lock
    would keep later dispatchers from starting), and its exit handlers run (the credentials' private dir
    is gone)."""
    launcher = get_launcher("local", {"max_parallel": 2, "poll_interval": 0.1})
    monkeypatch.setenv("GPSTAGE_TEST_ONLY_FIRST", "1")
    monkeypatch.setenv("GPSTAGE_TEST_WHICH", "first")
    first = launcher.submit(lay_out_job(tmp_path / "a", "nfs:///", job_id="first", sleep_s=2))
    monkeypatch.delenv("GPSTAGE_TEST_ONLY_FIRST")
    monkeypatch.setenv("GPSTAGE_TEST_WHICH", "second")
    key = tmp_path / "key.json"
    key.write_text('{"type": "not-a-real-key"}')
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))  # its content goes to a private dir of the entry
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # ...in the job's TMPDIR, not the dispatcher's
    (tmp_path / "tmp").mkdir()
    spec = lay_out_job(tmp_path / "b", "nfs:///", job_id="second")
    probe = Path(spec.workdir)
    Path(spec.metadata_dir, "exec.sh").write_text(
        f"env > {probe}/env.txt\ncat /proc/$PPID/comm > {probe}/comm.txt\nls -l /proc/$PPID/fd > {probe}/fds.txt\n"
        f"ps -o sid= -p $PPID > {probe}/sid.txt\necho $PPID > {probe}/pid.txt\nls $TMPDIR > {probe}/tmp.txt\n")
    second = launcher.submit(spec)
    assert second.wait(timeout=60).ok and first.wait(timeout=60).ok
    env = dict(line.split("=", 1) for line in (probe / "env.txt").read_text().splitlines() if "=" in line)
    assert env["GPSTAGE_TEST_WHICH"] == "second" and "GPSTAGE_TEST_ONLY_FIRST" not in env
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env  # the entry's own, never a child's
    assert (probe / "comm.txt").read_text().strip() == "gpstage-entry"
    assert "local-dispatcher.lock" not in (probe / "fds.txt").read_text()
    assert (probe / "sid.txt").read_text().strip() == (probe / "pid.txt").read_text().strip()  # its own session
    assert (probe / "tmp.txt").read_text().startswith("gpstage-credentials-")  # while it ran...
    assert not list((tmp_path / "tmp").iterdir())  # ...and removed at its end


def test_a_job_with_other_python_variables_gets_an_interpreter_of_its_own(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """PYTHONPATH (where plugins are found) and the other PYTHON* variables act at an interpreter's start
    only: a job whose differ from the dispatcher's is exec'd, one like it forked."""
    launcher = get_launcher("local", {"max_parallel": 2, "poll_interval": 0.1})
    handles, workdirs = [], []
    for name, extra in (("alike", None), ("other", str(tmp_path / "plugins"))):
        if extra:
            monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (extra, os.environ.get("PYTHONPATH")))))
        spec = lay_out_job(tmp_path / name, "nfs:///", job_id=name)
        Path(spec.metadata_dir, "exec.sh").write_text(f"tr '\\0' ' ' < /proc/$PPID/cmdline > {spec.workdir}/cmdline.txt\n"
                                                      + ("sleep 2\n" if not extra else ""))
        handles.append(launcher.submit(spec))  # the first starts the dispatcher: its variables are the first's
        workdirs.append(Path(spec.workdir))
    assert all(h.wait(timeout=60).ok for h in handles)
    alike, other = ((w / "cmdline.txt").read_text() for w in workdirs)
    assert "launchers.local_queue" in alike and "gpstage-entry --spec" not in alike
    assert "gpstage-entry --spec" in other


def test_a_killed_dispatcher_is_replaced_and_its_running_entry_adopted(tmp_path: Path) -> None:
    launcher = get_launcher("local", {"max_parallel": 1, "poll_interval": 0.1})
    specs = [lay_out_job(tmp_path / f"j{i}", "nfs:///", job_id=f"k{i}", sleep_s=1.5) for i in range(3)]
    for s in specs:
        launcher.submit(s)
    deadline = time.monotonic() + 30
    while launcher.status("k0").state is not JobState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    [pid] = dispatchers()
    os.kill(pid, signal.SIGKILL)  # no cleanup runs
    results = [launcher.wait(s.job_id, timeout=90) for s in specs]  # a status call starts the next dispatcher
    assert [(r.state, r.exit_code) for r in results] == [(JobState.SUCCEEDED, 0)] * 3, [r.message for r in results]
    assert dispatchers() != [pid]


def test_a_cancelled_queued_job_never_starts(tmp_path: Path) -> None:
    launcher = get_launcher("local", {"max_parallel": 1, "poll_interval": 0.1})
    busy = lay_out_job(tmp_path / "busy", "nfs:///", job_id="busy", sleep_s=3)
    waiting = lay_out_job(tmp_path / "waiting", "nfs:///", job_id="waiting")
    launcher.submit(busy)
    launcher.submit(waiting)
    record = launcher.cancel("waiting")
    assert (record.state, record.exit_code) == (JobState.CANCELLED, 143)
    assert launcher.wait("busy", timeout=60).ok
    assert not Path(waiting.workdir, "counts.txt").exists()  # it never ran
    assert not (RecordStore().job_dir("waiting") / "entry.log").exists()


def test_a_job_cancelled_as_its_entry_starts_is_recorded_by_the_entry(tmp_path: Path) -> None:
    """The cancel comes while the entry's interpreter is still importing: the signal waits for its
    handlers (the dispatcher starts it with SIGTERM blocked), so the entry, not a bare signal death,
    records the end and GenePattern's exit_code.txt is there."""
    launcher = get_launcher("local", {"max_parallel": 1, "poll_interval": 0.1})
    spec = lay_out_job(tmp_path / "j", "nfs:///", job_id="early", sleep_s=30)
    launcher.submit(spec)
    backend = RecordStore().job_dir("early") / "backend.json"
    deadline = time.monotonic() + 30
    while '"running"' not in (backend.read_text() if backend.exists() else ""):
        assert time.monotonic() < deadline
        time.sleep(0.002)
    launcher.cancel("early")
    result = launcher.wait("early", timeout=60)
    assert (result.state, result.exit_code) == (JobState.CANCELLED, 143), result.message
    assert json.loads(Path(spec.metadata_dir, "exit_code.txt").read_text()) == {"exit_code": 143}


def test_a_job_cancelled_after_its_claim_is_not_started(tmp_path: Path) -> None:
    """The dispatcher claimed the job (the cancel could not unqueue it) but had not started it yet — or
    died, and the next one adopted the queue: the cancel's marker keeps the entry from ever starting."""
    from launchers.local_queue import CANCEL_FILE, ENV_FILE, Dispatcher, read_backend

    root = tmp_path / "state"
    job_dir = root / "jobs" / "late"
    job_dir.mkdir(parents=True)
    (job_dir / ENV_FILE).write_text("{}")
    (job_dir / CANCEL_FILE).touch()
    claimed = root / "local-queue" / "claimed" / "00000000000000000001-late.json"
    claimed.parent.mkdir(parents=True)
    claimed.write_text(json.dumps({"job_id": "late", "max_parallel": 1, "entry_args": ["--spec", "/no/such/spec.json"]}))
    dispatcher = Dispatcher(root)
    assert dispatcher._start(claimed) is False
    assert read_backend(job_dir) == {"phase": "exited", "exit_code": 143}
    assert not claimed.exists() and not dispatcher.children and not (job_dir / "entry.log").exists()


def test_a_submit_wakes_the_idle_dispatcher_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job queued while the dispatcher sleeps is started when it is queued, not at the next look: the
    submit writes a byte into the dispatcher's FIFO, which its pause waits on. With a 60 s tick here, only
    the wake can end the pause. A submit with no dispatcher reading (no FIFO yet, or nobody has it open)
    neither blocks nor fails."""
    import select
    import threading

    import launchers.local_queue as lq

    root = tmp_path / "state"
    root.mkdir()
    lq.enqueue(root, "before", 1, ["--spec", "/no/such/spec.json"])  # no FIFO at all
    os.close(lq.Dispatcher(root).wake_fd)  # made, then nobody reads it
    lq.enqueue(root, "unread", 1, ["--spec", "/no/such/spec.json"])
    monkeypatch.setattr(lq, "TICK_S", 60.0)
    dispatcher = lq.Dispatcher(root)
    submit = threading.Timer(0.3, lq.enqueue, (root, "woken", 1, ["--spec", "/no/such/spec.json"]))
    submit.start()
    t0 = time.monotonic()
    dispatcher._pause()
    submit.join()
    assert time.monotonic() - t0 < 30 and lq.queued_file(root, "woken")
    assert not select.select([dispatcher.wake_fd], [], [], 0)[0]  # drained: the next pause sleeps again
    assert lq.queued_file(root, "before") and lq.queued_file(root, "unread")
    os.close(dispatcher.wake_fd)
