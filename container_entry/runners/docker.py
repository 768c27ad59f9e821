"""The ``docker`` runner: ``bash exec.sh`` in the job's ``image``, the role dirs bind-mounted at their
identical paths — module images need only bash and stay unmodified third-party images.

Seed deployment 1 (local server + docker) is the local launcher with this runner. The container runs
as the submitting user (outputs belong to the server's user), with ``resources`` as limits, under
docker's init (signals reach bash), labelled with the job id, and is removed when the run ends —
also on failure or cancel. stdout/stderr are redirected by bash inside the container straight into
the metadata dir, so they stream to the same files as with the process runner.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from container_entry.dockerutil import LABEL_JOB, LABEL_ROLE, docker_client, ensure_image
from container_entry.runners.base import ModuleRun, Runner, RunRequest
from gpstage.errors import BadInput, GpstageError
from gpstage.spec import JobSpec

# bash redirects inside the container: $1 the executable, $2 stdout file, $3 stderr file
REDIRECT = 'exec bash "$1" >>"$2" 2>>"$3"'


def run_as(spec: JobSpec) -> str:
    """``GPSTAGE_DOCKER_USER``, else this process's uid:gid — or, when that is root (a server running
    as root for its users), the owner of the working dir."""
    if os.environ.get("GPSTAGE_DOCKER_USER"):
        return os.environ["GPSTAGE_DOCKER_USER"]
    if os.getuid() != 0:
        return f"{os.getuid()}:{os.getgid()}"
    st = os.stat(spec.workdir)
    return f"{st.st_uid}:{st.st_gid}"


class DockerRun(ModuleRun):
    def __init__(self, container: Any) -> None:
        self.container = container

    def wait(self, timeout: float | None) -> int | None:
        try:
            result = self.container.wait(timeout=timeout)
        except Exception:  # noqa: BLE001 - the SDK's read timeout: still running
            return None
        self.container.reload()
        if self.container.attrs.get("State", {}).get("OOMKilled"):
            return -signal.SIGKILL  # the kernel killed it for its memory limit
        return int(result.get("StatusCode", 125))

    def send_signal(self, sig: int) -> None:
        try:
            self.container.kill(signal=int(sig))
        except Exception:  # noqa: BLE001, S110 - already ended: a no-op, as the interface says
            pass

    def cleanup(self) -> None:
        try:
            self.container.remove(force=True)
        except Exception:  # noqa: BLE001, S110 - already gone
            pass


class DockerRunner(Runner):
    name = "docker"

    def check(self, spec: JobSpec) -> None:
        if not spec.image:
            raise BadInput("the docker runner needs the module's image", "set `image` in the job spec")

    def start(self, request: RunRequest) -> ModuleRun:
        spec = request.spec
        assert spec.image
        outside = [p for p in (request.stdout_path, request.stderr_path) if not any(
            p.startswith(d.path.rstrip("/") + "/") for d in spec.dirs)]
        if outside:
            raise BadInput(f"{outside[0]} is outside the job's dirs, so the module's container cannot write it",
                           "keep STDOUT_FILENAME / STDERR_FILENAME inside the metadata dir")
        client = docker_client()  # DOCKER_HOST, as every docker tool
        ensure_image(client, spec.image)
        limits: dict[str, Any] = {}
        if spec.resources.cpus:
            limits["nano_cpus"] = int(spec.resources.cpus * 1e9)
        if spec.resources.memory_mib:
            limits["mem_limit"] = f"{spec.resources.memory_mib}m"
        try:
            container = client.containers.run(
                spec.image, ["bash", "-c", REDIRECT, "gpstage-module", request.argv[-1], request.stdout_path, request.stderr_path],
                detach=True, init=True, working_dir=request.cwd, environment=request.job_env, user=run_as(spec),
                volumes={d.path: {"bind": d.path, "mode": "rw"} for d in spec.dirs},
                labels={LABEL_JOB: spec.job_id, LABEL_ROLE: "module"},
                network_mode=os.environ.get("GPSTAGE_DOCKER_NETWORK") or None, **limits)
        except Exception as err:  # noqa: BLE001 - the engine refused: one line
            raise GpstageError(f"docker could not start {spec.image}: {str(err).splitlines()[0][:300]}",
                               "check the image and the docker host") from None
        return DockerRun(container)
