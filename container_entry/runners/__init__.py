"""Runners: where the module's ``exec.sh`` runs (``process``, and ``docker``/``apptainer`` as plugins).

Found by name through the ``gpstage.runners`` entry-point group, so a runner needing an SDK (docker,
spython) is imported only when a job asks for it. See :mod:`container_entry.runners.base`.
"""

from __future__ import annotations

from container_entry.runners.base import ModuleRun, Runner, RunRequest
from gpstage.plugins import PluginRegistry

DEFAULT_RUNNER = "process"

RUNNERS = PluginRegistry("gpstage.runners", "runner", {
    "process": ("container_entry.runners.process:ProcessRunner", None),
    "docker": ("container_entry.runners.docker:DockerRunner", "docker"),
})


def get_runner(name: str | None) -> Runner:
    """A fresh runner instance for ``name`` (default ``process``)."""
    return RUNNERS.load(name or DEFAULT_RUNNER)()


__all__ = ["DEFAULT_RUNNER", "RUNNERS", "ModuleRun", "RunRequest", "Runner", "get_runner"]
