"""A job as the server, the CLI (``--json``) and notebooks see it: the one result shape that
``wait``/``collect`` return and every ``--json`` job command prints (docs/job-json.md)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from gpstage.jobfiles import EXITCODE_NAME, STDERR_NAME, STDOUT_NAME, local_file
from gpstage.records import JobRecord
from gpstage.spec import JobSpec, Role
from gpstage.states import JobState


@dataclass
class JobResult:
    """``outputs`` are the working dir's files on this machine, listed once the job was collected."""

    job_id: str
    state: JobState
    exit_code: int | None
    reason: str | None
    message: str | None
    failed_phase: str | None
    module_exit_code: int | None
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


def result_of(record: JobRecord) -> JobResult:
    spec = record.spec
    return JobResult(
        job_id=record.job_id, state=record.state, exit_code=record.exit_code,
        reason=record.reason.value if record.reason else None, message=record.message,
        failed_phase=record.failed_phase, module_exit_code=record.module_exit_code, launcher=record.launcher,
        runner=record.runner, backend_id=record.backend_id, submitted_at=record.submitted_at,
        started_at=record.started_at, ended_at=record.ended_at, collected=record.collected,
        stdout=local_file(spec, STDOUT_NAME), stderr=local_file(spec, STDERR_NAME),
        exit_code_file=local_file(spec, EXITCODE_NAME), workdir=spec.workdir,
        outputs=list_outputs(spec) if record.collected else [], transfers=record.transfers)


def list_outputs(spec: JobSpec) -> list[str]:
    """The working dir's files, without the dirs of other roles nested in it (the metadata dir)."""
    skip = {d.path for d in spec.dirs if d.role is not Role.WORKDIR}
    out = []
    for top, dirs, files in os.walk(spec.workdir):
        dirs[:] = sorted(d for d in dirs if os.path.join(top, d) not in skip)
        out += [os.path.join(top, f) for f in sorted(files)]
    return out
