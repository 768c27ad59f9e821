"""A spec's ``executors`` (a GA4GH TES task, docs/tes.md): commands run one after the other over the
same dirs, each in its own image — step 3 of the entry (container_entry/lifecycle.py) when the spec
has them, instead of ``bash exec.sh``.

:func:`executor_requests` makes one :class:`RunRequest` per executor: its image, its command as argv
exactly, its ``workdir`` (a container path; None: the image's), the job's environment + its own ``env``
(never a credential), its stdin/stdout/stderr at the paths on this side of its container paths
(``JobSpec.host_path``; a path in none of the job's dirs is refused at once, naming it), by default
``<metadata dir>/executor-<i>.stdout`` and ``.stderr``.

:class:`Sequence` runs them in order through the entry's supervision (one time limit for the whole
sequence; a signal the entry receives goes to the running executor and stops the sequence). The first
executor that ends non-zero stops it unless it has ``ignore_error``; its outcome is the job's. As each
ends, its record — index, image, start and end (ISO 8601, UTC), exit code, and the last 10 KiB of its
stdout and stderr — is handed to the entry, which writes ``status.json`` with it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from container_entry.record import now
from container_entry.runners import RunRequest
from container_entry.runners.base import tail
from container_entry.supervise import Outcome
from gpstage.errors import BadInput
from gpstage.spec import JobSpec
from gpstage.states import EXIT_SIGNAL_BASE

TAIL_BYTES = 10 * 1024  # of each output file, in status.json


def executor_requests(spec: JobSpec, env: dict[str, str], job_env: dict[str, str]) -> list[RunRequest]:
    """One request per executor of ``spec``; :class:`BadInput` for a path in none of the job's dirs."""
    requests = []
    for i, e in enumerate(spec.executors or ()):
        requests.append(RunRequest(
            argv=list(e.command), cwd=e.workdir, env={**env, **e.env}, job_env={**job_env, **e.env},
            stdout_path=_host_path(spec, i, "stdout", e.stdout), stderr_path=_host_path(spec, i, "stderr", e.stderr),
            spec=spec, image=e.image, stdin_path=e.stdin and _host_path(spec, i, "stdin", e.stdin), executor=i))
    return requests


def _host_path(spec: JobSpec, index: int, field: str, path: str | None) -> str:
    if path is None:
        return os.path.join(spec.metadata_dir, f"executor-{index}.{field}")
    host = spec.host_path(path)
    if host is None:
        raise BadInput(f"executors[{index}].{field} {path} is in none of the job's dirs",
                       "give a path under a dir's mount_at (its path when it has none)")
    return host


def executor_record(request: RunRequest, started: datetime, ended: datetime, status: int) -> dict[str, Any]:
    """What ``status.json`` says of an executor that ran; ``status`` as a runner reports it."""
    return {"index": request.executor, "image": request.image, "start_time": _iso(started), "end_time": _iso(ended),
            "exit_code": status if status >= 0 else EXIT_SIGNAL_BASE - status,
            "stdout": _tail(request.stdout_path), "stderr": _tail(request.stderr_path)}


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _tail(path: str) -> str:
    try:
        return tail(path, TAIL_BYTES)
    except OSError:
        return ""


class Sequence:
    """Runs ``requests`` (of ``spec.executors``, in order) with ``supervise(request, time limit left)``;
    ``pending_signal()`` is a signal the entry received between two executors; ``ended(record)`` is
    called as each ends. :meth:`run` returns the outcome that decides the job's state."""

    def __init__(self, spec: JobSpec, requests: list[RunRequest], supervise: Callable[[RunRequest, float | None], Outcome],
                 pending_signal: Callable[[], int | None], ended: Callable[[dict[str, Any]], None]) -> None:
        self.spec, self.requests, self.supervise = spec, requests, supervise
        self.pending_signal, self.ended = pending_signal, ended

    def run(self) -> Outcome:
        time_s = self.spec.resources.time_s
        deadline = time.monotonic() + time_s if time_s else None
        executors = self.spec.executors or []
        for request, executor in zip(self.requests, executors, strict=True):
            signum = self.pending_signal()
            if signum:
                return Outcome(-signum, cancelled_by=signum)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return Outcome(-signal.SIGTERM, timed_out=True)
            started = now()
            outcome = self.supervise(request, left)
            self.ended(executor_record(request, started, now(), outcome.status))
            if outcome.cancelled_by and outcome.status == 0 and request is not self.requests[-1]:
                return Outcome(-outcome.cancelled_by, cancelled_by=outcome.cancelled_by)  # the rest never runs
            if outcome.cancelled_by or outcome.timed_out or (outcome.status != 0 and not executor.ignore_error):
                return outcome
        return Outcome(0)
