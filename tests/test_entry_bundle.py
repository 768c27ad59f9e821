"""The entry bundle (docs/entry-bundle.md): gpstage-entry mounted into module images that hold nothing of
gpstage — ``docker+process`` on the private dockerd, ``batch+process`` on the local Batch API.

The full launcher conformance class runs these pairs on ``gpstage/bash-module`` (tests/test_launchers.py);
here, one end-to-end test per other image variant: a static busybox and a static bash only (no libc, no
/lib), a static busybox alone (no bash: the bundle's static bash runs exec.sh), a Debian image with a
python that is not gpstage's, and an image whose USER is not root. Then what the bundle is, and the bad
input refused before anything is staged.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from container_entry import bundle
from container_entry.cli import run as entry_run
from examples.sample_job import expected_counts
from gpstage import __version__
from gpstage.errors import BadInput
from gpstage.launching import get_launcher
from gpstage.records import RecordStore
from gpstage.states import JobState
from tests.jobs import stored_json
from tests.wrapper_helpers import sample, tree, unique

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("isolated_state")]

VARIANTS = ["static-module", "busybox-module", "python-module", "user-module"]
OUTCOMES = {"0": (JobState.SUCCEEDED, 0), "3": (JobState.FAILED, 3), "signal": (JobState.FAILED, 137),
            "timeout": (JobState.FAILED, 142)}
# Prepended to exec.sh: what the module sees, into a file of its working dir (left out of the comparison).
VIEW = '{ id -u; env; } > module-view.txt\n'


def docker_process(docker_host: str, **settings: Any):
    return get_launcher("docker", {"runner": "process", "docker_host": docker_host, "network": "host",
                                   "poll_interval": 0.2, "log_push_interval": 1, "kill_grace": 1, **settings})


def view_job(base: Path, root: str, image: str | None, outcome: str, no_bash: bool = False):
    """The sample job, exec.sh first writing what the module sees. ``no_bash``: for an image without bash,
    the module's own call of ``bash`` becomes ``"$BASH"`` — the bash running exec.sh (the bundle's)."""
    extra: dict[str, Any] = {"sleep_s": 60, "resources": {"time_s": 2}} if outcome == "timeout" else {}
    spec = sample(base, root, unique(f"b{outcome}-"), image, outcome, **extra)
    exe = Path(spec.executable_path)
    script = exe.read_text()
    exe.write_text(VIEW + (script.replace('\nbash "', '\n"$BASH" "') if no_bash else script))
    return spec


def outputs(spec) -> dict[str, bytes]:
    found = tree(spec.workdir, spec.metadata_dir)
    found.pop("module-view.txt")
    return found


def inspect_running(docker_client, container_id: str) -> dict[str, Any]:
    """docker inspect of the entry's container once it runs."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        attrs = docker_client.containers.get(container_id).attrs
        if attrs["State"]["Status"] == "running":
            return attrs
        time.sleep(0.1)
    raise AssertionError(f"container {container_id} never ran")


def assert_no_socket_no_secret(attrs: dict[str, Any]) -> None:
    mounts = attrs["Mounts"]
    assert not [m for m in mounts if "docker.sock" in m["Source"] + m["Destination"]], mounts
    [entry] = [m for m in mounts if m["Destination"] == bundle.MOUNT_PATH]
    assert entry["RW"] is False
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in json.dumps(attrs)


