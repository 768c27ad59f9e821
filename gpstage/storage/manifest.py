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
import sys
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


# A file's entry in memory: (size, etag, mtime_ns, mode text, md5) as stored, md5 SAME_AS_ETAG when it is
# the ETag's own hex (every single-part upload). A tuple, not the parsed dict: a 100,000-file manifest
# holds 29 MiB this way against 52 MiB (measured with tracemalloc), and a no-op holds one of each tree.
Record = tuple[Any, Any, Any, Any, Any]
SAME_AS_ETAG = True


def _record(size: Any, etag: Any, mtime_ns: Any, mode: Any, md5: Any) -> Record:
    if md5 is not None and isinstance(etag, str) and etag[1:-1] == md5:
        md5 = SAME_AS_ETAG
    return (size, etag, mtime_ns, sys.intern(mode) if isinstance(mode, str) else mode, md5)


def _as_record(obj: dict[str, Any]) -> Any:
    """json's object hook: a file's record becomes a :data:`Record` as it is decoded, so a 100,000-file
    manifest never exists as 100,000 dicts (~23 MiB more at the peak of a no-op). A file's record is the
    only object of the format with a ``size``; JSON decodes nothing else to a tuple."""
    if "size" not in obj:
        return obj
    return _record(obj.get("size"), obj.get("etag"), obj.get("mtime_ns"), obj.get("mode"), obj.get("md5"))


def _stored(rec: Record) -> dict[str, Any]:
    """The record as the format writes it (the inverse of parsing)."""
    size, etag, mtime_ns, mode, md5 = rec
    out: dict[str, Any] = {"size": size, "etag": etag}
    if mtime_ns is not None:
        out["mtime_ns"] = mtime_ns
    if mode is not None:
        out["mode"] = mode
    if md5 is not None:
        out["md5"] = etag[1:-1] if md5 is SAME_AS_ETAG else md5
    return out


class Manifest:
    """Entries keyed by path relative to the tree root the manifest describes."""

    def __init__(self, files: dict[str, Record] | None = None, dirs: dict[str, dict[str, Any]] | None = None,
                 written_ns: int = 0) -> None:
        self.files = files or {}
        self.dirs = dirs or {}
        self.written_ns = written_ns

    @classmethod
    def parse(cls, data: bytes, prefix: str = "") -> Manifest:
        """Parse a manifest found at ``prefix`` (relative to the listing root); bad or foreign content is
        ignored. The caller hands over ``data``: it is released once decoded (16 MiB for 100,000 files)."""
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return cls()
        del data
        try:
            doc = json.loads(text, object_hook=_as_record)
        except ValueError:
            return cls()
        del text
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
            return cls()
        pre = f"{prefix}/" if prefix else ""
        raw = doc.pop("files", None)
        raw = raw if isinstance(raw, dict) else {}
        if pre or not all(type(v) is tuple for v in raw.values()):
            raw = {pre + k: v for k, v in raw.items() if type(v) is tuple}
        listed = doc.get("dirs")
        dirs = {pre + k: v for k, v in listed.items() if isinstance(v, dict)} if isinstance(listed, dict) else {}
        return cls(raw, dirs, int(doc.get("written_ns") or 0))

    def merge(self, other: Manifest) -> None:
        """Add ``other``'s entries; where both have one, the newer manifest's wins."""
        newer = other.written_ns >= self.written_ns
        for mine, theirs in ((self.files, other.files), (self.dirs, other.dirs)):
            for k, v in theirs.items():
                if newer or k not in mine:
                    mine[k] = v  # type: ignore[index]
        self.written_ns = max(self.written_ns, other.written_ns)

    def apply(self, tree: Tree, where: str) -> None:
        """Fill mtimes, modes and md5s of ``tree``'s entries whose objects are unchanged; add empty dirs."""
        for rel, entry in tree.files.items():
            rec = self.files.get(rel)
            if rec and rec[0] == entry.size and rec[1] == entry.etag and entry.etag:
                mtime, mode, md5 = rec[2], rec[3], rec[4]
                entry.mtime_ns = mtime if isinstance(mtime, int) else None
                entry.mode = _mode(mode)
                if md5 is SAME_AS_ETAG:
                    md5 = entry.etag[1:-1]
                if isinstance(md5, str) and entry.md5 is None:
                    entry.md5 = md5
        for rel, rec in self.dirs.items():
            tree.dirs[check_key(rel, where)] = _mode(rec.get("mode"))

    @staticmethod
    def _file_record(e: Entry) -> Record | None:
        """A file's entry as stored; None for one without an ``etag`` (it cannot be validated later)."""
        if not e.etag:
            return None
        return _record(e.size, e.etag, e.mtime_ns, f"{e.mode:04o}" if e.mode is not None else None, e.md5 or None)

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
        doc = {"format": FORMAT, "version": VERSION, "written_ns": self.written_ns,
               "files": {rel: _stored(rec) for rel, rec in self.files.items()}, "dirs": self.dirs}
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
