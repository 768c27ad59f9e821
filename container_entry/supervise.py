"""Watching the running module: its time limit, forwarded signals, and live pushes of the logs.

The time limit is the entry's own (docs/design.md §10): TERM to the whole module, a grace period, then
KILL, recorded as 142. A signal the entry receives is forwarded to the module (the same grace and
KILL follow). While the module runs, a background thread pushes the metadata dir every
``interval`` seconds so that ``stdout.txt``/``stderr.txt`` can be followed remotely. Where a backend's
own cancel is a hard kill, a launcher asks for a cancel on storage instead; :class:`CancelWatch` sees it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from typing_extensions import Self

from container_entry.runners import ModuleRun
from gpstage.spec import JobSpec

POLL_S = 0.2  # how often the supervisor looks at the clock and the module


@dataclass
class Outcome:
    status: int  # the runner's status: exit code >= 0, or -N for signal N
    timed_out: bool = False
    cancelled_by: int | None = None  # the signal the entry received and forwarded, if any


class Supervisor:
    """Runs until the module ends; :meth:`forward` may be called from a signal handler at any time."""

    def __init__(self, run: ModuleRun, time_limit: float | None, kill_grace: float) -> None:
        self.run = run
        self.time_limit = time_limit
        self.kill_grace = kill_grace
        self.cancelled_by: int | None = None
        self._kill_at: float | None = None

    def forward(self, signum: int) -> None:
        self.cancelled_by = signum
        self.run.send_signal(signum)
        self._arm_kill()

    def _arm_kill(self) -> None:
        if self._kill_at is None:
            self._kill_at = time.monotonic() + self.kill_grace

    def wait(self) -> Outcome:
        deadline = time.monotonic() + self.time_limit if self.time_limit else None
        timed_out = False
        while True:
            status = self.run.wait(POLL_S)
            if status is not None:
                return Outcome(status, timed_out, self.cancelled_by)
            now = time.monotonic()
            if deadline is not None and now >= deadline and not timed_out:
                timed_out = True
                self.run.send_signal(signal.SIGTERM)
                self._arm_kill()
            if self._kill_at is not None and now >= self._kill_at:
                self.run.kill()
                self._kill_at = float("inf")  # once


class Periodic:
    """Calls :meth:`tick` every ``interval`` seconds in a daemon thread while the ``with`` block runs
    (``interval`` 0: never); :meth:`tick` returning False ends it early."""

    thread_name = "gpstage-periodic"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)

    def __enter__(self) -> Self:
        if self.interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.tick() is False:
                return

    def tick(self) -> bool | None:
        raise NotImplementedError


class LivePush(Periodic):
    """Calls ``push`` every ``interval`` seconds until stopped; failures are only logged."""

    thread_name = "gpstage-live-push"

    def __init__(self, push: Callable[[], None], interval: float, log: Callable[[str], None]) -> None:
        super().__init__(interval)
        self.push, self.log = push, log
        self.pushes = 0

    def tick(self) -> None:
        try:
            self.push()
            self.pushes += 1
        except Exception as err:  # noqa: BLE001 - a failed live push must not stop the job; the final push reports
            self.log(f"live push of the logs failed (will retry in {self.interval:g} s): {err}")


class CancelWatch(Periodic):
    """Looks every ``interval`` seconds for a cancel request on storage (``<metadata URL>/cancel.json``,
    written by a launcher whose backend would otherwise only SIGKILL the entry) and calls ``cancel``
    once when it finds one meant for this run. ``interval`` 0: off (no request is ever made)."""

    thread_name = "gpstage-cancel-watch"

    def __init__(self, spec: JobSpec, interval: float, cancel: Callable[[], None], log: Callable[[str], None],
                 env: Mapping[str, str] | None = None) -> None:
        super().__init__(interval)
        self.spec, self.cancel, self.log = spec, cancel, log
        self.env = os.environ if env is None else env

    def requested(self) -> bool:
        from gpstage.jobfiles import cancel_requested

        try:
            return cancel_requested(self.spec, self.env.get("AWS_BATCH_JOB_ID"))
        except Exception:  # noqa: BLE001 - storage unreachable: the next look will tell
            return False

    def tick(self) -> bool:
        if not self.requested():
            return True
        self.log("cancel requested on storage")
        self.cancel()
        return False
