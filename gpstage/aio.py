"""Running gpstage's coroutines from synchronous code: on an asyncio loop, or on plain threads.

Why two drivers: ``import asyncio`` (with the concurrent.futures, logging, ssl and inspect it pulls in)
costs ~30-40 ms here, a quarter of a 20-file job dir's whole sync (docs/design.md §19). So the engine's
coroutines await only this module's primitives — :func:`to_thread`, :func:`gather`, :func:`sleep`,
:func:`start`, :class:`Semaphore` — which are asyncio's on a loop, and work without asyncio on threads.

On threads (:func:`run_sync` with ``threads=True``), each coroutine is driven by one thread. A lock held
while coroutine code runs, and released around every blocking call and wait, keeps asyncio's guarantee
that only one coroutine runs at a time: the engine's shared counters and plans need no locks of their
own under either driver. A coroutine that awaits anything else (an asyncio object) is a bug on threads
and raises at once; :func:`on_loop` runs a coroutine that needs a loop (the fast lane's batches, a large
plan) on a fresh asyncio loop from inside a threaded run.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
GATHER_THREADS = 8  # threads one gather starts at most (each with its own connection); more coroutines wait for one

_local = threading.local()  # .run: the threaded run this thread drives coroutines for (None: asyncio's)


class _Run:
    """One threaded run: the lock its coroutine code holds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def released(self) -> _Released:
        return _Released(self.lock)


class _Released:
    """The run's lock let go for a blocking call or a wait, taken back after it."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock

    def __enter__(self) -> None:
        self.lock.release()
        began = getattr(_local, "began", None)  # a coroutine just started by start(): its starter may go on
        if began is not None:
            _local.began = None
            began.set()

    def __exit__(self, *_: object) -> None:
        self.lock.acquire()


def _threaded() -> _Run | None:
    return getattr(_local, "run", None)


def on_threads() -> bool:
    """Whether this coroutine runs on gpstage's threads (not on an asyncio loop)."""
    return _threaded() is not None


