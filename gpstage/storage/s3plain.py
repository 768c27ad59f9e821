"""S3 requests over plain HTTP/1.1 connections (:mod:`gpstage.storage.http1`, not http.client: its import
alone took a sixth of a job dir's sync), each in a worker thread: those with small answers (listings,
HEADs, deletes, multipart parts, a client's first whole-object GETs and PUTs), and the downloads above
1 MiB, written into their file as they arrive.

Why: a sync of a GenePattern job dir (20 small files) is mostly start-up, and importing aiohttp costs
~0.13 s of it (it builds two SSL contexts at import, even for an http endpoint). With the fast lane
(:mod:`gpstage.storage.s3lane`) taking the GETs and PUTs, a listing was the only reason left to import
aiohttp; listing pages are requested one after another anyway, so a blocking connection in a worker
thread costs nothing in concurrency. A client's first 32 whole-object GETs and PUTs come here too: a job
dir is done before loading obstore would pay back (``s3client.PLAIN_FIRST``). A multipart part of a
local file is sent from the file by ``sendfile`` (:class:`~gpstage.storage.source.FileRange`): the
kernel copies it from the page cache, and the part never exists in this process (aiohttp kept a copy of
each part in its transport buffer: 256 MiB up peaked at 147 MiB RSS; sent from bytes here, 1 GiB up
peaked at 152 MiB; from the file, at 46 MiB: docs/design.md, "The S3 fast lane").
aiohttp stays for ranged reads of inputs by URL, copies, and everything when a proxy is set.

A download above 1 MiB is read block by block into one buffer and written at its offset by the worker
thread (:func:`receive_file`; in ranges from 128 MiB, the caller's): steadier than obstore's streams,
whose blocks each cross from a Rust thread to the reading one (1 GiB down: 0.91–0.96 s against
1.21–1.77 s; docs/design.md, "The S3 fast lane").

Not used when a proxy is configured (``HTTP(S)_PROXY``/``ALL_PROXY``): aiohttp honours those, this does
not. Connections are kept and reused; one that failed is closed, never reused. A store closes a kept
connection that sat idle (SeaweedFS did, while a 100,000-file upload kept the lane busy for minutes and
then wrote its manifest here), and the next request on it finds it gone before any answer: that request
is sent again on a new connection, once and outside the retry policy — otherwise every retry could draw
another dead connection from the pool and the sync fail with every attempt spent.
"""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import urlsplit

from gpstage.storage.http1 import Connection, Response
from gpstage.storage.s3xml import S3ResponseError
from gpstage.storage.source import FileRange

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")
# How a connection the store closed while it was kept shows on its next request, before any answer
# (http1.RemoteDisconnected, when the close arrived before the request, is a ConnectionResetError).
STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
RESENDABLE = frozenset(("GET", "HEAD", "PUT", "DELETE"))  # idempotent on S3; a POST (multipart) is never sent twice


def proxied() -> bool:
    return any(os.environ.get(v) or os.environ.get(v.upper()) for v in PROXY_VARIABLES)


