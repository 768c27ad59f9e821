"""What every object-store provider shares: a URL's bucket path, the tree of one bucket prefix,
paged listings read ahead, listing timestamps, upload parts, SDK loggers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from gpstage import aio
from gpstage.errors import BadInput
from gpstage.storage.base import RemoteTree
from gpstage.urls import split_url


def bucket_path(url: str) -> str:
    """``bucket/key/prefix`` of an object-store URL; keys are literal (never decoded or normalised)."""
    scheme, rest = split_url(url)
    path = rest.rstrip("/")
    if not path or path.startswith("/"):
        raise BadInput(f"{url!r} names no bucket", f"write {scheme}://BUCKET/prefix")
    return path


class BucketTree(RemoteTree):
    """A tree that is a key prefix in one bucket (an S3 bucket, a GCS bucket, an Azure container)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.bucket, _, key = self.root.partition("/")
        self.prefix = f"{key}/" if key else ""  # ends in '/', or empty for a whole bucket

    def object_key(self, rel: str) -> str:
        return f"{self.prefix}{rel}"


Page = TypeVar("Page")


async def read_pages(fetch: Callable[[str | None], Awaitable[Page]], hint: Callable[[Page], str | None],
                     read: Callable[[Page], str | None]) -> None:
    """Read every page of a paged listing, asking for the next page before this one is read.

    Pages come one after another (each needs the previous one's continuation token), so a plain loop
    spends the store's time per page and the client's parsing of it in turn; with the next request in
    flight they overlap (100 pages for 100,000 keys). ``fetch(token)`` gets a page (``None``: the first);
    ``hint(page)`` is its continuation token found cheaply, before parsing; ``read(page)`` consumes the
    page and returns its exact token, ``None`` on the last page. A wrong hint costs one request, never a
    wrong listing: the page is asked for again with the exact token."""
    page = await fetch(None)
    while True:
        guess = hint(page)
        ahead = await aio.start(fetch(guess)) if guess else None  # its request sent before this page is read
        try:
            token = read(page)
        except BaseException:
            _drop(ahead)
            raise
        if ahead is not None and token == guess:
            page = await ahead.result()
            continue
        _drop(ahead)
        if token is None:
            return
        page = await fetch(token)


def _drop(ahead: aio.Pending | None) -> None:
    """Give up a request made on a guess that proved wrong or useless: a dropped guess is no failure."""
    if ahead is not None:
        ahead.drop()


def to_ns(value: Any) -> int | None:
    """Nanoseconds since the epoch from a listing's time: a datetime, seconds, nanoseconds or ISO 8601."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1e9)
    if isinstance(value, (int, float)):
        return int(value * 1e9) if value < 1e11 else int(value)
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        return None


def quiet_library_logs(name: str) -> None:
    """A NullHandler on an SDK's logger: its warnings reach an application's logging setup if there is
    one, and are otherwise not printed by Python's last-resort handler (errors are gpstage's one line)."""
    import logging

    logger = logging.getLogger(name)
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
