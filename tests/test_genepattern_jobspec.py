"""The GenePattern submit call → job spec and exec.sh (frontends/genepattern/jobspec.py), without services."""

from __future__ import annotations

from pathlib import Path

import pytest

from frontends.genepattern.calls import describe, storage_root, unquote
from frontends.genepattern.install import SCRIPTS, install, uninstall
from frontends.genepattern.jobspec import SubmitCall, build_spec, exec_script, input_files, new_job_id, walltime
from gpstage.errors import BadInput
from gpstage.records import JobRecord
from gpstage.states import JobState


@pytest.mark.parametrize(("given", "seconds"), [(None, 14_400), ("", 14_400), ("59", 14_400), ("60", 60),
                                                ("604800", 604_800), ("604801", 14_400), ("abc", 14_400), ("90.5", 90)])
def test_walltime_follows_genepatterns_rule(given: str | None, seconds: int) -> None:
    assert walltime(given) == seconds


def call(tmp_path: Path, argv: list[str], **env: str) -> SubmitCall:
    work = tmp_path / "jobs" / "7"
    return SubmitCall.parse([str(tmp_path / "tl"), str(work), "def", "GP_Job_7", str(work / ".inputs_for_7"), *argv], env)


def test_the_input_files_named_by_the_command_line_and_stdin_are_staged_one_by_one(tmp_path: Path) -> None:
    uploads = tmp_path / "users" / "a b" / "uploads"
    uploads.mkdir(parents=True)
    for name in ("in.txt", "flag.txt", "stdin.txt", "other.txt"):
        (uploads / name).write_text(name)
    c = call(tmp_path, ["java", "-jar", str(tmp_path / "tl" / "x.jar"), str(uploads / "in.txt"), f"-f{uploads}/flag.txt",
                        f"--out={tmp_path}/jobs/7/out.txt", "plain"],
             GP_STDIN_FILE=str(uploads / "stdin.txt"), GP_JOB_METADATA_DIR=str(tmp_path / "jobs" / "7.meta"))
    assert input_files(c) == {str(uploads): ["in.txt", "flag.txt", "stdin.txt"]}
    spec = build_spec(c, new_job_id(c), "gs://b/gp")
    [inputs] = [d for d in spec.dirs if d.role.value == "inputs"]
    assert (inputs.path, inputs.include) == (str(uploads), ["in.txt", "flag.txt", "stdin.txt"])
    assert spec.metadata_dir == str(tmp_path / "jobs" / "7.meta")
    script = exec_script(c)
    assert f"< {uploads}/stdin.txt" not in script and f"< '{uploads}/stdin.txt'" in script  # quoted: a space
    assert ">" not in script.replace(f"< '{uploads}/stdin.txt'", "") and "exit_code" not in script


def test_resources_image_module_and_the_older_runners_metadata_dir(tmp_path: Path) -> None:
    c = call(tmp_path, ["echo", "hi"], GP_JOB_CPU_COUNT="2", GP_JOB_MEMORY_MB="3072", GP_JOB_WALLTIME_SEC="120",
             GP_JOB_DOCKER_IMAGE="genepattern/docker-java17:0.12", GP_MODULE_NAME="wc", GP_MODULE_LSID="urn:lsid:x:1")
    spec = build_spec(c, "gp-7-abcdef12", "s3://b")
    assert (spec.resources.cpus, spec.resources.memory_mib, spec.resources.time_s) == (2, 3072, 120)
    assert (spec.image, spec.module.name, spec.module.lsid) == ("genepattern/docker-java17:0.12", "wc", "urn:lsid:x:1")
    assert spec.metadata_dir == str(tmp_path / "jobs" / "7" / ".gp_metadata")
    assert new_job_id(c) != new_job_id(c) and new_job_id(c).startswith("gp-7-")


def test_bad_submit_calls_and_storage_roots_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="submit needs TASKLIB"):
        SubmitCall.parse(["/tl", "/w"], {})
    with pytest.raises(BadInput, match="not an absolute path"):
        SubmitCall.parse(["tl", "/w", "d", "n", "/i", "echo"], {})
    with pytest.raises(BadInput, match="no storage root"):
        storage_root(None, {})
    assert storage_root(None, {"S3_ROOT": "s3://b/prefix/"}) == "s3://b/prefix"
    assert storage_root("nfs:///", {"S3_ROOT": "s3://b"}) == "nfs:///"
    assert unquote('"/a b/c"') == "/a b/c" and unquote(" /a ") == "/a"


def test_a_time_limited_job_is_never_plain_success(tmp_path: Path) -> None:
    spec = build_spec(call(tmp_path, ["echo"]), "gp-7-abcdef12", "nfs:///")
    record = JobRecord(job_id="gp-7-abcdef12", launcher="local", runner="process", spec=spec, state=JobState.FAILED,
                       exit_code=142, message="time limit 60 s")
    job = describe(record)
    assert (job["status"], job["container"]["exitCode"]) == ("FAILED", 142)
    assert "duration exceeded timeout" in job["statusReason"]


def test_install_is_atomic_and_uninstall_removes_only_ours(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "aws-cli.sh").write_text("#!/bin/sh\n# the server's own\n")
    written = install(tmp_path / "s", config, tmp_path / "state", "local", None, {"AWS_REGION": "us-east-1"})
    assert sorted(p.name for p in written) == sorted(SCRIPTS)
    assert all(p.stat().st_mode & 0o777 == 0o755 for p in written)
    assert "export AWS_REGION=us-east-1" in (tmp_path / "s" / "awsCheckStatus.sh").read_text()
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".")]  # no temporary file left
    assert sorted(p.name for p in uninstall(tmp_path / "s")) == sorted(SCRIPTS)
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["aws-cli.sh"]
