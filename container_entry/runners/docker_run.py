"""A started container of the docker runner (:mod:`container_entry.runners.docker`): waited for, signalled,
removed.

:class:`DockerRun` is exec.sh's: bash in the container writes the logs, and the attached stdin is the
module's lifeline. :class:`AttachedRun` is an executor's (docs/tes.md): its image needs no shell, so the
ENTRY moves the bytes over the container's attach stream, opened before the container starts (nothing
is missed, whatever the daemon's log driver): one thread writes the demultiplexed stdout/stderr frames to
their files as they come, another feeds the stdin file and then half-closes the stream (the program sees
EOF; ``StdinOnce``). :meth:`AttachedRun.wait` returns only once every byte of output is written. There
is no watcher in the container: a SIGKILLed entry closes the stream (a program reading stdin sees EOF)
but does not stop the container, which keeps its job label (``org.gpstage.job-id``).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from typing import Any

from container_entry.runners.base import ModuleRun, Streams

DRAIN_S = 30.0  # after the container ended: how long its last output may take to arrive
CHUNK = 1 << 16


class DockerRun(ModuleRun):
    def __init__(self, container: Any, stdin: Any = None) -> None:
        self.container = container
        self.stdin = stdin  # the attached stdin: closing it (or dying) stops the module

    def wait(self, timeout: float | None) -> int | None:
        try:
            result = self.container.wait(timeout=timeout)
        except Exception:  # noqa: BLE001 - the SDK's read timeout: still running
            return None
        self.container.reload()
        if self.container.attrs.get("State", {}).get("OOMKilled"):
            return -signal.SIGKILL  # the kernel killed it for its memory limit
        return int(result.get("StatusCode", 125))

    def send_signal(self, sig: int) -> None:
        try:
            self.container.kill(signal=int(sig))
        except Exception:  # noqa: BLE001, S110 - already ended: a no-op, as the interface says
            pass

    def cleanup(self) -> None:
        try:
            self.container.remove(force=True)
        except Exception:  # noqa: BLE001, S110 - already gone
            pass
        close_socket(self.stdin)
        self.stdin = None


class AttachedRun(DockerRun):
    """An executor's container: ``attached`` is its attach stream (stdout, stderr, and stdin when
    ``streams.stdin``), opened before the container was started, which :meth:`begin` does."""

    def __init__(self, container: Any, attached: Any, streams: Streams) -> None:
        super().__init__(container)
        self.attached, self.streams = attached, streams
        self.threads = [threading.Thread(target=self._pump, name="gpstage-executor-output", daemon=True)]
        if streams.stdin is not None:
            self.threads.append(threading.Thread(target=self._feed, name="gpstage-executor-stdin", daemon=True))

    def begin(self) -> AttachedRun:
        self.container.start()
        for t in self.threads:
            t.start()
        return self

    def wait(self, timeout: float | None) -> int | None:
        status = super().wait(timeout)
        if status is not None:
            self.threads[0].join(DRAIN_S)
        return status

    def cleanup(self) -> None:
        super().cleanup()
        with contextlib.suppress(OSError, ValueError):  # wakes a thread still blocked on it
            getattr(self.attached, "_sock", self.attached).shutdown(socket.SHUT_RDWR)
        close_socket(self.attached)
        for t in self.threads:
            if t.is_alive():
                t.join(DRAIN_S)
        self.streams.close()

    def _pump(self) -> None:
        from docker.utils.socket import STDERR, frames_iter

        files = {STDERR: self.streams.stderr}
        with contextlib.suppress(OSError, ValueError):  # the stream closed under us: cleanup
            for stream, data in frames_iter(self.attached, tty=False):
                out = files.get(stream, self.streams.stdout)
                out.write(data)
                out.flush()

    def _feed(self) -> None:
        raw = getattr(self.attached, "_sock", self.attached)
        assert self.streams.stdin is not None
        with contextlib.suppress(OSError, ValueError):  # the program exited without reading it all
            for block in iter(lambda: self.streams.stdin.read(CHUNK), b""):  # type: ignore[union-attr]
                raw.sendall(block)
        with contextlib.suppress(OSError, ValueError):
            raw.shutdown(socket.SHUT_WR)


def close_socket(sock: Any) -> None:
    if sock is None:
        return
    for closer in (getattr(sock, "_response", None), getattr(sock, "_sock", None), sock):
        with contextlib.suppress(Exception):
            if closer is not None:
                closer.close()