def assert_module_view(spec, uid: str) -> None:
    view = Path(spec.workdir, "module-view.txt").read_text()
    assert view.splitlines()[0] == uid
    assert bundle.MOUNT_PATH not in view  # not on its PATH, nor anywhere in its environment
    for name in ("SSL_CERT_FILE", "GPSTAGE_CREDENTIALS_FILE", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
        assert f"\n{name}=" not in view, name
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in view


@pytest.mark.parametrize("variant", VARIANTS)
def test_an_image_with_nothing_of_gpstage_runs_as_local_process_does(variant: str, tmp_path: Path, images, bucket: str,
                                                                      docker_host: str, docker_client,
                                                                      no_containers_left) -> None:
    image = images[variant]
    launcher = docker_process(docker_host)
    no_bash = variant == "busybox-module"
    specs = {o: view_job(tmp_path / o, f"s3://{bucket}/{variant}/{o}", image, o, no_bash) for o in OUTCOMES}
    reference = view_job(tmp_path / "local", f"s3://{bucket}/{variant}/local", None, "0", no_bash)
    handles = {o: launcher.submit(spec) for o, spec in specs.items()}
    local = get_launcher("local", {"poll_interval": 0.2}).submit(reference)
    assert_no_socket_no_secret(inspect_running(docker_client, handles["timeout"].status().backend_id))
    results = {o: h.wait(timeout=120) for o, h in handles.items()}
    assert local.wait(timeout=120).ok
    for o, result in results.items():
        assert (result.state, result.exit_code) == OUTCOMES[o], (o, result.message)
    ok = specs["0"]
    assert outputs(ok) == outputs(reference)
    assert Path(ok.workdir, "counts.txt").read_text() == expected_counts()
    stdout, stderr = (Path(results["0"].stdout).read_text(), Path(results["0"].stderr).read_text())
    local_stdout = Path(reference.metadata_dir, "stdout.txt").read_text()
    assert stdout.replace(str(tmp_path / "0"), "B") == local_stdout.replace(str(tmp_path / "local"), "B")
    assert "wordcount: reading" in stdout and "wordcount: warning" not in stdout
    assert "wordcount: warning" in stderr and "wordcount: reading" not in stderr
    assert_module_view(ok, "1000" if variant == "user-module" else "0")
    record = RecordStore().load(ok.job_id)
    assert record.entry_bundle and record.entry_bundle["version"] == __version__
    assert record.entry_bundle["path"] == str(Path(images["bundle"]).resolve())


def test_batch_process_runs_a_static_image_and_never_mounts_the_socket(tmp_path: Path, images, batch_queue, bucket: str,
                                                                        docker_client) -> None:
    spec = view_job(tmp_path, f"s3://{bucket}/batch", images["static-module"], "0")
    Path(spec.executable_path).write_text(Path(spec.executable_path).read_text().replace(VIEW, VIEW + "sleep 2\n"))
    launcher = get_launcher("batch", {"job_queue": batch_queue["queue"], "endpoint": batch_queue["endpoint"],
                                      "credentials_file": batch_queue["credentials_file"], "poll_interval": 0.3,
                                      "staging_grace_s": 60, "log_push_interval": 1})
    handle = launcher.submit(spec)
    deadline = time.monotonic() + 120
    while not (running := docker_client.containers.list(filters={"ancestor": images["static-module"]})):
        assert time.monotonic() < deadline, "the Batch job's container never ran"
        time.sleep(0.2)
    assert_no_socket_no_secret(running[0].attrs)
    result = handle.wait(timeout=180)
    assert result.ok, result.message
    assert Path(spec.workdir, "counts.txt").read_text() == expected_counts()
    assert_module_view(spec, "0")
    command = batch_queue["client"].describe_jobs(jobs=[result.backend_id])["jobs"][0]["container"]["command"]
    assert command[:2] == bundle.command()


# ---- what the bundle is -----------------------------------------------------------------------------------
def test_the_bundle_is_stamped_read_only_relocatable_and_rebuilt_only_when_something_changed(images, docker_host: str,
                                                                                             tmp_path: Path) -> None:
    from fixtures_docker import load_image_builder

    path = Path(images["bundle"])
    manifest = bundle.read_manifest(path)
    assert (manifest.version, manifest.machine, manifest.format) == (__version__, platform.machine(), bundle.FORMAT)
    assert path.name == f"{__version__}-{manifest.hash[:12]}"
    assert (path.parent / "current").resolve() == path.resolve()
    assert not [p for p in path.rglob("*") if not p.is_symlink() and p.stat().st_mode & 0o222]
    assert not list(path.parent.glob(".build-*"))
    assert load_image_builder().ensure_images(docker_host, which=("bundle",))["bundle"] == images["bundle"]  # a no-op
    moved = tmp_path / "elsewhere"
    shutil.copytree(path, moved, symlinks=True)
    done = subprocess.run([str(moved / bundle.STATIC_BASH), str(moved / bundle.LAUNCHER), "--version"],
                          capture_output=True, text=True, env={}, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, f"gpstage-entry {__version__}"), done.stderr
    for p in moved.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)


# ---- refused before anything is staged ---------------------------------------------------------------------
def fake_bundle(where: Path, **fields: Any) -> str:
    where.mkdir(parents=True)
    doc = {"format": bundle.FORMAT, "version": __version__, "hash": "0" * 64, "machine": platform.machine(),
           "python": "3.11", **fields}
    (where / bundle.MANIFEST).write_text(json.dumps(doc))
    return str(where)


@pytest.mark.parametrize(("launcher_name", "case", "message"), [
    ("docker", "missing", "no entry bundle at"),
    ("docker", "other machine", "is built for riscv64, and the docker host is"),
    ("docker", "other format", "has format 99; this gpstage reads format 1"),
    ("batch", "missing", "no entry bundle at"),
    ("batch", "other machine", "is built for riscv64, and the compute nodes (node_machine) is"),
])
def test_a_bad_bundle_is_refused_in_one_line_before_anything_is_staged(launcher_name: str, case: str, message: str,
                                                                       tmp_path: Path, request) -> None:
    where = tmp_path / "bundle"
    path = {"missing": lambda: str(where), "other machine": lambda: fake_bundle(where, machine="riscv64"),
            "other format": lambda: fake_bundle(where, format=99)}[case]()
    store = tmp_path / "store"
    spec = sample(tmp_path / "srv", f"file://{store}", unique("bad"), "gpstage/bash-module:1")
    settings: dict[str, Any] = {"runner": "process", "entry_bundle": path}
    if launcher_name == "docker":
        settings["docker_host"] = request.getfixturevalue("docker_host")
    else:
        settings.update(job_queue="never-asked", endpoint="http://127.0.0.1:9")
    with pytest.raises(BadInput) as err:
        get_launcher(launcher_name, settings).submit(spec)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not store.exists()  # nothing staged
    assert not RecordStore().all()  # nothing recorded


def test_a_spec_newer_than_the_entry_is_refused_with_an_error_record(tmp_path: Path, capsys) -> None:
    store = tmp_path / "store"
    spec = sample(tmp_path / "srv", f"file://{store}", unique("new"), None)
    newer = {**spec.model_dump(mode="json"), "spec_version": 2}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(newer))
    assert entry_run(["--spec", str(path), "-q"]) == 125
    status = stored_json(spec, "status.json")
    assert (status["state"], status["exit_code"], status["failed_phase"]) == ("ERROR", 125, "spec")
    assert "spec_version 2 is newer than this gpstage" in status["message"]
    stored = [p for p in store.rglob("*") if p.is_file()]
    assert stored and all(p.parent.name == ".gp_metadata" for p in stored), stored  # the record only: nothing staged
