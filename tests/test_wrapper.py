"""Wrapper mode (``docker+docker``, ``batch+docker``) and commit-and-push, on the real private dockerd, the
real local registry (scripts/registry_service.py) and moto's S3 and Batch — beyond the launcher
conformance class: the wrapper behaves exactly as direct mode (``local+docker``); a committed image is
in the registry, runs the module again on its own, and holds no data and no secret; a failed push is
recorded; the module cannot outlive its entry nor reach the docker socket; nothing is left behind.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import statistics
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from container_entry.dockerutil import LABEL_JOB, LABEL_STAGING
from examples.sample_job import expected_counts, lay_out_job
from gpstage.errors import BadInput
from gpstage.launching import get_launcher
from gpstage.records import RecordStore
from gpstage.spec import JobSpec, Role
from tests.conftest import run_cli
from tests.jobs import stored, stored_json

pytestmark = pytest.mark.timeout(300)

NEVER_IN_IMAGE = ("words.txt", "counts.txt", "summary.txt", "exec.sh", "stdout.txt", "stderr.txt", "exit_code.txt",
                  "status.json", "job.json", "gpstage-entry.log", "cancel.json")


# ---- services and helpers ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def registry(service_env) -> str:
    """``127.0.0.1:PORT`` of the local registry (scripts/services.py)."""
    return service_env("registry")["GPSTAGE_TEST_REGISTRY"]


@pytest.fixture(autouse=True)
def nothing_left(monkeypatch: pytest.MonkeyPatch, docker_host: str, docker_client) -> Iterator[None]:
    """DOCKER_HOST for direct mode; after each test no job container (entry, module, commit) nor staging volume."""
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    yield
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _leftovers(docker_client)[0]:
        time.sleep(0.2)
    containers, volumes = _leftovers(docker_client)
    for c in containers:
        c.remove(force=True)
    for v in volumes:
        v.remove(force=True)
    assert not containers, f"containers left behind: {[c.name for c in containers]}"
    assert not volumes, f"staging volumes left behind: {[v.name for v in volumes]}"


def _leftovers(client) -> tuple[list, list]:
    containers = [c for c in client.containers.list(all=True)
                  if LABEL_JOB in (c.labels or {}) or c.name.startswith("gpstage-commit-w")]
    return containers, client.volumes.list(filters={"label": LABEL_JOB})


@pytest.fixture(scope="session")
def staging_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wrapper-staging")


def direct(**settings: Any):
    """local+docker: the entry on this machine starts the module's container (seed deployment 1)."""
    return get_launcher("local", {"runner": "docker", "poll_interval": 0.2, **settings})


def wrapper(docker_host: str, images: dict[str, str], **settings: Any):
    """docker+docker: the entry in gpstage/runtime with the docker socket starts the module's container."""
    return get_launcher("docker", {"runner": "docker", "docker_host": docker_host, "network": "host", "poll_interval": 0.2,
                                   "entry_image": images["runtime"], **settings})


def batch_wrapper(batch_queue: dict[str, Any], docker_host: str, images: dict[str, str], staging: Path, **settings: Any):
    return get_launcher("batch", {"runner": "docker", "job_queue": batch_queue["queue"], "endpoint": batch_queue["endpoint"],
                                  "credentials_file": batch_queue["credentials_file"], "poll_interval": 0.3,
                                  "staging_grace_s": 60, "cancel_poll_interval": 0.5, "entry_image": images["runtime"],
                                  "docker_socket": docker_host[len("unix://"):], "staging_dir": str(staging), **settings})


def sample(base: Path, storage_root: str, job_id: str, image: str, outcome: str = "0", **kw: Any) -> JobSpec:
    spec = lay_out_job(base, storage_root, job_id=job_id, image=image, exit_code=3 if outcome == "3" else 0, **kw)
    if outcome == "signal":  # the module runs, then its shell is killed by SIGKILL
        exe = Path(spec.executable_path)
        exe.write_text(exe.read_text() + "kill -KILL $$\n")
    return spec


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def tree(root: str, skip: str) -> dict[str, bytes]:
    """Every file under ``root`` (relative name -> bytes), without the nested dir ``skip``."""
    out = {}
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(top, d) != skip]
        for f in files:
            out[os.path.relpath(os.path.join(top, f), root)] = Path(top, f).read_bytes()
    return out