class PlainResponse:
    """The little of aiohttp's response the client reads: status, headers, body."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers  # http1.Headers: .get() as aiohttp's headers
        self.body = body

    async def read(self) -> bytes:
        return self.body

    def release(self) -> None:
        pass


class PlainTransport:
    """Blocking requests to one endpoint's hosts, on kept connections (call from worker threads)."""

    def __init__(self, connect_timeout: float, read_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle: dict[str, list[Connection]] = {}
        self.lock = threading.Lock()
        self._tls: Any = None

    def send(self, method: str, base: str, target: str, headers: dict[str, str],
             body: bytes | FileRange | None = None, into: FileRange | None = None) -> PlainResponse:
        """One request to ``base`` (scheme://host) for ``target`` (path?query, already encoded). ``into``:
        a successful answer's body is written into that part of that file, not kept (its ``body`` is empty)."""
        conn = self._kept(base)
        if conn is not None:
            try:
                return self._exchange(conn, base, method, target, headers, body, into)
            except STALE:
                if method not in RESENDABLE:
                    raise
        return self._exchange(self._connect(base), base, method, target, headers, body, into)

    def _exchange(self, conn: Connection, base: str, method: str, target: str, headers: dict[str, str],
                  body: bytes | FileRange | None, into: FileRange | None) -> PlainResponse:
        try:
            if isinstance(body, FileRange):
                resp = send_file(conn, method, target, headers, body)
            else:
                resp = conn.request(method, target, headers, body)
            data = receive_file(resp, into) if into is not None and resp.status < 300 else resp.read()
        except BaseException:
            conn.close()
            raise
        if resp.will_close:
            conn.close()
        else:
            with self.lock:
                self.idle.setdefault(base, []).append(conn)
        return PlainResponse(resp.status, resp.headers, data)

    def close(self) -> None:
        with self.lock:
            for conns in self.idle.values():
                for conn in conns:
                    conn.close()
            self.idle.clear()

    def _kept(self, base: str) -> Connection | None:
        with self.lock:
            kept = self.idle.get(base)
            return kept.pop() if kept else None

    def _connect(self, base: str) -> Connection:
        split = urlsplit(base)
        https = split.scheme == "https"
        return Connection(split.hostname or "", split.port or (443 if https else 80), self.connect_timeout,
                          self.read_timeout, self._context() if https else None)

    def _context(self) -> Any:
        if self._tls is None:
            import ssl

            self._tls = ssl.create_default_context()  # honours SSL_CERT_FILE / SSL_CERT_DIR, as aiohttp does
        return self._tls


def send_file(conn: Connection, method: str, target: str, headers: dict[str, str], body: FileRange) -> Response:
    """The request line and ``headers`` (``host`` among them: it is signed), then the body straight from
    the file; the answer. A file that shrank below the range is an error here: the store would wait for the rest."""
    conn.sock.sendall(conn.send_head(method, target, headers, body.length))
    with open(body.path, "rb") as f:
        sent = conn.sock.sendfile(f, body.offset, body.length)
    if sent != body.length:
        raise OSError(f"{body.path} shrank while it was uploaded (bytes {body.offset}-{body.offset + body.length - 1} "
                      f"were to be sent, {sent} were there)")
    return conn.response(method)


def changed_since_listed(got: int | None, listed: int) -> S3ResponseError:
    """The error of a download whose object no longer has its listed size (as S3 answers a failed If-Match)."""
    return S3ResponseError(412, "PreconditionFailed", f"the object changed since it was listed ({got} bytes where "
                                                      f"{listed} were expected)")


def create_sized(path: str, size: int) -> None:
    """``path`` created (or truncated) at ``size`` bytes, for :func:`receive_file` to write into."""
    with open(path, "wb") as f:
        f.truncate(size)


RECEIVE_BLOCK = 128 * 2**10  # see receive_file
WRITE_SLICE = 32 * 2**10  # see receive_file


def receive_file(resp: Response, into: FileRange, chunk: int = RECEIVE_BLOCK) -> bytes:
    """The body written at ``into.offset`` of the existing file ``into.path`` (its own descriptor, closed
    here: no write outlives the request), read ``chunk`` bytes at a time into one buffer and written in
    ``WRITE_SLICE`` pieces. A body shorter than ``into.length`` is an IncompleteRead: the store closed
    early, and the request is worth retrying.

    Why 128 KiB reads: the block is copied twice (socket → buffer → page cache), and at 128 KiB it stays
    in the core's L2 cache between the two. Why 32 KiB writes: a ``pwrite`` of n bytes makes ext4 allocate
    page-cache folios of up to n bytes; folios of 32 KiB or less (order ≤ 3) come from the per-CPU free
    lists, larger ones from the buddy allocator's large blocks — on a VM whose host takes back free
    memory, the pages the host must supply again on first touch, while the other ranges' writers spin on
    the inode lock. 1 GiB down, interleaved (8 each, twice): 1.32 and 1.22 s in 32 KiB writes against 1.53
    and 2.46 s in 128 KiB ones, client CPU 1.0 s against 1.3–3.0 s (s5cmd, which writes 32 KiB at a time:
    1.25 and 1.30 s). docs/design.md, "The S3 fast lane", has the history (1 MiB writes, a lock per file)."""
    if resp.length != into.length:  # not the bytes that were listed: retrying would not help
        resp.close()
        raise changed_since_listed(resp.length, into.length)
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    offset = into.offset
    fd = os.open(into.path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        while got := resp.readinto(buffer):
            for start in range(0, got, WRITE_SLICE):
                write_at(fd, view[start:min(got, start + WRITE_SLICE)], offset + start)
            offset += got
    finally:
        os.close(fd)
    return b""


def write_at(fd: int, data: memoryview, offset: int) -> None:
    """All of ``data`` at ``offset``: ``pwrite`` may write less than asked (a signal, a full quota)."""
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done
