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
    fields = stat_fields(pid)
    return fields is None or fields[0] != "Z"


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (/proc/PID/stat field 22); None without /proc.
    Together with the pid it names one process: a new process given a reused pid starts later."""
    fields = stat_fields(pid)
    try:
        return int(fields[19]) if fields is not None else None
    except (ValueError, IndexError):
        return None


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (the state) on: ``[0]`` the state, ``[1]`` the parent's pid, ``[19]``
    the start time. The command name before them may hold spaces and parentheses, so the split starts
    after its last ``)``. None when the process is gone or there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
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