# ---- wrapper mode is direct mode, seen from outside --------------------------------------------------
@pytest.mark.parametrize("outcome", ["0", "3", "signal"])
@pytest.mark.parametrize("storage", ["file", "s3"])
def test_wrapper_gives_what_direct_mode_gives(tmp_path: Path, storage: str, outcome: str, images, docker_host: str,
                                              request: pytest.FixtureRequest) -> None:
    root = f"s3://{request.getfixturevalue('bucket')}" if storage == "s3" else f"file://{tmp_path}/store"
    results = {}
    for mode in ("direct", "wrapper"):
        spec = sample(tmp_path / mode, f"{root}/{mode}", unique(f"{mode[0]}"), images["bash-module"], outcome)
        launcher = direct() if mode == "direct" else wrapper(docker_host, images)
        result = launcher.submit(spec).wait(timeout=120)
        status = stored_json(spec, "status.json")
        base = str(tmp_path / mode)
        results[mode] = {
            "record": (result.state.value, result.exit_code, result.reason, result.message),
            "status": {k: status[k] for k in ("state", "exit_code", "reason", "signal", "message")},
            "exit_code.txt": json.loads(Path(result.exit_code_file).read_text()),
            "stdout": Path(result.stdout).read_text().replace(base, "BASE"),
            "stderr": Path(result.stderr).read_text().replace(base, "BASE"),
            "workdir": tree(spec.workdir, spec.metadata_dir),
            "tasklib": tree(spec.dir(Role.TASKLIB).path, ""),
            "entry log": stored(spec, Role.METADATA, "gpstage-entry.log").decode(),
        }
    d, w = results["direct"], results["wrapper"]
    expected = {"0": ("SUCCEEDED", 0), "3": ("FAILED", 3), "signal": ("FAILED", 137)}[outcome]
    assert d["record"][:2] == expected, d["record"]
    for key in ("record", "status", "exit_code.txt", "stdout", "stderr", "workdir", "tasklib"):
        assert w[key] == d[key], key
    assert d["workdir"]["counts.txt"].decode() == expected_counts()
    assert "wordcount: reading BASE/gp/users/test user/uploads/words.txt" in w["stdout"]
    assert "wordcount: warning" in w["stderr"]
    assert "wrapper mode: 4 dir(s) staged under" in w["entry log"] and "removed the staging dir" not in w["entry log"]


def test_module_cannot_reach_the_docker_socket_nor_the_storage_secret(tmp_path: Path, images, docker_host: str,
                                                                       bucket: str) -> None:
    spec = lay_out_job(tmp_path / "srv", f"s3://{bucket}/gp", job_id=unique("w"), image=images["bash-module"])
    Path(spec.executable_path).write_text("for s in /var/run/docker.sock /run/docker.sock; do [ -e $s ] && echo SOCKET $s; done\n"
                                          "env\nmount\n")
    result = wrapper(docker_host, images).submit(spec).wait(timeout=120)
    assert result.ok, result.message
    out = Path(result.stdout).read_text()
    assert "SOCKET" not in out and "docker.sock" not in out
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in out and "AWS_" not in out and "DOCKER_" not in out
    assert f"WORKING_DIR={spec.workdir}" in out


def test_the_module_dies_with_its_entry_and_cleanup_removes_everything(tmp_path: Path, images, docker_host: str,
                                                                       docker_client) -> None:
    """An entry killed hard (SIGKILL: no chance to clean up) takes its module's container down with it;
    the launcher's cleanup then removes what is left (the module's stopped container, the staging volume)."""
    spec = lay_out_job(tmp_path / "srv", f"file://{tmp_path}/store", job_id=unique("w"), image=images["bash-module"],
                       sleep_s=120)
    launcher = wrapper(docker_host, images)
    handle = launcher.submit(spec)
    deadline = time.monotonic() + 60
    while not (modules := docker_client.containers.list(filters={"label": f"{LABEL_JOB}={spec.job_id}", "status": "running"})) \
            or len(modules) < 2:
        assert time.monotonic() < deadline, "the module's container never started"
        time.sleep(0.2)
    module = next(c for c in modules if c.labels.get("org.gpstage.role") == "module")
    assert LABEL_STAGING in module.labels
    docker_client.containers.get(handle.status().backend_id).kill()  # SIGKILL to the entry
    deadline = time.monotonic() + 15
    while True:
        module.reload()
        if module.status != "running":
            break
        assert time.monotonic() < deadline, "the module outlived its entry"
        time.sleep(0.1)
    assert module.attrs["State"]["ExitCode"] == 137
    record = handle.status()
    assert (record.state.value, record.exit_code) == ("ERROR", 125)  # the entry could not record anything
    assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL_JOB}={spec.job_id}"})
    assert not docker_client.volumes.list(filters={"label": f"{LABEL_JOB}={spec.job_id}"})


