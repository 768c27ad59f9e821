"""The ``docker`` launcher: the ENTRY runs in a container on a docker host that is not the server (the
notebook-server / swarm case of the seed), staging from remote storage inside the container.

``docker+process`` (docs/design.md §7) starts the module's own image, unmodified: the entry bundle
(docs/entry-bundle.md) is mounted read-only and set as the container's entrypoint, so the image needs
nothing of gpstage and no docker socket is mounted (``entry = "image"``: the image's own ``gpstage-entry``).
The bundle is checked before anything is staged (launchers/mounted_entry.py). ``docker+docker`` (wrapper mode,
docs/wrapper-mode.md) starts the ENTRY image (``entry_image``, ``gpstage/runtime``) with the docker
socket and a per-job staging volume mounted; the entry stages into the volume and starts the module's
``image`` — any image with bash — itself, with the dirs mounted at their own paths. The volume (a copy
of the job) is removed with the entry's container. Non-secret storage settings (endpoints, region) are
forwarded by name from this process's environment; the credentials travel as one 0600 file, mounted
read-only or copied into the created container, never in its environment (docs/design.md §11, so
``docker inspect`` shows no secret); the settings file is mounted read-only (at /run/gpstage/config.toml) when
it exists (storage profiles); ``file://``/``nfs://`` storage paths are bind-mounted at their own
paths so a container sees the same storage as the server.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from container_entry.api import (
    LABEL_JOB,
    LABEL_ROLE,
    LABEL_STAGING,
    bundle,
    commit_reference,
    docker_client,
    ensure_image,
)
from gpstage import __version__
from gpstage.credfile import split
from gpstage.errors import BadInput, GpstageError
from gpstage.records import JobRecord
from gpstage.spec import JobSpec
from gpstage.states import JobState
from launchers.base import BackendState, Launcher, LauncherSettings, entry_args
from launchers.mounted_entry import EntrySettings, bundle_facts, entry_command, uses_bundle

DEFAULT_FORWARD = ["AWS_", "AZURE_STORAGE_", "AZURE_CLIENT_", "AZURE_TENANT_", "GOOGLE_", "STORAGE_EMULATOR_HOST", "GCSFS_"]
DEFAULT_ENTRY_IMAGE = f"gpstage/runtime:{__version__}"
SOCKET_IN_ENTRY = "/var/run/docker.sock"  # where the entry's container finds the engine (wrapper mode)
DEFAULT_SOCKET = "/var/run/docker.sock"
LABEL_SUBMITTED = "org.gpstage.submitted-at"  # tells this submission's entry from an earlier run of the job_id
CREDENTIALS_IN_ENTRY = "/run/gpstage/credentials.json"  # the credentials file, mounted or copied in
CONFIG_IN_ENTRY = "/run/gpstage/config.toml"  # the settings file (storage profiles), read-only


def wrapper_check(launcher: str, spec: JobSpec, runner: str, entry_image: str, commit_tag: str | None) -> None:
    """What docker+docker and batch+docker (and their +process siblings) need from a spec."""
    if not spec.image:
        if runner == "docker":
            raise BadInput(f"{launcher}+docker runs the module's image from the entry's container ({entry_image}), "
                           "and the spec names none", "set `image` to the module's image (any image with bash)")
        raise BadInput(f"{launcher}+{runner} starts the module's image, and the spec names none",
                       "set `image` to the module's image (the entry bundle is mounted into it), or use runner=docker")
    if commit_tag:
        if runner != "docker":
            raise BadInput(f"commit_tag needs the docker runner ({launcher}+docker), not {runner}",
                           "set runner=docker, or drop commit_tag")
        commit_reference(commit_tag, spec)  # a bad tag is refused before anything is staged


def socket_path(docker_host: str | None) -> str:
    """The engine's socket on the docker host: the path of a ``unix://`` DOCKER_HOST, else the default."""
    host = docker_host or os.environ.get("DOCKER_HOST") or ""
    return host[len("unix://"):] if host.startswith("unix://") else DEFAULT_SOCKET


class WrapperSettings(LauncherSettings, EntrySettings):
    """What docker and batch share: the entry's live pushes and kill grace, how the entry reaches the
    module's image (the entry bundle, launchers/mounted_entry.py), and wrapper mode's settings (runner
    docker: the entry's image starts the module's image through the engine's socket)."""

    log_push_interval: float | None = Field(None, ge=0)
    kill_grace: float | None = Field(None, ge=0)
    entry_image: str = Field(DEFAULT_ENTRY_IMAGE, description="the image the entry runs in with the docker runner "
                             "(it must contain gpstage-entry and the docker SDK); it starts the module's image")
    module_network: str | None = Field(None, description="network mode of the module's container (default: the "
                                       "docker launcher's network; on batch, docker's default)")
    commit_tag: str | None = Field(None, description="after a successful run, commit the module image with TASKLIB and "
                                   "libraries and push it: REGISTRY/REPO:TAG, REGISTRY/REPO or REGISTRY/NS/")
    docker_config: str | None = Field(None, description="a dir on the docker host (on batch: the compute node) holding "
                                      "the config.json with the registry's credentials: mounted read-only, named by "
                                      "DOCKER_CONFIG")


