"""The fast lane of gpstage's S3 client: the whole-object GETs of a download (up to 1 MiB each) and the
single PUTs, through obstore (once the client has sent its first ``s3client.PLAIN_FIRST`` whole-object
requests itself).

Why: a sync of many small files is bound by the client's cost per request. In gpstage's own client
(aiohttp, one event loop) that cost is Python's, serialised by the GIL on one core; obstore (Python
bindings of Rust's ``object_store``) signs, sends and parses in Rust, on every core, and imports in
~30 ms where aiohttp takes ~130 ms (docs/design.md, "The S3 fast lane", has the measurements). Larger
objects come down over plain HTTP/1.1 connections (:mod:`gpstage.storage.s3plain`): obstore's streams were slower there.

How, and why so: obstore's *blocking* calls run in this lane's own pool of threads (the GIL is released
while Rust works), not its ``*_async`` calls, which hand Python futures to Rust worker threads: a bare
script using those aborted (SIGABRT, after a complete copy) at interpreter exit in 3 of 60 runs; the
blocking calls, which leave no Python object with a Rust thread, in 0 of 80.

What stays in gpstage's own client (:mod:`gpstage.storage.s3client`): listing (object_store rewrites a
``dir/`` marker as ``dir`` and refuses keys it cannot parse), downloads above 1 MiB, multipart uploads
and their abort, HEAD, ranged reads of inputs by URL, copies and deletes; and per request, whatever this
lane does not take (:meth:`takes`): keys object_store refuses (empty segments, ``.``, control
characters), writes with user metadata or a profile's encryption/ACL headers. Each call here is ONE
request: obstore's retries are off, so gpstage's policy retries and counts every attempt. Errors come
back as :class:`S3ResponseError` (the status and S3's error code read from obstore's message) or as the
built-in connection errors the retry policy and the one-line error descriptions already know.

Integrity of a PUT: obstore signs the payload (``x-amz-content-sha256`` is the body's SHA-256, which
S3 checks) where gpstage's client sends a Content-MD5; either way a damaged body is refused.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from gpstage.storage.s3xml import S3ResponseError

_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]+)</Code>")
_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")
_UNSAFE_SEGMENT = re.compile(r"(^|/)\.{1,2}(/|$)|//|^/|/$|[\x00-\x1f\x7f]")


NO_OVERALL_LIMIT = timedelta(days=1)  # obstore's default is 30 s for a whole request, body included


class ClockSkewed(Exception):
    """The store refused the request's time; the caller falls back to the client that adopts the store's clock."""


class ObstoreLane:
    """obstore stores (one per bucket) and the threads that call them. ``workers`` bounds the requests
    in flight through the lane; the sync's own concurrency limits sit above it."""

    def __init__(self, endpoint: str | None, region: str, access_key: str, secret_key: str, token: str | None, *,
                 connect_timeout: float, read_timeout: float, workers: int) -> None:
        from importlib.util import find_spec

        if find_spec("obstore") is None:  # fail here, at connect, when the lane cannot be had; imported on first use
            raise ImportError("obstore is not installed")

        self.endpoint = endpoint
        self.region = region
        self.secrets = {"access_key_id": access_key, "secret_access_key": secret_key, "session_token": token or ""}
        self.client_options: dict[str, Any] = {
            "connect_timeout": timedelta(seconds=connect_timeout),
            "read_timeout": timedelta(seconds=read_timeout),  # each read, as the own client's sock_read
            "timeout": NO_OVERALL_LIMIT,  # a large object may take long: a stall is the read timeout's to catch
            "allow_http": bool(endpoint and endpoint.startswith("http://")),
        }
        self.workers = workers
        self._pool: Any = None  # made on first use, with asyncio's loop: a threaded run never takes the lane
        self.stores: dict[str, Any] = {}

    @property
    def pool(self) -> Any:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="gpstage-s3lane")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.stores.clear()

    @staticmethod
    def takes(key: str) -> bool:
        """Whether object_store can name ``key`` exactly as S3 does (else the own client sends the request)."""
        return bool(key) and _UNSAFE_SEGMENT.search(key) is None

    def store(self, bucket: str) -> Any:
        found = self.stores.get(bucket)
        if found is None:
            from obstore.store import S3Store

            where: dict[str, Any] = {"endpoint": self.endpoint} if self.endpoint else {
                "virtual_hosted_style_request": "." not in bucket}
            found = self.stores[bucket] = S3Store(
                bucket, region=self.region, **where, **{k: v for k, v in self.secrets.items() if v},
                skip_signature=False, unsigned_payload=False, client_options=self.client_options,
                retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=1)})
        return found

    async def get(self, bucket: str, key: str) -> bytes:
        """The whole object, in one GET."""
        import obstore

        store = self.store(bucket)
        return await self._run(lambda: bytes(obstore.get(store, key).bytes()))

    async def get_then(self, bucket: str, key: str, then: Callable[[bytes], None]) -> BaseException | None:
        """One GET, then ``then(data)`` in the same worker thread: a small download and its local write
        cost one thread hop, not two. A failure of ``then`` is returned, not raised, so that the caller
        raises it outside the request's retries and storage-error wording (it is a local error)."""
        store = self.store(bucket)
        return await self._run(lambda: fetch_then(store, key, then))

    async def get_many(self, bucket: str, calls: Sequence[tuple[str, Callable[[bytes], None]]],
                       workers: int) -> tuple[dict[int, Exception], dict[int, BaseException]]:
        """Each call's object in ONE GET, handed to its ``then`` in the same thread; ``workers`` threads
        take the calls in turn. A small object costs no hop between the event loop and a thread: 1,000
        objects took ~24 context switches each when every GET was its own task, ~12 batched
        (docs/design.md, "The S3 fast lane"). Returns the failures by call index: the requests'
        (translated) and ``then``'s (local)."""
        store = self.store(bucket)
        queue = deque(range(len(calls)))  # popleft is atomic: the threads share it without a lock
        requests: dict[int, Exception] = {}
        local: dict[int, BaseException] = {}
        stop = threading.Event()

        def work() -> None:
            while not stop.is_set():
                try:
                    i = queue.popleft()
                except IndexError:
                    return
                key, then = calls[i]
                try:
                    failure = fetch_then(store, key, then)
                except Exception as exc:  # noqa: BLE001 - each call's failure is the caller's to retry or report
                    requests[i] = translate(exc)
                    continue
                if failure is not None:  # a local error: reported, never retried
                    local[i] = failure

        import asyncio

        loop = asyncio.get_running_loop()
        try:
            await asyncio.gather(*(loop.run_in_executor(self.pool, work) for _ in range(min(workers, len(calls)))))
        except BaseException:
            stop.set()  # cancelled: the threads finish the object in hand and take no other
            raise
        return requests, local

    async def put(self, bucket: str, key: str, data: bytes) -> str:
        """One PutObject (never multipart); returns the ETag."""
        import obstore

        store = self.store(bucket)
        return await self._run(lambda: obstore.put(store, key, data, use_multipart=False)["e_tag"] or "")

    async def _run(self, call: Any) -> Any:
        import asyncio

        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, call)
        except Exception as exc:
            raise translate(exc) from exc


