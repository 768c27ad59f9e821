"""The ``slurm`` launcher: the entry as a Slurm batch job on a shared file system (seed deployment 2).

``gpstage-entry`` runs on the compute node, outside any container; with the default ``apptainer``
runner it runs ``exec.sh`` inside the module's image, so module images need only bash. With ``nfs``
storage the node sees the server's paths and nothing is copied (docs/design.md §2). Submission is
``sbatch --parsable`` of a generated script (arguments quoted; options on sbatch's command line so
paths with spaces work); ``resources`` map to ``--cpus-per-task``, ``--mem`` and ``--time`` = time_s
+ the staging grace (docs/design.md §10). Status comes from ``scontrol show job`` — it needs no slurmdbd,
unlike ``sacct`` — and, once Slurm says the job ended, from the entry's own ``status.json``. Cancel is
SIGTERM to the batch script (the entry forwards it, records CANCELLED, pushes the logs); a job still
running ``cancel_grace_s`` later is ended by Slurm's own ``scancel``. The
module's stdout/stderr land in the metadata dir; Slurm's own log of the entry goes to the job's
scratch dir in the record store. The job's environment is the submitter's WITHOUT any credential
(sbatch runs without them and exports the rest; slurmctld saves what it exports, ``scontrol show job
-dd`` shows it): the credentials travel in one 0600 file in that scratch dir, which must be on the shared file
system (docs/design.md §11), removed once the job's end is recorded.
"""

from __future__ import annotations

import math
import os
import shlex
import subprocess

from pydantic import Field

from gpstage.credfile import ENV_NAME, gather, split, write
from gpstage.errors import GpstageError
from gpstage.records import JobRecord
from gpstage.states import JobState
from launchers.base import BackendState, Launcher, LauncherSettings, entry_args
from launchers.local import entry_command

QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}
TIMEOUT = {"TIMEOUT", "DEADLINE"}
COMMAND_TIMEOUT_S = 60


class SlurmSettings(LauncherSettings):
    partition: str | None = Field(None, description="sbatch --partition")
    account: str | None = Field(None, description="sbatch --account")
    slurm_conf: str | None = Field(None, description="SLURM_CONF for the commands (default: the environment's)")
    staging_grace_s: int = Field(600, ge=0, description="added to time_s for Slurm's --time")
    default_time_s: int | None = Field(None, gt=0, description="--time for specs without time_s (default: the partition's)")
    entry_command: str | None = Field(None, description="gpstage-entry on the nodes (default: the one beside this Python)")
    sbatch_args: list[str] = Field(default_factory=list, description="more sbatch options, e.g. ['--qos=long']")
    poll_interval: float = Field(2.0, gt=0)
    log_push_interval: float | None = Field(None, ge=0)
    kill_grace: float | None = Field(None, ge=0)
    cancel_grace_s: float = Field(30.0, ge=0, description="how long cancel waits for the entry to end the job "
                                  "after its SIGTERM before Slurm ends it (scancel); longer than pushing a "
                                  "cancelled job's outputs and logs takes")


