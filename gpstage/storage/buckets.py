"""What every object-store provider shares: a URL's bucket path, the tree of one bucket prefix,
listing timestamps, SDK loggers (paged listings: :mod:`gpstage.storage.listing`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
