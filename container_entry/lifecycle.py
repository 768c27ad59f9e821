"""One job, start to end, inside its container or on its node: written once for every runner.

1. create the dirs, pull every ``in``/``inout`` dir to its identical path;
2. source the pre-run custom script (its exports reach the module), run the spec's pre-hooks;
3. run the executable with bash through the runner, stdout/stderr to their own files, the metadata
   dir pushed every 30 s meanwhile — or, when the spec has ``executors`` (a TES task, docs/tes.md),
   run them instead, in order, each in its own image (pulled or converted before the first starts),
   its command as argv (no bash), through the same runner and supervision; see
   :mod:`container_entry.executors` for their requests, the sequence and their records;
4. write ``exit_code.txt`` and ``status.json``; 5. run the post-hooks;
6. push every ``out``/``inout`` dir — also when the module failed — then source the post-run custom
   script; with a commit tag and a SUCCEEDED module, commit and push the finished module image;
   7. push the metadata dir LAST, so a terminal ``status.json`` on storage means every
   output is already there; 8. let the runner remove what it prepared (wrapper mode's staging dir,
   the process runner's ``mount_at`` links).
An executor sees the job's environment + its own ``env`` (never a credential), starts in its ``workdir``
(a container path; none: the image's), reads its ``stdin`` and writes its ``stdout``/``stderr`` at those
container paths' places on this side (a path in no dir is refused, ERROR), by default
``<metadata dir>/executor-<i>.stdout``/``.stderr``. The first that ends non-zero (and has no
``ignore_error``) stops the sequence and its exit code is the job's (FAILED; 128+N when killed by signal
N); all ending 0 (or ignored) is SUCCEEDED, exit 0. The time limit covers the whole sequence (142); a
signal goes to the running executor, stops the sequence, and a job cancelled before the last executor
ended is CANCELLED. ``status.json`` gains one ``executors`` entry per executor that started, written as
each ends. The container runners mount every dir at its ``mount_at``; the process runner links it there
(container_entry/runners/process.py).
A failure in any step is recorded (state ERROR, exit 125) and the logs are still pushed. A failed
commit or push is not a failure of the job: the state stays SUCCEEDED, ``status.json`` says what went
wrong (its ``message``, and the ``commit`` entry of its ``transfers``).
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Mapping
from typing import Any

from container_entry.environment import job_environment, module_environment, run_hook, script_variables, source_script
from container_entry.executors import Sequence, executor_requests
from container_entry.record import EntryLog, now
from container_entry.runners import Runner, RunRequest
from container_entry.settings import EntrySettings
from container_entry.supervise import CancelWatch, LivePush, Outcome, Supervisor
from gpstage.errors import GpstageError
from gpstage.jobfiles import LOG_NAME, STATUS_NAME, write_exit_code, write_status
from gpstage.spec import JobSpec, Role
from gpstage.stage import DirTransfer, run_stage
from gpstage.states import EXIT_GPSTAGE_ERROR, EXIT_NOT_FOUND, EXIT_SIGNAL_BASE, EXIT_TIMEOUT, JobState, JobStatus, Reason

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class EntryCancelled(BaseException):
    """A signal arrived before the module started. BaseException: no ``except Exception`` retries it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Entry:
    """Runs ``spec`` with ``runner``; :meth:`run` returns the exit code of docs/design.md §9."""

    def __init__(self, spec: JobSpec, runner: Runner, settings: EntrySettings, env: Mapping[str, str] | None = None) -> None:
        self.spec, self.runner, self.settings = spec, runner, settings
        self.env = dict(os.environ if env is None else env)
        self.log = EntryLog(settings.quiet)
        md = spec.metadata_dir
        self.paths = {"stdout": settings.in_metadata(md, settings.stdout_name),
                      "stderr": settings.in_metadata(md, settings.stderr_name),
                      "exitcode": settings.in_metadata(md, settings.exitcode_name),
                      "status": os.path.join(md, STATUS_NAME), "log": os.path.join(md, LOG_NAME)}
        self.status = JobStatus(job_id=spec.job_id, state=JobState.STAGING, started_at=now())
        self.phase = "setup"  # setup -> starting -> running -> finishing: what a signal does depends on it
        self.supervisor: Supervisor | None = None
        self.pending_signal: int | None = None
        self.exported: dict[str, str | None] = {}

    # ---- the run --------------------------------------------------------------------------
    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in HANDLED_SIGNALS}
        watch = CancelWatch(self.spec, self.settings.cancel_poll_interval, self._cancel_requested, self.log)
        try:
            with watch:
                pulled = self._run_steps()
            self.phase = "finishing"
            self._finish(pulled)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.log.close()
            try:
                self.runner.release(self.log)
            except Exception as e:  # noqa: BLE001 - everything is pushed; a leftover is only logged
                self.log(f"could not clean up after the runner: {e}")
        assert self.status.exit_code is not None
        return self.status.exit_code

    def refuse(self, error: Exception, phase: str) -> int:
        """Record, where the job's launcher looks, a job the entry will not start (a spec newer than it
        reads): ERROR 125 naming ``phase``, the metadata dir pushed; nothing else is staged or run."""
        try:
            os.makedirs(self.spec.metadata_dir, exist_ok=True)
            self.log.open(self.paths["log"])
        except OSError as e:
            self.log(f"cannot create {self.spec.metadata_dir}: {e.strerror}")
        self._error(error, phase)
        self._finish(pulled=False)
        self.log.close()
        assert self.status.exit_code is not None
        return self.status.exit_code

    def _run_steps(self) -> bool:
        """Steps 1-5; returns whether the dirs were pulled (only then are they pushed back). Whatever
        a step raises ends here, recorded against that step (docs/failures.md)."""
        pulled = False
        phase = "stage-in"
        try:
            # A launcher may start the entry with these blocked (launchers/local_queue.py) so that a cancel
            # sent before the handlers existed waits for them; it is delivered here, as EntryCancelled.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
            self._make_dirs()
            with self.log.step("stage-in", self.status.phases):
                self._transfers("in", self._stage(inbound=True))
            pulled = True
            self._write_status()
            phase = "prerun"
            self._custom_script("prerun", self.settings.prerun_script)
            phase = "pre-hooks"
            env = module_environment(self.env, self.exported, self.spec)
            self._hooks("pre-hooks", self.spec.hooks.pre, env)
            phase = "run"
            outcome = self._run_module(env)
            phase = "record"
            self._record(outcome)
            write_exit_code(self.paths["exitcode"], self.status.exit_code or 0)
            phase = "post-hooks"
            self._hooks("post-hooks", self.spec.hooks.post, env)
        except EntryCancelled as c:
            self.phase = "finishing"  # a second signal (Slurm's scancel after a lost first) changes nothing now
            self.log(f"cancelled by {c} before the module started")
            self._end(JobState.CANCELLED, EXIT_SIGNAL_BASE + c.signum, Reason.CANCELLED, signal=str(c))
        except Exception as e:  # noqa: BLE001 - whatever a step raises, the job is recorded and its logs pushed
            self._error(e, phase)
        return pulled

    def _finish(self, pulled: bool) -> None:
        """Steps 6-7: push outputs (always), the post-run script, the final record, the metadata dir last."""
        if pulled:
            others = tuple(r for r in Role if r is not Role.METADATA)
            phase = "stage-out"
            try:
                with self.log.step("stage-out", self.status.phases):
                    self._transfers("out", self._stage(inbound=False, roles=others))
                phase = "postrun"
                self._custom_script("postrun", self.settings.postrun_script)
            except Exception as e:  # noqa: BLE001 - outputs not delivered: ERROR, whatever the cause
                self._error(e, phase)
            if self.settings.commit_tag and self.status.state is JobState.SUCCEEDED:
                self._commit(self.settings.commit_tag)
        self.status.ended_at = now()
        self._publish()

    def _publish(self) -> None:
        """Write ``exit_code.txt`` and ``status.json`` (the local copy is always final) and push the
        metadata dir. A failed push is recorded as ERROR in the local copy, which is pushed once more:
        storage that refused one file may take the others, and a reader of storage must not find an end
        that says every output arrived when it did not."""
        if not self._write_records():
            return
        self.log(f"finished: {self.status.state.value}, exit code {self.status.exit_code}")
        try:
            transfers = self._stage(inbound=False, roles=(Role.METADATA,))
            self.log(f"pushed the metadata dir: {_summaries(transfers)}")
            return
        except Exception as e:  # noqa: BLE001 - recorded below, and the push tried once more
            self._error(e, "push-metadata")
        if self._write_records():
            try:
                self._stage(inbound=False, roles=(Role.METADATA,))
                self.log("pushed the metadata dir, recording the failed push")
            except Exception as e:  # noqa: BLE001 - storage unreachable: the local copy is the record
                self.log(f"could not push the metadata dir again: {one_line(e)}")

    def _write_records(self) -> bool:
        try:
            write_exit_code(self.paths["exitcode"], self.status.exit_code or 0)
            self._write_status()
            return True
        except Exception as e:  # noqa: BLE001 - e.g. a full or read-only disk: nothing more can be recorded
            self.status.state, self.status.exit_code = JobState.ERROR, EXIT_GPSTAGE_ERROR
            self.status.failed_phase = self.status.failed_phase or "record"
            self.log(f"error in record: cannot write the job's records in {self.spec.metadata_dir}: {one_line(e)}")
            return False

    # ---- steps ----------------------------------------------------------------------------
    def _make_dirs(self) -> None:
        self.runner.prepare(self.spec, self.settings, self.log)
        try:
            for d in self.spec.dirs:
                os.makedirs(d.path, exist_ok=True)
        except OSError as e:
            raise GpstageError(f"cannot create job dir {e.filename}: {e.strerror}",
                               "run the entry as a user that may write there, or fix the paths") from None
        self.log.open(self.paths["log"])
        self.log(f"job {self.spec.job_id}: runner {self.runner.name}, storage {self.spec.storage_root}")

    def _stage(self, inbound: bool, roles: tuple[Role, ...] | None = None) -> list[DirTransfer]:
        return run_stage(self.spec, inbound, node=True, jobs=self.settings.jobs, roles=roles)

    def _transfers(self, phase: str, transfers: list[DirTransfer]) -> None:
        for t in transfers:
            self.status.transfers.append({"phase": phase, **t.to_dict()})
            self.log(f"  {t.role} {t.path}: {t.skipped or (t.report.summary() if t.report else '')}")

    def _custom_script(self, name: str, path: str) -> None:
        """GenePattern's runS3Batch_{pre,post}run_custom.sh: sourced when present, with the storage credentials."""
        if not os.path.isfile(path):
            return
        env = {**self.env, **{k: v for k, v in self.exported.items() if v is not None},
               **script_variables(self.spec, self.paths)}
        with self.log.step(f"{name} {path}", self.status.phases, key=name):
            changed = source_script(path, env, self.spec.workdir, self.log)
        if name == "prerun":
            self.exported = changed
            if changed:
                self.log(f"  exported to the module: {', '.join(sorted(changed))}")

    def _commit(self, tag: str) -> None:
        """Commit and push the finished module image; a failure is recorded, never fatal to the job."""
        from container_entry.commit import commit_reference

        try:
            reference = commit_reference(tag, self.spec)
        except GpstageError as e:  # checked before the run; only a changed environment gets here
            self.status.message = "; ".join(filter(None, (self.status.message, f"commit: {e}")))
            return
        self.log(f"commit {reference}: start")
        started = time.monotonic()
        try:
            record = self.runner.commit(self.spec, reference, self.log)
        except Exception as e:  # noqa: BLE001 - e.g. the engine is gone: still only a failed commit
            record = {"phase": "commit", "image": reference, "pushed": False, "error": str(e).splitlines()[0][:300]}
        seconds = time.monotonic() - started
        for name, value in record.get("seconds", {}).items():
            self.status.phases[name] = value
        self.status.transfers.append(record)
        if record.get("error"):
            self.log(f"commit {reference}: failed in {seconds:.2f} s: {record['error']}")
            self.status.message = "; ".join(filter(None, (self.status.message, f"commit: {record['error']}")))
        else:
            self.log(f"commit {reference}: done in {seconds:.2f} s")

    def _cancel_requested(self) -> None:
        """A launcher asked on storage to cancel (a backend whose own kill is a SIGKILL): act as on SIGTERM."""
        os.kill(os.getpid(), signal.SIGTERM)

    def _hooks(self, phase: str, hooks: list[str], env: dict[str, str]) -> None:
        for hook in hooks:
            with self.log.step(f"{phase} {hook}", self.status.phases, key=phase):
                run_hook(hook, env, self.spec.workdir, self.log)

    def _run_module(self, env: dict[str, str]) -> Outcome:
        job_env = job_environment(self.exported, self.spec)
        if self.spec.executors:
            requests = executor_requests(self.spec, env, job_env)
            what = f"{len(requests)} executor(s)"
        else:
            what = exe = self.spec.executable_path
            if any(_within(exe, d.path) for d in self.spec.dirs) and not os.path.isfile(exe):
                raise _MissingExecutable(exe)
            requests = [RunRequest(argv=["bash", exe], cwd=self.spec.workdir, env=env, job_env=job_env,
                                   stdout_path=self.paths["stdout"], stderr_path=self.paths["stderr"], spec=self.spec)]
        self.runner.check(self.spec)
        images = list(dict.fromkeys(r.image for r in requests if r.image))
        if images:
            with self.log.step(f"images {' '.join(images)}", self.status.phases, key="images"):
                for image in images:
                    self.runner.prepare_image(image, self.log)
        self.status.state = JobState.RUNNING
        self._write_status()
        push = LivePush(lambda: self._stage(inbound=False, roles=(Role.METADATA,)), self.settings.log_push_interval, self.log)
        with self.log.step(f"run {what}", self.status.phases, key="run"), push:
            if not self.spec.executors:
                return self._supervise(requests[0], self.spec.resources.time_s)
            try:
                return Sequence(self.spec, requests, lambda r, left: self._supervise(r, left, then="starting"),
                                lambda: self.pending_signal, self._executor_ended).run()
            finally:
                self.phase = "finishing"

    def _supervise(self, request: RunRequest, time_limit: float | None, then: str = "finishing") -> Outcome:
        """Start ``request``, forward signals to it and wait, within ``time_limit``; ``then``: the phase
        after it ("starting" between executors: a signal then is kept and stops the sequence)."""
        self.phase = "starting"
        run = self.runner.start(request)
        try:
            self.supervisor = Supervisor(run, time_limit, self.settings.kill_grace)
            self.phase = "running"
            if self.pending_signal:
                self.supervisor.forward(self.pending_signal)
            return self.supervisor.wait()
        finally:
            self.phase = then
            self.supervisor = None
            run.cleanup()

    def _executor_ended(self, record: dict[str, Any]) -> None:
        self.status.executors.append(record)
        self.log(f"executor {record['index']} ({record['image']}) ended: exit code {record['exit_code']}")
        self._write_status()

    # ---- records --------------------------------------------------------------------------
    def _record(self, o: Outcome) -> None:
        self._record_outcome(o)
        self.status.module_exit_code = self.status.exit_code
        self.log(f"module ended: {self.status.state.value}, exit code {self.status.exit_code}")

    def _record_outcome(self, o: Outcome) -> None:
        if o.cancelled_by and o.status != 0:
            code = EXIT_SIGNAL_BASE + (-o.status if o.status < 0 else o.cancelled_by)
            self._end(JobState.CANCELLED, code, Reason.CANCELLED, signal=signal.Signals(o.cancelled_by).name)
        elif o.timed_out:
            self._end(JobState.FAILED, EXIT_TIMEOUT, Reason.TIMEOUT,
                      message=f"time limit of {self.spec.resources.time_s} s reached")
        elif o.status < 0:
            name = signal.Signals(-o.status).name
            self._end(JobState.FAILED, EXIT_SIGNAL_BASE - o.status, Reason.SIGNAL, signal=name, message=f"killed by {name}")
        else:
            self._end(JobState.SUCCEEDED if o.status == 0 else JobState.FAILED, o.status, Reason.EXITED)

    def _end(self, state: JobState, code: int, reason: Reason, **fields: Any) -> None:
        self.status.state, self.status.exit_code, self.status.reason = state, code, reason
        for k, v in fields.items():
            setattr(self.status, k, v)

    def _error(self, e: BaseException, phase: str) -> None:
        """Record that step ``phase`` failed with ``e``. After a failed module only a failure to deliver
        its outputs changes the state (the module's own result says more than a later hook's); a
        cancelled job stays CANCELLED; a job already in ERROR keeps its first failed step (the cause);
        otherwise the job is ERROR (125) and says which step failed."""
        message = one_line(e)
        self.log(f"error in {phase}: {message}")
        if not isinstance(e, GpstageError):
            self.log.raw(traceback.format_exc())
        if isinstance(e, _MissingExecutable):
            self._end(JobState.ERROR, EXIT_NOT_FOUND, Reason.MISSING_EXECUTABLE, message=message, failed_phase=phase)
        elif (self.status.state in (JobState.CANCELLED, JobState.ERROR)
              or (self.status.state is JobState.FAILED and phase == "post-hooks")):  # the first failure stays the cause
            self.status.message = "; ".join(filter(None, (self.status.message, f"{phase}: {message}")))
        else:
            self._end(JobState.ERROR, EXIT_GPSTAGE_ERROR, Reason.ERROR, message=message, failed_phase=phase)

    def _write_status(self) -> None:
        write_status(self.paths["status"], self.status)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.log(f"received {signal.Signals(signum).name}")
        if self.phase == "setup":
            raise EntryCancelled(signum)
        if self.phase == "running" and self.supervisor:
            self.supervisor.forward(signum)
        elif self.phase == "starting":
            self.pending_signal = signum
        # finishing: the outputs and logs are being pushed; the launcher's own KILL bounds this


def one_line(e: BaseException) -> str:
    """What went wrong, on one line: gpstage's own message, an OS error with its path, or an unexpected
    exception by type (a bug: its traceback is in the entry's log)."""
    if isinstance(e, GpstageError):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        where = " ".join(str(f) for f in (e.filename, e.filename2) if f)
        text = f"{e.strerror}: {where}" if where else e.strerror
        return str(GpstageError(text, "check the disk and the storage target (free space, permissions, what is there)"))
    return str(GpstageError(f"internal error: {type(e).__name__}: {e}", "report this as a gpstage bug"))


class _MissingExecutable(GpstageError):
    def __init__(self, path: str) -> None:
        super().__init__(f"the executable {path} does not exist", "check EXECUTABLE / the spec's executable and the staged dirs")


def _within(path: str, parent: str) -> bool:
    return path.startswith(parent.rstrip("/") + "/")


def _summaries(transfers: list[DirTransfer]) -> str:
    return "; ".join(t.skipped or (t.report.summary() if t.report else "") for t in transfers)
