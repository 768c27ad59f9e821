"""The file contract between the container entry and whoever reads a job (docs/design.md §9, §12).

The entry writes a job's record into its metadata dir — locally, then pushed to the dir's URL last —
and everyone else (launchers, the CLI, the notebook API, GenePattern's server) reads it from there.
This module is the one place that spells those names and formats:

``stdout.txt`` / ``stderr.txt``  the module's own output (GenePattern's names; the entry's
                                 ``STDOUT_FILENAME``/``STDERR_FILENAME`` may rename them for one job)
``exit_code.txt``                ``{"exit_code": N}``, GenePattern's format, which its server parses
``status.json``                  :class:`~gpstage.states.JobStatus`: state, exit code, reason, phases
``gpstage-entry.log``            the entry's own log: one line per step with its duration
``cancel.json``                  a launcher's cancel request, for backends whose own kill is a SIGKILL
``job.json``                     the spec itself, stored by stage-in

Writers are atomic (temp file + rename), so a live push of the metadata dir never uploads half a
document; readers treat a missing or half-written document as absent.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, Any

from gpstage.states import JobStatus
from gpstage.urls import join_url

if TYPE_CHECKING:
    from gpstage.spec import JobSpec

STDOUT_NAME = "stdout.txt"
STDERR_NAME = "stderr.txt"
EXITCODE_NAME = "exit_code.txt"
STATUS_NAME = "status.json"
LOG_NAME = "gpstage-entry.log"
CANCEL_NAME = "cancel.json"
SPEC_NAME = "job.json"

LOG_FILES = {"stdout": STDOUT_NAME, "stderr": STDERR_NAME, "entry": LOG_NAME}  # ``gpstage logs`` streams


# ---- where ------------------------------------------------------------------------------------
def local_file(spec: JobSpec, name: str) -> str:
    """``name`` in the job's metadata dir at its server path."""
    return os.path.join(spec.metadata_dir, name)


def stored_url(spec: JobSpec, name: str) -> str:
    """``name`` in the job's metadata dir on storage."""
    return join_url(spec.metadata_url, name)


def spec_url(spec: JobSpec) -> str:
    """Where stage-in stores the spec, and where ``gpstage-entry --spec`` reads it."""
    return stored_url(spec, SPEC_NAME)


def cancel_url(spec: JobSpec) -> str:
    """Where a launcher asks the entry to cancel, and where the entry looks."""
    return stored_url(spec, CANCEL_NAME)


# ---- writing (the entry) ---------------------------------------------------------------------
def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # never a half-written file left beside it
        raise


def write_exit_code(path: str, code: int) -> None:
    write_atomic(path, json.dumps({"exit_code": code}) + "\n")


def write_status(path: str, status: JobStatus) -> None:
    write_atomic(path, status.model_dump_json(indent=2) + "\n")


def request_cancel(spec: JobSpec, backend_id: str | None) -> None:
    """Store ``cancel.json``, naming the backend run meant (an earlier run of the same job_id is not)."""
    from datetime import datetime, timezone

    from gpstage.storage import write_url_sync

    doc = {"job_id": spec.job_id, "backend_id": backend_id, "requested_at": datetime.now(timezone.utc).isoformat()}
    write_url_sync(cancel_url(spec), (json.dumps(doc) + "\n").encode())


def cancel_requested(spec: JobSpec, my_backend_id: str | None) -> bool:
    """Whether a stored cancel request asks THIS run (``my_backend_id``, when known) to stop."""
    raw = read_stored(spec, CANCEL_NAME)
    if raw is None:
        return False
    try:
        doc: Any = json.loads(raw)
    except ValueError:
        doc = {}
    wanted = doc.get("backend_id") if isinstance(doc, dict) else None
    return not wanted or not my_backend_id or wanted == my_backend_id


# ---- reading (launchers, the CLI, notebooks) ---------------------------------------------------
def read_stored(spec: JobSpec, name: str) -> bytes | None:
    """``name`` from the metadata dir on storage; None when it is not there (or storage says no)."""
    from gpstage.errors import StorageError
    from gpstage.storage import read_url_sync

    try:
        return read_url_sync(stored_url(spec, name))
    except StorageError:
        return None


def read_entry_status(spec: JobSpec) -> JobStatus | None:
    """The entry's ``status.json`` as pushed to storage (the final one is pushed last)."""
    data = read_stored(spec, STATUS_NAME)
    if data is None:
        return None
    try:
        return JobStatus.model_validate_json(data)
    except ValueError:
        return None  # half-written by a foreign tool: treat as absent


def read_log(spec: JobSpec, stream: str, shares_filesystem: bool) -> bytes | None:
    """A log of the job (``stdout``, ``stderr`` or ``entry``): the local file where the entry writes the
    server's own paths, else the copy last pushed to storage."""
    name = LOG_FILES[stream]
    if shares_filesystem:
        try:
            with open(local_file(spec, name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            pass
    return read_stored(spec, name)
