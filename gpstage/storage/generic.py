"""The generic provider: any fsspec protocol as gpstage storage (``memory://``, ``sftp://``, a plugin's).

fsspec does the I/O here, through the filesystem class registered for the protocol; async
implementations are called natively, others in a worker thread. The tree lists with ``find`` and
moves files with ``put_file``/``get_file``; everything else — the manifest, retries, atomic downloads,
one-line errors — is :class:`~gpstage.storage.base.RemoteTree`'s. A plugin for a scheme that an fsspec
filesystem serves subclasses :class:`FsspecProvider` and sets ``scheme``, ``protocol`` and ``extra``
(tests/plugin_provider shows a whole one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from gpstage import aio
from gpstage.errors import MissingDependency, StorageError
from gpstage.report import TransferReport
from gpstage.retry import RetryPolicy
from gpstage.storage.base import RemoteProvider, RemoteTree
from gpstage.storage.buckets import to_ns
from gpstage.storage.local import LocalTree
from gpstage.storage.source import ByteSource
from gpstage.storage.tree import Entry

STREAM_MAX = 64 * 2**20  # a non-file source (an input by URL) is written in one piece up to this size


class FsspecProvider(RemoteProvider):
    """A scheme served by an fsspec filesystem: ``protocol`` (default: the scheme) names it."""

    protocol: ClassVar[str] = ""
    keeps_metadata: ClassVar[bool] = False  # fsspec has no portable user metadata

    @property
    def fs_protocol(self) -> str:
        return self.protocol or self.scheme

    def fs_path(self, url: str) -> str:
        import fsspec

        return fsspec.get_filesystem_class(self.fs_protocol)._strip_protocol(url).rstrip("/")

    def filesystem_options(self, url: str) -> dict[str, Any]:
        """Keyword arguments for the fsspec filesystem, from the ecosystem's standard environment."""
        return {}

    def connect(self, url: str) -> Any:
        import fsspec

        try:
            cls = fsspec.get_filesystem_class(self.fs_protocol)
        except ImportError as err:
            raise MissingDependency(
                f"the {self.scheme}:// scheme needs a package that is not installed ({err})",
                f"pip install 'gpstage[{self.extra}]'" if self.extra else "install the package named above",
            ) from None
        opts = {"skip_instance_cache": True, **self.filesystem_options(url)}
        if getattr(cls, "async_impl", False):
            import asyncio

            opts.update(asynchronous=True, loop=asyncio.get_running_loop())
        return cls(**opts)

    def tree(self, url: str, client: Any, retry: RetryPolicy, report: TransferReport) -> RemoteTree:
        return FsspecTree(self, url, client, retry, report)


class FsspecTree(RemoteTree):
    """A tree through fsspec's filesystem API (``client`` is the filesystem)."""

    def key(self, rel: str) -> str:
        """The fsspec path of ``rel``."""
        return f"{self.root}/{rel}" if rel else self.root

    async def _fs(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call fsspec method ``name`` natively when async, in a worker thread otherwise."""
        if getattr(self.client, "async_impl", False) and getattr(self.client, "asynchronous", False):
            return await getattr(self.client, "_" + name)(*args, **kwargs)
        return await aio.to_thread(getattr(self.client, name), *args, **kwargs)

    async def list_objects(self) -> dict[str, Entry]:
        found = await self.call(lambda: self._fs("find", self.root, withdirs=False, detail=True))
        out = {}
        prefix = self.root + "/"
        for name, info in found.items():
            if name.startswith(prefix) and info.get("type", "file") != "directory":
                out[name[len(prefix):]] = entry_from_info(info)
        return out

    async def read_bytes(self, rel: str) -> bytes:
        return await self.call(lambda: self._fs("cat_file", self.key(rel)), rel)

    async def write_bytes(self, rel: str, data: bytes) -> None:
        await self.call(lambda: self._fs("pipe_file", self.key(rel), data), rel)

    async def upload(self, src: ByteSource, rel: str, metadata: Mapping[str, str] | None = None) -> None:
        """A local file through the filesystem's ``put_file``; another store's object in one write, as fsspec
        has no portable streaming write for async filesystems. fsspec keeps no user metadata."""
        if src.path is not None:
            path = src.path
            await self.call(lambda: self._fs("put_file", path, self.key(rel)), rel)
            return
        if src.size > STREAM_MAX:
            raise StorageError(f"{self.url}/{rel}: a {src.size:,}-byte object from another store cannot be streamed to "
                               f"{self.provider.scheme}:// (fsspec writes it whole, up to {STREAM_MAX // 2**20} MiB)",
                               "copy it to the job's store first, or give it as a local file")
        data = await src.read(0, src.size)
        await self.call(lambda: self._fs("pipe_file", self.key(rel), data), rel)

    async def stat(self, rel: str) -> Entry | None:
        async def info() -> dict[str, Any] | None:
            try:
                return await self._fs("info", self.key(rel))
            except FileNotFoundError:
                return None

        found = await self.call(info, rel)
        return None if found is None or found.get("type", "file") == "directory" else entry_from_info(found)

    async def read_range(self, rel: str, offset: int, length: int) -> bytes:
        return await self.call(lambda: self._fs("cat_file", self.key(rel), start=offset, end=offset + length), rel)

    async def copy_from(self, src: RemoteTree, src_rel: str, rel: str, size: int,
                        metadata: Mapping[str, str] | None = None) -> None:
        """The filesystem's own copy (``cp_file``: server-side where the protocol has one)."""
        assert isinstance(src, FsspecTree)
        await self.call(lambda: self._fs("cp_file", src.key(src_rel), self.key(rel)), rel)

    async def download(self, rel: str, entry: Entry, dst: LocalTree, dst_rel: str | None = None) -> None:
        await self.fetch_into(rel, entry, dst, dst_rel, lambda tmp: self._fs("get_file", self.key(rel), tmp))

    async def delete(self, rels: list[str]) -> None:
        if rels:
            keys = [self.key(r) for r in rels]
            await self.call(lambda: self._fs("rm", keys))


def entry_from_info(info: dict[str, Any]) -> Entry:
    """An :class:`Entry` from an fsspec ``info`` dict, whichever implementation's spelling it uses."""
    modified = to_ns(info.get("LastModified") or info.get("last_modified") or info.get("updated") or info.get("mtime")
                     or info.get("created"))
    etag = info.get("ETag") or info.get("etag")
    if not etag and modified is not None:
        etag = f"t{modified}"  # no ETag: size + write time identify the object well enough
    return Entry(size=int(info.get("size") or 0), etag=etag, modified_ns=modified)
