"""The ``docker`` launcher: the ENTRY runs in a container on a docker host that is not the server (the
notebook-server / swarm case of the seed), staging from remote storage inside the container.

``docker+process`` (DESIGN.md §7) starts the module's own image, which must contain ``gpstage-entry``
(as GenePattern's images contain runS3OnBatch.sh). Storage credentials and endpoints are forwarded
by name from this process's environment (DESIGN.md §11); the settings file is mounted read-only when
it exists (storage profiles); ``file://``/``nfs://`` storage paths are bind-mounted at their own
paths so a container sees the same storage as the server.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field

from container_entry.dockerutil import LABEL_JOB, LABEL_ROLE, docker_client, ensure_image
from gpstage.errors import GpstageError
from gpstage.records import JobRecord
from gpstage.states import JobState
from launchers.base import BackendState, Launcher, LauncherSettings, entry_args

DEFAULT_FORWARD = ["AWS_", "AZURE_STORAGE_", "AZURE_CLIENT_", "AZURE_TENANT_", "GOOGLE_", "STORAGE_EMULATOR_HOST", "GCSFS_"]


class DockerSettings(LauncherSettings):
    docker_host: str | None = Field(None, description="the engine's URL (default: DOCKER_HOST)")
    network: str | None = Field(None, description="network mode of the entry's container, e.g. host")
    forward_env: list[str] = Field(default_factory=lambda: list(DEFAULT_FORWARD),
                                   description="variables passed by name to the entry (a trailing _ is a prefix)")
    log_push_interval: float | None = Field(None, ge=0)
    kill_grace: float | None = Field(None, ge=0)


class DockerLauncher(Launcher):
    name = "docker"
    Settings = DockerSettings
    runners = ("process",)
    starts_module_image = True

    def _client(self) -> Any:
        return docker_client(self.settings.docker_host)  # type: ignore[attr-defined]

    def start(self, record: JobRecord) -> str:
        spec, settings = record.spec, self.settings
        assert isinstance(settings, DockerSettings) and spec.image
        client = self._client()
        ensure_image(client, spec.image)
        try:
            container = client.containers.run(
                spec.image, ["gpstage-entry", *entry_args(record)], detach=True, init=True,
                environment=self._environment(), volumes=self._volumes(record), network_mode=settings.network,
                labels={LABEL_JOB: spec.job_id, LABEL_ROLE: "entry"})
        except Exception as err:  # noqa: BLE001 - the engine refused: one line
            raise GpstageError(f"docker could not start {spec.image}: {str(err).splitlines()[0][:300]}",
                               "check the image and the docker host") from None
        return container.id

    def _environment(self) -> dict[str, str]:
        from gpstage.config import config_path
        from gpstage.profiles import credential_env_names

        settings = self.settings
        assert isinstance(settings, DockerSettings)
        names = [p for p in settings.forward_env if not p.endswith("_")]
        prefixes = tuple(p for p in settings.forward_env if p.endswith("_"))
        env = {k: v for k, v in os.environ.items() if k in names or k.startswith(prefixes) or k in credential_env_names()}
        if config_path().exists():
            env["GPSTAGE_CONFIG"] = str(config_path())
        for name, value in (("GPSTAGE_LOG_PUSH_INTERVAL", settings.log_push_interval), ("GPSTAGE_KILL_GRACE", settings.kill_grace)):
            if value is not None:
                env[name] = str(value)
        return env

    def _volumes(self, record: JobRecord) -> dict[str, dict[str, str]]:
        """Storage that lives on this machine's file system, at its own path; the settings file, read-only."""
        from gpstage.config import config_path
        from gpstage.storage import provider_for

        spec = record.spec
        volumes = {}
        for d in spec.dirs:
            url = spec.url_of(d)
            provider = provider_for(url)
            if provider.local:
                path = provider.local_path(url)
                os.makedirs(path, exist_ok=True)
                volumes[path] = {"bind": path, "mode": "rw"}
        if config_path().exists():
            volumes[str(config_path())] = {"bind": str(config_path()), "mode": "ro"}
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
        if record.backend_id is None:
            return
        try:
            self._client().containers.get(record.backend_id).remove(force=True)
        except Exception:  # noqa: BLE001, S110 - already removed
            pass
