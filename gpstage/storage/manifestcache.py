"""A local copy of the manifests this machine wrote or read, so that the next sync of the same tree reads
the manifest from disk instead of GETting it again.

Why: a sync lists the destination, then reads its manifest — one request more than the listing — and a
re-sync from the machine that wrote it (the no-op re-push of a job dir, a stage-out after the entry's
pushes, a TASKLIB pulled by job after job on one node) would fetch bytes it already has. The listing
gives the manifest's ETag; when it equals the ETag the store returned for our own write, or listed
when we last read it, the stored object is the one we have, and the local copy is used. Any other
writer changes the ETag, and the manifest is read from the store as ever.

Where: ``$GPSTAGE_CACHE_DIR/manifests``, else ``$XDG_CACHE_HOME/gpstage/manifests``, else
``~/.cache/gpstage/manifests`` (mode 0700: manifests name a job's files). Bounded: at most
:data:`MAX_FILES` copies and :data:`MAX_BYTES` in all, the least recently written go first; a manifest
above :data:`MAX_ONE` is not kept. Best effort: a cache that cannot be read or written (no home in a
container, a full disk) is a miss, never an error. ``GPSTAGE_MANIFEST_CACHE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import os

MAX_FILES = 256
MAX_BYTES = 256 * 2**20
MAX_ONE = 32 * 2**20


def cache_dir() -> str | None:
    if os.environ.get("GPSTAGE_MANIFEST_CACHE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    base = os.environ.get("GPSTAGE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "gpstage")
    return os.path.join(base, "manifests")


def _path(top: str, url: str, etag: str) -> str:
    """One file per manifest URL; the ETag is part of the name, so a changed object never matches."""
    return os.path.join(top, hashlib.sha256(f"{url}\n{etag.strip(chr(34))}".encode()).hexdigest())


def load(url: str, etag: str | None) -> bytes | None:
    """The manifest this machine wrote at ``url`` if the store still lists it with ``etag``, else None."""
    top = cache_dir()
    if top is None or not etag:
        return None
    try:
        with open(_path(top, url, etag), "rb") as f:
            return f.read()
    except OSError:
        return None


def store(url: str, etag: str | None, data: bytes) -> None:
    """Keep ``data``, the object at ``url`` with ``etag`` (just written or read; older copies go by the bounds)."""
    top = cache_dir()
    if top is None or not etag or len(data) > MAX_ONE:
        return
    target = _path(top, url, etag)
    tmp = f"{target}.tmp{os.getpid()}"
    try:
        os.makedirs(top, mode=0o700, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
        _prune(top, keep=target)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _prune(top: str, keep: str) -> None:
    """Remove the least recently written copies beyond the bounds (an older ETag of the same URL among them)."""
    with os.scandir(top) as it:
        found = sorted(((e.stat().st_mtime_ns, e.stat().st_size, e.path) for e in it if e.is_file()), reverse=True)
    total = 0
    for n, (_, size, path) in enumerate(found):
        total += size
        if path != keep and (n >= MAX_FILES or total > MAX_BYTES):
            try:
                os.unlink(path)
            except OSError:
                pass
