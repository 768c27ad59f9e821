"""Commit and push: after a successful run, a "finished" module image — the module's own image plus the
job's TASKLIB and libraries dirs at their paths — tagged and pushed to a registry, so that the next
run of the module needs nothing staged but its inputs (the Docker-in-Docker prototype's per-module
commit, docs/genepattern-contracts.md).

``docker commit`` leaves bind-mounted content out, and the module's container had every dir mounted.
So the image is made from a FRESH container of the module's image, created without mounts, without
the job's environment and without a network: the TASKLIB and library dirs are copied into it with
``put_archive`` (a tar of exactly those trees; inputs, working dir and metadata dir are never in it,
even when nested), then it is committed and removed. Labels record the module's name, version and
LSID, and the source image. Registry credentials come by reference only: the docker SDK reads the
docker config file (``$DOCKER_CONFIG/config.json``) of the entry's environment; nothing secret is in
argv, the spec, the logs or the image.

The reference (``--commit-tag`` / ``GPSTAGE_COMMIT_TAG`` / a launcher's ``commit_tag``):
``REGISTRY/REPO:TAG`` as given; ``REGISTRY/REPO`` gets the module's version as tag; ``REGISTRY/NS/``
(a trailing slash) gets ``<module name>:<version>``. Without a name the GenePattern LSID gives one
(``lsid-<authority>-<id>``, its last field the version). A reference must name its registry.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import IO, Any

from gpstage.errors import BadInput, GpstageError
from gpstage.spec import JobSpec, Role

LABEL_PREFIX = "org.gpstage"
PUSH_ATTEMPTS = 3
PUSH_BACKOFF_S = 1.0
INCLUDED = (Role.TASKLIB, Role.LIBRARIES)
NEVER = (Role.INPUTS, Role.WORKDIR, Role.METADATA)

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOST = re.compile(r"^(?:localhost|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                   r"|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?$")


class CommitError(GpstageError):
    """Committing or pushing the finished image failed (the job's own result stands)."""


# ---- the reference -----------------------------------------------------------------------------
def _component(text: str) -> str:
    """A repository path component from free text: lower case, separators between alphanumerics."""
    out = re.sub(r"[^a-z0-9._-]+", "-", text.lower())
    out = re.sub(r"[._-]{2,}", "-", out).strip("._-")
    return out


def _tag(text: str) -> str:
    out = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).lstrip(".-")[:128]
    return out


def _lsid_parts(lsid: str | None) -> tuple[str | None, str | None]:
    """(name, version) from ``urn:lsid:AUTHORITY:NAMESPACE:ID[:VERSION]``."""
    if not lsid:
        return None, None
    parts = lsid.split(":")
    if len(parts) < 5 or parts[0].lower() != "urn" or parts[1].lower() != "lsid":
        return None, None
    name = _component(f"lsid-{parts[2]}-{parts[4]}") or None
    version = _tag(parts[5]) if len(parts) > 5 and parts[5] else None
    return name, version or None


def default_name_and_version(spec: JobSpec) -> tuple[str | None, str | None]:
    m = spec.module
    lsid_name, lsid_version = _lsid_parts(m.lsid if m else None)
    name = (_component(m.name) if m and m.name else None) or lsid_name
    version = (_tag(m.version) if m and m.version else None) or lsid_version
    return name or None, version or None


