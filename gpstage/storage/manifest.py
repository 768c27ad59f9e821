"""The on-storage format that keeps what object stores drop: modes, mtimes, empty dirs (docs/design.md §5).

Format (documented in docs/storage-format.md; change it only with a new ``version``): a JSON object
stored as ``.gpstage-manifest.json`` at the root of every tree gpstage uploads::

    {"format": "gpstage-manifest", "version": 1, "written_ns": 1764090000000000000,
     "files": {"rel/path": {"size": 12, "etag": "\\"9a0...\\"", "mtime_ns": 1764..., "mode": "0755",
                            "md5": "9a0..."}},
     "dirs":  {"rel/empty": {"mode": "0755"}}}

Why this is safe when several writers share a prefix (a shared TASKLIB), or when somebody uses plain
``aws s3 sync`` on it: an entry is believed only while the object it describes is unchanged — the
listing's size and ETag must equal the entry's. An object rewritten by anyone else no longer matches,
so its entry is ignored: at worst a file is transferred again, never taken for another one, and its
mode is never taken from another file's upload. Manifests found deeper in a listing (a subtree that
was synced on its own) are merged; the newest valid entry wins.
"""

from __future__ import annotations

import json
import time
from typing import Any

from gpstage.storage.tree import Entry, Tree, check_key

FORMAT = "gpstage-manifest"
VERSION = 1


def _mode(text: Any) -> int | None:
    try:
        return int(str(text), 8) & 0o7777
    except (TypeError, ValueError):
        return None


class Manifest:
    """Entries keyed by path relative to the tree root the manifest describes."""

    def __init__(self, files: dict[str, dict[str, Any]] | None = None, dirs: dict[str, dict[str, Any]] | None = None,
                 written_ns: int = 0) -> None:
        self.files = files or {}
        self.dirs = dirs or {}
        self.written_ns = written_ns

    @classmethod
    def parse(cls, data: bytes, prefix: str = "") -> Manifest:
        """Parse a manifest found at ``prefix`` (relative to the listing root); bad or foreign content is ignored."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return cls()
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
            return cls()
        pre = f"{prefix}/" if prefix else ""
        files = {pre + k: v for k, v in (doc.get("files") or {}).items() if isinstance(v, dict)}
        dirs = {pre + k: v for k, v in (doc.get("dirs") or {}).items() if isinstance(v, dict)}
        return cls(files, dirs, int(doc.get("written_ns") or 0))

    def merge(self, other: Manifest) -> None:
        """Add ``other``'s entries; where both have one, the newer manifest's wins."""
        newer = other.written_ns >= self.written_ns
        for mine, theirs in ((self.files, other.files), (self.dirs, other.dirs)):
            for k, v in theirs.items():
                if newer or k not in mine:
                    mine[k] = v
        self.written_ns = max(self.written_ns, other.written_ns)

    def apply(self, tree: Tree, where: str) -> None:
        """Fill mtimes, modes and md5s of ``tree``'s entries whose objects are unchanged; add empty dirs."""
        for rel, entry in tree.files.items():
            rec = self.files.get(rel)
            if rec and rec.get("size") == entry.size and rec.get("etag") == entry.etag and entry.etag:
                mtime = rec.get("mtime_ns")
                entry.mtime_ns = mtime if isinstance(mtime, int) else None
                entry.mode = _mode(rec.get("mode"))
                if isinstance(rec.get("md5"), str) and entry.md5 is None:
                    entry.md5 = rec["md5"]
        for rel, rec in self.dirs.items():
            tree.dirs[check_key(rel, where)] = _mode(rec.get("mode"))

    @staticmethod
    def _file_record(e: Entry) -> dict[str, Any] | None:
        """A file's entry as stored; None for one without an ``etag`` (it cannot be validated later)."""
        if not e.etag:
            return None
        rec: dict[str, Any] = {"size": e.size, "etag": e.etag}
        if e.mtime_ns is not None:
            rec["mtime_ns"] = e.mtime_ns
        if e.mode is not None:
            rec["mode"] = f"{e.mode:04o}"
        if e.md5:
            rec["md5"] = e.md5
        return rec

    @staticmethod
    def _dir_record(mode: int | None) -> dict[str, Any]:
        return {"mode": f"{mode:04o}"} if mode is not None else {}

    @classmethod
    def build(cls, tree: Tree) -> Manifest:
        """A manifest describing ``tree`` as stored (entries need ``etag``; ones without are skipped)."""
        files = {rel: rec for rel, e in tree.files.items() if (rec := cls._file_record(e)) is not None}
        dirs = {rel: cls._dir_record(m) for rel, m in tree.dirs.items()}
        return cls(files, dirs, time.time_ns())

    def describes(self, tree: Tree) -> bool:
        """Whether :meth:`build` of ``tree`` would hold exactly this manifest's entries — decided entry by
        entry, without building it: a no-op over 100,000 files would otherwise hold two manifests."""
        described = 0
        for rel, e in tree.files.items():
            rec = self._file_record(e)
            if rec is None:
                continue
            if self.files.get(rel) != rec:
                return False
            described += 1
        return (described == len(self.files) and len(tree.dirs) == len(self.dirs)
                and all(self.dirs.get(rel) == self._dir_record(m) for rel, m in tree.dirs.items()))

    def dumps(self) -> bytes:
        doc = {"format": FORMAT, "version": VERSION, "written_ns": self.written_ns, "files": self.files, "dirs": self.dirs}
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
