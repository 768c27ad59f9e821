"""gpstage's HTTP/1.1 connection (gpstage/storage/http1.py) against a real socket on 127.0.0.1 that
answers with given bytes: every body framing, kept and closed connections, and each way an answer can
be broken, raised as the error class the retry policy and the S3 transport know."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpstage.retry import is_transient
from gpstage.storage.http1 import Connection, IncompleteRead, ProtocolError, RemoteDisconnected


class Canned:
    """A server that accepts one connection and, for each request it reads (its head, then as many bytes
    as its Content-Length says), sends the next of ``answers``; then closes — or, with ``hold``, waits
    for the client to close first (an answer that stalls)."""

    def __init__(self, answers: list[bytes], hold: bool = False, tls: ssl.SSLContext | None = None) -> None:
        self.answers = answers
        self.hold = hold
        self.tls = tls
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except ssl.SSLError:  # the client refused the certificate: what a test may want
                conn.close()
                return
        with conn, conn.makefile("rb") as reader:
            for answer in self.answers:
                head = b""
                while (line := reader.readline()) not in (b"\r\n", b""):
                    head += line
                length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")), 0)
                self.requests.append(head + b"\r\n" + reader.read(length))
                conn.sendall(answer)
            if self.hold:
                reader.read()

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def serve() -> Iterator:
    """``conn, server = serve(answer, ...)``: a Connection to a fresh :class:`Canned` server."""
    made: list[tuple[Connection, Canned]] = []

    def start(*answers: bytes, hold: bool = False, read_timeout: float = 5) -> tuple[Connection, Canned]:
        server = Canned(list(answers), hold)
        made.append((Connection("127.0.0.1", server.port, connect_timeout=5, read_timeout=read_timeout), server))
        return made[-1]

    yield start
    for conn, server in made:
        conn.close()
        server.close()


HEAD = {"host": "127.0.0.1"}


def test_length_chunked_and_headless_bodies_on_one_kept_connection(serve) -> None:
    conn, _ = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"e1\"\r\nx-amz-meta-A: 1\r\nx-amz-meta-a: 2\r\n\r\nhello",
                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
                 b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    resp = conn.request("GET", "/b/k", HEAD)
    assert (resp.status, resp.read(), resp.will_close) == (200, b"hello", False)
    assert resp.headers["etag"] == '"e1"' and resp.headers.get("ETag") == '"e1"' and "Etag" in resp.headers
    assert resp.headers["X-Amz-Meta-A"] == "1, 2"  # a repeated name: one value, as http.client's get() gave
    assert conn.request("GET", "/b/chunked", HEAD).read() == b"abcde"
    assert conn.request("HEAD", "/b/k", HEAD).read() == b""  # a HEAD's Content-Length announces no body
    resp = conn.request("PUT", "/b/k", HEAD, b"data")
    assert (resp.status, resp.read()) == (204, b"")
    conn.close()


def test_a_request_goes_as_given_with_its_length(serve) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    conn, server = serve(ok, ok)
    conn.request("PUT", "/b/a%20b?x=1", {"host": "h:1", "x-amz-date": "d"}, b"body").read()
    conn.request("POST", "/b/k?uploads", {"host": "h:1"}).read()
    conn.close()
    server.thread.join(timeout=5)
    assert server.requests == [b"PUT /b/a%20b?x=1 HTTP/1.1\r\nhost: h:1\r\nx-amz-date: d\r\nAccept-Encoding: identity\r\n"
                               b"Content-Length: 4\r\n\r\nbody",
                               b"POST /b/k?uploads HTTP/1.1\r\nhost: h:1\r\nAccept-Encoding: identity\r\n"
                               b"Content-Length: 0\r\n\r\n"]


def test_an_http10_answer_or_connection_close_is_not_kept(serve) -> None:
    conn, _ = serve(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    resp = conn.request("GET", "/", HEAD)
    assert resp.read() == b"ok" and resp.will_close
    conn, _ = serve(b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nuntil the end")
    resp = conn.request("GET", "/", HEAD)
    assert (resp.status, resp.read(), resp.will_close) == (500, b"until the end", True)


def test_readinto_fills_a_buffer_and_ends_at_the_length(serve) -> None:
    conn, _ = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabcdef")
    resp = conn.request("GET", "/", HEAD)
    buffer, got = bytearray(4), b""
    while n := resp.readinto(buffer):
        got += bytes(buffer[:n])
    assert got == b"abcdef" and resp.length == 6


@pytest.mark.parametrize(("answer", "error", "message"), [
    (b"", RemoteDisconnected, "closed the connection without an answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", IncompleteRead, "5 bytes short of its 10"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", IncompleteRead, "inside a chunk"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", ProtocolError, "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", IncompleteRead, "within the headers"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", ProtocolError, "not an HTTP/1.x status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", ProtocolError, "not a header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", ProtocolError, "bad Content-Length"),
])
def test_a_broken_answer_raises_an_error_the_retry_policy_retries(serve, answer: bytes, error: type, message: str) -> None:
    conn, _ = serve(answer)
    with pytest.raises(error, match=message) as raised:
        conn.request("GET", "/", HEAD).read()
    assert is_transient(raised.value)
    conn.close()


def test_a_stalled_answer_times_out(serve) -> None:
    conn, _ = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", hold=True, read_timeout=0.3)
    with pytest.raises(TimeoutError) as raised:
        conn.request("GET", "/", HEAD).read()
    assert is_transient(raised.value)
    conn.close()


def test_https_verifies_the_store_by_its_name(tmp_path: Path) -> None:
    """TLS (ssl imported only for it): the store's certificate is checked against the host name asked for."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    client_side = ssl.create_default_context(cafile=str(cert))
    server = Canned([b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret"], tls=server_side)
    try:
        conn = Connection("localhost", server.port, connect_timeout=5, read_timeout=5, tls=client_side)
        assert conn.request("GET", "/", {"host": "localhost"}).read() == b"secret"
        conn.close()
    finally:
        server.close()
    wrong = Canned([b""], tls=server_side)  # the same certificate, reached by a name it does not hold
    try:
        with pytest.raises(ssl.SSLCertVerificationError, match="127.0.0.1"):
            Connection("127.0.0.1", wrong.port, connect_timeout=5, read_timeout=5, tls=client_side)
    finally:
        wrong.close()