def commit_reference(tag: str, spec: JobSpec) -> str:
    """The full ``REGISTRY/REPO:TAG`` for ``tag`` (see the module docstring); BadInput when it cannot be."""
    if spec.executors:
        raise BadInput("a commit tag makes an image of ONE module's container, and this job runs a sequence of executors",
                       "drop the commit tag for executor sequences (TES tasks)")
    text = tag.strip()
    name, version = default_name_and_version(spec)
    if text.endswith("/"):
        if not name:
            raise BadInput(f"commit tag {tag!r} leaves the image name to the module, and the spec names none",
                           "set module.name or module.lsid in the spec, or give REGISTRY/REPO:TAG")
        text += name
    last = text.rsplit("/", 1)[-1]
    if "@" in text:
        raise BadInput(f"commit tag {tag!r} is a digest", "give REGISTRY/REPO:TAG")
    if ":" not in last:
        if not version:
            raise BadInput(f"commit tag {tag!r} has no tag and the spec's module has no version",
                           "give REGISTRY/REPO:TAG, or set module.version (or an LSID with a version)")
        text = f"{text}:{version}"
    repo, _, image_tag = text.rpartition(":")
    host, _, path = repo.partition("/")
    if not path or not _HOST.match(host) or not ("." in host or ":" in host or host == "localhost"):
        raise BadInput(f"commit tag {tag!r} does not name a registry",
                       "give REGISTRY/REPO:TAG, e.g. registry.example.org/gp/convertlineendings:2 or 127.0.0.1:5001/gp/")
    bad = [c for c in path.split("/") if not _COMPONENT.match(c)]
    if bad or not _TAG.match(image_tag):
        raise BadInput(f"commit tag {tag!r} is not a valid image reference",
                       "repository parts: lower-case letters, digits and . _ - between them; tag: letters, digits, _ . -")
    return text


def split_reference(reference: str) -> tuple[str, str]:
    repo, _, tag = reference.rpartition(":")
    return repo, tag


# ---- the image --------------------------------------------------------------------------------
def image_labels(spec: JobSpec, source_id: str) -> dict[str, str]:
    m = spec.module
    labels = {
        f"{LABEL_PREFIX}.source-image": spec.image or "",
        f"{LABEL_PREFIX}.source-image-id": source_id,
        f"{LABEL_PREFIX}.committed-by-job": spec.job_id,
        f"{LABEL_PREFIX}.committed-at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        f"{LABEL_PREFIX}.dirs": json.dumps({d.role.value: d.path for d in spec.dirs if d.role is Role.TASKLIB}
                                           | {"libraries": [d.path for d in spec.dirs if d.role is Role.LIBRARIES]}),
        "org.opencontainers.image.base.name": spec.image or "",
    }
    if m:
        for key, value in (("name", m.name), ("version", m.version), ("lsid", m.lsid)):
            if value:
                labels[f"{LABEL_PREFIX}.module.{key}"] = value
        if m.name:
            labels["org.opencontainers.image.title"] = m.name
        if m.version:
            labels["org.opencontainers.image.version"] = m.version
    return labels


def _within(path: str, parent: str) -> bool:
    return path == parent or parent == "/" or path.startswith(parent.rstrip("/") + "/")


def write_archive(spec: JobSpec, out: IO[bytes]) -> tuple[list[str], int]:
    """A tar of the TASKLIB and library dirs at their absolute paths (relative names from /), without
    any inputs/workdir/metadata dir nested in them; returns (the dirs, the files written)."""
    dirs = [d.path for d in spec.dirs if d.role in INCLUDED]
    dirs = [p for p in dirs if not any(p != o and _within(p, o) for o in dirs)]  # nested: inside its parent's tar
    never = [d.path for d in spec.dirs if d.role in NEVER]
    files = 0

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        nonlocal files
        if any(_within("/" + info.name, n) for n in never):
            return None
        if info.isfile():
            files += 1
        return info

    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in dirs:
            if os.path.isdir(path):
                # The dir's real location (in wrapper mode ``path`` is a symlink into the staging dir),
                # under its own name; symlinks inside it stay symlinks. Missing parents are created by
                # the engine; existing ones (/tmp, /opt) keep their modes.
                tar.add(os.path.realpath(path), arcname=path.lstrip("/"), recursive=True, filter=keep)
    return dirs, files