def fetch_then(store: Any, key: str, then: Callable[[bytes], None]) -> BaseException | None:
    """One GET (its failure raised, as obstore's), then ``then(data)`` in the same thread; ``then``'s
    failure is returned, not raised: it is a local error, outside the request's retries and wording."""
    import obstore

    data = obstore.get(store, key).bytes()  # a buffer: written as it is, not copied into bytes
    try:
        then(data)
    except BaseException as exc:  # noqa: BLE001 - handed back to the caller, who raises it
        return exc
    return None


def translate(exc: Exception) -> Exception:
    """obstore's exception as gpstage's client would have raised it (see the module docstring)."""
    text = str(exc)
    found = _STATUS.search(text)
    if found:
        code = _CODE.search(text)
        message = _MESSAGE.search(text)
        status = int(found.group(1))
        error = S3ResponseError(status, code.group(1) if code else ("NoSuchKey" if status == 404 else str(status)),
                                message.group(1) if message else "")
        return ClockSkewed(text) if error.code == "RequestTimeTooSkewed" else error
    if type(exc).__name__ in ("GenericError", "BaseError") or isinstance(exc, OSError):
        head = text.split("\n\n", 1)[0]
        if "kind: Connect" in text or "error trying to connect" in text:
            return ConnectionRefusedError(f"cannot connect: {head}")
        if "kind: Timeout" in text or "timed out" in text.lower():
            return TimeoutError(f"timed out: {head}")
        if "HTTP error" in text or "kind: Body" in text or "kind: Request" in text or "kind: Decode" in text:
            return ConnectionResetError(f"connection failed: {head}")
    return exc
