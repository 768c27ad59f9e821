"""What a job leaves behind and how launchers read it: the entry's ``status.json`` and logs in the
metadata dir (local or on storage), the outputs in the working dir, and the one result shape that
``wait``/``collect`` return and every ``--json`` job command prints (docs/job-json.md)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from gpstage.aio import run_sync
from gpstage.errors import StorageError
from gpstage.records import JobRecord
from gpstage.spec import JobSpec, Role
from gpstage.states import JobState, JobStatus
from gpstage.urls import join_url

LOG_FILES = {"stdout": "stdout.txt", "stderr": "stderr.txt", "entry": "gpstage-entry.log"}
OWN_ROLES = (Role.WORKDIR, Role.METADATA, Role.INPUTS)  # what `clean` removes; tasklib/libraries are shared


@dataclass
class JobResult:
    """A job as the server, the CLI (``--json``) and notebooks see it. ``outputs`` are the working dir's
    files on this machine, listed once the job was collected."""

    job_id: str
    state: JobState
    exit_code: int | None
    reason: str | None
    message: str | None
    launcher: str
    runner: str
    backend_id: str | None
    submitted_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    collected: bool
    stdout: str
    stderr: str
    exit_code_file: str
    workdir: str
    outputs: list[str] = field(default_factory=list)
    transfers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = self.state.value
        for k in ("submitted_at", "started_at", "ended_at"):
            out[k] = out[k].isoformat() if out[k] else None
        return out

    @property
    def ok(self) -> bool:
        return self.state is JobState.SUCCEEDED

    def __repr__(self) -> str:
        code = "" if self.exit_code is None else f" exit_code={self.exit_code}"
        return (f"<JobResult {self.job_id} {self.state.value}{code} on {self.launcher}+{self.runner}: "
                f"{len(self.outputs)} outputs in {self.workdir}>")


def metadata_file(spec: JobSpec, name: str) -> str:
    return os.path.join(spec.metadata_dir, name)


def result_of(record: JobRecord) -> JobResult:
    spec = record.spec
    return JobResult(
        job_id=record.job_id, state=record.state, exit_code=record.exit_code,
        reason=record.reason.value if record.reason else None, message=record.message, launcher=record.launcher,
        runner=record.runner, backend_id=record.backend_id, submitted_at=record.submitted_at,
        started_at=record.started_at, ended_at=record.ended_at, collected=record.collected,
        stdout=metadata_file(spec, LOG_FILES["stdout"]), stderr=metadata_file(spec, LOG_FILES["stderr"]),
        exit_code_file=metadata_file(spec, "exit_code.txt"), workdir=spec.workdir,
        outputs=list_outputs(spec) if record.collected else [], transfers=record.transfers)


def list_outputs(spec: JobSpec) -> list[str]:
    """The working dir's files, without the dirs of other roles nested in it (the metadata dir)."""
    skip = {d.path for d in spec.dirs if d.role is not Role.WORKDIR}
    out = []
    for top, dirs, files in os.walk(spec.workdir):
        dirs[:] = sorted(d for d in dirs if os.path.join(top, d) not in skip)
        out += [os.path.join(top, f) for f in sorted(files)]
    return out


def _read(spec: JobSpec, name: str) -> bytes | None:
    from gpstage.storage import read_url

    try:
        return run_sync(read_url(join_url(spec.url_of(spec.dir(Role.METADATA)), name)))
    except StorageError:
        return None


def read_entry_status(spec: JobSpec) -> JobStatus | None:
    """The entry's ``status.json`` as pushed to storage (the final one is pushed last)."""
    data = _read(spec, "status.json")
    if data is None:
        return None
    try:
        return JobStatus.model_validate_json(data)
    except ValueError:
        return None  # half-written by a foreign tool: treat as absent


def read_log(spec: JobSpec, stream: str, shares_filesystem: bool) -> bytes | None:
    """A log of the job: the local file where the entry writes the server's paths, else from storage."""
    name = LOG_FILES[stream]
    if shares_filesystem:
        try:
            with open(metadata_file(spec, name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            pass
    return _read(spec, name)


def remove_job_storage(spec: JobSpec) -> list[str]:
    """Delete the job's own dirs on storage; a dir that IS its server path (shared file system) is kept."""
    from gpstage.stage import same_path
    from gpstage.storage import remove_tree

    removed = []
    for d in spec.dirs:
        if d.role in OWN_ROLES and not same_path(spec, d):
            url = spec.url_of(d)
            run_sync(remove_tree(url))
            removed.append(url)
    return removed
