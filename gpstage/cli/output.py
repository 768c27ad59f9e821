"""Printing results: human text and progress bars on a terminal, one JSON document with ``--json``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gpstage.errors import GpstageError


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


@contextmanager
def json_errors(as_json: bool) -> Iterator[None]:
    """With ``--json``, a failure still prints a JSON document (``ok: false``) before the error line."""
    try:
        yield
    except GpstageError as err:
        if as_json:
            report = getattr(err, "report", None)
            emit_json({"ok": False, "error": str(err), "exit_code": err.exit_code,
                       "report": report.to_dict() if report is not None else None})
        raise


class RichProgress:
    """A transfer progress bar on stderr (only used when stderr is a terminal)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._bar: Any = None
        self._task: Any = None

    def start(self, files: int, nbytes: int) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        self._bar = Progress("[bold]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                             TimeRemainingColumn(), transient=True, console=_stderr_console())
        self._task = self._bar.add_task(f"{self.label} ({files} files)", total=nbytes or 1)
        self._bar.start()

    def advance(self, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, nbytes)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def progress_for(label: str, as_json: bool) -> RichProgress | None:
    return RichProgress(label) if not as_json and sys.stderr.isatty() else None
