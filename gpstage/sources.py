"""Inputs by URL (docs/input-cache.md): a file an inputs dir names by ``source`` URL is placed into the dir
at stage-in — server-side when the source is on the dir's store (S3 CopyObject, GCS rewrite, Azure Copy
Blob), else streamed through this process part by part in bounded memory, never through its disk."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gpstage import aio
from gpstage.errors import BadInput
from gpstage.report import TransferReport
from gpstage.retry import RetryPolicy
from gpstage.spec import InputSource
from gpstage.storage import LocalTree, RemoteTree, open_tree, parent_and_name, provider_for
from gpstage.storage.base import RemoteProvider
from gpstage.storage.source import FileSource, ObjectSource
from gpstage.storage.tree import Entry

SOURCES_AT_ONCE = 4


@asynccontextmanager
async def _source_tree(parent: str, dst: LocalTree | RemoteTree, report: TransferReport,
                       retry: RetryPolicy | None) -> AsyncIterator[LocalTree | RemoteTree]:
    """The tree holding a source: through the destination's own client when both are on one store."""
    provider = provider_for(parent)
    if (isinstance(dst, RemoteTree) and isinstance(provider, RemoteProvider) and type(provider) is type(dst.provider)
            and provider.same_store(parent, dst.url)):
        yield dst.subtree(parent)
        return
    async with open_tree(parent, report, retry) as tree:
        yield tree


async def _stat(tree: LocalTree | RemoteTree, name: str) -> Entry | None:
    if isinstance(tree, RemoteTree):
        return await tree.stat(name)
    path = tree.path_of(name)
    if not os.path.isfile(path):
        return None
    st = os.stat(path)
    return Entry(size=st.st_size, mtime_ns=st.st_mtime_ns, mode=st.st_mode & 0o7777, path=path)


async def _place(src: InputSource, dst: LocalTree | RemoteTree, report: TransferReport, retry: RetryPolicy | None) -> None:
    parent, name = parent_and_name(src.source)
    async with _source_tree(parent, dst, report, retry) as tree:
        entry = await _stat(tree, name)
        if entry is None:
            raise BadInput(f"input source {src.source} does not exist", "fix the URL, or create or upload the file first")
        if isinstance(dst, RemoteTree):
            if isinstance(tree, RemoteTree) and tree.client is dst.client:
                await dst.copy_from(tree, name, src.rel, entry.size, metadata={})  # no byte passes through here
            elif isinstance(tree, RemoteTree):
                await dst.upload(ObjectSource(tree, name, entry.size), src.rel)
            else:
                assert entry.path is not None
                await dst.upload(FileSource(entry.path, entry.size), src.rel)
        elif isinstance(tree, RemoteTree):
            await tree.download(name, entry, dst, src.rel)
        else:
            assert entry.path is not None
            await aio.to_thread(dst.copy_in, entry.path, src.rel, entry)
    report.files_copied += 1
    report.bytes_copied += entry.size


async def place_sources(url: str, sources: list[InputSource], report: TransferReport, retry: RetryPolicy | None = None) -> None:
    """Place every source into the dir at ``url`` (its key ``name``), a few at a time."""
    slots = aio.Semaphore(SOURCES_AT_ONCE)
    async with open_tree(url, report, retry) as dst:
        async def one(src: InputSource) -> None:
            async with slots:
                await _place(src, dst, report, retry)

        await aio.gather(*(one(s) for s in sources))


async def copy_file(src_url: str, dst_url: str, report: TransferReport, retry: RetryPolicy | None = None) -> int:
    """Copy the file at ``src_url`` to ``dst_url`` as an input by URL is placed (server-side on one store, else
    streamed); returns its size. A missing source is a BadInput naming it."""
    parent, name = parent_and_name(dst_url)
    before = report.bytes_copied
    async with open_tree(parent, report, retry) as dst:
        await _place(InputSource(source=src_url, name=name), dst, report, retry)
    return report.bytes_copied - before


async def check_sources(sources: list[InputSource]) -> None:
    """Refuse, before anything is recorded or copied, a source whose scheme is unknown or that does not exist."""
    for src in sources:
        parent, name = parent_and_name(src.source)
        provider_for(parent)  # an unknown scheme: one line naming the known ones
        async with open_tree(parent, TransferReport(src.source, "")) as tree:
            if await _stat(tree, name) is None:
                raise BadInput(f"input source {src.source} does not exist", "fix the URL, or create or upload the file first")
