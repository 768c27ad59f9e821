"""Commit-and-push of a finished module image, on the real private dockerd and a real local registry
(scripts/registry_service.py): the image is in the registry, runs the module again on its own, holds
no data and no secret; a failed push is recorded; registry credentials travel by reference only.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tarfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from container_entry.dockerutil import LABEL_JOB
from examples.sample_job import expected_counts, lay_out_job
from gpstage.errors import BadInput
from gpstage.launching import get_launcher
from gpstage.records import RecordStore
from gpstage.spec import JobSpec, Role
from tests.conftest import run_cli
from tests.jobs import stored, stored_json
from tests.wrapper_helpers import NEVER_IN_IMAGE, batch_wrapper, unique, wrapper

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("nothing_left")]


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
