"""What a sync did, as numbers a person, a test or the GenePattern server can read (``--json``)."""

from __future__ import annotations

from typing import Any


class TransferReport:
    """The counters of one sync. A plain class, as the other records on the sync path: ``dataclasses``
    alone costs ~10 ms of a 20-file sync's start-up (docs/design.md §19)."""

    def __init__(self, src: str, dst: str, dry_run: bool = False) -> None:
        self.src = src
        self.dst = dst
        self.dry_run = dry_run
        self.files_copied = 0
        self.bytes_copied = 0
        self.files_skipped = 0  # already identical at the destination
        self.files_deleted = 0
        self.files_from_cache = 0  # placed by a server-side copy from the input cache: none of their bytes were sent
        self.bytes_from_cache = 0
        self.metadata_updated = 0  # same content; only mode or mtime fixed
        self.dirs_created = 0
        self.dirs_deleted = 0
        self.retries = 0
        self.requests = 0  # storage API calls (object stores only)
        self.errors: list[str] = []
        self.seconds = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Every counter, in the order above (the ``--json`` report)."""
        return {**vars(self), "errors": list(self.errors), "seconds": round(self.seconds, 3)}

    def summary(self) -> str:
        verb = "would copy" if self.dry_run else "copied"
        cached = (f" ({self.files_from_cache} files, {_human(self.bytes_from_cache)} from the input cache)"
                  if self.files_from_cache else "")
        return (
            f"{verb} {self.files_copied} files ({_human(self.bytes_copied)}){cached}, skipped {self.files_skipped}, "
            f"deleted {self.files_deleted}, retries {self.retries}, {self.seconds:.2f}s"
        )


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
