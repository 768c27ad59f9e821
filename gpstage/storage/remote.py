"""A tree under a URL of a remote (fsspec) store: listing with the manifest, transfers, deletes.

Every operation goes through the one :class:`RetryPolicy`, is counted in the report, and ends —
when it fails for good — in a one-line error from the provider. Downloads go to a temporary name in
the target directory and are renamed into place only after their size is verified.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from gpstage.report import TransferReport
from gpstage.retry import RetryPolicy
from gpstage.storage.local import LocalTree, _unlink_quietly
from gpstage.storage.manifest import Manifest
from gpstage.storage.tree import MANIFEST_NAME, Entry, Tree, check_key, is_reserved
from gpstage.urls import join_url

if TYPE_CHECKING:  # the provider builds trees; trees only call back into it
    from gpstage.storage.base import FsspecProvider

T = TypeVar("T")


class RemoteTree:
    """The tree of objects under ``url`` (the URL names a "directory": a key prefix)."""

    def __init__(self, provider: FsspecProvider, url: str, fs: Any, retry: RetryPolicy, report: TransferReport) -> None:
        self.provider = provider
        self.url = url
        self.fs = fs
        self.root = provider.fs_path(url)
        self.retry = retry
        self.report = report
        self.manifest = Manifest()  # every manifest the listing found, merged
        self.root_manifest = Manifest()  # the one stored at the root, which write_manifest replaces

    # ---- plumbing ---------------------------------------------------------------------------
    def key(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    async def _fs(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call fsspec method ``name`` natively when async, in a worker thread otherwise."""
        if getattr(self.fs, "async_impl", False) and getattr(self.fs, "asynchronous", False):
            return await getattr(self.fs, "_" + name)(*args, **kwargs)
        return await asyncio.to_thread(getattr(self.fs, name), *args, **kwargs)

    async def call(self, op: Callable[[], Awaitable[T]], rel: str = "") -> T:
        """Run ``op`` under the retry policy; count requests and retries; translate the final error."""

        async def counted() -> T:
            self.report.requests += 1
            return await op()

        def on_retry(_: BaseException) -> None:
            self.report.retries += 1

        try:
            return await self.retry.run(counted, on_retry)
        except Exception as exc:
            raise self.provider.describe_error(exc, join_url(self.url, rel)) from exc

    # ---- listing ----------------------------------------------------------------------------
    async def raw_listing(self) -> dict[str, dict[str, Any]]:
        """Every object under the root: relative key → info dict. Providers may list more cheaply."""
        found = await self.call(lambda: self._fs("find", self.root, withdirs=False, detail=True))
        out = {}
        prefix = self.root + "/"
        for name, info in found.items():
            name = name.rstrip("/") if info.get("type") == "directory" else name
            if name.startswith(prefix) and info.get("type", "file") != "directory":
                out[name[len(prefix):]] = info
        return out

    async def scan(self) -> Tree:
        """The tree as gpstage sees it: reserved names hidden, unsafe keys refused, manifest applied."""
        raw = await self.raw_listing()
        tree = Tree()
        manifests = []
        for rel, info in raw.items():
            if not rel:
                continue  # a "folder" marker object for the root itself
            head, _, name = rel.rpartition("/")
            if rel.endswith("/"):  # a "directory marker" object written by some tools
                tree.dirs[check_key(rel.rstrip("/"), self.url)] = None
                continue
            if is_reserved(name):
                if name == MANIFEST_NAME:
                    manifests.append(head)
                continue
            tree.files[check_key(rel, self.url)] = self.provider.entry_from_info(info)
        for rel in sorted(p.rpartition("/")[0] for p in tree.files):
            while rel and rel not in tree.dirs:
                tree.dirs[rel] = None
                rel = rel.rpartition("/")[0]
        self.manifest = Manifest()
        for prefix in sorted(manifests, key=len):
            found = Manifest.parse(await self.read_bytes(f"{prefix}/{MANIFEST_NAME}" if prefix else MANIFEST_NAME), prefix)
            if not prefix:
                self.root_manifest = found
            self.manifest.merge(found)
        self.manifest.apply(tree, self.url)
        return tree

    # ---- transfers --------------------------------------------------------------------------
    async def read_bytes(self, rel: str) -> bytes:
        return await self.call(lambda: self._fs("cat_file", self.key(rel)), rel)

    async def write_bytes(self, rel: str, data: bytes) -> None:
        await self.call(lambda: self._fs("pipe_file", self.key(rel), data), rel)

    async def upload(self, local_path: str, rel: str, size: int) -> None:
        opts = self.provider.upload_options(size)
        await self.call(lambda: self._fs("put_file", local_path, self.key(rel), **opts), rel)

    async def download(self, rel: str, entry: Entry, dst: LocalTree, dst_rel: str | None = None) -> None:
        """Fetch ``rel`` into ``dst`` atomically, with the entry's mode and mtime."""
        await self.fetch_into(rel, entry, dst, dst_rel, lambda tmp: self._fs("get_file", self.key(rel), tmp))

    async def fetch_into(self, rel: str, entry: Entry, dst: LocalTree, dst_rel: str | None,
                         fetch: Callable[[str], Awaitable[Any]]) -> None:
        """``fetch(tmp)`` (retried as one request) writes the object to a temp file beside its final name in
        ``dst``; it is renamed into place once its size is verified, and removed whatever happens."""
        final, tmp = await asyncio.to_thread(dst.prepare, dst_rel or rel)
        try:
            await self.call(lambda: fetch(tmp), rel)
            await asyncio.to_thread(dst.commit, tmp, final, entry.size, entry.mode, entry.time_ns)
        finally:
            await asyncio.to_thread(_unlink_quietly, tmp)

    def multipart(self, size: int) -> bool:
        """Whether an upload of ``size`` bytes leaves resumable state behind if killed (S3 multipart)."""
        return False

    async def abort_incomplete(self, rels: list[str] | None = None) -> int:
        """Abort uploads a killed writer left unfinished (for ``rels``, or all); stores without them: 0."""
        return 0

    async def delete(self, rels: list[str]) -> None:
        if rels:
            keys = [self.key(r) for r in rels]
            await self.call(lambda: self._fs("rm", keys))

    async def write_manifest(self, manifest: Manifest) -> bool:
        """Store ``manifest`` at the root unless the stored one already says the same; True if written."""
        if manifest.same_content(self.root_manifest):
            return False
        await self.write_bytes(MANIFEST_NAME, manifest.dumps())
        self.root_manifest = manifest
        return True
