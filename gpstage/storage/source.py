"""Where an upload's bytes come from: a local file, or another store's object streamed through this process.

A provider's :meth:`~gpstage.storage.base.RemoteTree.upload` reads its source in ranges (one part, block or
chunk at a time), so the same upload code sends a file from the server's disk and an input named by URL on
another store (docs/input-cache.md, "Inputs by URL") — the latter in bounded memory, never via a temp file.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from gpstage import aio

READ_IN_LOOP = 64 * 2**10  # smaller reads happen in the event loop: a thread hop costs more than the I/O


class ByteSource(Protocol):
    """``size`` bytes to upload; ``path`` when they are a local file (a plugin may hand it to its SDK)."""

    size: int
    path: str | None

    async def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer only if the source shrank: the upload then fails its size check)."""
        ...


class RangeReader(Protocol):
    """What :class:`ObjectSource` reads from: a :class:`~gpstage.storage.base.RemoteTree`."""

    async def read_range(self, rel: str, offset: int, length: int) -> bytes: ...


def read_range(path: str, offset: int, length: int) -> bytes:
    """``length`` bytes of ``path`` from ``offset``: one part of an upload."""
    with open(path, "rb") as f:
        if offset:
            f.seek(offset)
        return f.read(length)


class FileRange(NamedTuple):
    """``length`` bytes of the local file ``path`` from ``offset``: a part that a transport able to send
    from a file (:mod:`gpstage.storage.s3plain`, by ``sendfile``) never holds in memory."""

    path: str
    offset: int
    length: int

    def read(self) -> bytes:
        return read_range(self.path, self.offset, self.length)


class FileSource:
    """The first ``size`` bytes of a local file (the listed size: a file that grows meanwhile arrives as a
    consistent prefix)."""

    def __init__(self, path: str, size: int) -> None:
        self.path: str | None = path
        self.size = size

    async def read(self, offset: int, length: int) -> bytes:
        assert self.path is not None
        if length <= READ_IN_LOOP:
            return read_range(self.path, offset, length)
        return await aio.to_thread(read_range, self.path, offset, length)


class ObjectSource:
    """An object of another tree, read in ranged GETs as the upload asks for its parts."""

    path: str | None = None

    def __init__(self, tree: RangeReader, rel: str, size: int) -> None:
        self.tree = tree
        self.rel = rel
        self.size = size

    async def read(self, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        return await self.tree.read_range(self.rel, offset, length)