class DockerSettings(WrapperSettings):
    docker_host: str | None = Field(None, description="the engine's URL (default: DOCKER_HOST)")
    network: str | None = Field(None, description="network mode of the entry's container, e.g. host")
    forward_env: list[str] = Field(default_factory=lambda: list(DEFAULT_FORWARD),
                                   description="variables passed by name to the entry (a trailing _ is a prefix)")
    docker_socket: str | None = Field(None, description="the engine's socket ON THE DOCKER HOST, mounted into the entry "
                                      "(default: docker_host's path when it is unix://, else /var/run/docker.sock)")
    credentials: Literal["auto", "mount", "copy"] = Field(
        "auto", description="how the storage credentials reach the entry, as one 0600 file (never its environment): "
        "mount = bind-mounted read-only (the engine sees this machine's files), copy = copied into the created "
        "container before it starts (any engine); auto = mount for a unix:// engine, else copy")


class DockerLauncher(Launcher):
    name = "docker"
    Settings = DockerSettings
    runners = ("process", "docker")

    @property
    def settings_(self) -> DockerSettings:
        assert isinstance(self.settings, DockerSettings)
        return self.settings

    def _client(self) -> Any:
        return docker_client(self.settings.docker_host)  # type: ignore[attr-defined]

    def runs_in_image(self, runner: str) -> bool:
        return runner == "process" or super().runs_in_image(runner)  # the entry runs in the module's image

    def check(self, spec: JobSpec, runner: str) -> None:
        super().check(spec, runner)
        wrapper_check(self.name, spec, runner, self.settings_.entry_image, self.settings_.commit_tag)

    def entry_bundle(self, spec: JobSpec, runner: str) -> dict[str, str] | None:
        if not uses_bundle(self.settings, runner):
            return None
        return bundle_facts(self.settings_, lambda: self._client().info().get("Architecture", "unknown"), "the docker host")

    def start(self, record: JobRecord) -> str:
        if record.runner == "docker":
            return self._start_wrapper(record)
        spec = record.spec
        assert spec.image
        client = self._client()
        ensure_image(client, spec.image)
        volumes = self._volumes(record)
        if record.entry_bundle:  # the module's own image, the bundle mounted read-only and run as the command
            volumes[record.entry_bundle["path"]] = {"bind": bundle.MOUNT_PATH, "mode": "ro"}
        return self._run_entry(record, client, spec.image, self._environment(), volumes, self._labels(record),
                               "check the image and the docker host", entrypoint=record.entry_bundle is not None)

    @staticmethod
    def _labels(record: JobRecord) -> dict[str, str]:
        return {LABEL_JOB: record.job_id, LABEL_ROLE: "entry", LABEL_SUBMITTED: record.submitted_at.isoformat()}

    def find(self, record: JobRecord) -> str | None:
        """The entry container of this submission, if the submitter died before recording its id."""
        wanted = [f"{k}={v}" for k, v in self._labels(record).items()]
        found = self._client().containers.list(all=True, filters={"label": wanted})
        return found[0].id if found else None

    # ---- wrapper mode --------------------------------------------------------------------------
    def staging_volume(self, record: JobRecord) -> str:
        """The name of the job's staging volume: one per submission, found again from the record alone."""
        digest = hashlib.sha256(f"{record.job_id}\0{record.submitted_at.isoformat()}".encode()).hexdigest()[:12]
        return f"gpstage-staging-{re.sub(r'[^A-Za-z0-9_.-]', '-', record.job_id)[:80]}-{digest}"

    def _start_wrapper(self, record: JobRecord) -> str:
        """docker+docker: the entry image with the socket and a fresh staging volume; it runs the module."""
        spec, s = record.spec, self.settings_
        client = self._client()
        ensure_image(client, s.entry_image)
        try:
            volume = client.volumes.create(name=self.staging_volume(record),
                                           labels={LABEL_JOB: spec.job_id, LABEL_ROLE: "staging"})
            mountpoint = volume.attrs["Mountpoint"]
        except Exception as err:  # noqa: BLE001
            raise GpstageError(f"docker could not create the staging volume: {str(err).splitlines()[0][:300]}",
                               "check the docker host") from None
        volumes = self._volumes(record)
        volumes[volume.name] = {"bind": mountpoint, "mode": "rw"}  # at the host's path: the entry maps P -> it + P
        volumes[s.docker_socket or socket_path(s.docker_host)] = {"bind": SOCKET_IN_ENTRY, "mode": "rw"}
        env = self._environment()
        env.update({"DOCKER_HOST": f"unix://{SOCKET_IN_ENTRY}", "GPSTAGE_STAGING_ROOT": mountpoint})
        if s.module_network or s.network:
            env["GPSTAGE_DOCKER_NETWORK"] = s.module_network or s.network or ""
        if s.commit_tag:
            env["GPSTAGE_COMMIT_TAG"] = s.commit_tag
        if s.docker_config:
            volumes[s.docker_config] = {"bind": s.docker_config, "mode": "ro"}
            env["DOCKER_CONFIG"] = s.docker_config  # a path: the credentials stay in the file
        try:
            return self._run_entry(record, client, s.entry_image, env, volumes,
                                   {**self._labels(record), LABEL_STAGING: mountpoint},
                                   "check the entry image and the docker host")
        except GpstageError:
            with contextlib.suppress(Exception):
                volume.remove(force=True)
            raise

    def _run_entry(self, record: JobRecord, client: Any, image: str, env: dict[str, str],
                   volumes: dict[str, dict[str, str]], labels: dict[str, str], fix: str, entrypoint: bool = False) -> str:
        """Create the entry's container, hand it the credentials file (docs/design.md §11), start it.
        ``entrypoint``: the entry is the mounted bundle, set as the container's entrypoint (the module's
        image may have one of its own); else the image's own ``gpstage-entry`` is the command."""
        from gpstage.credfile import ENV_NAME, gather, write

        doc = gather(os.environ)
        user = _image_user(client, image)
        mode = self._credentials_mode() if user is None else "copy"  # a non-root user cannot read our 0600 file
        if doc:
            env = {**env, ENV_NAME: CREDENTIALS_IN_ENTRY}  # a path: the secrets stay in the file
            if mode == "mount":
                write(str(self._credentials_file(record)), doc)
                volumes = {**volumes, str(self._credentials_file(record)): {"bind": CREDENTIALS_IN_ENTRY, "mode": "ro"}}
        command = entry_command(record.entry_bundle if entrypoint else None)
        container = None
        try:
            container = client.containers.create(image, entry_args(record) if entrypoint else [*command, *entry_args(record)],
                                                 entrypoint=command if entrypoint else None, init=True,
                                                 environment=env, volumes=volumes, network_mode=self.settings_.network,
                                                 labels=labels)
            if doc and mode == "copy":
                owner = _user_ids(container, user) if user else (0, 0)
                container.put_archive("/", _private_file_tar(CREDENTIALS_IN_ENTRY, json.dumps(doc).encode(), owner))
            container.start()
        except Exception as err:  # noqa: BLE001 - the engine refused: one line
            if container is not None:
                with contextlib.suppress(Exception):
                    container.remove(force=True)
            self._credentials_file(record).unlink(missing_ok=True)
            raise GpstageError(f"docker could not start {image}: {str(err).splitlines()[0][:300]}", fix) from None
        return container.id

    def _credentials_mode(self) -> str:
        s = self.settings_
        if s.credentials != "auto":
            return s.credentials
        return "mount" if self._engine_is_local() else "copy"

    def _engine_is_local(self) -> bool:
        """A unix:// engine: it sees this machine's files (bind mounts of local paths mean what they say)."""
        return (self.settings_.docker_host or os.environ.get("DOCKER_HOST") or "unix://").startswith("unix://")

    def _credentials_file(self, record: JobRecord) -> Path:
        return self.store.job_dir(record.job_id) / "credentials.json"

    def _environment(self) -> dict[str, str]:
        from gpstage.config import config_path

        settings = self.settings
        assert isinstance(settings, DockerSettings)
        names = [p for p in settings.forward_env if not p.endswith("_")]
        prefixes = tuple(p for p in settings.forward_env if p.endswith("_"))
        _, shareable = split(os.environ)  # credentials travel in the credentials file, never in the environment
        env = {k: v for k, v in shareable.items() if k in names or k.startswith(prefixes)}
        if config_path().exists():
            env["GPSTAGE_CONFIG"] = CONFIG_IN_ENTRY
        for name, value in (("GPSTAGE_LOG_PUSH_INTERVAL", settings.log_push_interval),
                            ("GPSTAGE_KILL_GRACE", settings.kill_grace)):
            if value is not None:
                env[name] = str(value)
        return env

    def _volumes(self, record: JobRecord) -> dict[str, dict[str, str]]:
        """Storage that lives on this machine's file system, at its own path; the settings file, read-only."""
        from gpstage.config import config_path
        from gpstage.storage import local_path_of

        spec = record.spec
        volumes = {}
        for d in spec.dirs:
            path = local_path_of(spec.url_of(d))
            if path is not None:
                os.makedirs(path, exist_ok=True)
                volumes[path] = {"bind": path, "mode": "rw"}
        if config_path().exists():  # at a fixed path: a host path's parents would be made root-owned in the image
            volumes[str(config_path())] = {"bind": CONFIG_IN_ENTRY, "mode": "ro"}
        return volumes

    def poll(self, record: JobRecord) -> BackendState:
        import docker.errors

        try:
            container = self._client().containers.get(record.backend_id)
        except docker.errors.NotFound:
            return BackendState(JobState.ERROR, None, f"container {record.backend_id} is gone")
        state = container.attrs.get("State", {})
        status = state.get("Status")
        if status in ("created", "restarting"):
            return BackendState(JobState.QUEUED)
        if status in ("running", "paused", "removing"):
            return BackendState(JobState.RUNNING)
        code = int(state.get("ExitCode", 125))
        return BackendState(JobState.SUCCEEDED if code == 0 else JobState.FAILED, code, state.get("Error") or None)

    def kill(self, record: JobRecord) -> None:
        try:
            self._client().containers.get(record.backend_id).kill(signal="SIGTERM")  # the entry forwards it
        except Exception:  # noqa: BLE001, S110 - already ended or gone
            pass

    def cleanup(self, record: JobRecord) -> None:
        """The entry's container and its credentials file; in wrapper mode also any module container the
        entry left (it died) and the staging volume, which holds a copy of the job."""
        self._credentials_file(record).unlink(missing_ok=True)
        if record.backend_id is None:
            return
        client = self._client()
        try:
            client.containers.get(record.backend_id).remove(force=True)
        except Exception:  # noqa: BLE001, S110 - already removed
            pass
        if record.runner != "docker":
            return
        try:
            volume = client.volumes.get(self.staging_volume(record))
        except Exception:  # noqa: BLE001 - already removed
            return
        mountpoint = volume.attrs.get("Mountpoint")
        if mountpoint:
            for c in client.containers.list(all=True, filters={"label": f"{LABEL_STAGING}={mountpoint}"}):
                with contextlib.suppress(Exception):
                    c.remove(force=True)
        with contextlib.suppress(Exception):
            volume.remove(force=True)