class SlurmLauncher(Launcher):
    name = "slurm"
    Settings = SlurmSettings
    default_runner = "apptainer"
    shares_filesystem = True  # nodes see the server's paths

    @property
    def settings_(self) -> SlurmSettings:
        assert isinstance(self.settings, SlurmSettings)
        return self.settings

    def _run(self, argv: list[str], what: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``argv`` with this process's environment minus every credential: sbatch exports what it has, and
        slurmctld keeps it where ``scontrol show job -dd`` shows it (credentials travel in a file)."""
        env = split(os.environ)[1]
        if self.settings_.slurm_conf:
            env["SLURM_CONF"] = self.settings_.slurm_conf
        for name, value in (("GPSTAGE_LOG_PUSH_INTERVAL", self.settings_.log_push_interval),
                            ("GPSTAGE_KILL_GRACE", self.settings_.kill_grace)):
            if value is not None:
                env[name] = str(value)
        try:
            result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=COMMAND_TIMEOUT_S, check=False)
        except FileNotFoundError:
            raise GpstageError(f"{argv[0]} is not installed here", "run gpstage on a Slurm submit host (slurm-client)") from None
        except subprocess.TimeoutExpired:
            raise GpstageError(f"{argv[0]} did not answer in {COMMAND_TIMEOUT_S} s",
                               "check that slurmctld is up (sinfo)") from None
        if check and result.returncode != 0:
            last_line = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise GpstageError(f"{what} failed: {last_line}"[:400],
                               "check the Slurm settings ([launchers.slurm]) and `sinfo`")
        return result

    def start(self, record: JobRecord) -> str:
        spec, s = record.spec, self.settings_
        job_dir = self.store.job_dir(record.job_id)
        script = job_dir / "slurm.sh"
        command = shlex.join([s.entry_command or entry_command(), *entry_args(record)])
        credentials = ""
        doc = gather(os.environ)
        if doc:  # on the shared file system, 0600: never in the job's saved environment (docs/design.md §11)
            write(str(job_dir / "credentials.json"), doc)
            credentials = f"export {ENV_NAME}={shlex.quote(str(job_dir / 'credentials.json'))}\n"
        script.write_text(f"#!/bin/bash\n# gpstage job {record.job_id}: the entry, on the node\n{credentials}exec {command}\n")
        argv = ["sbatch", "--parsable", "--export=ALL", f"--job-name=gpstage-{record.job_id}", f"--output={job_dir}/slurm-%j.out",
                f"--chdir={job_dir}", f"--cpus-per-task={math.ceil(spec.resources.cpus or 1)}"]
        if spec.resources.memory_mib:
            argv.append(f"--mem={spec.resources.memory_mib}M")
        limit = spec.resources.time_s or s.default_time_s
        if limit:
            argv.append(f"--time={math.ceil((limit + s.staging_grace_s) / 60)}")
        argv += [f"--partition={s.partition}"] * bool(s.partition) + [f"--account={s.account}"] * bool(s.account)
        argv += [*s.sbatch_args, str(script)]
        return self._run(argv, "sbatch").stdout.strip().split(";")[0]

    def poll(self, record: JobRecord) -> BackendState:
        result = self._run(["scontrol", "show", "job", "--oneliner", str(record.backend_id)], "scontrol", check=False)
        if result.returncode != 0:  # purged after MinJobAge: the entry's status.json decides
            return BackendState(JobState.ERROR, None, f"Slurm no longer knows job {record.backend_id}")
        fields = dict(item.split("=", 1) for item in result.stdout.split() if "=" in item)
        state = fields.get("JobState", "UNKNOWN")
        if state in QUEUED:
            return BackendState(JobState.QUEUED)
        if state in RUNNING:
            return BackendState(JobState.RUNNING)
        code, _, sig = fields.get("ExitCode", "0:0").partition(":")
        exit_code = int(code) if code.isdigit() else None
        if sig.isdigit() and int(sig):
            exit_code = 128 + int(sig)
        message = f"Slurm: {state}" + (f" ({fields['Reason']})" if fields.get("Reason", "None") != "None" else "")
        ended = JobState.SUCCEEDED if state == "COMPLETED" and exit_code == 0 else JobState.FAILED
        return BackendState(ended, exit_code, message, timed_out=state in TIMEOUT)

    def kill(self, record: JobRecord) -> None:
        """SIGTERM to every step, the batch step (the entry) included: the entry records the cancel. A job
        allocated whose batch step has not started yet has no one to get a signal, so it is ended at once,
        as a pending one. A signal can still be lost as the step starts (CI saw a job run its whole 60 s
        after one): a job Slurm still runs after ``cancel_grace_s`` is ended by Slurm itself (``scancel``:
        SIGTERM to every process, SIGKILL after the cluster's KillWait)."""
        job = str(record.backend_id)
        self._run(["scancel", "--full", "--signal=TERM", job], "scancel", check=False)
        steps = self._run(["squeue", "--noheader", "--steps", "--jobs", job, "--format=%i"], "squeue", check=False)
        if f"{job}.batch" in steps.stdout.split() and self.ended_within(record, self.settings_.cancel_grace_s):
            return
        self._run(["scancel", job], "scancel", check=False)

    def cleanup(self, record: JobRecord) -> None:
        (self.store.job_dir(record.job_id) / "credentials.json").unlink(missing_ok=True)
