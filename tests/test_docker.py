"""What the docker runner promises beyond the launcher conformance class: outputs owned by the
submitting user, no storage secret in the module's container, limits and labels on the container, a
missing image as a clear ERROR; and no container left behind."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from container_entry.dockerutil import LABEL_JOB
from examples.sample_job import lay_out_job
from gpstage.launching import get_launcher
from gpstage.spec import JobSpec

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_host: str, docker_client) -> Iterator[None]:
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    yield
    left = docker_client.containers.list(all=True, filters={"label": LABEL_JOB})
    for c in left:
        c.remove(force=True)
    assert not left, "containers left behind"


def local_docker(spec: JobSpec, **settings):
    return get_launcher("local", {"runner": "docker", "poll_interval": 0.2, **settings}).submit(spec)


def test_outputs_belong_to_the_servers_user(tmp_path: Path, images) -> None:
    spec = lay_out_job(tmp_path / "srv", "nfs:///", image=images["bash-module"])
    for top, dirs, files in os.walk(tmp_path / "srv"):
        for name in [top, *(os.path.join(top, n) for n in dirs + files)]:
            os.chown(name, 4242, 4343)
    result = local_docker(spec).wait(timeout=120)
    assert result.ok, result.message
    for out in result.outputs:
        assert (os.stat(out).st_uid, os.stat(out).st_gid) == (4242, 4343), out


def test_module_container_sees_no_storage_secret(tmp_path: Path, images, bucket: str) -> None:
    spec = lay_out_job(tmp_path / "srv", f"s3://{bucket}/gp", image=images["bash-module"])
    Path(spec.executable_path).write_text("env\n")
    result = local_docker(spec).wait(timeout=120)
    assert result.ok, result.message
    module_env = Path(result.stdout).read_text()
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in module_env and "AWS_" not in module_env
    assert f"WORKING_DIR={spec.workdir}" in module_env
    assert "PATH=/usr/local/bin:/usr/bin:/bin" in module_env  # the image's own PATH, not the server's


def test_limits_user_and_labels_on_the_module_container(tmp_path: Path, images, docker_client) -> None:
    spec = lay_out_job(tmp_path / "srv", "nfs:///", image=images["bash-module"], sleep_s=30,
                       resources={"cpus": 0.5, "memory_mib": 64})
    handle = local_docker(spec)
    deadline = time.monotonic() + 60
    while not (found := docker_client.containers.list(filters={"label": f"{LABEL_JOB}={spec.job_id}"})):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    config = found[0].attrs["HostConfig"]
    assert (config["NanoCpus"], config["Memory"], config["Init"]) == (500_000_000, 64 * 2**20, True)
    assert found[0].attrs["Config"]["User"] == "0:0"
    assert handle.cancel().state.value == "CANCELLED"


def test_missing_image_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    spec = lay_out_job(tmp_path / "srv", "nfs:///", image="127.0.0.1:9/gpstage/no-such-module:1")
    started = time.monotonic()
    result = local_docker(spec).wait(timeout=120)
    assert (result.state.value, result.exit_code) == ("ERROR", 125)
    assert "cannot be pulled" in result.message
    assert time.monotonic() - started < 60
