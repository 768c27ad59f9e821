"""What a listing returns, and the rules every listing obeys: safe keys, excludes, reserved names.

A tree is keyed by relative path with "/" separators. Names gpstage itself uses on storage (the
manifest, in-flight temporary files) are reserved: they are never data, so they never appear in a
listing, a transfer or a deletion.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from gpstage.errors import UnsafePath

MANIFEST_NAME = ".gpstage-manifest.json"
SHA256_META = "gpstagesha256"  # user-metadata key of a content hash (letters only: Azure allows no '-' or '_' there)
TEMP_PREFIX = ".gpstage-tmp."  # downloads land as .gpstage-tmp.<pid>.<random>.<name>, then are renamed


class Entry:
    """One file. ``mtime_ns``/``mode`` are the source file's (local stat, or the manifest for objects).

    Plain classes with slots, the records of every listing: ``dataclasses`` would cost a 20-file sync
    ~10 ms of start-up (docs/design.md §19)."""

    __slots__ = ("size", "mtime_ns", "mode", "etag", "md5", "modified_ns", "path", "sha256")

    def __init__(self, size: int, mtime_ns: int | None = None, mode: int | None = None, etag: str | None = None,
                 md5: str | None = None, modified_ns: int | None = None, path: str | None = None,
                 sha256: str | None = None) -> None:
        self.size = size
        self.mtime_ns = mtime_ns
        self.mode = mode
        self.etag = etag  # object stores: identifies the stored bytes
        self.md5 = md5  # hex, when the store or the manifest knows it
        self.modified_ns = modified_ns  # object stores: when the object was written (LastModified)
        self.path = path  # local stores: the absolute path to read (symlinks resolved)
        self.sha256 = sha256  # hex: an input-cache object's gpstagesha256 metadata (RemoteTree.stat)

    def __repr__(self) -> str:
        return "Entry(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__ if getattr(self, k) is not None) + ")"

    @property
    def time_ns(self) -> int | None:
        """The best known modification time: the source mtime, else the upload time."""
        return self.mtime_ns if self.mtime_ns is not None else self.modified_ns


class Tree:
    __slots__ = ("files", "dirs")

    def __init__(self, files: dict[str, Entry] | None = None, dirs: dict[str, int | None] | None = None) -> None:
        self.files = {} if files is None else files
        self.dirs = {} if dirs is None else dirs  # rel path -> mode (None: unknown)


def is_reserved(name: str) -> bool:
    return name == MANIFEST_NAME or name.startswith(TEMP_PREFIX)


def check_key(rel: str, where: str) -> str:
    """Refuse a relative key that could escape the tree it is written under."""
    bad = (
        not rel
        or rel.startswith("/")
        or "\\" in rel
        or "\x00" in rel
        or any(part in ("", ".", "..") for part in rel.split("/"))
    )
    if bad:
        raise UnsafePath(
            f"refusing unsafe key {rel!r} under {where}: '..', '.', empty, absolute or backslash components "
            "could write outside the target",
            "remove or rename that object on storage",
        )
    return rel


class Excluder:
    """aws-s3-sync globs: matched against the path relative to the sync root; ``*`` also matches ``/``.

    ``include`` (None: everything) narrows the sync to the files matching one of its globs — the rest of
    the tree is neither copied nor deleted — and to the dirs on the way to them (a GenePattern job's
    input files, named one by one, in a user's uploads dir)."""

    def __init__(self, patterns: Iterable[str] = (), include: Iterable[str] | None = None) -> None:
        self.patterns: Sequence[str] = tuple(patterns)
        self.include: Sequence[str] | None = None if include is None else tuple(include)

    def excluded(self, rel: str) -> bool:
        if self.include is not None and not any(fnmatch.fnmatchcase(rel, p) for p in self.include):
            return True
        return any(fnmatch.fnmatchcase(rel, p) for p in self.patterns)

    def excluded_dir(self, rel: str) -> bool:
        if self.include is not None and not any(p.startswith(rel + "/") for p in self.include):
            return True
        return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(rel + "/", p) for p in self.patterns)

    def apply(self, tree: Tree) -> Tree:
        if not self.patterns and self.include is None:
            return tree
        return Tree(
            files={k: v for k, v in tree.files.items() if not self.excluded(k)},
            dirs={k: v for k, v in tree.dirs.items() if not self.excluded_dir(k)},
        )
