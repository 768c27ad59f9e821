"""gpstage's S3 client sends each request by the transport that suits it (docs/design.md, "The S3 fast
lane"): whole-object GETs and single PUTs through obstore, listings/HEADs/deletes and parts over the
standard library, ranged reads of inputs and server-side copies over aiohttp. These tests pin what each
transport must keep: the same bytes, modes and mtimes whichever way an object went, the own client for keys
obstore cannot name, and errors in the shapes the retry policy and the one-line messages read."""

from __future__ import annotations

import asyncio
import gc
import os
import socketserver
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gpstage import aio
from gpstage.errors import StorageError
from gpstage.report import TransferReport
from gpstage.storage import LocalTree, RemoteTree, open_tree
from gpstage.storage.listing import PagedListing
from gpstage.storage.s3client import S3Client
from gpstage.storage.s3creds import Credentials
from gpstage.storage.s3lane import ClockSkewed, ObstoreLane, translate
from gpstage.storage.s3plain import STALE, PlainTransport
from gpstage.storage.s3xml import ListPage, S3ResponseError
from gpstage.storage.source import FileSource
from gpstage.storage.tree import Entry
from gpstage.sync import sync
from gpstage.testing.storage import snapshot

pytestmark = pytest.mark.timeout(180)


def lane(endpoint: str) -> ObstoreLane:
    return ObstoreLane(endpoint, "us-east-1", os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"], None,
                       connect_timeout=2, read_timeout=10, workers=4)


def tree_with(tmp_path: Path, names: list[str]) -> Path:
    src = tmp_path / "src"
    for i, name in enumerate(names):
        p = src / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(100 + i))
        p.chmod(0o640 if i % 2 else 0o755)
        os.utime(p, ns=(1_700_000_000_123_456_789 + i, 1_700_000_000_123_456_789 + i))
    return src


@pytest.mark.parametrize("fast_lane", [True, False])
def test_a_round_trip_is_identical_with_and_without_the_lane(tmp_path: Path, bucket: str, fast_lane: bool,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys obstore cannot name (a tab, below) take the own client within the same sync; so do a client's
    first whole-object requests (two here, so that the lane has the others)."""
    monkeypatch.setattr("gpstage.storage.s3client.PLAIN_FIRST", 2)
    Path(os.environ["GPSTAGE_CONFIG"]).write_text(f'[storage."s3://{bucket}/"]\ns3_fast_lane = {str(fast_lane).lower()}\n')
    src = tree_with(tmp_path, ["a.txt", "d/b c+d.txt", "d/e/ünï.txt", "tab\there.txt", "big.bin"])
    (src / "big.bin").write_bytes(os.urandom(3 * 2**20))  # ranges over http.client; the copies on a loop (lane)
    url = f"s3://{bucket}/lane-{fast_lane}"
    sync(str(src), url)
    sync(url, str(tmp_path / "back"))
    assert snapshot(tmp_path / "back") == snapshot(src)


def test_a_large_object_comes_down_in_ranges_written_in_place(tmp_path: Path, bucket: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gpstage.storage.s3.RANGE_PART", 2**20)  # 3.5 MiB: four ranges, the last a short one
    src = tree_with(tmp_path, ["big.bin"])
    (src / "big.bin").write_bytes(os.urandom(7 * 2**19))
    os.utime(src / "big.bin", ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    sync(str(src), f"s3://{bucket}/ranged")
    sync(f"s3://{bucket}/ranged", str(tmp_path / "back"))
    assert snapshot(tmp_path / "back") == snapshot(src)


def test_a_local_files_parts_are_sent_from_the_file_never_read_into_memory(tmp_path: Path, bucket: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel sends each part from the page cache (``sendfile``): 1 GiB up peaked at 152 MiB RSS when
    four 8 MiB parts were read into bytes, at 46 MiB this way."""
    monkeypatch.setattr("gpstage.storage.s3.PART_SIZE", 5 * 2**20)  # S3's smallest part: 12 MiB are three parts

    def no_reads(*args: object) -> bytes:
        raise AssertionError(f"a part was read into memory: {args}")

    monkeypatch.setattr("gpstage.storage.source.read_range", no_reads)
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(12 * 2**20))
    sync(str(src), f"s3://{bucket}/from-file")
    sync(f"s3://{bucket}/from-file", str(tmp_path / "back"))
    assert snapshot(tmp_path / "back") == snapshot(src)


