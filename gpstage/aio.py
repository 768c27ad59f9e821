"""Running gpstage's coroutines from synchronous code, including inside Jupyter's running loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, or the same in a worker thread when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpstage") as pool:
        return pool.submit(_run, coro).result()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` whose worker threads have always finished when it returns or raises: asyncio.run
    does not join them when a KeyboardInterrupt escapes, and a thread could still be writing a file."""
    executor = ThreadPoolExecutor(thread_name_prefix="gpstage-io")

    async def main() -> T:
        asyncio.get_running_loop().set_default_executor(executor)
        return await coro

    try:
        return asyncio.run(main())
    finally:
        executor.shutdown(wait=True)
