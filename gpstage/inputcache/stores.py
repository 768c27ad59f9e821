"""The cache root on one store, as the few operations the cache needs: an object store's tree (sharing the
job dir's client, so copies are server-side) or a local directory (``file://``; reflinks where the file
system has them)."""

from __future__ import annotations

import os
from typing import Protocol

from gpstage import aio
from gpstage.inputcache import object_rel
from gpstage.inputcache.hashes import HashIndex, file_key
from gpstage.storage.base import RemoteTree
from gpstage.storage.local import LocalTree, clone_or_copy, unlink_quietly
from gpstage.storage.source import FileSource
from gpstage.storage.tree import SHA256_META, Entry


class CacheStore(Protocol):
    url: str

    async def stat(self, rel: str) -> Entry | None: ...
    async def valid(self, found: Entry | None, digest: str, size: int) -> bool: ...
    async def put_object(self, digest: str, path: str, size: int) -> None: ...
    async def place(self, digest: str, size: int, entry: Entry, rel: str, dst: LocalTree | RemoteTree) -> None: ...
    async def write(self, rel: str, data: bytes) -> None: ...
    async def read(self, rel: str) -> bytes | None: ...
    async def delete(self, rels: list[str]) -> None: ...
    async def listing(self) -> dict[str, Entry]: ...


class RemoteCacheStore:
    """The cache root on an object store. An object is trusted when its size and the gpstagesha256 metadata it
    was written with match; its bytes were checked by the store on the way in (Content-MD5, md5Hash)."""

    def __init__(self, tree: RemoteTree) -> None:
        self.tree = tree
        self.url = tree.url

    async def stat(self, rel: str) -> Entry | None:
        return await self.tree.stat(rel)

    async def valid(self, found: Entry | None, digest: str, size: int) -> bool:
        return found is not None and found.size == size and found.sha256 == digest

    async def put_object(self, digest: str, path: str, size: int) -> None:
        await self.tree.upload(FileSource(path, size), object_rel(digest), {SHA256_META: digest})

    async def place(self, digest: str, size: int, entry: Entry, rel: str, dst: LocalTree | RemoteTree) -> None:
        assert isinstance(dst, RemoteTree)
        await dst.copy_from(self.tree, object_rel(digest), rel, size, metadata={})  # the job's copy: no cache metadata

    async def write(self, rel: str, data: bytes) -> None:
        await self.tree.write_bytes(rel, data)

    async def read(self, rel: str) -> bytes | None:
        return await self.tree.read_bytes(rel) if await self.tree.stat(rel) is not None else None

    async def delete(self, rels: list[str]) -> None:
        if rels:
            await self.tree.delete(rels)

    async def listing(self) -> dict[str, Entry]:
        return await self.tree.list_objects()


class LocalCacheStore:
    """The cache root as a local directory. An object is trusted when its size matches and its hash — from
    the hash index while the file is untouched, else read again — is its name."""

    def __init__(self, root: str, url: str, index: HashIndex) -> None:
        self.tree = LocalTree(root)
        self.url = url
        self.index = index

    async def stat(self, rel: str) -> Entry | None:
        try:
            st = await aio.to_thread(os.stat, self.tree.path_of(rel))
        except FileNotFoundError:
            return None
        return Entry(size=st.st_size, mtime_ns=st.st_mtime_ns, path=self.tree.path_of(rel))

    async def valid(self, found: Entry | None, digest: str, size: int) -> bool:
        if found is None or found.size != size or found.path is None:
            return False
        try:
            actual, _ = await aio.to_thread(self.index.digest, found.path, size)
        except OSError:
            return False
        return actual == digest

    async def put_object(self, digest: str, path: str, size: int) -> None:
        def put() -> None:
            rel = object_rel(digest)
            with self.tree.atomic_write(rel, size, 0o444) as tmp:
                clone_or_copy(path, tmp, size)
            self.index.put(file_key(os.stat(self.tree.path_of(rel))), digest)

        await aio.to_thread(put)

    async def place(self, digest: str, size: int, entry: Entry, rel: str, dst: LocalTree | RemoteTree) -> None:
        assert isinstance(dst, LocalTree)

        def clone() -> None:
            with dst.atomic_write(rel, size, entry.mode, entry.mtime_ns) as tmp:
                clone_or_copy(self.tree.path_of(object_rel(digest)), tmp, size)

        await aio.to_thread(clone)

    async def write(self, rel: str, data: bytes) -> None:
        await aio.to_thread(self.tree.write_file, rel, data)

    async def read(self, rel: str) -> bytes | None:
        try:
            with open(self.tree.path_of(rel), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    async def delete(self, rels: list[str]) -> None:
        def remove() -> None:
            for rel in rels:
                unlink_quietly(self.tree.path_of(rel))
            self.tree.remove_empty_dirs(sorted({r.rpartition("/")[0] for r in rels if "/" in r}))

        await aio.to_thread(remove)

    async def listing(self) -> dict[str, Entry]:
        tree = await self.tree.scan() if self.tree.exists() else None
        return dict(tree.files) if tree else {}
