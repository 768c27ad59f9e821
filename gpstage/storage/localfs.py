"""Providers for this machine's file system: ``file`` and ``nfs`` (docs/design.md §2)."""

from __future__ import annotations

import os
from typing import ClassVar

from gpstage.errors import BadInput
from gpstage.storage.base import LocalProvider
from gpstage.urls import split_url


class FileProvider(LocalProvider):
    scheme: ClassVar[str] = "file"

    def local_path(self, url: str) -> str:
        path = require_absolute_local(url)
        return os.path.normpath(path) if path != "/" else path


class NfsProvider(FileProvider):
    """A file system mounted at the same path on the server and every node: staging to itself is a no-op."""

    scheme: ClassVar[str] = "nfs"


def require_absolute_local(url: str) -> str:
    scheme, rest = split_url(url)
    if not rest.startswith("/"):
        raise BadInput(f"{url!r}: {scheme}:// URLs need an absolute path", f"write {scheme}:///absolute/path (three slashes)")
    return rest
