"""What the spec's ``image`` names, for the apptainer runner, and the content id that keys its SIF:

* ``NAME[:TAG]`` or ``docker-daemon:NAME[:TAG]`` — an image of the docker daemon in ``DOCKER_HOST``
  (pulled by the daemon if missing, as the docker runner does); keyed by the docker image ID.
* ``docker-archive:PATH`` — a ``docker save`` tarball; keyed by a hash of its manifest.
* ``docker://REF`` — a registry image; with a tag, the digest is looked up in the registry first,
  anonymously, to key the cache.
* a ``.sif`` file or a sandbox directory — used as it is; ``oras://``, ``library://``, ``shub://`` — passed
  to apptainer, which caches them itself.

The conversion itself is :mod:`container_entry.runners.sif`. The docker SDK is imported only for daemon
images, lazily.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from gpstage.errors import GpstageError

REGISTRY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Image:
    """The spec's ``image``, classified: ``local`` and ``passthrough`` go to ``apptainer exec`` as they
    are; ``daemon``, ``archive`` and ``registry`` are converted once into the SIF cache."""

    name: str  # as the spec wrote it, for messages
    kind: str  # "local", "passthrough", "daemon", "archive", "registry"
    ref: str  # path, URI, daemon reference, archive path or registry reference


def classify(image: str) -> Image:
    if image.startswith("docker-daemon:"):
        return Image(image, "daemon", image.removeprefix("docker-daemon:").removeprefix("//"))
    if image.startswith("docker-archive:"):
        return Image(image, "archive", image.removeprefix("docker-archive:").removeprefix("//"))
    if image.startswith("docker://"):
        return Image(image, "registry", image.removeprefix("docker://"))
    if re.match(r"^[a-z][a-z0-9+.-]*://", image):  # oras://, library://, shub://, https://...
        return Image(image, "passthrough", image)
    if image.endswith(".sif") or image.startswith(("/", "./", "../")) or os.path.exists(image):
        return Image(image, "local", image)
    return Image(image, "daemon", image)


def _docker_client():
    from container_entry.dockerutil import docker_client  # the docker SDK, only for daemon images

    return docker_client()


def daemon_image_id(ref: str) -> tuple[object, str]:
    """The daemon's image for ``ref`` (pulled by the daemon if missing) and its ID ``sha256:…``."""
    from container_entry.dockerutil import ensure_image

    client = _docker_client()
    ensure_image(client, ref)
    image = client.images.get(ref)
    return image, image.id


def archive_key(path: str) -> str:
    """A content id for a ``docker save`` archive: the hash of its manifest.json (which names the config
    and layer digests), else of the whole file."""
    if not os.path.isfile(path):
        raise GpstageError(f"image archive {path} does not exist", "fix the docker-archive: path in the spec")
    h = hashlib.sha256()
    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile("manifest.json")
            if member is not None:
                h.update(b"manifest\0" + member.read())
                return f"sha256-{h.hexdigest()}"
    except (tarfile.TarError, KeyError, OSError):
        pass
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256-{h.hexdigest()}"


def parse_registry_ref(ref: str) -> tuple[str, str, str]:
    """``(registry host, repository, tag or digest)`` of a docker reference, with Docker Hub's defaults."""
    name, digest = ref.split("@", 1) if "@" in ref else (ref, "")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, repo = first, rest
    else:
        host, repo = "registry-1.docker.io", name
        if "/" not in repo:
            repo = f"library/{repo}"
    tag = ""
    if ":" in repo.rsplit("/", 1)[-1]:
        repo, _, tag = repo.rpartition(":")
    return host, repo, digest or tag or "latest"


def registry_digest(ref: str, insecure: bool = False) -> str | None:
    """The manifest digest of a registry image (``sha256:…``), asked anonymously with the registry's
    token dance; None when the registry cannot say (offline, private): then the reference keys the cache."""
    host, repo, tag = parse_registry_ref(ref)
    if tag.startswith("sha256:"):
        return tag
    local = host.split(":")[0] in ("localhost", "127.0.0.1", "::1")
    scheme = "http" if insecure or local else "https"
    url = f"{scheme}://{host}/v2/{repo}/manifests/{tag}"
    accept = ("application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, "
              "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")

    def head(token: str | None) -> urllib.request.addinfourl:
        headers = {"Accept": accept, **({"Authorization": f"Bearer {token}"} if token else {})}
        return urllib.request.urlopen(urllib.request.Request(url, method="HEAD", headers=headers),
                                      timeout=REGISTRY_TIMEOUT_S)

    try:
        try:
            response = head(None)
        except urllib.error.HTTPError as err:
            challenge = err.headers.get("WWW-Authenticate", "") if err.code == 401 else ""
            params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
            if not challenge.lower().startswith("bearer") or "realm" not in params:
                return None
            query = urllib.parse.urlencode({k: v for k, v in params.items() if k in ("service", "scope")})
            with urllib.request.urlopen(f"{params['realm']}?{query}", timeout=REGISTRY_TIMEOUT_S) as r:
                body = json.loads(r.read())
            response = head(body.get("token") or body.get("access_token"))
        with response:
            digest = response.headers.get("Docker-Content-Digest")
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return digest if digest and digest.startswith("sha256:") else None
