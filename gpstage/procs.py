"""Is a process still running? One answer for stale temp files, local job workers, services, and the
process that submitted a job (known by pid, host and start time: a pid alone may be reused)."""

from __future__ import annotations

import os
import socket


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped: PID 1 in a container may never
    reap it) counts as ended. Without /proc (macOS) ``kill(pid, 0)`` decides alone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (/proc/PID/stat field 22); None without /proc.
    Together with the pid it names one process: a new process given a reused pid starts later."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def this_host() -> str:
    return socket.gethostname()


def process_alive(pid: int, host: str, started: int | None) -> bool:
    """Whether the process ``pid`` that started at ``started`` on ``host`` still runs. A process on
    another host cannot be seen from here: it counts as alive (whoever shares the state dir from that
    host can tell)."""
    if host != this_host():
        return True
    if not pid_alive(pid):
        return False
    return started is None or start_ticks(pid) in (None, started)
