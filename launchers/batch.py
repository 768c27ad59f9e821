"""The ``batch`` launcher: AWS Batch (seed deployment 3) — the job's dirs staged to object storage, the
entry started as a Batch job in the module's image (``batch+process``), polled, collected. The module's
image is unmodified: the entry bundle (docs/entry-bundle.md) comes from ``entry_bundle`` on the node's disk
(a launch template puts it there), mounted read-only through the job definition's volumes and run as
the command — also in legacy mode, with GenePattern's five arguments (whatever runS3OnBatch.sh the
image has is never called). Batch cannot override an image's ENTRYPOINT: module images have none.

``batch+docker`` (wrapper mode, docs/wrapper-mode.md, the Docker-in-Docker prototype of docs/genepattern-contracts.md):
the Batch job runs the ENTRY image (``entry_image``) with the node's docker socket and a node-local
``staging_dir`` mounted at the same path; the entry stages into ``<staging_dir>/<job>-<nonce>``,
starts the module's ``image`` (any image with bash) on the node's engine, and removes its staging
dir at the end. Cancel is cooperative first: a ``cancel.json`` request on storage, which the entry
polls, then ``terminate_job`` after ``cancel_grace_s`` (a backend's terminate may be a SIGKILL that
leaves the entry no time to stop the module's container and clean up).

Job definitions: one per image + resources + mounts, found or registered under a deterministic name
and cached. Memory and vCPUs go in ``resourceRequirements`` (vCPUs rounded up); the attempt timeout is
``time_s`` + the staging grace, never below AWS's 60 s (docs/design.md §10). Credentials never travel in
the job: on AWS the job role provides them; against a local Batch API a credentials FILE is mounted
and named by ``AWS_SHARED_CREDENTIALS_FILE`` (docs/design.md §11). The module's exit code comes from
``exit_code.txt``/``status.json`` on storage; the container's code is the fallback (from
``describe_jobs``, or ``list_jobs`` summaries where a local API leaves it out of ``describe_jobs``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import uuid
from typing import Any

from pydantic import Field

from container_entry.api import bundle
from gpstage.credfile import ENV_NAME as CREDENTIALS_ENV
from gpstage.credfile import split
from gpstage.errors import BadInput, GpstageError
from gpstage.records import JobRecord
from gpstage.spec import JobSpec, Role
from gpstage.states import JobState
from launchers.base import BackendState, Launcher, entry_args
from launchers.docker import DEFAULT_SOCKET, SOCKET_IN_ENTRY, WrapperSettings, wrapper_check
from launchers.mounted_entry import bundle_facts, entry_command, uses_bundle

QUEUED = {"SUBMITTED", "PENDING", "RUNNABLE", "STARTING"}
ENDED = {"SUCCEEDED", "FAILED"}
DESCRIBE_BATCH = 100  # describe_jobs' limit
MIN_ATTEMPT_S = 60  # AWS Batch's minimum attemptDurationSeconds
DEFAULT_FORWARD = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "STORAGE_EMULATOR_HOST"]


class BatchSettings(WrapperSettings):
    job_queue: str = Field(..., description="the Batch job queue (name or ARN)")
    region: str | None = Field(None, description="default: AWS_REGION / AWS_DEFAULT_REGION")
    endpoint: str | None = Field(None, description="Batch API endpoint (a local API in tests); default: AWS_ENDPOINT_URL[_BATCH]")
    job_role_arn: str | None = Field(None, description="the role the job's container gets its storage credentials from")
    credentials_file: str | None = Field(None, description="for local Batch APIs only: an AWS credentials file mounted "
                                         "into the job (AWS_SHARED_CREDENTIALS_FILE)")
    node_credentials_file: str | None = Field(None, description="a gpstage credentials file (docs/design.md §11) at this "
                                              "path on every compute node (the launch template puts it there), mounted "
                                              "read-only: for stores the job role cannot serve (gs://, az://)")
    forward_env: list[str] = Field(default_factory=lambda: list(DEFAULT_FORWARD),
                                   description="non-secret variables passed to the job (endpoints, region)")
    staging_grace_s: int = Field(600, ge=0, description="added to time_s for Batch's own attempt timeout")
    default_time_s: int = Field(14_400, gt=0, description="time limit of jobs whose spec has none (GenePattern's default)")
    default_memory_mib: int = Field(2048, gt=0)
    legacy: bool = Field(False, description="start the job with runS3OnBatch.sh's five arguments instead of --spec "
                         "(given to the mounted entry bundle; with entry=image, to the image's runS3OnBatch.sh)")
    node_machine: str = Field(default_factory=platform.machine, description="uname -m of the compute nodes: an entry "
                              "bundle built for another machine is refused (default: this machine's)")
    poll_interval: float = Field(5.0, gt=0)
    cancel_poll_interval: float = Field(5.0, ge=0, description="how often the entry looks for a cancel request on "
                                        "storage (0, or legacy mode: never; cancel is then terminate_job alone)")
    cancel_grace_s: float = Field(30.0, ge=0, description="how long cancel waits for the entry to stop by itself "
                                  "before terminate_job")
    # wrapper mode (runner docker); the other wrapper settings are WrapperSettings'
    docker_socket: str = Field(DEFAULT_SOCKET, description="the docker socket on the compute node, mounted into the entry")
    staging_dir: str = Field("/tmp/gpstage-staging", description="a node-local dir (mounted at the same path) under which "
                             "each wrapper job stages its dirs; give it a large local disk")


def _ran_out_of_time(job: dict[str, Any]) -> bool:
    """The attempt ran as long as its ``attemptDurationSeconds``: Batch stopped it (a local Batch API says
    no ``statusReason``, so the times tell)."""
    limit = (job.get("timeout") or {}).get("attemptDurationSeconds")
    started, stopped = job.get("startedAt"), job.get("stoppedAt")
    return bool(limit and started and stopped and stopped - started >= limit * 1000)


def batch_name(text: str, limit: int = 128) -> str:
    """Batch's names: letters, digits, hyphens, underscores, up to 128, starting alphanumeric."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_") or "job"
    return cleaned[:limit]


