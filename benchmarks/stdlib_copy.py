"""The least a Python S3 client can do: the floor beside the start-up-bound rows ((a), (g)).

Usage: python -I -S stdlib_copy.py [--asyncio] put LOCAL_DIR BUCKET/PREFIX | get BUCKET/PREFIX LOCAL_DIR

Standard library only, imported by nothing else: SigV4 with UNSIGNED-PAYLOAD, one ListObjectsV2 pass
(``put`` skips keys already there, as a sync would), then 8 threads with one ``http.client`` connection
each; downloads written with ``os.write``. No retries, no checksums, no manifest, no atomic rename:
everything gpstage does on top is left out, so its time is a lower bound for any Python client on this
machine, not a rival. ``--asyncio`` only imports asyncio first — the cost of that one import on top,
which every asyncio-based client (gpstage's engine) pays before its first request.
The endpoint comes from AWS_ENDPOINT_URL, credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
"""

import hashlib
import hmac
import http.client
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from urllib.parse import quote, urlsplit

THREADS = 8
REGION = "us-east-1"


class Signer:
    """SigV4 headers for one request, the key derived once per run."""

    def __init__(self) -> None:
        self.host = urlsplit(os.environ["AWS_ENDPOINT_URL"]).netloc
        self.access = os.environ["AWS_ACCESS_KEY_ID"]
        self.stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.scope = f"{self.stamp[:8]}/{REGION}/s3/aws4_request"
        key = ("AWS4" + os.environ["AWS_SECRET_ACCESS_KEY"]).encode()
        for part in (self.stamp[:8], REGION, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        self.key = key

    def headers(self, method: str, path: str, query: str = "") -> dict[str, str]:
        h = {"host": self.host, "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "x-amz-date": self.stamp}
        names = ";".join(sorted(h))
        canonical = "\n".join([method, path, query, *(f"{n}:{h[n]}" for n in sorted(h)), "", names, "UNSIGNED-PAYLOAD"])
        to_sign = "\n".join(["AWS4-HMAC-SHA256", self.stamp, self.scope, hashlib.sha256(canonical.encode()).hexdigest()])
        signature = hmac.new(self.key, to_sign.encode(), hashlib.sha256).hexdigest()
        h["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access}/{self.scope}, SignedHeaders={names}, "
                              f"Signature={signature}")
        return h


def request(conn: http.client.HTTPConnection, signer: Signer, method: str, path: str, query: str = "",
            body: bytes | None = None) -> bytes:
    conn.request(method, path + ("?" + query if query else ""), body=body, headers=signer.headers(method, path, query))
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise SystemExit(f"{method} {path}: HTTP {response.status}")
    return data


def listing(signer: Signer, bucket: str, prefix: str) -> set[str]:
    """Every key under ``prefix``, page by page (the query's parameters in canonical order)."""
    conn, keys, token = http.client.HTTPConnection(signer.host), set(), ""
    while True:
        query = f"list-type=2&prefix={quote(prefix, safe='')}"
        if token:
            query = f"continuation-token={quote(token, safe='')}&{query}"
        body = request(conn, signer, "GET", f"/{bucket}", query).decode()
        keys.update(re.findall(r"<Key>([^<]*)</Key>", body))
        more = re.search(r"<NextContinuationToken>([^<]*)</NextContinuationToken>", body)
        if not more:
            return keys
        token = more.group(1)


def in_threads(host: str, items: list[str], work: Callable[[http.client.HTTPConnection, str], None]) -> None:
    def loop() -> None:
        conn = http.client.HTTPConnection(host)
        while True:
            try:
                item = items.pop()
            except IndexError:
                return
            work(conn, item)

    threads = [threading.Thread(target=loop) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def get(signer: Signer, bucket: str, prefix: str, dest: str) -> None:
    def one(conn: http.client.HTTPConnection, key: str) -> None:
        data = request(conn, signer, "GET", f"/{bucket}/" + quote(key))
        path = os.path.join(dest, key[len(prefix):])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    in_threads(signer.host, sorted(listing(signer, bucket, prefix)), one)


def put(signer: Signer, src: str, bucket: str, prefix: str) -> None:
    def one(conn: http.client.HTTPConnection, rel: str) -> None:
        with open(os.path.join(src, rel), "rb") as f:
            request(conn, signer, "PUT", f"/{bucket}/" + quote(prefix + rel), body=f.read())

    have = listing(signer, bucket, prefix)
    files = [os.path.relpath(os.path.join(d, n), src) for d, _, names in os.walk(src) for n in names]
    in_threads(signer.host, [rel for rel in files if prefix + rel not in have], one)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--asyncio"]:
        import asyncio  # noqa: F401 - the point: what this import alone costs

        argv = argv[1:]
    if len(argv) != 3 or argv[0] not in ("put", "get"):
        print(__doc__, file=sys.stderr)
        return 2
    verb, src, dst = argv
    remote = dst if verb == "put" else src
    bucket, _, prefix = remote.partition("/")
    prefix = prefix.rstrip("/") + "/"
    if verb == "put":
        put(Signer(), src, bucket, prefix)
    else:
        get(Signer(), bucket, prefix, dst)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
