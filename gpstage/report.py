"""What a sync did, as numbers a person, a test or the GenePattern server can read (``--json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TransferReport:
    src: str
    dst: str
    dry_run: bool = False
    files_copied: int = 0
    bytes_copied: int = 0
    files_skipped: int = 0  # already identical at the destination
    files_deleted: int = 0
    files_from_cache: int = 0  # placed by a server-side copy from the input cache: none of their bytes were sent
    bytes_from_cache: int = 0
    metadata_updated: int = 0  # same content; only mode or mtime fixed
    dirs_created: int = 0
    dirs_deleted: int = 0
    retries: int = 0
    requests: int = 0  # storage API calls (object stores only)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        return d

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