class BatchLauncher(Launcher):
    name = "batch"
    Settings = BatchSettings
    runners = ("process", "docker")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: Any = None
        self._definitions: dict[str, str] = {}  # name -> ARN, this process's cache

    @property
    def settings_(self) -> BatchSettings:
        assert isinstance(self.settings, BatchSettings)
        return self.settings

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
            except ImportError:
                raise BadInput("the batch launcher needs boto3, which is not installed", "pip install 'gpstage[batch]'") from None
            s = self.settings_
            endpoint = s.endpoint or os.environ.get("AWS_ENDPOINT_URL_BATCH") or None
            self._client = boto3.client("batch", region_name=s.region or os.environ.get("AWS_REGION")
                                        or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1", endpoint_url=endpoint)
        return self._client

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as err:  # noqa: BLE001 - botocore's errors, one line each
            code = getattr(err, "response", {}).get("Error", {}).get("Code", type(err).__name__)
            raise GpstageError(f"AWS Batch {what} failed ({code}): {str(err).splitlines()[0][:300]}",
                               "check [launchers.batch] (job_queue, region, endpoint) and the AWS credentials") from None

    # ---- submit -----------------------------------------------------------------------------
    def runs_in_image(self, runner: str) -> bool:
        return runner == "process" or super().runs_in_image(runner)  # the entry runs in the module's image

    def check(self, spec: JobSpec, runner: str) -> None:
        super().check(spec, runner)
        s = self.settings_
        wrapper_check(self.name, spec, runner, s.entry_image, s.commit_tag)
        roles = {d.role for d in spec.dirs}
        if s.legacy and runner == "docker":
            raise BadInput("legacy mode (runS3OnBatch.sh's five arguments) carries no module image, so it cannot run "
                           "batch+docker", "set legacy=false (the entry then reads the spec), or use runner=process")
        if s.legacy and not {Role.TASKLIB, Role.INPUTS} <= roles:
            raise BadInput("legacy mode (runS3OnBatch.sh) needs a tasklib and an inputs dir", "add them, or set legacy=false")
        if runner == "docker" and (not os.path.isabs(s.staging_dir) or os.path.normpath(s.staging_dir) == "/"):
            raise BadInput(f"staging_dir {s.staging_dir!r} must be an absolute path other than /",
                           "set [launchers.batch] staging_dir")

    def start(self, record: JobRecord) -> str:
        spec, s = record.spec, self.settings_
        attempt = max(MIN_ATTEMPT_S, (spec.resources.time_s or s.default_time_s) + s.staging_grace_s)
        job = self._call("submit_job", self.client.submit_job, jobName=batch_name(f"gpstage-{spec.job_id}"),
                         jobQueue=s.job_queue, jobDefinition=self._job_definition(record),
                         timeout={"attemptDurationSeconds": attempt},
                         containerOverrides={"command": self._command(record),
                                             "environment": [{"name": k, "value": v}
                                                             for k, v in sorted(self._environment(record).items())]})
        return job["jobId"]

    def entry_bundle(self, spec: JobSpec, runner: str) -> dict[str, str] | None:
        if not uses_bundle(self.settings, runner):
            return None
        machine = self.settings_.node_machine
        return bundle_facts(self.settings_, lambda: machine, "the compute nodes (node_machine)")

    def _command(self, record: JobRecord) -> list[str]:
        """The mounted bundle's entry (or the image's gpstage-entry), with --spec or the five legacy arguments;
        legacy with entry=image runs the image's own runS3OnBatch.sh, as GenePattern's server does."""
        spec = record.spec
        args = entry_args(record)
        if self.settings_.legacy:
            tasklib, inputs = spec.dir(Role.TASKLIB).path, spec.dir(Role.INPUTS).path
            args = [tasklib, inputs, spec.storage_root, spec.workdir, spec.executable_path]
            if not record.entry_bundle:
                return ["/usr/local/bin/runS3OnBatch.sh", *args]
        return [*entry_command(record.entry_bundle), *args]

    def _environment(self, record: JobRecord) -> dict[str, str]:
        s, spec = self.settings_, record.spec
        shareable = split(os.environ)[1]  # never a credential in a job's description
        env = {k: shareable[k] for k in s.forward_env if k in shareable}
        env.update(spec.env)
        if s.legacy:
            env["GP_METADATA_DIR"] = spec.metadata_dir
        if s.credentials_file:
            env["AWS_SHARED_CREDENTIALS_FILE"] = s.credentials_file  # a path, not a secret
        if s.node_credentials_file:
            env[CREDENTIALS_ENV] = s.node_credentials_file
        for name, value in (("GPSTAGE_LOG_PUSH_INTERVAL", s.log_push_interval), ("GPSTAGE_KILL_GRACE", s.kill_grace)):
            if value is not None:
                env[name] = str(value)
        if s.cancel_poll_interval > 0 and not s.legacy:
            env["GPSTAGE_CANCEL_POLL_INTERVAL"] = str(s.cancel_poll_interval)
        if record.runner == "docker":
            # One staging dir per submission under the mounted staging_dir; the entry removes it at its end.
            nonce = uuid.uuid4().hex[:12]
            env.update({"DOCKER_HOST": f"unix://{SOCKET_IN_ENTRY}",
                        "GPSTAGE_STAGING_ROOT": f"{os.path.normpath(s.staging_dir)}/{batch_name(spec.job_id, 80)}-{nonce}"})
            if s.module_network:
                env["GPSTAGE_DOCKER_NETWORK"] = s.module_network
            if s.commit_tag:
                env["GPSTAGE_COMMIT_TAG"] = s.commit_tag
            if s.docker_config:
                env["DOCKER_CONFIG"] = s.docker_config  # a path: the credentials stay in the file
        return env

    def _job_definition(self, record: JobRecord) -> str:
        """Find or register the job definition for this image, resources and mounts."""
        spec, s = record.spec, self.settings_
        volumes, mounts = self._mounts(record)
        image = s.entry_image if record.runner == "docker" else spec.image
        props: dict[str, Any] = {
            "image": image, "command": [*entry_command(record.entry_bundle), "--help"],
            "resourceRequirements": [{"type": "VCPU", "value": str(math.ceil(spec.resources.cpus or 1))},
                                     {"type": "MEMORY", "value": str(spec.resources.memory_mib or s.default_memory_mib)}],
            "volumes": volumes, "mountPoints": mounts,
        }
        if s.job_role_arn:
            props["jobRoleArn"] = s.job_role_arn
        digest = hashlib.sha256(json.dumps(props, sort_keys=True).encode()).hexdigest()[:12]
        name = batch_name(f"gpstage-{image}", 115) + f"-{digest}"
        if name not in self._definitions:
            found = self._call("describe_job_definitions", self.client.describe_job_definitions,
                               jobDefinitionName=name, status="ACTIVE").get("jobDefinitions", [])
            if found:
                self._definitions[name] = max(found, key=lambda d: d["revision"])["jobDefinitionArn"]
            else:
                self._definitions[name] = self._call("register_job_definition", self.client.register_job_definition,
                                                     jobDefinitionName=name, type="container",
                                                     containerProperties=props)["jobDefinitionArn"]
        return self._definitions[name]

    def _mounts(self, record: JobRecord) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Storage on the compute host's file system (file://, nfs://) and the credentials file."""
        from gpstage.storage import local_path_of

        spec, s = record.spec, self.settings_
        paths: dict[str, tuple[str, bool]] = {}  # host path -> (container path, read-only)
        for d in spec.dirs:
            path = local_path_of(spec.url_of(d))
            if path is not None:
                paths[path] = (path, False)
        for node_file in (s.credentials_file, s.node_credentials_file):
            if node_file:
                paths[node_file] = (node_file, True)
        if record.entry_bundle:  # the entry bundle, from the node's disk, read-only (docs/entry-bundle.md)
            paths[record.entry_bundle["path"]] = (bundle.MOUNT_PATH, True)
        if record.runner == "docker":  # wrapper mode: the node's engine and its staging dir, same path
            paths[s.docker_socket] = (SOCKET_IN_ENTRY, False)
            staging = os.path.normpath(s.staging_dir)
            paths[staging] = (staging, False)
            if s.docker_config:
                paths[s.docker_config] = (s.docker_config, True)
        volumes, mounts = [], []
        for i, (path, (inside, read_only)) in enumerate(sorted(paths.items())):
            volumes.append({"name": f"v{i}", "host": {"sourcePath": path}})
            mounts.append({"sourceVolume": f"v{i}", "containerPath": inside, "readOnly": read_only})
        return volumes, mounts

    # ---- status -----------------------------------------------------------------------------
    def poll(self, record: JobRecord) -> BackendState:
        return self.poll_many([record])[record.job_id]

    def poll_many(self, records: list[JobRecord]) -> dict[str, BackendState]:
        by_id = {r.backend_id: r for r in records if r.backend_id}
        found: dict[str, dict[str, Any]] = {}
        ids = list(by_id)
        for i in range(0, len(ids), DESCRIBE_BATCH):
            page = self._call("describe_jobs", self.client.describe_jobs, jobs=ids[i:i + DESCRIBE_BATCH])
            found.update({j["jobId"]: j for j in page.get("jobs", [])})
        out = {}
        for backend_id, record in by_id.items():
            job = found.get(backend_id)
            out[record.job_id] = (self._state(job) if job
                                  else BackendState(JobState.ERROR, None, f"Batch job {backend_id} is unknown"))
        return out

    def _state(self, job: dict[str, Any]) -> BackendState:
        status = job["status"]
        if status in QUEUED:
            return BackendState(JobState.QUEUED)
        if status not in ENDED:
            return BackendState(JobState.RUNNING)
        code = job.get("container", {}).get("exitCode")
        if code is None:
            code = self._summary_exit_code(job)
        reason = job.get("statusReason") or ""
        timed_out = "timeout" in reason.lower() or _ran_out_of_time(job)
        return BackendState(JobState.SUCCEEDED if status == "SUCCEEDED" else JobState.FAILED, code, reason or None, timed_out)

    def find(self, record: JobRecord) -> str | None:
        """This submission's Batch job (by name, created after the record), if the submitter died before
        recording its id. Only for such orphans: one list_jobs call per Batch state."""
        name, since = batch_name(f"gpstage-{record.job_id}"), int(record.submitted_at.timestamp() * 1000)
        for status in (*QUEUED, "RUNNING", *ENDED):
            kwargs: dict[str, Any] = {"jobQueue": self.settings_.job_queue, "jobStatus": status}
            while True:
                page = self._call("list_jobs", self.client.list_jobs, **kwargs)
                for summary in page.get("jobSummaryList", []):
                    if summary.get("jobName") == name and summary.get("createdAt", since) >= since:
                        return str(summary["jobId"])
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
        return None

    def _summary_exit_code(self, job: dict[str, Any]) -> int | None:
        """Local Batch APIs keep the container's exit code only in list_jobs summaries."""
        kwargs = {"jobQueue": job.get("jobQueue") or self.settings_.job_queue, "jobStatus": job["status"]}
        while True:
            page = self._call("list_jobs", self.client.list_jobs, **kwargs)
            for summary in page.get("jobSummaryList", []):
                if summary["jobId"] == job["jobId"]:
                    return summary.get("container", {}).get("exitCode")
            if not page.get("nextToken"):
                return None
            kwargs["nextToken"] = page["nextToken"]

    def kill(self, record: JobRecord) -> None:
        """A started entry is asked on storage first (it stops the module, records CANCELLED, pushes its
        logs and cleans up); ``terminate_job`` follows once it ended or after ``cancel_grace_s``."""
        s = self.settings_
        if s.cancel_poll_interval > 0 and not s.legacy:  # runS3OnBatch.sh's images may not run gpstage-entry
            jobs = self._call("describe_jobs", self.client.describe_jobs, jobs=[record.backend_id]).get("jobs", [])
            status = jobs[0]["status"] if jobs else None
            if status in ("STARTING", "RUNNING") and self._request_cancel(record) and self.ended_within(record, s.cancel_grace_s):
                return
        self._call("terminate_job", self.client.terminate_job, jobId=record.backend_id, reason="cancelled through gpstage")

    def _request_cancel(self, record: JobRecord) -> bool:
        from gpstage.jobfiles import request_cancel

        try:
            request_cancel(record.spec, record.backend_id)
        except Exception:  # noqa: BLE001 - storage unreachable: the backend's own terminate is all there is
            return False
        return True
