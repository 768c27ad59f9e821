"""Paged listings, read fast: the next page asked for while this one is read, and a long listing split into
key ranges read side by side once the keys of the sync's other side are known.

Why ranges: a page costs the store most of a round trip (SeaweedFS here: ~30-40 ms of its time per 1,000
keys), and a paged listing is a chain — each page names the next. 100,000 keys are 100 pages in turn,
~4 s, while the store's other cores wait. A store that takes a start key (S3's ``start-after``) can
serve several chains at once: four took 1.7-2.6 s for the same 100 pages, two 2.2-3.1 s (docs/design.md,
"Listing in key ranges"). Where to cut needs the keys' distribution, which a listing alone never tells; the
local side of a sync has just walked its files, and in the usual case (a no-op, an incremental sync) the
store holds nearly the same keys. So the first chain starts at once, and when the local walk ends, what
remains after its position is cut at every N-th local key, N a whole number of pages: where both sides
agree, each chain ends exactly at a page's end and the split costs no request at all.

Correct whatever the keys: a chain reads from its start key until a page's last key (parsed exactly)
reaches its end key, and the next chain starts after that end key, so together they cover every key
whichever keys the store really has; a key two chains both read is the same object listed twice.
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Collection
from typing import Generic, TypeVar

from gpstage import aio

PAGE_KEYS = 1000  # S3's page (max-keys' default and maximum): range ends fall on page ends where the sides agree
RANGE_MIN_KEYS = 10_000  # a range of fewer keys is not worth its chain: 10 pages in turn
RANGES = 4  # chains at once at most, the first included (measured: 4 fastest, 2 cores, design.md)

Page = TypeVar("Page")


class KnownKeys:
    """The keys (relative to the tree root) that the other side of a sync holds: told by its scan when it
    ends, read by this side's listing between pages. Both run as coroutines of one sync, one at a time,
    so no lock is needed. Fewer than two ranges' worth of keys are never sorted: there is nothing to cut."""

    def __init__(self) -> None:
        self.keys: list[str] | None = None

    def tell(self, rels: Collection[str]) -> None:
        if len(rels) >= 2 * RANGE_MIN_KEYS:
            self.keys = sorted(rels)  # code point order: UTF-8's byte order, the store's

    def bounds_after(self, last: str) -> list[str]:
        """End keys for the ranges that cut what remains after ``last`` (the key a chain has read up to);
        empty if too little remains. Each range is a whole number of pages of known keys."""
        keys = self.keys or []
        i = bisect.bisect_right(keys, last)
        ranges = min(RANGES, (len(keys) - i) // RANGE_MIN_KEYS)
        if ranges < 2:
            return []
        per = -(-(len(keys) - i) // ranges // PAGE_KEYS) * PAGE_KEYS
        return [keys[i + per * j - 1] for j in range(1, ranges) if i + per * j < len(keys)]


Fetch = Callable[[str | None, str | None], Awaitable[Page]]


class PagedListing(Generic[Page]):
    """One listing: ``fetch(start_after, token)`` gets a page (``start_after`` sent only with no token);
    ``hint(page)`` is its continuation token and ``last_hint(page)`` its last key, both found cheaply before
    parsing; ``read(page)`` consumes it and returns its exact token (None on the last page) and last key.
    A hint only decides whether a request is sent early: a wrong one costs a request, never a key."""

    def __init__(self, fetch: Fetch[Page], hint: Callable[[Page], str | None],
                 read: Callable[[Page], tuple[str | None, str | None]],
                 last_hint: Callable[[Page], str | None] = lambda page: None, known: KnownKeys | None = None) -> None:
        self.fetch, self.hint, self.read, self.last_hint = fetch, hint, read, last_hint
        self.known = known
        self.others: list[aio.Pending] = []  # the ranges started beside the first
        self.failed = False  # set when one range failed: the others stop at their next page

    async def run(self) -> None:
        """Read every page; a failure in any range fails the listing and ends the others first."""
        try:
            await self._range(None, None, first=self.known is not None)
            while self.others:
                await self.others.pop(0).result()
        except BaseException:
            self.failed = True
            for pending in self.others:
                pending.drop()
            raise

    async def _range(self, start: str | None, end: str | None, first: bool = False) -> None:
        """Keys after ``start`` up to a page that reaches ``end`` (None: to the end). The next page is asked
        for before this one is read, unless this one's last key already reaches ``end``; the first range
        offers to cut its remainder after each page until the known keys are there (``first``)."""
        page = await self.fetch(start, None)
        while True:
            near = end is not None and (hinted := self.last_hint(page)) is not None and hinted >= end
            guess = None if near else self.hint(page)
            ahead = await aio.start(self.fetch(start, guess)) if guess else None
            try:
                token, last = self.read(page)
                if first and last is not None and self.known is not None and self.known.keys is not None:
                    first, end = False, await self._cut(last)
            except BaseException:
                _drop(ahead)
                raise
            if token is None or self.failed or (end is not None and last is not None and last >= end):
                _drop(ahead)
                return
            if ahead is not None and token == guess:
                page = await ahead.result()
                continue
            _drop(ahead)
            page = await self.fetch(start, token)

    async def _cut(self, last: str) -> str | None:
        """Start a chain for each range after the first of what remains after ``last``; the first range's end."""
        assert self.known is not None
        bounds = self.known.bounds_after(last)
        for start, end in zip(bounds, [*bounds[1:], None], strict=True):
            self.others.append(await aio.start(self._other(start, end)))
        return bounds[0] if bounds else None

    async def _other(self, start: str, end: str | None) -> None:
        """A range beside the first: its failure stops every range at its next page, not only when awaited."""
        try:
            await self._range(start, end)
        except BaseException:
            self.failed = True
            raise


def _drop(ahead: aio.Pending | None) -> None:
    """Give up a request made on a guess that proved wrong or useless: a dropped guess is no failure."""
    if ahead is not None:
        ahead.drop()
