"""gpstage-entry as a plain process (the ``process`` runner) on every job storage: spec and legacy mode,
exit codes, signals, time limits, hooks, live logs, secrets, and refusals before the module runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from examples.sample_job import expected_counts, lay_out_job
from gpstage.errors import StorageError
from gpstage.jobfiles import spec_url
from gpstage.spec import JobSpec, Role
from gpstage.stage import stage_in
from tests.conftest import ALL_STORAGE
from tests.jobs import BIN, fresh_node, run_entry, stored, stored_json

pytestmark = pytest.mark.timeout(120)


def legacy_args(spec: JobSpec) -> list[str]:
    """runS3OnBatch.sh's arguments, as a GenePattern Batch job definition passes them."""
    return [spec.dir(Role.TASKLIB).path, spec.dir(Role.INPUTS).path, spec.storage_root, spec.workdir, spec.executable_path]


def submit(spec: JobSpec) -> None:
    """What the server does before the job starts: push the dirs, then the node starts empty."""
    stage_in(spec)
    fresh_node(spec)


def set_exec(spec: JobSpec, script: str) -> None:
    Path(spec.executable_path).write_text(f"#!/bin/bash\n{script}\n")


def local_status(spec: JobSpec) -> dict:
    return json.loads(Path(spec.metadata_dir, "status.json").read_text())


