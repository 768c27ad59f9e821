"""gpstage.aio's two drivers keep the same contract (docs/design.md §19): every primitive behaves alike on
an asyncio loop and on threads, only one coroutine runs at a time on either, and on threads anything that
needs a loop says so at once or goes through ``on_loop``."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any

import pytest

from gpstage import aio

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=[False, True], ids=["loop", "threads"])
def run(request: pytest.FixtureRequest) -> Any:
    def go(coro: Coroutine[Any, Any, Any]) -> Any:
        return aio.run_sync(coro, threads=request.param)

    go.threads = request.param  # type: ignore[attr-defined]
    return go


def test_gather_runs_the_coroutines_side_by_side_and_keeps_their_order(run: Any) -> None:
    both = threading.Barrier(2, timeout=5)  # passes only if the two blocking calls overlap

    async def one(i: int) -> int:
        await aio.to_thread(both.wait)
        return i

    assert run(aio.gather(one(1), one(2))) == [1, 2]


def test_only_one_coroutine_runs_at_a_time(run: Any) -> None:
    """The engine's shared counters rely on it: coroutine code between two awaits is never interleaved."""
    inside, most = [0], [0]

    async def one() -> None:
        for _ in range(20):
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            time.sleep(0.0005)  # coroutine code, not a blocking call through to_thread: no other may run now
            inside[0] -= 1
            await aio.to_thread(time.sleep, 0.0005)

    run(aio.gather(*(one() for _ in range(6))))
    assert most[0] == 1


def test_a_failure_is_raised_once_every_coroutine_ended_or_returned_when_asked(run: Any) -> None:
    ended: list[int] = []

    async def one(i: int) -> int:
        await aio.sleep(0.01 * i)
        ended.append(i)
        if i == 1:
            raise ValueError("one failed")
        return i

    with pytest.raises(ValueError, match="one failed"):
        run(aio.gather(one(1), one(3)))
    if run.threads:
        assert sorted(ended) == [1, 3]  # on threads gather returns only after all; asyncio's may return sooner
    got = run(aio.gather(one(1), one(2), return_exceptions=True))
    assert isinstance(got[0], ValueError) and got[1] == 2


def test_a_semaphore_holds_at_most_its_value(run: Any) -> None:
    gate, inside, most = aio.Semaphore(3), [0], [0]

    async def one() -> None:
        async with gate:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            await aio.to_thread(time.sleep, 0.02)
            inside[0] -= 1

    run(aio.gather(*(one() for _ in range(8))))
    assert most[0] == 3


def test_a_started_coroutine_runs_beside_its_starter_and_a_dropped_one_fails_nobody(run: Any) -> None:
    both, sent = threading.Barrier(2, timeout=5), []

    async def ahead(fail: bool) -> str:
        sent.append(fail)  # as a listing's next page sends its request
        await aio.to_thread(both.wait)
        if fail:
            raise OSError("a dropped guess")
        return "page"

    async def main() -> str:
        kept = await aio.start(ahead(False))
        assert sent == [False]  # it ran up to its first wait before the starter went on
        await aio.to_thread(both.wait)  # meets the started one: it runs meanwhile
        dropped = await aio.start(ahead(True))
        await aio.to_thread(both.wait)
        dropped.drop()
        return await kept.result()

    assert run(main()) == "page"


def test_on_threads_an_asyncio_await_is_refused_with_the_remedy_and_on_loop_runs_it() -> None:
    async def needs_a_loop() -> str:
        import asyncio

        await asyncio.sleep(0)
        return "ran"

    with pytest.raises(RuntimeError, match="aio.on_loop"):
        aio.run_sync(needs_a_loop(), threads=True)
    assert aio.run_sync(aio.on_loop(needs_a_loop()), threads=True) == "ran"


def test_a_threaded_run_does_not_import_asyncio() -> None:
    code = ("import sys; from gpstage import aio\n"
            "async def one(i):\n    return await aio.to_thread(pow, i, 2)\n"
            "async def main():\n    async with aio.Semaphore(2):\n        return await aio.gather(one(2), one(3))\n"
            "assert aio.run_sync(main(), threads=True) == [4, 9]\n"
            "print(sorted(m for m in ('asyncio', 'concurrent.futures') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "[]"
