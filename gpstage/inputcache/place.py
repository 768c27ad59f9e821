"""Stage-in through the cache: hash each input file, keep its bytes once under ``sha256/<hash>``, and place
the job's copy by a server-side copy (docs/input-cache.md).

Per job: every file is hashed first (the local index skips unchanged files), then ``jobs/<job id>.json``
lists the hashes — before any marker exists, so ``gpstage clean`` can always find them. Per file:

1. mark: write ``refs/<hash>/<job id>``; from now on ``gpstage cache gc`` keeps the object;
2. verify: the object exists with the right size and hash, else upload it (a corrupt or partial object is
   replaced, never used; two jobs uploading the same new file write the same bytes, each atomically);
3. place: copy it server-side to the job's key. If the copy finds the object gone (a gc that listed
   before our marker existed), steps 2-3 run once more.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import suppress

from gpstage import aio
from gpstage.errors import GpstageError, StorageError
from gpstage.inputcache import job_rel, marker_rel, object_rel
from gpstage.inputcache.hashes import HashIndex, Key, file_key
from gpstage.inputcache.stores import CacheStore, LocalCacheStore, RemoteCacheStore
from gpstage.report import TransferReport
from gpstage.storage import local_path_of
from gpstage.storage.base import RemoteTree
from gpstage.storage.local import LocalTree
from gpstage.storage.tree import Entry

HASH_JOBS = max(1, min(4, os.cpu_count() or 1))  # files hashed at once: hashing is CPU-bound (hashlib frees the GIL)


class InputCache:
    """The cache of one job's stage-in into one store: ``prepare`` the files, then ``place`` each."""

    def __init__(self, root_url: str, job_id: str, min_size: int, index: HashIndex | None = None) -> None:
        self.root_url = root_url
        self.job_id = job_id
        self.min_size = min_size
        self.index = index or HashIndex()
        self.store: CacheStore | None = None
        self.digests: dict[str, tuple[str, Key]] = {}  # local path -> (sha256, the file's key when hashed)

    def bind(self, dst: LocalTree | RemoteTree) -> None:
        """Open the cache root on ``dst``'s store (the caller checked it is the same store: :func:`cache_for`)."""
        if isinstance(dst, RemoteTree):
            self.store = RemoteCacheStore(dst.subtree(self.root_url))
        else:
            path = local_path_of(self.root_url)
            assert path is not None
            self.store = LocalCacheStore(path, self.root_url, self.index)

    def wants(self, entry: Entry) -> bool:
        return self.store is not None and entry.path is not None and entry.size >= self.min_size

    async def prepare(self, entries: list[Entry]) -> None:
        """Hash the files that go through the cache and record them under ``jobs/<job id>.json``."""
        assert self.store is not None
        todo = [e for e in entries if self.wants(e) and e.path not in self.digests]
        slots = aio.Semaphore(HASH_JOBS)

        async def one(e: Entry) -> None:
            assert e.path is not None
            async with slots:
                self.digests[e.path] = await aio.to_thread(self.index.digest, e.path, e.size)

        await aio.gather(*(one(e) for e in todo))
        if todo:
            stored = await self.store.read(job_rel(self.job_id))
            known = set(json.loads(stored)["sha256"]) if stored else set()
            wanted = known | {d for d, _ in self.digests.values()}
            if wanted != known:
                doc = {"job_id": self.job_id, "sha256": sorted(wanted)}
                await self.store.write(job_rel(self.job_id), json.dumps(doc).encode())

    async def place(self, entry: Entry, rel: str, dst: LocalTree | RemoteTree, report: TransferReport) -> None:
        """Put ``entry`` (a local file :meth:`prepare` hashed) at ``rel`` in ``dst`` through the cache."""
        assert self.store is not None and entry.path is not None
        digest, key = self.digests[entry.path]
        marker = json.dumps({"job_id": self.job_id, "at": time.time()}).encode()
        await self.store.write(marker_rel(digest, self.job_id), marker)
        for attempt in (1, 2):
            uploaded = False
            if not await self.store.valid(await self.store.stat(object_rel(digest)), digest, entry.size):
                await self._put(digest, entry, key)
                uploaded = True
            try:
                await self.store.place(digest, entry.size, entry, rel, dst)
            except (GpstageError, OSError):
                if attempt == 2 or await self.store.stat(object_rel(digest)) is not None:
                    raise
                continue  # collected between our check and the copy: upload it again
            if not uploaded:
                report.files_from_cache += 1
                report.bytes_from_cache += entry.size
            return

    async def _put(self, digest: str, entry: Entry, key: Key) -> None:
        """Upload the file as the cache object; if the file changed since it was hashed, the object would
        lie about its content: remove it and fail (the sync's retry hashes the file again)."""
        assert self.store is not None and entry.path is not None
        await self.store.put_object(digest, entry.path, entry.size)
        if file_key(os.stat(entry.path)) != key:
            with suppress(GpstageError, OSError):
                await self.store.delete([object_rel(digest)])
            self.digests.pop(entry.path, None)
            raise StorageError(f"{entry.path} changed while it was staged in", "re-run once the file is complete")
