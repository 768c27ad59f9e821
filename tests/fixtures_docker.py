"""Fixtures on a real docker daemon: the private dockerd that ``scripts/services.py start docker`` runs
(its own socket, never the system's), and gpstage's local images built by ``images/build.py``.

Register for every test module with one line in tests/conftest.py::

    pytest_plugins = ["fixtures_docker"]

Nothing here skips: a daemon that cannot be started or an image that cannot be built fails the tests that
need them (docs/design.md §17). Containers run with host networking (they reach services on 127.0.0.1) and are
removed after each test, even when it fails.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_LABEL = "org.gpstage.test"  # label=SESSION on every container these fixtures start: teardown finds stragglers
SESSION = uuid.uuid4().hex  # this test session's, so a session sharing the daemon is left alone


def load_image_builder() -> ModuleType:
    """images/build.py as a module (images/ is not a package)."""
    name = "gpstage_images_build"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "images" / "build.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def docker_host(service_env) -> str:
    """``unix://…/docker.sock`` of the private dockerd (started on demand, stopped if this session started it)."""
    return service_env("docker")["GPSTAGE_TEST_DOCKER_HOST"]


@pytest.fixture(scope="session")
def images(docker_host: str) -> dict[str, str]:
    """``{"bash-module": "gpstage/bash-module:1", "runtime": "gpstage/runtime:<version>"}``, built if
    missing or stale (the first build takes about a minute; then a no-op well under a second)."""
    return load_image_builder().ensure_images(docker_host, log=lambda msg: print(f"[images] {msg}", file=sys.stderr))


@pytest.fixture(scope="session")
def docker_client(docker_host: str) -> Iterator:
    import docker

    client = docker.DockerClient(base_url=docker_host, version="auto", timeout=120)
    yield client
    client.close()


@pytest.fixture
def run_container(docker_client) -> Iterator[Callable[..., tuple[int, str]]]:
    """``run_container(image, command, **kw) -> (exit code, stdout+stderr)``: a container with host networking,
    waited for, then removed; any left over (a test that failed mid-way) are removed at teardown."""

    def run(image: str, command: str | list[str], timeout: float = 120, **kw) -> tuple[int, str]:
        kw.setdefault("network_mode", "host")
        container = docker_client.containers.run(image, command, detach=True, labels={TEST_LABEL: SESSION}, **kw)
        try:
            code = container.wait(timeout=timeout)["StatusCode"]
            return code, container.logs(stdout=True, stderr=True).decode(errors="replace")
        finally:
            container.remove(force=True)

    yield run
    for container in docker_client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={SESSION}"}):
        container.remove(force=True)