def commit_and_push(client: Any, spec: JobSpec, reference: str, log: Callable[[str], None],
                    scratch: str | None = None) -> dict[str, Any]:
    """Commit the finished image of ``spec``'s module as ``reference`` and push it. Never raises for a
    failed commit or push: the returned record says what happened (``error`` is None when all went well)."""
    record: dict[str, Any] = {"phase": "commit", "image": reference, "source_image": spec.image, "image_id": None,
                              "digest": None, "dirs": [], "files": 0, "pushed": False, "seconds": {}, "error": None}
    try:
        _commit(client, spec, reference, record, log, scratch)
        _push(client, reference, record, log)
    except CommitError as e:
        record["error"] = str(e)
    except Exception as e:  # noqa: BLE001 - an SDK surprise is still only a failed commit
        record["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    return record


def _commit(client: Any, spec: JobSpec, reference: str, record: dict[str, Any], log: Callable[[str], None],
            scratch: str | None) -> None:
    assert spec.image
    started = time.monotonic()
    try:
        source = client.images.get(spec.image)
    except Exception as e:  # noqa: BLE001
        raise CommitError(f"the module's image {spec.image} is gone: {str(e).splitlines()[0][:200]}") from None
    config = source.attrs.get("Config") or {}
    command = None if (config.get("Cmd") or config.get("Entrypoint")) else ["bash"]  # create needs one
    repo, tag = split_reference(reference)
    tmp_dir = scratch if scratch and os.path.isdir(scratch) else None
    container = None
    with tempfile.TemporaryFile(dir=tmp_dir, prefix=".gpstage-commit-") as archive:
        record["dirs"], record["files"] = write_archive(spec, archive)
        size = archive.tell()
        archive.seek(0)
        try:
            container = client.containers.create(
                spec.image, command, name=f"gpstage-commit-{spec.job_id}-{uuid.uuid4().hex[:8]}",
                labels=image_labels(spec, source.id), network_disabled=True)
            if not client.api.put_archive(container.id, "/", archive):
                raise CommitError(f"docker refused the TASKLIB/library archive for {spec.image}")
            image = container.commit(repository=repo, tag=tag, author="gpstage",
                                     message=f"gpstage: {spec.image} with the TASKLIB and libraries of job {spec.job_id}")
        except CommitError:
            raise
        except Exception as e:  # noqa: BLE001
            raise CommitError(f"docker could not commit {reference}: {str(e).splitlines()[0][:300]}") from None
        finally:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.remove(force=True)
    record["image_id"] = image.id
    record["seconds"]["commit"] = round(time.monotonic() - started, 3)
    log(f"  committed {reference} ({image.id[:19]}): {record['files']} files, {size / 2**20:.1f} MiB from "
        f"{', '.join(record['dirs']) or 'no dirs'}")


def _push(client: Any, reference: str, record: dict[str, Any], log: Callable[[str], None]) -> None:
    started = time.monotonic()
    repo, tag = split_reference(reference)
    error = None
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        error, digest = None, None
        try:
            for item in client.api.push(repo, tag=tag, stream=True, decode=True):
                if item.get("error") or item.get("errorDetail"):
                    error = item.get("error") or (item.get("errorDetail") or {}).get("message") or "unknown error"
                aux = item.get("aux") or {}
                digest = aux.get("Digest") or digest
        except Exception as e:  # noqa: BLE001 - the engine itself failed
            error = str(e).splitlines()[0] if str(e) else type(e).__name__
        if error is None:
            record.update(pushed=True, digest=digest)
            record["seconds"]["push"] = round(time.monotonic() - started, 3)
            log(f"  pushed {reference}{f' ({digest})' if digest else ''}"
                + (f" after {attempt} attempts" if attempt > 1 else ""))
            return
        log(f"  push of {reference} failed (attempt {attempt} of {PUSH_ATTEMPTS}): {error[:300]}")
        if attempt < PUSH_ATTEMPTS:
            time.sleep(PUSH_BACKOFF_S * attempt)
    record["seconds"]["push"] = round(time.monotonic() - started, 3)
    raise CommitError(f"push of {reference} failed: {str(error)[:300]}")