def test_a_file_too_large_for_the_part_limit_goes_in_larger_parts(tmp_path: Path, bucket: str, s3_client,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 takes at most 10,000 parts: a file that needs more at the usual size gets whole-MiB parts that fit
    (here the limit is 2 and the usual part 5 MiB, so 12 MiB go as two 6 MiB parts, not three)."""
    monkeypatch.setattr("gpstage.storage.s3.PART_SIZE", 5 * 2**20)
    monkeypatch.setattr("gpstage.storage.s3.MAX_PARTS", 2)
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(12 * 2**20))
    sync(str(src), f"s3://{bucket}/few-parts")
    assert s3_client.head_object(Bucket=bucket, Key="few-parts/big.bin")["ETag"].strip('"').endswith("-2")
    sync(f"s3://{bucket}/few-parts", str(tmp_path / "back"))
    assert snapshot(tmp_path / "back") == snapshot(src)


def test_a_file_that_shrank_below_its_listed_size_fails_its_part_and_leaves_nothing(tmp_path: Path, bucket: str,
                                                                                       s3_client,
                                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gpstage.storage.s3.PART_SIZE", 5 * 2**20)
    path = tmp_path / "log.txt"
    path.write_bytes(os.urandom(10 * 2**20 + 10))  # listed at 15 MiB, then truncated: the third part is short

    async def upload() -> None:
        async with open_tree(f"s3://{bucket}/shrunk", TransferReport("", "")) as tree:
            await tree.upload(FileSource(str(path), 15 * 2**20), "log.txt")

    with pytest.raises(Exception) as err:
        asyncio.run(upload())
    assert "shrank while it was uploaded" in str(err.value) and "\n" not in str(err.value)
    assert "Contents" not in s3_client.list_objects_v2(Bucket=bucket, Prefix="shrunk/")
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # aborted


def test_a_batch_of_small_downloads_reports_each_failure_and_writes_the_rest(tmp_path: Path, bucket: str,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small downloads go through the lane's threads in batches (docs/design.md, "The S3 fast lane"): an object gone
    since the listing is a described storage error after one request (a 404 is not retried), a write that
    cannot land is its local error, and every other file arrives whole with its mode and mtime."""
    monkeypatch.setattr("gpstage.storage.s3client.PLAIN_FIRST", 2)
    src = tree_with(tmp_path, [f"d{i % 3}/f{i}.txt" for i in range(40)])
    url = f"s3://{bucket}/batch"
    sync(str(src), url)
    back = tmp_path / "back"
    (back / "d0/f0.txt").mkdir(parents=True)  # a non-empty directory where a file must land
    (back / "d0/f0.txt/keep").write_text("x")

    async def go() -> tuple[dict[str, Exception], TransferReport]:
        report = TransferReport(url, str(back))
        async with open_tree(url, report) as remote, open_tree(str(back), report) as local:
            assert isinstance(remote, RemoteTree) and isinstance(local, LocalTree)
            items = sorted((await remote.scan()).files.items()) + [("gone.txt", Entry(size=5))]
            assert remote.batch(items) == items
            report.requests = 0
            return await remote.download_batch(items, local, 8), report

    errors, report = asyncio.run(go())
    assert sorted(errors) == ["d0/f0.txt", "gone.txt"]
    assert "a directory of that name exists" in str(errors["d0/f0.txt"])
    assert isinstance(errors["gone.txt"], StorageError) and str(errors["gone.txt"]).startswith(f"{url}/gone.txt")
    assert (report.requests, report.retries) == (41, 0)
    got, want = snapshot(back), snapshot(src)
    assert {r: v for r, v in got.items() if not r.startswith("d0/f0.txt") and v[0] == "file"} == \
        {r: v for r, v in want.items() if r != "d0/f0.txt" and v[0] == "file"}


def test_an_object_replaced_since_the_listing_fails_its_download_and_leaves_nothing(tmp_path: Path, bucket: str) -> None:
    """A large download asks for the listed bytes (If-Match, and their length): an object replaced in
    between is one clear error, never a mix of old and new bytes, and no temp file stays behind."""
    src = tree_with(tmp_path, ["big.bin"])
    (src / "big.bin").write_bytes(os.urandom(3 * 2**20))
    url = f"s3://{bucket}/replaced"
    sync(str(src), url)
    back = tmp_path / "back"
    back.mkdir()

    async def go() -> None:
        report = TransferReport(url, str(back))
        async with open_tree(url, report) as remote, open_tree(str(back), report) as local:
            assert isinstance(remote, RemoteTree) and isinstance(local, LocalTree)
            entry = (await remote.scan()).files["big.bin"]
            await remote.upload(FileSource(str(tree_with(tmp_path / "other", ["big.bin"]) / "big.bin"), 100), "big.bin")
            await remote.download("big.bin", entry, local)

    with pytest.raises(StorageError) as err:
        asyncio.run(go())
    assert str(err.value).startswith(f"{url}/big.bin: the object changed while it was being copied")
    assert "\n" not in str(err.value) and list(back.iterdir()) == []


def test_the_lane_answers_in_the_clients_error_shapes(bucket: str, s3_endpoint: str) -> None:
    async def go() -> list[BaseException]:
        ours, nowhere = lane(s3_endpoint), lane("http://127.0.0.1:9")
        errors = []
        for call in (ours.get(bucket, "no/such/key"), ours.put("no-such-bucket-here", "k", b"x"), nowhere.get(bucket, "k")):
            try:
                await call
            except Exception as exc:  # noqa: BLE001 - collected for the asserts
                errors.append(exc)
        ours.close()
        nowhere.close()
        return errors

    missing, no_bucket, unreachable = asyncio.run(go())
    assert isinstance(missing, S3ResponseError) and (missing.status, missing.code) == (404, "NoSuchKey")
    assert isinstance(no_bucket, S3ResponseError) and no_bucket.code == "NoSuchBucket"
    assert isinstance(unreachable, ConnectionRefusedError)


def test_a_refused_clock_falls_back_to_the_client_that_adopts_the_stores_time() -> None:
    """obstore signs with this machine's clock; the store's refusal sends the request to the own client."""
    text = ("Generic S3 error: Error performing PUT http://127.0.0.1/b/k - Server returned non-2xx status code: "
            "403 Forbidden: <Error><Code>RequestTimeTooSkewed</Code><Message>too far</Message></Error>")
    assert isinstance(translate(Exception(text)), ClockSkewed)


def test_a_store_behind_an_unreachable_endpoint_fails_with_one_line(tmp_path: Path, bucket: str) -> None:
    Path(os.environ["GPSTAGE_CONFIG"]).write_text(f'[storage."s3://{bucket}/"]\nendpoint = "http://127.0.0.1:9"\n'
                                                  "retry = {attempts = 2, base_delay = 0.01}\n")
    src = tree_with(tmp_path, ["a.txt"])
    with pytest.raises(StorageError) as err:
        sync(str(src), f"s3://{bucket}/nowhere")
    assert "cannot reach the S3 endpoint http://127.0.0.1:9" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("key, taken", [("a/b c.txt", True), ("ü/%41+=&.txt", True), ("dir/", False), ("a//b", False),
                                         ("./a", False), ("a/../b", False), ("tab\tx", False), ("/abs", False)])
def test_the_lane_takes_only_keys_obstore_names_exactly(key: str, taken: bool) -> None:
    assert ObstoreLane.takes(key) is taken


def test_a_proxy_in_the_environment_keeps_every_request_on_aiohttp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    client = S3Client("http://127.0.0.1:9", "us-east-1", Credentials("k", "s"), connect_timeout=1, read_timeout=1, pool=1)
    assert client.plain is None  # aiohttp honours the proxy variables; http.client would not


def test_a_listing_of_several_pages_holds_every_key_once_at_one_request_per_page(tmp_path: Path, bucket: str) -> None:
    """Each page is read while the next is on its way (buckets.read_pages): 1,001 files and the manifest
    are two pages, keys URL-encoded; the no-op re-sync finds every file and makes exactly those two
    requests, none wasted."""
    src = tmp_path / "many"
    for i in range(1001):
        p = src / f"d{i % 7}" / f"{i:04d} +%&.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * (i % 5))
    url = f"s3://{bucket}/pages"
    sync(str(src), url)
    again = sync(str(src), url)
    assert (again.files_skipped, again.files_copied, again.requests) == (1001, 0, 2)


def read_pages(fetch: Callable[[str | None], Any], hint: Callable[[Any], str | None], read: Callable[[Any], str | None]) -> Any:
    """One chain of pages, as a listing with nothing known of the other side reads them."""
    return PagedListing(lambda _start, token: fetch(token), hint, lambda page: (read(page), None)).run()


PAGES = {None: ("ab", "t1", "t1"), "t1": ("c", "t2", "bad"), "bad": ("X", None, None), "t2": ("d", None, None)}


def reader(events: list[str], items: list[str]) -> Callable[[tuple[str, str | None, str | None]], str | None]:
    def read(page: tuple[str, str | None, str | None]) -> str | None:
        events.append(f"read {page[0]}")
        items.extend(page[0])
        return page[1]

    return read


@pytest.mark.parametrize("threads", [False, True], ids=["loop", "threads"])
def test_read_pages_requests_the_next_page_first_and_never_trusts_a_wrong_hint(threads: bool) -> None:
    """A page is (items, exact token, hint): the hint of the second is wrong, so the page it fetched is
    dropped and the right one asked for. Under both of gpstage.aio's drivers."""
    events: list[str] = []
    items: list[str] = []

    async def fetch(token: str | None) -> tuple[str, str | None, str | None]:
        events.append(f"fetch {token}")
        await aio.sleep(0)
        return PAGES[token]

    aio.run_sync(read_pages(fetch, lambda page: page[2], reader(events, items)), threads=threads)
    assert items == ["a", "b", "c", "d"]
    assert events == ["fetch None", "fetch t1", "read ab", "fetch bad", "read c", "fetch t2", "read d"]


def test_a_dropped_page_request_is_cancelled_on_a_loop_and_its_error_taken() -> None:
    """A wrong guess refused by the store is no failure (nor an error asyncio reports as never retrieved); a
    page that cannot be read cancels the request ahead."""
    pages, items = PAGES, []
    read = reader([], items)

    async def refused(token: str | None) -> tuple[str, str | None, str | None]:
        if token == "bad":  # the store refuses the wrong guess before the page is read
            raise ValueError("no such token")
        await asyncio.sleep(0.01)
        return pages[token]

    async def quiet() -> list[dict]:
        reported: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(context))
        await read_pages(refused, lambda page: page[2], read)
        gc.collect()  # a task whose error nobody took reports it when collected
        await asyncio.sleep(0)
        return reported

    assert asyncio.run(quiet()) == [] and items == ["a", "b", "c", "d"]

    cancelled = []

    async def stuck(token: str | None) -> tuple[str, str | None, str | None]:
        if token is None:
            return ("a", "t1", "t1")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(token)
            raise
        raise AssertionError("unreachable")

    def broken(page: tuple[str, str | None, str | None]) -> str | None:
        raise ValueError("a malformed page")

    async def go() -> None:
        with pytest.raises(ValueError):
            await read_pages(stuck, lambda page: page[2], broken)
        await asyncio.sleep(0)

    asyncio.run(go())
    assert cancelled == ["t1"]


