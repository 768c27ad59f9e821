"""A long listing read in key ranges side by side (gpstage.storage.listing): whatever keys the store really
holds and whatever the other side told, every key is listed; where both sides agree, no request is added."""

from __future__ import annotations

import asyncio
import bisect
from pathlib import Path

import pytest

from gpstage import aio
from gpstage.storage import listing
from gpstage.storage.listing import KnownKeys, PagedListing
from gpstage.storage.s3client import S3Client
from gpstage.sync import async_sync, sync

pytestmark = pytest.mark.timeout(120)

PAGE = 10


class FakeStore:
    """Pages of ``PAGE`` keys after a start key, S3's way: a token names where the next page starts."""

    def __init__(self, keys: list[str], fail_after: str | None = None) -> None:
        self.keys = sorted(keys)
        self.requests: list[str | None] = []  # each request's start key
        self.fail_after = fail_after
        self.listed: list[str] = []

    async def fetch(self, start: str | None, token: str | None) -> tuple[list[str], str | None]:
        self.requests.append(start)
        await aio.sleep(0.001)
        at = int(token) if token else bisect.bisect_right(self.keys, start) if start is not None else 0
        if self.fail_after is not None and start == self.fail_after:
            raise OSError("the store refused a page")
        page = self.keys[at: at + PAGE]
        return page, str(at + PAGE) if at + PAGE < len(self.keys) else None

    def read(self, page: tuple[list[str], str | None]) -> tuple[str | None, str | None]:
        self.listed.extend(page[0])
        return page[1], page[0][-1] if page[0] else None

    def listing(self, known: KnownKeys | None) -> PagedListing:
        return PagedListing(self.fetch, lambda page: page[1], self.read, lambda page: page[0][-1] if page[0] else None, known)


def keys(n: int, stem: str = "k") -> list[str]:
    return [f"{stem}{i:05d}" for i in range(n)]


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing, "PAGE_KEYS", PAGE)
    monkeypatch.setattr(listing, "RANGE_MIN_KEYS", 20)


CASES = {
    "the same keys": (keys(200), keys(200)),
    "the store has more and lacks some": (keys(230)[::1] + keys(15, "z"), keys(200)[::3] + keys(200)[1::3]),
    "nothing in common": (keys(200, "m"), keys(200, "b") + keys(200, "x")),
}


@pytest.mark.parametrize("threads", [False, True], ids=["loop", "threads"])
@pytest.mark.parametrize("case", list(CASES))
def test_every_key_the_store_holds_is_listed_whatever_the_other_side_told(case: str, threads: bool) -> None:
    stored, told = CASES[case]
    store, known = FakeStore(stored), KnownKeys()
    known.tell(told)
    aio.run_sync(store.listing(known).run(), threads=threads)
    assert set(store.listed) == set(stored)
    starts = {s for s in store.requests if s is not None}
    assert starts or case == "nothing in common"  # cut into ranges wherever known keys remained after page one
    if case == "the same keys":
        assert len(starts) == listing.RANGES - 1
        assert len(store.requests) == len(stored) // PAGE  # each range ends at a page's end: no request added
        assert sorted(store.listed) == stored  # and no key read twice


def test_keys_told_after_the_listing_began_cut_only_what_remains() -> None:
    """The local walk ends while the first range is under way: the cut starts after the page it had read."""
    store, known = FakeStore(keys(300)), KnownKeys()
    fetch = store.fetch

    async def telling(start: str | None, token: str | None) -> tuple[list[str], str | None]:
        if len(store.requests) == 5:
            known.tell(keys(300))
        return await fetch(start, token)

    store.fetch = telling  # type: ignore[method-assign]
    aio.run_sync(store.listing(known).run(), threads=False)
    assert sorted(store.listed) == keys(300) and len(store.requests) == 30
    assert min(s for s in store.requests if s is not None) > "k00040"


def test_too_few_keys_are_one_range() -> None:
    store, known = FakeStore(keys(39)), KnownKeys()
    known.tell(keys(39))
    assert known.keys is None  # fewer than two ranges' worth: never sorted
    aio.run_sync(store.listing(known).run())
    assert store.requests == [None] * 4 and store.listed == keys(39)


@pytest.mark.parametrize("threads", [False, True], ids=["loop", "threads"])
def test_a_range_that_fails_fails_the_listing(threads: bool) -> None:
    known = KnownKeys()
    known.tell(keys(200))
    store = FakeStore(keys(200), fail_after=known.bounds_after("k00009")[1])
    with pytest.raises(OSError, match="refused"):
        aio.run_sync(store.listing(known).run(), threads=threads)
    assert len(store.requests) < 12  # the other ranges stopped at their next page: 16 read to their ends


@pytest.mark.parametrize("on_loop", [False, True], ids=["threads", "loop"])
def test_a_sync_against_s3_cut_in_ranges_sees_every_object(tmp_path: Path, bucket: str, s3_client, on_loop: bool,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Real S3 (moto), pages of 10: objects only the store has are deleted, files only the local side has
    are uploaded, and a no-op afterwards is one request per page."""
    starts: list[str] = []
    list_page = S3Client.list_page

    def spy(self: S3Client, bucket: str, prefix: str, token: str | None, start_after: str | None = None):
        starts.extend([start_after] if start_after and not token else [])
        return list_page(self, bucket, prefix, token, start_after)

    monkeypatch.setattr(S3Client, "list_page", spy)
    src = tmp_path / "src"
    for i in range(120):
        (src / f"d{i // 30}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i // 30}" / f"f{i:03d}").write_bytes(b"x" * (i % 7))
    url = f"s3://{bucket}/t"
    sync(str(src), url)
    for i in range(0, 120, 9):
        (src / f"d{i // 30}" / f"f{i:03d}").unlink()
        s3_client.put_object(Bucket=bucket, Key=f"t/d{i // 30}/g{i:03d}", Body=b"only on the store")
    (src / "e").mkdir()
    (src / "e" / "new").write_bytes(b"only here")
    starts.clear()
    run = asyncio.run(async_sync(str(src), url, delete=True)) if on_loop else sync(str(src), url, delete=True)
    assert len(starts) == listing.RANGES - 1  # the listing was cut
    assert (run.files_copied, run.files_deleted, run.errors) == (1, 28, [])
    stored = {o["Key"][2:] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="t/")["Contents"]}
    local = {str(p.relative_to(src)) for p in src.rglob("*") if p.is_file()}
    assert stored == local | {".gpstage-manifest.json"}
    again = sync(str(src), url)
    assert (again.files_copied, again.files_skipped) == (0, len(local))
    assert again.requests == -(-(len(local) + 1) // PAGE)