# ---- batch+docker: cooperative cancel, staging dirs -------------------------------------------------
def test_batch_cancel_is_recorded_by_the_entry_which_cleans_up(tmp_path: Path, images, docker_host: str, batch_queue,
                                                               staging_dir: Path) -> None:
    spec = lay_out_job(tmp_path / "srv", f"file://{tmp_path}/store", job_id=unique("w"), image=images["bash-module"],
                       sleep_s=120)
    launcher = batch_wrapper(batch_queue, docker_host, images, staging_dir)
    handle = launcher.submit(spec)
    deadline = time.monotonic() + 60
    while b"sleeping" not in b"".join(launcher.logs(spec.job_id)):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert any(staging_dir.iterdir()), "the job stages under staging_dir"
    started = time.monotonic()
    record = handle.cancel()
    assert record.state.value == "CANCELLED" and time.monotonic() - started < 15
    status = stored_json(spec, "status.json")  # written by the entry itself, not inferred by the launcher
    assert (status["state"], status["exit_code"], status["signal"]) == ("CANCELLED", 143, "SIGTERM")
    assert "cancel requested on storage" in stored(spec, Role.METADATA, "gpstage-entry.log").decode()
    assert not list(staging_dir.iterdir())


def test_batch_entry_sweeps_the_staging_dir_of_a_dead_entry(tmp_path: Path, images, docker_host: str, batch_queue,
                                                            staging_dir: Path, docker_client) -> None:
    """A wrapper that died (SIGKILL) left its staging dir and its module's stopped container: the next
    wrapper on the node removes both (the dead one's lock is free); a live one's is never touched."""
    dead = staging_dir / "dead-job-0123"
    (dead / "opt/gp/jobResults/1").mkdir(parents=True)
    (dead / "opt/gp/jobResults/1/counts.txt").write_text("left over\n")
    (dead / ".gpstage-staging.lock").write_text("")
    os.utime(dead / ".gpstage-staging.lock", (time.time() - 3600, time.time() - 3600))
    leftover = docker_client.containers.create(images["bash-module"], ["true"], labels={LABEL_STAGING: str(dead)})
    live = staging_dir / "live-job-4567"
    live.mkdir()
    import fcntl

    with open(live / ".gpstage-staging.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.utime(live / ".gpstage-staging.lock", (time.time() - 3600, time.time() - 3600))
        spec = lay_out_job(tmp_path / "srv", f"file://{tmp_path}/store", job_id=unique("w"), image=images["bash-module"])
        result = batch_wrapper(batch_queue, docker_host, images, staging_dir).submit(spec).wait(timeout=120)
        assert result.ok, result.message
        assert not dead.exists()
        assert live.exists()
    shutil.rmtree(live)
    with pytest.raises(Exception, match="No such container|404"):
        docker_client.containers.get(leftover.id)
    assert "removed the stale staging dir" in stored(spec, Role.METADATA, "gpstage-entry.log").decode()


# ---- commit and push ----------------------------------------------------------------------------------
def registry_tags(registry: str, repo: str) -> list[str]:
    with urllib.request.urlopen(f"http://{registry}/v2/{repo}/tags/list", timeout=10) as r:  # loopback only
        return json.loads(r.read())["tags"] or []


def image_members(client, ref: str, path: Path) -> tuple[list[str], bytes]:
    """The file names in every layer of ``ref`` (from ``docker save``), and the whole saved archive."""
    with open(path, "wb") as f:
        f.writelines(client.images.get(ref).save(named=True))
    raw = path.read_bytes()
    names = []
    with tarfile.open(path) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            data = outer.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith("layer.tar") or member.name.startswith("blobs/"):
                try:
                    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                        names += ["/" + n.lstrip("./") for n in layer.getnames()]
                except tarfile.ReadError:
                    pass  # a config or manifest blob
    return names, raw


@pytest.mark.parametrize("launcher_name", ["docker", "batch"])
def test_commit_and_push_a_finished_module_image(tmp_path: Path, launcher_name: str, images, docker_host: str,
                                                 docker_client, registry: str, bucket: str, staging_dir: Path,
                                                 request: pytest.FixtureRequest) -> None:
    ns = unique("gpstage-test-")
    job_id = unique("w")
    spec = lay_out_job(tmp_path / "srv", f"s3://{bucket}/gp", job_id=job_id, image=images["bash-module"],
                       module={"name": "WordCount", "version": "1.0", "lsid": "urn:lsid:example.org:gp.module:00042:1"})
    settings = {"commit_tag": f"{registry}/{ns}/"}  # name and tag from the spec's module
    launcher = (wrapper(docker_host, images, **settings) if launcher_name == "docker" else
                batch_wrapper(request.getfixturevalue("batch_queue"), docker_host, images, staging_dir, **settings))
    result = launcher.submit(spec).wait(timeout=180)
    assert result.ok and result.message is None, result.message
    ref = f"{registry}/{ns}/wordcount:1.0"
    commit = next(t for t in stored_json(spec, "status.json")["transfers"] if t.get("phase") == "commit")
    assert (commit["image"], commit["pushed"], commit["error"]) == (ref, True, None), commit
    assert commit["digest"].startswith("sha256:") and commit["files"] == 3  # wordcount.sh, .cache/last_run.txt, stopwords.txt
    assert registry_tags(registry, f"{ns}/wordcount") == ["1.0"]

    # Pulled from the registry (not the local copy), labelled with the module and its source.
    docker_client.images.remove(ref, force=True)
    image = docker_client.images.pull(f"{registry}/{ns}/wordcount", tag="1.0")
    try:
        labels = image.labels
        assert (labels["org.gpstage.module.name"], labels["org.gpstage.module.version"], labels["org.gpstage.module.lsid"]) == \
            ("WordCount", "1.0", "urn:lsid:example.org:gp.module:00042:1")
        assert labels["org.gpstage.source-image"] == images["bash-module"]
        assert labels["org.gpstage.source-image-id"] == docker_client.images.get(images["bash-module"]).id
        assert image.attrs["RepoDigests"] == [f"{registry}/{ns}/wordcount@{commit['digest']}"]

        # The module runs again from the image alone: only a fresh input and working dir are mounted.
        fresh_inputs, fresh_work = tmp_path / "again" / "inputs", tmp_path / "again" / "work"
        (fresh_work / ".gp_metadata").mkdir(parents=True)
        fresh_inputs.mkdir(parents=True)
        shutil.copy(Path(spec.dir(Role.INPUTS).path, "words.txt"), fresh_inputs / "words.txt")
        shutil.copy(spec.executable_path, fresh_work / ".gp_metadata" / "exec.sh")
        rel_exe = os.path.relpath(spec.executable_path, spec.workdir)
        container = docker_client.containers.run(
            ref, ["bash", f"{spec.workdir}/{rel_exe}"], detach=True, working_dir=spec.workdir, network_mode="none",
            volumes={str(fresh_inputs): {"bind": spec.dir(Role.INPUTS).path, "mode": "ro"},
                     str(fresh_work): {"bind": spec.workdir, "mode": "rw"}}, labels={LABEL_JOB: f"{job_id}-again"})
        try:
            assert container.wait(timeout=60)["StatusCode"] == 0, container.logs().decode()
        finally:
            container.remove(force=True)
        assert (fresh_work / "counts.txt").read_text() == expected_counts()
        # The dirs' parents were created; existing dirs (/tmp: sticky, world-writable) kept their modes.
        ls = "ls -ld /tmp | cut -c1-10"
        assert docker_client.containers.run(ref, ["bash", "-c", ls], remove=True) == \
            docker_client.containers.run(images["bash-module"], ["bash", "-c", ls], remove=True) == b"drwxrwxrwt\n"

        # No data and no secret in the image.
        names, raw = image_members(docker_client, ref, tmp_path / "image.tar")
        tasklib, libraries = spec.dir(Role.TASKLIB).path, spec.dir(Role.LIBRARIES).path
        assert f"{tasklib}/wordcount.sh" in names and f"{libraries}/stopwords.txt" in names
        for name in names:
            assert os.path.basename(name) not in NEVER_IN_IMAGE, name
            for role in (Role.INPUTS, Role.WORKDIR, Role.METADATA):
                assert not name.startswith(spec.dir(role).path), name
        everything = raw + json.dumps(image.attrs).encode() + json.dumps(image.history()).encode()
        for secret in (os.environ["AWS_SECRET_ACCESS_KEY"], os.environ["AWS_ACCESS_KEY_ID"]):
            assert secret.encode() not in everything
            assert base64.b64encode(secret.encode()) not in everything
        words = Path(spec.dir(Role.INPUTS).path, "words.txt").read_bytes()
        assert words[:60] not in raw and expected_counts().encode()[:40] not in raw  # no input, no output bytes
    finally:
        docker_client.images.remove(ref, force=True)


def test_a_failed_push_leaves_the_job_succeeded_with_a_clear_message(tmp_path: Path, images, docker_host: str,
                                                                     docker_client) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ref = f"127.0.0.1:{port}/gpstage-test/wordcount:{uuid.uuid4().hex[:8]}"
    spec = lay_out_job(tmp_path / "srv", f"file://{tmp_path}/store", job_id=unique("w"), image=images["bash-module"])
    result = wrapper(docker_host, images, commit_tag=ref).submit(spec).wait(timeout=180)
    try:
        assert (result.state.value, result.exit_code) == ("SUCCEEDED", 0)
        assert result.message and result.message.startswith(f"commit: push of {ref} failed"), result.message
        status = stored_json(spec, "status.json")
        assert status["state"] == "SUCCEEDED" and status["message"] == result.message
        commit = next(t for t in status["transfers"] if t.get("phase") == "commit")
        assert (commit["pushed"], commit["image_id"] is not None) == (False, True)
        assert "push of" in stored(spec, Role.METADATA, "gpstage-entry.log").decode()
        assert Path(spec.workdir, "counts.txt").read_text() == expected_counts()
    finally:
        for img in docker_client.images.list(name=ref.rsplit(":", 1)[0]):
            docker_client.images.remove(img.id, force=True)


def test_registry_credentials_travel_by_reference_only(tmp_path: Path, images, docker_host: str, docker_client,
                                                       registry: str) -> None:
    """The registry's credentials stay in the docker config file: the entry gets DOCKER_CONFIG (a path) and
    the file read-only; no argv, environment, spec, record, log or image holds the password."""
    password = f"registry-password-{uuid.uuid4().hex}"
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    auth = base64.b64encode(f"gpuser:{password}".encode()).decode()
    (config_dir / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    ns = unique("gpstage-test-")
    spec = lay_out_job(tmp_path / "srv", f"file://{tmp_path}/store", job_id=unique("w"), image=images["bash-module"],
                       sleep_s=2)
    launcher = wrapper(docker_host, images, commit_tag=f"{registry}/{ns}/wordcount:1", docker_config=str(config_dir))
    handle = launcher.submit(spec)
    deadline = time.monotonic() + 60
    while not (running := docker_client.containers.list(filters={"label": f"{LABEL_JOB}={spec.job_id}"})) or len(running) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for c in running:
        seen = json.dumps(c.attrs)
        assert password not in seen and auth not in seen
        if c.labels.get("org.gpstage.role") == "entry":
            assert f"DOCKER_CONFIG={config_dir}" in c.attrs["Config"]["Env"]
            assert any(m["Destination"] == str(config_dir) and not m["RW"] for m in c.attrs["Mounts"])
        else:
            assert not any(e.startswith("DOCKER_") for e in c.attrs["Config"]["Env"])
    result = handle.wait(timeout=120)
    try:
        assert result.ok and result.message is None, result.message
        assert registry_tags(registry, f"{ns}/wordcount") == ["1"]
        record = (RecordStore().job_dir(spec.job_id) / "record.json")
        texts = [p.read_bytes() for p in Path(spec.metadata_dir).iterdir() if p.is_file()]
        texts += [p.read_bytes() for p in RecordStore().job_dir(spec.job_id).iterdir() if p.is_file()]
        _, raw = image_members(docker_client, f"{registry}/{ns}/wordcount:1", tmp_path / "image.tar")
        for blob in [*texts, raw]:
            assert password.encode() not in blob and auth.encode() not in blob
        assert record.parent.exists()
    finally:
        docker_client.images.remove(f"{registry}/{ns}/wordcount:1", force=True)


def test_a_bad_commit_tag_is_refused_before_anything_is_staged(tmp_path: Path, images, docker_host: str) -> None:
    spec = lay_out_job(tmp_path / "srv", f"file://{tmp_path}/store", job_id=unique("w"), image=images["bash-module"])
    for tag, match in (("wordcount:1", "does not name a registry"), ("127.0.0.1:5001/Bad Name:1", "not a valid"),
                       ("127.0.0.1:5001/gp/x@sha256:00", "digest")):
        with pytest.raises(BadInput, match=match):
            wrapper(docker_host, images, commit_tag=tag).submit(spec)
    with pytest.raises(BadInput, match="needs the docker runner"):
        get_launcher("docker", {"runner": "process", "commit_tag": "127.0.0.1:5001/gp/"}).submit(spec.model_copy(
            update={"image": images["runtime"]}))
    bare = spec.model_copy(update={"module": None})
    with pytest.raises(BadInput, match="names none"):
        wrapper(docker_host, images, commit_tag="127.0.0.1:5001/gp/").submit(bare)
    assert not (Path(f"{tmp_path}/store") / spec.workdir.lstrip("/")).exists()
    spec_file = tmp_path / "job.json"
    spec_file.write_text(spec.to_json())
    done = run_cli("run", str(spec_file), "--launcher", "docker", "--set", "runner=docker",
                   "--set", "commit_tag=wordcount:1", env=dict(os.environ))
    assert done.returncode == 2 and "does not name a registry" in done.stderr


def test_commit_references_derive_from_the_module(tmp_path: Path) -> None:
    from container_entry.commit import commit_reference

    spec = lay_out_job(tmp_path / "srv", "nfs:///", job_id="r1", module={"name": "ConvertLineEndings", "version": "2"})
    assert commit_reference("reg.example.org:5000/gp/", spec) == "reg.example.org:5000/gp/convertlineendings:2"
    assert commit_reference("reg.example.org/gp/cle", spec) == "reg.example.org/gp/cle:2"
    assert commit_reference("localhost:5001/a/b:v3", spec) == "localhost:5001/a/b:v3"
    lsid = JobSpec.model_validate({**spec.model_dump(), "module": {
        "lsid": "urn:lsid:broad.mit.edu:cancer.software.genepattern.module.analysis:00002:2"}})
    assert commit_reference("127.0.0.1:5001/gp/", lsid) == "127.0.0.1:5001/gp/lsid-broad.mit.edu-00002:2"


# ---- what the wrapper costs ---------------------------------------------------------------------------
def test_wrapper_overhead_on_an_empty_job(tmp_path: Path, images, docker_host: str, bucket: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Wall time from submit to collected result of a job whose exec.sh does nothing, direct (local+docker)
    and in the wrapper (docker+docker), on a shared file system and on S3; median of 3 after a warm-up."""
    rows = []
    for storage in ("nfs:///", f"s3://{bucket}/gp"):
        times: dict[str, list[float]] = {"direct": [], "wrapper": []}
        for i in range(4):
            for mode in ("direct", "wrapper"):
                spec = lay_out_job(tmp_path / f"{mode}{i}{len(rows)}", storage, job_id=unique(mode[0]), image=images["bash-module"])
                Path(spec.executable_path).write_text("true\n")
                launcher = direct() if mode == "direct" else wrapper(docker_host, images)
                started = time.monotonic()
                result = launcher.submit(spec).wait(timeout=120)
                elapsed = time.monotonic() - started
                assert result.ok, result.message
                if i:  # the first round warms caches (images, python imports)
                    times[mode].append(elapsed)
        d, w = statistics.median(times["direct"]), statistics.median(times["wrapper"])
        rows.append((storage.split(":")[0], d, w))
    with capsys.disabled():
        print("\n[wrapper overhead, empty job, median of 3]")
        for storage, d, w in rows:
            print(f"  {storage:4} direct (local+docker) {d:.2f} s   wrapper (docker+docker) {w:.2f} s   extra {w - d:+.2f} s")
    for _, d, w in rows:
        assert w - d < 5, "the wrapper costs more than a container start and a Python start-up"


def test_entry_refuses_a_commit_it_cannot_make_and_a_bad_staging_root(tmp_path: Path) -> None:
    from tests.jobs import run_entry, write_spec

    spec = lay_out_job(tmp_path / "srv", "nfs:///", job_id=unique("w"), module={"name": "wc"}, image="gpstage/bash-module:1")
    path = write_spec(spec, tmp_path / "job.json")
    done = run_entry("--spec", path, "--runner", "process", "--commit-tag", "127.0.0.1:5001/gp/wc:1")
    assert done.returncode == 125 and "needs a runner that starts the module's image" in done.stderr
    done = run_entry("--spec", path, "--runner", "docker", "--commit-tag", "127.0.0.1:5001/gp/")
    assert done.returncode == 125 and "no tag" in done.stderr  # module.version missing: refused before the run
    done = run_entry("--spec", path, "--runner", "process", env={**os.environ, "GPSTAGE_STAGING_ROOT": "relative/dir"})
    assert done.returncode == 125 and "GPSTAGE_STAGING_ROOT" in done.stderr
    assert not Path(spec.metadata_dir, "status.json").exists()  # nothing ran
