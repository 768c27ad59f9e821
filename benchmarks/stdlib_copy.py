"""The least a Python S3 client can do: the floor beside the start-up-bound rows ((a), (g)).

Usage: python -I -S stdlib_copy.py [--asyncio] put LOCAL_DIR BUCKET/PREFIX | get BUCKET/PREFIX LOCAL_DIR

Standard library only, imported by nothing else: SigV4 with UNSIGNED-PAYLOAD, one ListObjectsV2 pass
(``put`` skips keys already there, as a sync would), then 8 threads with one ``http.client`` connection
each; downloads written with ``os.write``, objects from 128 MiB in 64 MiB ranges by 4 threads, each
read in 128 KiB blocks and written in 32 KiB slices at their offset (gpstage's own pattern; the floor
beside the large-file rows (b), (e)); large uploads one streamed PUT. No retries, no checksums, no manifest, no atomic rename:
everything gpstage does on top is left out, so its time is a lower bound for any Python client on this
machine, not a rival. ``--asyncio`` only imports asyncio first — the cost of that one import on top,
which every asyncio-based client (gpstage's engine) pays before its first request.
The endpoint comes from AWS_ENDPOINT_URL, credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
"""

import hashlib
import hmac
import http.client
import io
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from urllib.parse import quote, urlsplit

THREADS = 8
RANGE_THREADS, RANGE, BIG = 4, 64 * 2**20, 128 * 2**20  # as gpstage.storage.s3 downloads large objects
READ_BLOCK, WRITE_SLICE = 128 * 2**10, 32 * 2**10  # as gpstage.storage.s3plain.receive_file
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
            body: bytes | io.BufferedReader | None = None, size: int | None = None) -> bytes:
    headers = signer.headers(method, path, query)
    if size is not None:
        headers["content-length"] = str(size)
    conn.request(method, path + ("?" + query if query else ""), body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise SystemExit(f"{method} {path}: HTTP {response.status}")
    return data


def listing(signer: Signer, bucket: str, prefix: str) -> dict[str, int]:
    """Every key under ``prefix`` and its size, page by page (the query's parameters in canonical order)."""
    conn, keys, token = http.client.HTTPConnection(signer.host), {}, ""
    while True:
        query = f"list-type=2&prefix={quote(prefix, safe='')}"
        if token:
            query = f"continuation-token={quote(token, safe='')}&{query}"
        body = request(conn, signer, "GET", f"/{bucket}", query).decode()
        for entry in re.findall(r"<Contents>(.*?)</Contents>", body, re.S):
            keys[re.search(r"<Key>([^<]*)</Key>", entry).group(1)] = int(re.search(r"<Size>(\d+)</Size>", entry).group(1))
        more = re.search(r"<NextContinuationToken>([^<]*)</NextContinuationToken>", body)
        if not more:
            return keys
        token = more.group(1)


def in_threads(host: str, items: list, work: Callable[..., None],  # typing unimported: its ms count here
               threads: int = THREADS) -> None:
    def loop() -> None:
        conn = http.client.HTTPConnection(host, blocksize=2**20)  # a streamed PUT's body in 1 MiB sends
        while True:
            try:
                item = items.pop()
            except IndexError:
                return
            work(conn, item)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


def get(signer: Signer, bucket: str, prefix: str, dest: str) -> None:
    def one(conn: http.client.HTTPConnection, key: str) -> None:
        data = request(conn, signer, "GET", f"/{bucket}/" + quote(key))
        fd = os.open(local(key), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def one_range(conn: http.client.HTTPConnection, item: tuple[str, int, int]) -> None:
        key, offset, length = item
        path = f"/{bucket}/" + quote(key)
        conn.request("GET", path, headers={**signer.headers("GET", path), "range": f"bytes={offset}-{offset + length - 1}"})
        response = conn.getresponse()
        if response.status != 206:
            raise SystemExit(f"GET {path} (range): HTTP {response.status}")
        buffer = bytearray(READ_BLOCK)
        view, end = memoryview(buffer), offset + length
        fd = os.open(local(key), os.O_WRONLY)
        try:
            while got := response.readinto(buffer):
                for start in range(0, got, WRITE_SLICE):
                    os.pwrite(fd, view[start:min(got, start + WRITE_SLICE)], offset + start)
                offset += got
        finally:
            os.close(fd)
        if offset != end:
            raise SystemExit(f"GET {path} (range): {end - offset} bytes short")

    def local(key: str) -> str:
        return os.path.join(dest, key[len(prefix):])

    objects = listing(signer, bucket, prefix)
    for key in objects:
        os.makedirs(os.path.dirname(local(key)), exist_ok=True)
    large = sorted(key for key, size in objects.items() if size >= BIG)
    for key in large:
        with open(local(key), "wb") as f:
            f.truncate(objects[key])
    ranges = [(key, start, min(RANGE, objects[key] - start)) for key in large for start in range(0, objects[key], RANGE)]
    in_threads(signer.host, ranges[::-1], one_range, RANGE_THREADS)  # popped from the end: the first range first
    in_threads(signer.host, sorted(set(objects) - set(large)), one)


def put(signer: Signer, src: str, bucket: str, prefix: str) -> None:
    def one(conn: http.client.HTTPConnection, rel: str) -> None:
        with open(os.path.join(src, rel), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            body = f if size >= BIG else f.read()  # a large file streams from the file, not from memory
            request(conn, signer, "PUT", f"/{bucket}/" + quote(prefix + rel), body=body, size=size)

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
