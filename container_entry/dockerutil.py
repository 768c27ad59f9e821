"""The docker engine, as both the docker runner and the docker launcher use it: a client from the
standard environment (``DOCKER_HOST``…) with one-line errors, and an image that is either here or
pulled — a missing image that cannot be pulled is an ERROR at once, never a hang. The docker SDK is
imported here, lazily, and nowhere at module level."""

from __future__ import annotations

from typing import Any

from gpstage.errors import GpstageError, MissingDependency

LABEL_JOB = "org.gpstage.job-id"
LABEL_ROLE = "org.gpstage.role"  # "module" (docker runner) or "entry" (docker launcher)
LABEL_STAGING = "org.gpstage.staging-root"  # wrapper mode: the module's staging dir on the docker host
PULL_TIMEOUT_S = 600


def docker_client(base_url: str | None = None, timeout: float = 120) -> Any:
    try:
        import docker
    except ImportError:
        raise MissingDependency("docker needs the docker SDK, which is not installed", "pip install 'gpstage[docker]'") from None
    try:
        client = docker.DockerClient(base_url=base_url, timeout=timeout) if base_url else docker.from_env(timeout=timeout)
        client.ping()
    except Exception as err:  # noqa: BLE001 - any failure to reach the engine is the same problem for the user
        raise GpstageError(f"cannot reach the docker engine at {base_url or 'DOCKER_HOST'}: {str(err).splitlines()[0][:200]}",
                           "start dockerd, or set DOCKER_HOST (or the launcher's docker_host) to its socket") from None
    return client


def ensure_image(client: Any, image: str) -> None:
    """Make ``image`` available locally: present, or pulled once; otherwise a one-line error."""
    import docker.errors

    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
    try:
        client.images.pull(repo, tag=tag or "latest")
    except Exception as err:  # noqa: BLE001 - registry down, unknown image, denied: all "cannot be pulled"
        raise GpstageError(f"image {image} is not on the docker host and cannot be pulled: {str(err).splitlines()[0][:200]}",
                           "build it there, push it to a registry the host can reach, or fix the image name") from None
