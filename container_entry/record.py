"""What the entry leaves in the metadata dir: its own log, ``exit_code.txt`` and ``status.json``.

The log is the entry's, never the module's (that goes to ``stdout.txt``/``stderr.txt``): one line per
step with its duration, so an operator reading it remotely sees where the time went. Records are
written atomically (temp file + rename): a live push never uploads half a JSON document.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import IO

from gpstage.states import JobStatus


def now() -> datetime:
    return datetime.now(timezone.utc)


class EntryLog:
    """Timestamped lines to the log file (once the metadata dir exists) and, unless quiet, to stderr."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.file: IO[str] | None = None
        self.pending: list[str] = []  # lines logged before the file could be opened

    def open(self, path: str) -> None:
        self.file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - open for the whole run; close() ends it
        for line in self.pending:
            self.file.write(line)
        self.pending.clear()

    def close(self) -> None:
        if self.file:
            self.file.close()
            self.file = None

    def __call__(self, message: str) -> None:
        line = f"{now().isoformat(timespec='milliseconds').replace('+00:00', 'Z')} {message}\n"
        if self.file:
            self.file.write(line)
        else:
            self.pending.append(line)
        if not self.quiet:
            sys.stderr.write(f"gpstage-entry: {message}\n")
            sys.stderr.flush()

    def raw(self, text: str) -> None:
        """Output of hooks and custom scripts, kept in the log as it came."""
        if self.file:
            self.file.write(text if text.endswith("\n") or not text else text + "\n")

    @contextmanager
    def step(self, name: str, phases: dict[str, float], key: str | None = None) -> Iterator[None]:
        """Log the start and end of step ``name`` and add its seconds to ``phases[key or name]`` (a short
        key, e.g. "run", where the logged name carries a path)."""
        self(f"{name}: start")
        started = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            seconds = time.monotonic() - started
            phases[key or name] = round(phases.get(key or name, 0.0) + seconds, 3)
            self(f"{name}: {'done' if ok else 'failed'} in {seconds:.2f} s")


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_exit_code(path: str, code: int) -> None:
    """GenePattern's format, which its server parses: ``{"exit_code": N}``."""
    write_atomic(path, json.dumps({"exit_code": code}) + "\n")


def write_status(path: str, status: JobStatus) -> None:
    write_atomic(path, status.model_dump_json(indent=2) + "\n")