def run_sync(coro: Coroutine[Any, Any, T], *, threads: bool = False) -> T:
    """Run ``coro`` to its end: on a new asyncio loop, or with ``threads`` on this module's threads
    (the caller knows every tree it opens supports them: :func:`gpstage.storage.runs_on_threads`).
    In a thread that already runs a loop (Jupyter), in a worker thread instead."""
    runner = _drive_run if threads else _run
    asyncio = sys.modules.get("asyncio")  # no loop can be running if asyncio was never imported
    if asyncio is None or not _loop_running(asyncio):
        return runner(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpstage") as pool:
        return pool.submit(runner, coro).result()


def _loop_running(asyncio: Any) -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` whose worker threads have always finished when it returns or raises: asyncio.run
    does not join them when a KeyboardInterrupt escapes, and a thread could still be writing a file."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    executor = ThreadPoolExecutor(thread_name_prefix="gpstage-io")

    async def main() -> T:
        asyncio.get_running_loop().set_default_executor(executor)
        return await coro

    try:
        return asyncio.run(main())
    finally:
        executor.shutdown(wait=True)


def _drive_run(coro: Coroutine[Any, Any, T]) -> T:
    return _drive(_Run(), coro)


def _drive(run: _Run, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end in this thread for ``run``, holding its lock while coroutine code runs."""
    before = _threaded()
    _local.run = run
    run.lock.acquire()
    try:
        try:
            waited = coro.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        coro.close()
        raise RuntimeError(f"{coro.__qualname__} awaited {waited!r}, which needs an asyncio loop, while running "
                           "on gpstage's threads: await gpstage.aio's primitives, or run it through aio.on_loop")
    finally:
        run.lock.release()
        _local.run = before


async def on_loop(coro: Coroutine[Any, Any, T]) -> T:
    """``await coro``; on threads, on a new asyncio loop in this thread (for what needs one)."""
    run = _threaded()
    if run is None:
        return await coro
    _local.run = None
    try:
        with run.released():
            return _run(coro)
    finally:
        _local.run = run


async def to_thread(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` outside the coroutines' turn: in asyncio's executor, or in this thread
    with the run's lock let go."""
    run = _threaded()
    if run is None:
        import asyncio

        return await asyncio.to_thread(fn, *args, **kwargs)
    with run.released():
        return fn(*args, **kwargs)


async def sleep(seconds: float) -> None:
    run = _threaded()
    if run is None:
        import asyncio

        await asyncio.sleep(seconds)
        return
    with run.released():
        time.sleep(seconds)


async def gather(*aws: Coroutine[Any, Any, Any], return_exceptions: bool = False) -> list[Any]:
    """asyncio.gather of coroutines; on threads, each in a thread of its own (at most GATHER_THREADS at
    once), returning when all have ended (the first failure raised then, unless ``return_exceptions``)."""
    run = _threaded()
    if run is None:
        import asyncio

        return await asyncio.gather(*aws, return_exceptions=return_exceptions)
    results: list[Any] = [None] * len(aws)
    failed: dict[int, BaseException] = {}
    picks = itertools.count()
    stop = threading.Event()  # set when the caller is interrupted: no coroutine starts after that

    def work() -> None:
        while not stop.is_set() and (i := next(picks)) < len(aws):
            try:
                results[i] = _drive(run, aws[i])
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                failed[i] = exc

    threads = [threading.Thread(target=work, name="gpstage-io", daemon=True) for _ in range(min(len(aws), GATHER_THREADS))]
    with run.released():
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        except BaseException:
            stop.set()
            for t in threads:
                t.join()
            raise
    for i in range(next(picks), len(aws)):  # never started (interrupted): closed, as asyncio would cancel them
        aws[i].close()
    if return_exceptions:
        return [failed.get(i, r) for i, r in enumerate(results)]
    if failed:
        raise failed[min(failed)]
    return results


class Pending:
    """A coroutine started by :func:`start`: awaited with :meth:`result`, or dropped."""

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.run = _threaded()
        self.outcome: list[Any] = []
        if self.run is None:
            import asyncio

            self.task: Any = asyncio.ensure_future(coro)
            return
        self.coro = coro
        self.began = threading.Event()  # set at its first blocking call or wait, or its end
        self.thread = threading.Thread(target=self._drive, name="gpstage-io", daemon=True)
        self.thread.start()

    def _drive(self) -> None:
        assert self.run is not None
        _local.began = self.began
        try:
            self.outcome.append((True, _drive(self.run, self.coro)))
        except BaseException as exc:  # noqa: BLE001 - handed over by result()
            self.outcome.append((False, exc))
        finally:
            _local.began = None
            self.began.set()

    async def result(self) -> Any:
        if self.run is None:
            return await self.task
        with self.run.released():
            self.thread.join()
        ok, value = self.outcome[0]
        if not ok:
            raise value
        return value

    def drop(self) -> None:
        """Give it up; a failure it had is no failure. On a loop it is cancelled, on threads it ends first
        (a request cannot be taken back), so nothing of it outlives the caller."""
        if self.run is None:
            if not self.task.done():
                self.task.cancel()
            elif not self.task.cancelled():
                self.task.exception()  # taken, or asyncio would report it as never retrieved
            return
        with self.run.released():
            self.thread.join()


async def start(coro: Coroutine[Any, Any, Any]) -> Pending:
    """Start ``coro`` now, beside the caller, and let it run up to its first wait (a request sent) before
    the caller goes on: asyncio.ensure_future and one turn of the loop, or a thread the caller waits for."""
    pending = Pending(coro)
    if pending.run is None:
        await sleep(0)
    else:
        with pending.run.released():
            pending.began.wait()
    return pending


class Semaphore:
    """``async with`` at most ``value`` at once: asyncio's semaphore on a loop, a thread semaphore (the run's
    lock let go while waiting) on threads. Each is made on first use, as asyncio's binds to its loop then."""

    def __init__(self, value: int) -> None:
        self.value = value
        self._loop: Any = None
        self._threads: threading.Semaphore | None = None

    async def __aenter__(self) -> None:
        run = _threaded()
        if run is None:
            if self._loop is None:
                import asyncio

                self._loop = asyncio.Semaphore(self.value)
            await self._loop.acquire()
            return
        if self._threads is None:
            self._threads = threading.Semaphore(self.value)
        if not self._threads.acquire(blocking=False):
            with run.released():
                self._threads.acquire()

    async def __aexit__(self, *_: object) -> None:
        if _threaded() is None:
            self._loop.release()
        else:
            assert self._threads is not None
            self._threads.release()


def is_cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` is asyncio's cancellation (never, if asyncio was not even imported)."""
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(exc, asyncio.CancelledError)