def _image_user(client: Any, image: str) -> str | None:
    """The image's USER when it is not root (None: root, the default)."""
    user = (client.images.get(image).attrs.get("Config") or {}).get("User") or ""
    return None if user.split(":")[0] in ("", "0", "root") else user


def _user_ids(container: Any, user: str) -> tuple[int, int]:
    """USER (``uid[:gid]`` or ``name[:group]``) as numbers, names looked up in the created container's
    /etc/passwd and /etc/group; the credentials file is given to it so the entry, running as it, can read it."""
    name, _, group = user.partition(":")

    def lookup(path: str, key: str, field: int) -> int:
        if key.isdigit():
            return int(key)
        import io
        import tarfile

        try:
            stream, _ = container.get_archive(path)
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.extractfile(tar.getmembers()[0])
                lines = member.read().decode(errors="replace").splitlines() if member else []
        except Exception:  # noqa: BLE001 - no such file: the name cannot be resolved
            lines = []
        for line in lines:
            parts = line.split(":")
            if parts[0] == key and len(parts) > field:
                return int(parts[field])
        raise GpstageError(f"the image's USER {user} names {key!r}, which is not in its {path}",
                           "give the image a numeric USER (uid:gid) or add the user to its /etc/passwd")

    uid = lookup("/etc/passwd", name, 2)
    gid = lookup("/etc/group", group, 2) if group else lookup("/etc/passwd", name, 3)
    return uid, gid


def _private_file_tar(path: str, data: bytes, owner: tuple[int, int] = (0, 0)) -> bytes:
    """A tar of ``path`` (absolute) holding ``data``, mode 0600 in a 0700 dir, both owned by ``owner``
    (uid, gid), for ``put_archive("/")``."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            info = tarfile.TarInfo("/".join(parts[:i]))
            info.type, info.mode = tarfile.DIRTYPE, 0o755 if i < len(parts) - 1 else 0o700
            if i == len(parts) - 1:
                info.uid, info.gid = owner
            tar.addfile(info)
        info = tarfile.TarInfo("/".join(parts))
        info.size, info.mode = len(data), 0o600
        info.uid, info.gid = owner
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
