"""Storage: URL → provider → a tree that can be listed and written, on any scheme.

This package owns everything about where bytes live. It knows nothing of containers or launchers.
``open_tree(url)`` is the one way in: a :class:`LocalTree` for ``file``/``nfs`` paths, a
:class:`RemoteTree` (through the scheme's provider) for object stores and other fsspec protocols.
The interfaces a provider implements: :mod:`gpstage.storage.base`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gpstage import aio
from gpstage.errors import BadInput, StorageError
from gpstage.report import TransferReport
from gpstage.retry import RetryPolicy
from gpstage.storage.base import LocalProvider, RemoteTree
from gpstage.storage.local import LocalTree
from gpstage.storage.registry import get_provider, known_schemes, local_path_of, provider_for
from gpstage.urls import split_url

__all__ = ["LocalTree", "RemoteTree", "get_provider", "known_schemes", "local_path_of", "open_tree", "parent_and_name",
           "provider_for", "read_url", "remove_tree", "runs_on_threads", "write_url"]


@asynccontextmanager
async def open_tree(url: str, report: TransferReport, retry: RetryPolicy | None = None) -> AsyncIterator[LocalTree | RemoteTree]:
    """The tree under ``url``; remote filesystems are closed on exit. Without ``retry``, the storage
    profile's retry policy for ``url`` applies, else the default one."""
    provider = provider_for(url)
    if isinstance(provider, LocalProvider):
        yield LocalTree(provider.local_path(url))
        return
    client = provider.connect(url)
    try:
        if retry is None:
            from gpstage.profiles import settings_for

            retry = settings_for(url).retry or RetryPolicy()
        yield provider.tree(url, client, retry, report)
    finally:
        await provider.disconnect(client)


def runs_on_threads(*urls: str) -> bool:
    """Whether a sync between ``urls`` may run on gpstage.aio's threads: one side is a local dir (copies
    between two stores read ranges, which need a loop) and every provider's trees support it."""
    providers = [(provider_for(u), u) for u in urls]
    return any(isinstance(p, LocalProvider) for p, _ in providers) and all(p.runs_on_threads(u) for p, u in providers)


def parent_and_name(url: str) -> tuple[str, str]:
    """The URL of the dir holding the file at ``url``, and the file's name; BadInput when ``url`` names no file."""
    scheme, rest = split_url(url)
    head, _, name = rest.rpartition("/")
    if not name or (not head and not rest.startswith("/")):
        raise BadInput(f"{url!r} does not name a file", "give the URL of a file, e.g. s3://bucket/jobs/1/job.json")
    return f"{scheme}://{head or '/'}", name


async def read_url(url: str, retry: RetryPolicy | None = None) -> bytes:
    """The bytes of the single file at ``url``."""
    parent, name = parent_and_name(url)
    async with open_tree(parent, TransferReport(url, ""), retry) as tree:
        if isinstance(tree, LocalTree):
            return await aio.to_thread(_read_local, tree.path_of(name))
        return await tree.read_bytes(name)


async def write_url(url: str, data: bytes, retry: RetryPolicy | None = None) -> None:
    """Store ``data`` as the file at ``url`` (atomically on local file systems)."""
    parent, name = parent_and_name(url)
    async with open_tree(parent, TransferReport("", url), retry) as tree:
        if isinstance(tree, LocalTree):
            await aio.to_thread(tree.write_file, name, data)
        else:
            await tree.write_bytes(name, data)


def read_url_sync(url: str, retry: RetryPolicy | None = None) -> bytes:
    """:func:`read_url` from synchronous code, without asyncio where the provider allows (a job record's
    status or spec read by the CLI: the import is a good part of a short command's start-up)."""
    return aio.run_sync(read_url(url, retry), threads=provider_for(url).runs_on_threads(url))


def write_url_sync(url: str, data: bytes, retry: RetryPolicy | None = None) -> None:
    """:func:`write_url` from synchronous code, without asyncio where the provider allows."""
    aio.run_sync(write_url(url, data, retry), threads=provider_for(url).runs_on_threads(url))


async def remove_tree(url: str, retry: RetryPolicy | None = None) -> int:
    """Delete everything under ``url`` (files, gpstage's manifests, empty dirs); returns the files removed."""
    async with open_tree(url, TransferReport("", url), retry) as tree:
        if isinstance(tree, LocalTree):
            return await aio.to_thread(_remove_local, tree.root)
        rels = list(await tree.list_objects())
        await tree.delete(rels)
        await tree.abort_incomplete()  # a killed upload's parts are storage too
        return len(rels)


def _remove_local(root: str) -> int:
    import shutil  # here: shutil loads bz2, lzma and zlib, ~2 ms of every sync's start-up (docs/design.md §19)

    count = sum(len(files) for _, _, files in os.walk(root))
    shutil.rmtree(root, ignore_errors=True)
    return count


def _read_local(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise StorageError(f"{path} does not exist", "check the path") from None
