"""Storage: URL → provider → a tree that can be listed and written, for any fsspec protocol.

This package owns everything about where bytes live. It knows nothing of containers or launchers.
``open_tree(url)`` is the one way in: a :class:`LocalTree` for ``file``/``nfs`` paths, a
:class:`RemoteTree` (through the scheme's provider) for object stores and other fsspec protocols.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gpstage.report import TransferReport
from gpstage.retry import RetryPolicy
from gpstage.storage.local import LocalTree
from gpstage.storage.registry import get_provider, known_schemes, provider_for
from gpstage.storage.remote import RemoteTree

__all__ = ["LocalTree", "RemoteTree", "get_provider", "known_schemes", "open_tree", "provider_for"]


@asynccontextmanager
async def open_tree(url: str, report: TransferReport, retry: RetryPolicy | None = None) -> AsyncIterator[LocalTree | RemoteTree]:
    """The tree under ``url``; remote filesystems are closed on exit."""
    provider = provider_for(url)
    if provider.local:
        yield LocalTree(provider.local_path(url))
        return
    fs = provider.make_filesystem(url)  # type: ignore[attr-defined]
    try:
        yield provider.tree(url, fs, retry or RetryPolicy(), report)  # type: ignore[attr-defined]
    finally:
        await provider.close_filesystem(fs)  # type: ignore[attr-defined]
