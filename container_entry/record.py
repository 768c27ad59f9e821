"""The entry's own log in the metadata dir (``exit_code.txt`` and ``status.json`` are written through
:mod:`gpstage.jobfiles`, which owns the metadata files' names and formats).

The log is the entry's, never the module's (that goes to ``stdout.txt``/``stderr.txt``): one line per
step with its duration, so an operator reading it remotely sees where the time went.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import IO


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
