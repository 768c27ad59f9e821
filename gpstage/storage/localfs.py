"""Providers for this machine's file system: ``file`` and ``nfs`` (DESIGN.md §2)."""

from __future__ import annotations

import os
from typing import ClassVar

from gpstage.storage.base import StorageProvider, require_absolute_local


class FileProvider(StorageProvider):
    scheme: ClassVar[str] = "file"
    local: ClassVar[bool] = True

    def local_path(self, url: str) -> str:
        path = require_absolute_local(url)
        return os.path.normpath(path) if path != "/" else path


class NfsProvider(FileProvider):
    """A file system mounted at the same path on the server and every node: staging to itself is a no-op."""

    scheme: ClassVar[str] = "nfs"