@pytest.mark.parametrize("job_storage_root", ALL_STORAGE, indirect=True)
@pytest.mark.parametrize("mode", ["spec", "legacy"])
def test_sample_module_runs_and_everything_lands_on_storage(tmp_path: Path, job_storage_root: str, mode: str) -> None:
    spec = lay_out_job(tmp_path / "server side", job_storage_root, libraries_in_tasklib=mode == "legacy")
    submit(spec)
    if mode == "spec":
        result = run_entry("--spec", spec_url(spec))
    else:  # exactly as a Batch job definition calls it, through the installed script
        result = subprocess.run([str(BIN / "runS3OnBatch.sh"), *legacy_args(spec)],
                                capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert stored(spec, Role.WORKDIR, "counts.txt").decode() == expected_counts()
    assert stored(spec, Role.WORKDIR, "results/summary.txt").startswith(b"input\twords.txt\n")
    assert stored(spec, Role.TASKLIB, ".cache/last_run.txt") == b"last input: words.txt\n"
    out, err = stored(spec, Role.METADATA, "stdout.txt").decode(), stored(spec, Role.METADATA, "stderr.txt").decode()
    assert "wordcount: reading" in out and "warning" not in out
    assert "wordcount: warning" in err and "reading" not in err
    log = stored(spec, Role.METADATA, "gpstage-entry.log").decode()
    assert "stage-in: done" in log and "wordcount:" not in log  # the entry's log never holds module output
    assert stored_json(spec, "exit_code.txt") == {"exit_code": 0}
    status = stored_json(spec, "status.json")
    assert status["state"] == "SUCCEEDED" and status["exit_code"] == 0 and status["reason"] == "exited"
    assert {"stage-in", "run", "stage-out"} <= status["phases"].keys()


@pytest.mark.parametrize("job_storage_root", ALL_STORAGE, indirect=True)
def test_failing_module_records_its_code_and_still_pushes_logs(tmp_path: Path, job_storage_root: str) -> None:
    spec = lay_out_job(tmp_path / "srv", job_storage_root, exit_code=3)
    submit(spec)
    result = run_entry("--spec", spec_url(spec))
    assert result.returncode == 3, result.stderr
    assert stored_json(spec, "exit_code.txt") == {"exit_code": 3}
    assert stored_json(spec, "status.json")["state"] == "FAILED"
    assert b"done, exit code 3" in stored(spec, Role.METADATA, "stdout.txt")
    assert stored(spec, Role.WORKDIR, "counts.txt").decode() == expected_counts()  # partial outputs come back too


def file_job(tmp_path: Path, **kwargs) -> JobSpec:
    return lay_out_job(tmp_path / "srv", f"file://{tmp_path}/store", **kwargs)


def test_module_killed_by_a_signal_is_128_plus_n(tmp_path: Path) -> None:
    spec = file_job(tmp_path)
    set_exec(spec, "echo before; kill -USR1 $$; echo after")
    submit(spec)
    result = run_entry("--spec", spec_url(spec))
    assert result.returncode == 128 + signal.SIGUSR1
    status = stored_json(spec, "status.json")
    assert (status["state"], status["reason"], status["signal"]) == ("FAILED", "signal", "SIGUSR1")
    assert stored_json(spec, "exit_code.txt") == {"exit_code": 138}
    assert stored(spec, Role.METADATA, "stdout.txt") == b"before\n"


def test_hooks_and_custom_scripts_run_in_order_and_prerun_exports_reach_the_module(tmp_path: Path) -> None:
    order = tmp_path / "order.txt"
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    scripts = {
        "prerun.sh": f'echo prerun >> "{order}"; export FROM_PRERUN="set by prerun"; unset DROP_ME',
        "pre.sh": f'echo "pre $FROM_PRERUN" >> "{order}"',
        "post.sh": f'echo post >> "{order}"',
        "postrun.sh": f'echo "postrun $FROM_PRERUN $S3_ROOT" >> "{order}"',
    }
    for name, body in scripts.items():
        (hooks / name).write_text(body + "\n")
    spec = file_job(tmp_path, hooks={"pre": [str(hooks / "pre.sh")], "post": [str(hooks / "post.sh")]})
    set_exec(spec, f'echo "module $FROM_PRERUN ${{DROP_ME-unset}}" >> "{order}"')
    submit(spec)
    env = {**os.environ, "GPSTAGE_PRERUN_SCRIPT": str(hooks / "prerun.sh"),
           "GPSTAGE_POSTRUN_SCRIPT": str(hooks / "postrun.sh"), "DROP_ME": "x"}
    assert run_entry("--spec", spec_url(spec), env=env).returncode == 0
    assert order.read_text().splitlines() == [
        "prerun", "pre set by prerun", "module set by prerun unset", "post", f"postrun set by prerun {spec.storage_root}"]


def test_failing_pre_hook_is_an_error_and_the_module_does_not_run(tmp_path: Path) -> None:
    hook = tmp_path / "bad-hook.sh"
    hook.write_text("echo hook says no; exit 4\n")
    spec = file_job(tmp_path, hooks={"pre": [str(hook)]})
    submit(spec)
    result = run_entry("--spec", spec_url(spec))
    assert result.returncode == 125
    status = stored_json(spec, "status.json")
    assert status["state"] == "ERROR" and "exited 4" in status["message"]
    assert "hook says no" in stored(spec, Role.METADATA, "gpstage-entry.log").decode()
    with pytest.raises(StorageError, match="does not exist|not found"):
        stored(spec, Role.WORKDIR, "counts.txt")


def test_output_file_names_follow_genepattern_variables(tmp_path: Path) -> None:
    spec = file_job(tmp_path)
    submit(spec)
    env = {**os.environ, "STDOUT_FILENAME": "module.out", "STDERR_FILENAME": f"{spec.metadata_dir}/module.err",
           "EXITCODE_FILENAME": "code.json"}
    assert run_entry("--spec", spec_url(spec), env=env).returncode == 0
    assert b"reading" in stored(spec, Role.METADATA, "module.out")
    assert b"warning" in stored(spec, Role.METADATA, "module.err")
    assert stored_json(spec, "code.json") == {"exit_code": 0}


def test_traversal_key_on_storage_is_refused_before_the_module_runs(tmp_path: Path, bucket: str, s3_client) -> None:
    spec = lay_out_job(tmp_path / "srv", f"s3://{bucket}/gp")
    submit(spec)
    workdir_key = spec.url_of(spec.dir(Role.WORKDIR)).split(f"s3://{bucket}/", 1)[1]
    s3_client.put_object(Bucket=bucket, Key=f"{workdir_key}/sub/../../escape.txt", Body=b"x")
    result = run_entry("--spec", spec_url(spec))
    assert result.returncode == 125
    assert len(result.stderr.strip().splitlines()[-2]) < 400  # one line says what is wrong
    status = stored_json(spec, "status.json")
    assert status["state"] == "ERROR" and ".." in status["message"]
    assert "run:" not in stored(spec, Role.METADATA, "gpstage-entry.log").decode()
    assert not Path(spec.workdir, "counts.txt").exists()
    assert not (tmp_path / "srv" / "gp" / "escape.txt").exists()


def test_symlink_escaping_the_stored_job_dir_is_refused(tmp_path: Path) -> None:
    spec = file_job(tmp_path)
    submit(spec)
    stored_workdir = Path(spec.url_of(spec.dir(Role.WORKDIR)).removeprefix("file://"))
    (stored_workdir / "passwd").symlink_to("/etc/passwd")
    result = run_entry("--spec", spec_url(spec))
    assert result.returncode == 125
    assert "symlink" in local_status(spec)["message"]
    assert not Path(spec.workdir, "passwd").exists()


def test_module_does_not_see_the_storage_credentials(tmp_path: Path, bucket: str) -> None:
    spec = lay_out_job(tmp_path / "srv", f"s3://{bucket}/gp")
    set_exec(spec, "env")
    submit(spec)
    result = run_entry("--spec", spec_url(spec))
    assert result.returncode == 0, result.stderr
    module_env = stored(spec, Role.METADATA, "stdout.txt").decode()
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in module_env
    assert "AWS_ACCESS_KEY_ID=" not in module_env and "AWS_SECRET_ACCESS_KEY=" not in module_env
    assert f"WORKING_DIR={spec.workdir}" in module_env and f"TASKLIB={spec.dir(Role.TASKLIB).path}" in module_env
    for name in ("gpstage-entry.log", "status.json"):
        assert os.environ["AWS_SECRET_ACCESS_KEY"] not in stored(spec, Role.METADATA, name).decode()


def test_time_limit_is_enforced_and_recorded_as_142(tmp_path: Path) -> None:
    spec = file_job(tmp_path, sleep_s=60, resources={"time_s": 1})
    submit(spec)
    started = time.monotonic()
    result = run_entry("--spec", spec_url(spec), "--kill-grace", "1")
    assert result.returncode == 142
    assert time.monotonic() - started < 15
    status = stored_json(spec, "status.json")
    assert (status["state"], status["reason"]) == ("FAILED", "timeout")
    assert stored_json(spec, "exit_code.txt") == {"exit_code": 142}


def test_logs_are_pushed_while_the_module_runs(tmp_path: Path, bucket: str) -> None:
    spec = lay_out_job(tmp_path / "srv", f"s3://{bucket}/gp", sleep_s=8)
    submit(spec)
    proc = subprocess.Popen([str(BIN / "gpstage-entry"), "--spec", spec_url(spec), "--log-push-interval", "0.5"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen_live = False
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(StorageError):  # not pushed yet
                seen_live = b"sleeping" in stored(spec, Role.METADATA, "stdout.txt") and proc.poll() is None
            if seen_live:
                break
            time.sleep(0.2)
        assert seen_live, "stdout.txt never appeared on storage while the module ran"
        assert stored_json(spec, "status.json")["state"] == "RUNNING"
    finally:
        assert proc.wait(timeout=60) == 0


def test_sigterm_to_the_entry_cancels_the_module_and_still_records_and_pushes(tmp_path: Path) -> None:
    spec = file_job(tmp_path, sleep_s=60)
    submit(spec)
    proc = subprocess.Popen([str(BIN / "gpstage-entry"), "--spec", spec_url(spec)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    stdout_txt = Path(spec.metadata_dir, "stdout.txt")
    while not (stdout_txt.exists() and b"sleeping" in stdout_txt.read_bytes()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 5
    status = stored_json(spec, "status.json")
    assert (status["state"], status["reason"], status["signal"]) == ("CANCELLED", "cancelled", "SIGTERM")
    assert stored_json(spec, "exit_code.txt") == {"exit_code": 143}


def test_missing_executable_is_127(tmp_path: Path) -> None:
    spec = file_job(tmp_path)
    os.unlink(spec.executable_path)
    submit(spec)
    assert run_entry("--spec", spec_url(spec)).returncode == 127
    status = stored_json(spec, "status.json")
    assert (status["state"], status["reason"]) == ("ERROR", "missing-executable")


def test_unreachable_storage_is_an_error_recorded_locally(tmp_path: Path, bucket: str) -> None:
    spec = lay_out_job(tmp_path / "srv", f"s3://{bucket}/gp")
    submit(spec)
    spec_file = tmp_path / "job.json"
    spec_file.write_text(spec.to_json())
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens on the discard port
    result = run_entry("--spec", str(spec_file), env=env, timeout=90)
    assert result.returncode == 125
    assert "cannot reach the S3 endpoint" in result.stderr
    assert local_status(spec)["state"] == "ERROR"


@pytest.mark.parametrize(("args", "message"), [
    ([], "no job given"),
    (["/a", "/b", "s3://x"], "legacy mode takes 5 arguments, got 3"),
    (["--spec", "/nonexistent/job.json"], "does not exist"),
    (["--spec", "/nonexistent/job.json", "/a", "/b", "file:///s", "/w", "/w/exec.sh"], "both a job spec and legacy"),
    (["/t", "/i", "bogus://root", "/w", "/w/x.sh"], "bogus"),
    (["/t", "/i", "file:///s", "relative/dir", "/w/x.sh"], "WORKING_DIR 'relative/dir' is not an absolute path"),
    (["--runner", "nope", "/t", "/i", "file:///s", "/w", "/w/x.sh"], "unknown runner 'nope'"),
])
def test_bad_arguments_give_one_line_and_exit_125(args: list[str], message: str) -> None:
    result = run_entry(*args)
    assert result.returncode == 125
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # usage line at most, then the error
