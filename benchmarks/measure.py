"""Run one command as a user would, and measure it: wall time, client CPU, peak RSS.

Why a helper (exec_rusage.py): ``os.wait4`` gives the CPU and peak RSS of a child together with every
descendant it waited for, so nothing polls while the tool runs — but a child of this (large) process
inherits its resident set as a floor for peak RSS. The helper is a tiny process that forks and execs
the tool and reports ``os.wait4`` for it. The helper runs in its own session, so a timeout or Ctrl-C
kills the helper and the tool's whole tree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

HELPER = Path(__file__).resolve().parent / "exec_rusage.py"


@dataclass
class Measurement:
    wall_s: float
    cpu_s: float
    rss_mib: float
    exit_code: int
    timed_out: bool


def _kill_tree(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_measured(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> Measurement:
    """Run ``cmd`` (argv[0] an absolute path) with stdout and stderr appended to ``log``; kill it after ``timeout`` s."""
    timed_out = threading.Event()
    lock, reaped = threading.Lock(), [False]
    result = log.with_name(f"{log.name}.{os.getpid()}.{threading.get_ident()}.rusage")
    result.unlink(missing_ok=True)
    with open(log, "ab") as out:
        out.write(("\n$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        proc = subprocess.Popen([sys.executable, "-I", "-S", str(HELPER), str(result), *cmd], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def on_timeout() -> None:
        with lock:  # never signal a pid that has already been reaped (it could be reused)
            if not reaped[0]:
                timed_out.set()
                _kill_tree(proc.pid)

    timer = threading.Timer(timeout, on_timeout)
    timer.start()
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # wait for the exit, but do not reap yet
        with lock:
            proc.wait()
            reaped[0] = True
    except BaseException:  # Ctrl-C or another exception: do not leave the client running
        if not reaped[0]:
            _kill_tree(proc.pid)
            proc.wait(timeout=30)
        raise
    finally:
        timer.cancel()
    try:
        code, wall, cpu, rss_kib = result.read_text().split()
        result.unlink()
    except (OSError, ValueError):  # the helper was killed (timeout) or could not start
        return Measurement(wall_s=timeout, cpu_s=0.0, rss_mib=0.0, exit_code=proc.returncode or -1, timed_out=timed_out.is_set())
    return Measurement(wall_s=float(wall), cpu_s=float(cpu), rss_mib=int(rss_kib) / 1024, exit_code=int(code),
                       timed_out=timed_out.is_set())


def run_quiet(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """Run a short helper command (a version query) and return its stdout, or "?" if it failed."""
    try:
        done = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (done.stdout or done.stderr).strip() or "?"


PROJECT_PACKAGES = ("gpstage", "launchers", "container_entry", "frontends")


def compile_project() -> None:
    """Write the bytecode of gpstage's own packages, as ``pip install`` does for an installed wheel. An
    editable checkout under ``PYTHONDONTWRITEBYTECODE=1`` (common in containers and CI) never writes it,
    and every start-up would then be timed with its modules compiled from source (~20-30 ms here)."""
    import compileall

    root = Path(__file__).resolve().parent.parent
    for package in PROJECT_PACKAGES:
        compileall.compile_dir(str(root / package), quiet=1)

