"""A minimal HTTP/1.1 client connection: what gpstage's S3 requests need (:mod:`gpstage.storage.s3plain`).

Why not http.client: importing it costs ~16 ms, a sixth of a 20-file sync (a GenePattern job dir) that
rclone does in ~75 ms — it imports ssl even for an http endpoint, the ``email`` package to parse
headers, and builds the ``http.HTTPStatus`` enum (measured in-process, docs/design.md §19). This module
imports nothing http.client does not, and ssl only for an https endpoint.

What it does, and all it does: one request at a time on a kept connection (``Connection: keep-alive`` is
HTTP/1.1's default); request bodies given as bytes, or sent by the caller after :meth:`Connection.send_head`
(a file range by ``sendfile``); response bodies framed by Content-Length, chunked transfer coding, or
the connection's end; no body for HEAD, 1xx, 204 and 304; headers by lower-case name. No ``Expect:
100-continue``, no proxies (a proxied client uses aiohttp), no compression (none is asked for).

Errors are the ones the retry policy knows by class: :class:`RemoteDisconnected` (a kept connection the
store had closed: no answer at all), :class:`IncompleteRead` (the body ended early) and
:class:`ProtocolError` (not an HTTP answer) are ConnectionErrors; a stalled read raises the socket's
TimeoutError. A connection that raised is closed by the caller, never reused.
"""

from __future__ import annotations

import socket
from typing import Any

MAX_LINE = 65536
MAX_HEADERS = 100
_NO_BODY = frozenset((204, 304))


class RemoteDisconnected(ConnectionResetError):
    """The store closed the connection before answering (as http.client's error of that name)."""


class IncompleteRead(ConnectionError):
    """The body ended before its announced length."""


class ProtocolError(ConnectionError):
    """The answer is not HTTP/1.x (a garbled status line, an endless header, a bad chunk size)."""


class Headers(dict):  # type: ignore[type-arg]
    """A response's headers by lower-case name (HTTP names are case-insensitive); repeats joined by ", "."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


class Connection:
    """One TCP (or TLS) connection to ``host:port``. ``tls``: an ``ssl.SSLContext`` for https, else None."""

    def __init__(self, host: str, port: int, connect_timeout: float, read_timeout: float, tls: Any = None) -> None:
        # An ASCII host name goes as bytes: a str would be encoded by the ``idna`` codec, whose import
        # (stringprep, unicodedata) costs ~2 ms of a job dir's sync.
        sock = socket.create_connection((host.encode() if host.isascii() else host, port), timeout=connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request's head and body go in one send anyway
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host)
            sock.settimeout(read_timeout)  # connected: from now on the wait for each read
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.reader = sock.makefile("rb")

    def send_head(self, method: str, target: str, headers: dict[str, str], length: int | None) -> bytes:
        """The request line and headers (``host`` among them: the caller signed it), with a Content-Length
        when there is a body (``length``), as bytes for the caller to send. ``Accept-Encoding: identity``
        as http.client sent it: a compressing proxy in front of a store must not hand back gzip."""
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append("Accept-Encoding: identity")
        if length is not None:
            lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def request(self, method: str, target: str, headers: dict[str, str], body: bytes | None = None) -> Response:
        """Send a request whose body (if any) is in memory, then read the answer's status and headers."""
        length = len(body) if body is not None else (0 if method in ("PUT", "POST") else None)
        head = self.send_head(method, target, headers, length)
        self.sock.sendall(head + body if body else head)
        return self.response(method)

    def response(self, method: str) -> Response:
        """The answer's status line and headers; its body is read through the returned :class:`Response`.
        Each answer is read through a fresh buffer, as http.client does: bytes a store sent beyond the
        previous answer (a body after a HEAD's headers) are dropped with that answer's buffer."""
        self.reader.close()
        self.reader = self.sock.makefile("rb")
        while True:
            status, version = self._status_line()
            headers = self._headers()
            if not 100 <= status < 200:
                break
        resp = Response(self.reader, status, headers)
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        resp.will_close = "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens)
        if method == "HEAD" or status in _NO_BODY:
            resp.remaining = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            resp.chunked = True
        elif (cl := headers.get("content-length")) is not None:
            if not (cl.strip().isascii() and cl.strip().isdigit()):
                raise ProtocolError(f"bad Content-Length {cl!r}")
            resp.length = resp.remaining = int(cl)
        else:
            resp.will_close = True  # the body is what comes until the store closes
        return resp

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def _line(self, what: str) -> bytes:
        line = self.reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise ProtocolError(f"{what} longer than {MAX_LINE} bytes")
        return line

    def _status_line(self) -> tuple[int, str]:
        line = self._line("status line")
        if not line:
            raise RemoteDisconnected("the store closed the connection without an answer")
        parts = line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not (parts[1].isdigit() and len(parts[1]) == 3):
            raise ProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
        return int(parts[1]), parts[0]

    def _headers(self) -> Headers:
        headers = Headers()
        for _ in range(MAX_HEADERS + 1):
            line = self._line("header line")
            if line in (b"\r\n", b"\n"):
                return headers
            if not line.endswith(b"\n"):
                raise IncompleteRead("the store closed the connection within the headers")
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise ProtocolError(f"not a header line: {line[:80]!r}")
            key, value = name.strip().lower(), value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        raise ProtocolError(f"more than {MAX_HEADERS} headers")


class Response:
    """A response's status, headers and body. ``length``: the Content-Length (None if chunked or until
    the connection's end). ``will_close``: the connection cannot carry another request."""

    def __init__(self, reader: Any, status: int, headers: Headers) -> None:
        self.reader = reader
        self.status = status
        self.headers = headers
        self.length: int | None = None
        self.remaining: int | None = None  # bytes of a Content-Length body not read yet
        self.chunked = False
        self.will_close = False

    def read(self) -> bytes:
        """The whole (rest of the) body."""
        if self.chunked:
            return self._read_chunked()
        if self.remaining is None:
            return self.reader.read()
        data = self.reader.read(self.remaining)
        self.remaining -= len(data)
        if self.remaining:
            raise IncompleteRead(f"the body ended {self.remaining} bytes short of its {self.length}")
        return data

    def readinto(self, buffer: bytearray) -> int:
        """Up to ``len(buffer)`` bytes of a body framed by length or by the connection's end (a download
        into a file checks the length first); 0 at its end."""
        if self.chunked:
            raise ProtocolError("a chunked body is read whole, not into a buffer")
        view = memoryview(buffer)
        if self.remaining is not None:
            if not self.remaining:
                return 0
            view = view[:self.remaining]
        got = self.reader.readinto(view)
        if self.remaining is not None:
            if not got:
                raise IncompleteRead(f"the body ended {self.remaining} bytes short of its {self.length}")
            self.remaining -= got
        return got

    def close(self) -> None:
        """Give up on the rest of the body: the connection is then closed, not kept."""
        self.will_close = True

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            line = self.reader.readline(MAX_LINE + 1)
            size = line.split(b";", 1)[0].strip()
            try:
                n = int(size, 16)
            except ValueError:
                raise (IncompleteRead if not line else ProtocolError)(f"bad chunk size line {line[:80]!r}") from None
            if n == 0:
                break
            data = self.reader.read(n + 2)  # the chunk and its CRLF
            if len(data) < n + 2:
                raise IncompleteRead("the chunked body ended inside a chunk")
            parts.append(data[:n])
        while (trailer := self.reader.readline(MAX_LINE + 1)) not in (b"\r\n", b"\n"):  # trailers, then the end
            if not trailer:
                raise IncompleteRead("the chunked body ended before its last line")
        return b"".join(parts)
