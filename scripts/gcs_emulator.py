#!/usr/bin/env python3
"""Run gcp-storage-emulator (arguments as its own CLI: ``start --host H --port P --in-memory``) with two
fixes that make it behave like GCS for gpstage's tests:

- a deeper listen backlog: the emulator serves from one thread on a plain ``http.server.HTTPServer``,
  whose backlog is 5; a client with more requests in flight (gpstage's concurrent transfers) overflows
  it, the kernel drops the SYNs and every dropped connection waits 1/3/7 s for a TCP retransmit. With
  1024 they queue instead; the server stays single-threaded, so nothing else changes.
- object names with a ``..`` component: legal on GCS (only ``.`` and ``..`` as a whole name are not), so
  gpstage must refuse to download them; the emulator's own store refuses to hold them. Its store paths
  (dictionary keys with ``--in-memory``) keep such components escaped instead; object names are untouched.
"""

from __future__ import annotations

import http.server
import sys

from gcp_storage_emulator import storage
from gcp_storage_emulator.__main__ import main

http.server.HTTPServer.request_queue_size = 1024  # a class attribute, read when a server starts listening
_store = getattr(storage, "_FileStore", None)  # the emulator's store (2026.7); test failures name it if absent
_norm = getattr(_store, "_norm", None)


def _norm_keeping_dotdot(path: str) -> str:
    return _norm("/".join("%2E%2E" if part == ".." else part for part in path.replace("\\", "/").split("/")))


if _norm is not None:
    _store._norm = staticmethod(_norm_keeping_dotdot)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