@pytest.mark.parametrize(("files", "on_loop"), [(3, False), (40, True)])
def test_a_job_dirs_sync_runs_without_asyncio_and_a_larger_one_copies_on_a_loop(tmp_path: Path, bucket: str,
                                                                                files: int, on_loop: bool) -> None:
    """gpstage.aio's threads carry a sync of a few small files between a local dir and S3; above
    THREADED_COPIES the copies go on a loop (the fast lane's batches). The same bytes, modes and mtimes."""
    src = tree_with(tmp_path, [f"d{i % 2}/f{i}.txt" for i in range(files)])
    url, back = f"s3://{bucket}/threads-{files}", tmp_path / "back"
    code = ("import sys; from gpstage.sync import sync; sync(sys.argv[1], sys.argv[2]); sync(sys.argv[2], sys.argv[3]);"
            "print('asyncio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(src), url, str(back)], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == str(on_loop)
    assert snapshot(back) == snapshot(src)


def test_a_pages_hint_is_the_token_the_parse_finds_escapes_and_all() -> None:
    body = (b'<?xml version="1.0"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            b"<IsTruncated>true</IsTruncated><EncodingType>url</EncodingType><Contents><Key>d/a+b%26c.txt</Key>"
            b"<Size>3</Size><ETag>&#34;e1&#34;</ETag><LastModified>2026-01-02T03:04:05Z</LastModified></Contents>"
            b"<NextContinuationToken>t&amp;1&#34;=</NextContinuationToken></ListBucketResult>")
    page = ListPage(body)
    assert page.next_hint == 't&1"='
    assert page.read() == ([("d/a b&c.txt", 3, '"e1"', "2026-01-02T03:04:05Z")], 't&1"=')
    assert ListPage(body.replace(b"<IsTruncated>true", b"<IsTruncated>false")).read()[1] is None


def test_a_malformed_listing_page_is_a_one_line_storage_error(bucket: str, monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setattr(ListPage, "__init__", lambda self, body: setattr(self, "body", body[: len(body) // 2]))
    with pytest.raises(StorageError) as err:
        sync(f"s3://{bucket}/anything", str(tmp_path / "back"))
    assert str(err.value).startswith(f"s3://{bucket}/anything") and "\n" not in str(err.value)


class _AnswersThenHangsUp(socketserver.StreamRequestHandler):
    """One answer per connection, promising keep-alive, then the connection closed: what a store does to a
    connection that a client kept idle for longer than the store keeps one."""

    served: list[bytes]

    def handle(self) -> None:
        method = self.rfile.readline().split(b" ")[0]
        length = 0
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        self.rfile.read(length)
        self.served.append(method)
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def test_a_kept_connection_the_store_closed_is_replaced_once_and_a_post_never_sent_twice() -> None:
    served: list[bytes] = []
    handler = type("Handler", (_AnswersThenHangsUp,), {"served": served})
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        transport = PlainTransport(connect_timeout=2, read_timeout=5)
        try:
            for method, body in (("GET", None), ("PUT", b"x"), ("HEAD", None), ("DELETE", None), ("GET", None)):
                assert transport.send(method, base, "/b/k", {"host": "h"}, body).status == 200
            assert served == [b"GET", b"PUT", b"HEAD", b"DELETE", b"GET"]  # each once, though every kept one was dead
            with pytest.raises(STALE):
                transport.send("POST", base, "/b/k?uploads", {"host": "h"}, b"")
            assert served[-1] == b"GET", "a POST on a dead connection is not sent again"
        finally:
            transport.close()
            server.shutdown()
