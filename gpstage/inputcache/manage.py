"""Looking after a cache root: what it holds (``gpstage cache ls|du``), collecting unreferenced objects
(``gpstage cache gc``) and dropping a finished job's references (``gpstage clean``).

Collection is safe against stage-ins running meanwhile without any lock: a stage-in writes its marker
BEFORE it checks the object and copies it (gpstage.inputcache.place), and re-uploads it if the copy finds it
gone. So gc deletes only objects it saw without markers, and whoever marked one afterwards repairs it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from gpstage.inputcache import JOBS, OBJECTS, REFS, job_rel, marker_rel, object_rel
from gpstage.inputcache.hashes import HashIndex
from gpstage.inputcache.stores import CacheStore, LocalCacheStore, RemoteCacheStore
from gpstage.report import TransferReport
from gpstage.storage import local_path_of, open_tree


@dataclass
class CacheObject:
    digest: str
    size: int
    modified_ns: int | None
    refs: list[str] = field(default_factory=list)  # job ids holding a marker

    def to_dict(self) -> dict[str, object]:
        return {"sha256": self.digest, "size": self.size, "modified": self.modified_ns and self.modified_ns / 1e9,
                "refs": self.refs}


@dataclass
class Inventory:
    objects: dict[str, CacheObject]
    markers: dict[str, list[str]]  # digest -> job ids, also for digests without an object
    jobs: list[str]

    def usage(self) -> dict[str, int]:
        referenced = [o for o in self.objects.values() if o.refs]
        return {"objects": len(self.objects), "bytes": sum(o.size for o in self.objects.values()),
                "referenced_objects": len(referenced), "referenced_bytes": sum(o.size for o in referenced),
                "markers": sum(len(v) for v in self.markers.values()), "jobs": len(self.jobs)}


@asynccontextmanager
async def open_cache(root_url: str) -> AsyncIterator[CacheStore]:
    """The cache root at ``root_url`` on its own (not bound to a job's dir)."""
    path = local_path_of(root_url)
    if path is not None:
        yield LocalCacheStore(path, root_url, HashIndex())
        return
    async with open_tree(root_url, TransferReport("", root_url)) as tree:
        yield RemoteCacheStore(tree)  # type: ignore[arg-type]


async def inventory(store: CacheStore) -> Inventory:
    """Everything under the root, from one listing."""
    objects: dict[str, CacheObject] = {}
    markers: dict[str, list[str]] = {}
    jobs = []
    for rel, e in (await store.listing()).items():
        parts = rel.split("/")
        if len(parts) == 2 and parts[0] == OBJECTS:
            objects[parts[1]] = CacheObject(parts[1], e.size, e.time_ns)
        elif len(parts) == 3 and parts[0] == REFS:
            markers.setdefault(parts[1], []).append(parts[2])
        elif len(parts) == 2 and parts[0] == JOBS and parts[1].endswith(".json"):
            jobs.append(parts[1][:-5])
    for digest, refs in markers.items():
        if digest in objects:
            objects[digest].refs = sorted(refs)
    return Inventory(objects, markers, sorted(jobs))


async def collect(store: CacheStore, older_than_s: float, dry_run: bool = False) -> list[CacheObject]:
    """Delete the objects that no marker references and that were written at least ``older_than_s`` ago."""
    cutoff = (time.time() - older_than_s) * 1e9
    found = await inventory(store)
    doomed = [o for o in found.objects.values()
              if not o.refs and (o.modified_ns is None or o.modified_ns <= cutoff)]
    if not dry_run:
        await store.delete([object_rel(o.digest) for o in doomed])
    return sorted(doomed, key=lambda o: o.digest)


async def forget_job(store: CacheStore, job_id: str) -> int:
    """Remove ``job_id``'s markers (listed in its ``jobs/<id>.json``) and that list; returns the markers removed."""
    stored = await store.read(job_rel(job_id))
    if stored is None:
        return 0
    digests = json.loads(stored).get("sha256", [])
    await store.delete([marker_rel(d, job_id) for d in digests])
    await store.delete([job_rel(job_id)])
    return len(digests)
