"""The calls a GenePattern server makes to its job-runner scripts, on gpstage's launchers
(docs/genepattern-server.md; the contract: ../shared/CONTRACTS.md, "GenePattern server's job-runner scripts").

``submit``  stage the job and start it on the configured launcher, detached; the job id for stdout;
``status``  one record refresh, as ``aws batch describe-jobs`` JSON (no storage request until it ended);
``sync``    pull one of the job's dirs back from storage (the server asks for the metadata dir, then
            the working dir); on a shared file system a verified no-op;
``cancel``  cancel the job (briefly waiting for its end to be recorded);
``delete``  the server deleted a job: remove its records and its own dirs on storage.

The server REPLACES the environment of each call; what these need beyond its variables (the launcher,
the settings file, the state dir) is written into the installed scripts (frontends/genepattern/install.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from frontends.genepattern.jobspec import SubmitCall, build_spec, exec_script, new_job_id
from gpstage.errors import BadInput, GpstageError
from gpstage.records import JobRecord, RecordStore
from gpstage.states import EXIT_TIMEOUT, JobState

# gpstage's states in AWS Batch's words, as the server maps them (QUEUED → queued, RUNNING → running, …)
BATCH_STATUS = {JobState.QUEUED: "RUNNABLE", JobState.STAGING: "STARTING", JobState.RUNNING: "RUNNING",
                JobState.SUCCEEDED: "SUCCEEDED", JobState.FAILED: "FAILED", JobState.ERROR: "FAILED",
                JobState.CANCELLED: "FAILED"}
TIMEOUT_REASON = "Job attempt duration exceeded timeout"  # Batch's words; the server reads them as failed
QUEUE_SETTINGS = ("job_queue", "partition")  # where a launcher takes GP_JOB_QUEUE (batch, slurm)
CANCEL_WAIT_S = 5.0  # the server asks for the status within 5 s of a cancel


def unquote(arg: str) -> str:
    """The server wraps an argument with a space in literal double quotes; the path is inside."""
    arg = arg.strip()
    return arg[1:-1] if len(arg) >= 2 and arg[0] == arg[-1] == '"' else arg


def storage_root(configured: str | None, env: Mapping[str, str]) -> str:
    """The installed storage root, else the server's ``aws-s3-root`` (S3_ROOT, as it uploaded there)."""
    root = configured or env.get("S3_ROOT", "").strip() or env.get("AWS_S3_PREFIX", "").strip()
    if not root:
        raise BadInput("no storage root: S3_ROOT is not set and none was installed",
                       "set aws-s3-root in the server's config, or reinstall the scripts with --storage-root URL")
    return root.rstrip("/") if root.startswith("s3://") and root.count("/") > 3 else root


def submit(launcher_name: str, configured_root: str | None, args: list[str], env: Mapping[str, str]) -> str:
    """Build the job, write its exec.sh, stage it and start it; return its id (the server's job id)."""
    from gpstage.jobfiles import write_atomic
    from gpstage.launching import LAUNCHERS, get_launcher

    call = SubmitCall.parse(args, env)
    job_id = new_job_id(call)
    spec = build_spec(call, job_id, storage_root(configured_root, env))
    launcher_cls = LAUNCHERS.load(launcher_name)
    overrides = {}
    queue = env.get("GP_JOB_QUEUE", "").strip() or env.get("JOB_QUEUE", "").strip()
    if queue:
        overrides.update({k: queue for k in QUEUE_SETTINGS if k in launcher_cls.Settings.model_fields})
    launcher = get_launcher(launcher_name, overrides)
    os.makedirs(call.metadata_dir, exist_ok=True)
    write_atomic(os.path.join(call.metadata_dir, "exec.sh"), exec_script(call))
    launcher.submit(spec)
    return job_id


def status(job_id: str) -> dict[str, Any]:
    """``describe-jobs`` JSON for the job (``jobs`` empty when gpstage has no such job)."""
    from gpstage.launching import launcher_for

    try:
        record = launcher_for(job_id).status(job_id)
    except GpstageError:
        return {"jobs": []}
    return {"jobs": [describe(record)]}


def describe(record: JobRecord) -> dict[str, Any]:
    reason = record.message or record.state.value
    if record.state is JobState.FAILED and record.exit_code == EXIT_TIMEOUT:
        reason = f"{TIMEOUT_REASON} ({record.message})" if record.message else TIMEOUT_REASON
    job: dict[str, Any] = {
        "jobId": record.job_id, "jobName": record.job_id, "status": BATCH_STATUS[record.state],
        "statusReason": reason.splitlines()[0][:1000] if reason else "",
        "jobQueue": str(record.settings.get("job_queue") or record.settings.get("partition") or record.launcher),
        "createdAt": _ms(record.submitted_at), "container": {},
    }
    if record.started_at:
        job["startedAt"] = _ms(record.started_at)
    if record.ended_at:
        job["stoppedAt"] = _ms(record.ended_at)
    if record.exit_code is not None:
        job["container"]["exitCode"] = record.exit_code
    return job


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def sync(directory: str) -> str:
    """Pull ``directory`` (one of a job's dirs) from the job's storage; returns what was done."""
    from gpstage.launching import launcher_for
    from gpstage.stage import stage_out

    path = os.path.normpath(unquote(directory))
    record = _newest(lambda r: any(d.path == path for d in r.spec.dirs))
    if record is None:
        raise BadInput(f"no gpstage job has the dir {path}", "pass a job's metadata or working dir")
    launcher_for(record.job_id).status(record.job_id)  # refresh: the end is recorded, the backend cleaned
    role = next(d.role for d in record.spec.dirs if d.path == path)
    transfers = stage_out(record.spec, roles=(role,))
    done = [t for t in transfers if t.path == path]
    if not done:
        return f"{path}: nothing to pull ({role.value} dirs stay on this machine)"
    return f"{path}: {done[0].skipped or 'pulled'}"


def cancel(job_id: str) -> str:
    from gpstage.launching import launcher_for

    launcher = launcher_for(unquote(job_id))
    launcher.settings.cancel_timeout = min(launcher.settings.cancel_timeout, CANCEL_WAIT_S)
    record = launcher.cancel(unquote(job_id))
    return f"{record.job_id}: {record.state.value}"


def delete(gp_job_id: str, jobdir: str) -> list[str]:
    """Every gpstage job of GenePattern job ``gp_job_id`` whose working dir is ``jobdir``: its dirs on
    storage and its record removed (a live one is cancelled first)."""
    from gpstage.launching import launcher_for

    path = os.path.normpath(unquote(jobdir))
    removed: list[str] = []
    for record in RecordStore().all():
        if not record.job_id.startswith(f"gp-{gp_job_id}-") or record.spec.workdir != path:
            continue
        launcher = launcher_for(record.job_id)
        if not launcher.status(record.job_id).state.terminal:
            launcher.settings.cancel_timeout = min(launcher.settings.cancel_timeout, CANCEL_WAIT_S)
            launcher.cancel(record.job_id)
        removed += launcher.clean(record.job_id)
    return removed


def _newest(match: Any) -> JobRecord | None:
    found = [r for r in RecordStore().all() if match(r)]
    return max(found, key=lambda r: r.submitted_at) if found else None
