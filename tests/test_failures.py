"""Every step of the entry may fail, by any kind of exception, and the job is still recorded (docs/failures.md).

Part one injects each kind — an OSError, a storage error, an unexpected exception — at each step of an
in-process entry run on file storage. Part two makes the real causes happen to ``gpstage-entry`` as a
process: a file where an output dir must go, a full disk, a read-only target. Each ends with exit 125,
state ERROR naming the step, ``exit_code.txt`` 125 (never 0 for outputs that did not arrive), and the
final records on storage whenever storage takes them.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from container_entry.lifecycle import Entry
from container_entry.runners import get_runner
from container_entry.settings import EntrySettings
from examples.sample_job import lay_out_job
from gpstage.errors import StorageError
from gpstage.jobfiles import spec_url
from gpstage.spec import JobSpec, Role
from gpstage.stage import stage_in
from tests.jobs import fresh_node, run_entry, stored, stored_json

pytestmark = pytest.mark.timeout(120)

KINDS = {
    "oserror": lambda: OSError(errno.EIO, "Input/output error", "/injected/path"),
    "storage": lambda: StorageError("injected storage failure", "check the injected store"),
    "bug": lambda: RuntimeError("injected bug"),
}
# step -> what the module's run had ended with when the step failed (None: it never ran)
STEPS = {"stage-in": None, "prerun": None, "pre-hooks": None, "run": None, "record": 0, "post-hooks": 0,
         "stage-out": 0, "postrun": 0, "push-metadata": 0}


def local_json(spec: JobSpec, name: str) -> dict[str, Any]:
    return json.loads(Path(spec.metadata_dir, name).read_text())


def submitted_job(tmp_path: Path, storage: Path | None = None, script: str | None = None) -> JobSpec:
    """The sample job (or ``script`` as its exec.sh) staged to file storage, its node copies gone."""
    spec = lay_out_job(tmp_path / "server", f"file://{storage or tmp_path / 'storage'}")
    if script is not None:
        Path(spec.executable_path).write_text(f"#!/bin/bash\n{script}\n")
    stage_in(spec)
    fresh_node(spec)
    return spec


def storage_path(spec: JobSpec, role: Role) -> Path:
    return Path(spec.url_of(spec.dir(role))[len("file://"):])


@contextmanager
def fault_at(step: str, exc: BaseException, monkeypatch: pytest.MonkeyPatch, runner: Any) -> Iterator[None]:
    """Make ``step`` raise ``exc`` (once, for the push of the metadata dir: the entry pushes it again)."""
    if step == "run":
        monkeypatch.setattr(runner, "start", lambda request: (_ for _ in ()).throw(exc))
    elif step in ("prerun", "postrun"):
        original_script = Entry._custom_script

        def script(self: Entry, name: str, path: str) -> None:
            if name == step:
                raise exc
            original_script(self, name, path)

        monkeypatch.setattr(Entry, "_custom_script", script)
    elif step in ("pre-hooks", "post-hooks"):
        original_hooks = Entry._hooks

        def hooks(self: Entry, phase: str, *args: Any) -> None:
            if phase == step:
                raise exc
            original_hooks(self, phase, *args)

        monkeypatch.setattr(Entry, "_hooks", hooks)
    elif step == "record":
        import container_entry.lifecycle as lifecycle

        calls = []
        original_write = lifecycle.write_exit_code

        def write_exit_code(path: str, code: int) -> None:
            calls.append(code)
            if len(calls) == 1:  # the write right after the module ended
                raise exc
            original_write(path, code)

        monkeypatch.setattr(lifecycle, "write_exit_code", write_exit_code)
    else:
        original_stage, failed = Entry._stage, []

        def stage(self: Entry, inbound: bool, roles: tuple[Role, ...] | None = None) -> Any:
            metadata_only = roles == (Role.METADATA,)
            hit = {"stage-in": inbound, "stage-out": not inbound and not metadata_only,
                   "push-metadata": metadata_only and not failed}[step]
            if hit:
                failed.append(True)
                raise exc
            return original_stage(self, inbound, roles)

        monkeypatch.setattr(Entry, "_stage", stage)
    yield


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("step", list(STEPS))
def test_a_failure_at_any_step_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, kind: str) -> None:
    spec = submitted_job(tmp_path)
    runner = get_runner("process")
    settings = EntrySettings(quiet=True, log_push_interval=0)
    with fault_at(step, KINDS[kind](), monkeypatch, runner):
        code = Entry(spec, runner, settings, dict(os.environ)).run()
    assert code == 125
    for status in (local_json(spec, "status.json"), stored_json(spec, "status.json")):  # the local copy, and storage's
        assert (status["state"], status["exit_code"], status["failed_phase"]) == ("ERROR", 125, step)
        assert status["module_exit_code"] == STEPS[step]
        assert "\n" not in status["message"] and ("internal error: RuntimeError" in status["message"]) == (kind == "bug")
    assert local_json(spec, "exit_code.txt") == stored_json(spec, "exit_code.txt") == {"exit_code": 125}
    delivered = STEPS[step] is not None and step != "stage-out"  # the module ran and its outputs were pushed
    try:
        outputs_on_storage = bool(stored(spec, Role.WORKDIR, "counts.txt"))
    except StorageError:
        outputs_on_storage = False
    assert outputs_on_storage == delivered


def run_job(spec: JobSpec) -> subprocess.CompletedProcess[str]:
    return run_entry("--spec", spec_url(spec), "--log-push-interval", "0")


def assert_recorded_locally(spec: JobSpec, result: subprocess.CompletedProcess[str], step: str,
                            failed_steps: int = 1) -> dict[str, Any]:
    """Exit 125, a final local record naming ``step``, and one error line per failed step on stderr."""
    assert result.returncode == 125, result.stderr
    status = local_json(spec, "status.json")
    assert (status["state"], status["failed_phase"], status["module_exit_code"]) == ("ERROR", step, 0)
    assert local_json(spec, "exit_code.txt") == {"exit_code": 125}
    errors = [line for line in result.stderr.splitlines() if "error in" in line]
    assert len(errors) == failed_steps and "Traceback" not in result.stderr
    return status


def test_a_file_where_an_output_dir_goes_is_an_error_recorded_on_storage(tmp_path: Path) -> None:
    """Another writer puts a plain file on storage where the module's output dir must be created."""
    blocker = tmp_path / "storage" / str(tmp_path / "server" / "gp" / "jobResults" / "1" / "results").lstrip("/")
    spec = submitted_job(tmp_path, script=f"mkdir -p results && echo out > results/a.txt && echo other > '{blocker}'")
    assert storage_path(spec, Role.WORKDIR) / "results" == blocker
    status = assert_recorded_locally(spec, run_job(spec), "stage-out")
    assert "File exists" in status["message"] or "Not a directory" in status["message"]
    assert stored_json(spec, "status.json")["failed_phase"] == "stage-out"
    assert stored_json(spec, "exit_code.txt") == {"exit_code": 125}


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small file system of our own (the tests run as root in CI: a missing mount is a failure)."""
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True, timeout=30)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


def test_a_full_disk_on_storage_is_an_error_and_nothing_half_written_stays(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "2m") as disk:
        spec = submitted_job(tmp_path, disk, "head -c 3000000 /dev/zero > big.bin")  # more than the disk holds
        status = assert_recorded_locally(spec, run_job(spec), "stage-out")
        assert "No space left" in status["message"]
        assert stored_json(spec, "status.json")["failed_phase"] == "stage-out"  # the small records still fit
        workdir_on_disk = storage_path(spec, Role.WORKDIR)
        assert not (workdir_on_disk / "big.bin").exists()
        assert not [p for p in workdir_on_disk.iterdir() if p.name.startswith(".gpstage-tmp.")]


def test_a_read_only_target_leaves_the_local_record_final(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "16m") as disk:
        spec = submitted_job(tmp_path, disk)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, timeout=30)
        result = run_job(spec)
        status = assert_recorded_locally(spec, result, "stage-out", failed_steps=2)  # the outputs, then the records
        assert "Read-only file system" in status["message"] and "push-metadata: " in status["message"]
        assert "could not push the metadata dir again" in result.stderr
        with pytest.raises(StorageError):
            stored_json(spec, "status.json")  # nothing reached storage: the local copy is the record
