"""Runners: where the module's ``exec.sh`` (or a spec's executors, docs/tes.md) runs — ``process``
(here, or inside the container the entry already runs in), ``docker``, ``apptainer``.

One registry, as fsspec's: the built-in table below names each runner by import path (so a runner that
needs an SDK is imported only when a job asks for it, and a plain checkout knows every built-in), and
third parties add runners under the ``gpstage.runners`` entry-point group. The interface every runner
implements: :mod:`container_entry.runners.base`.
"""

from __future__ import annotations

from container_entry.runners.base import ModuleRun, Runner, RunRequest
from gpstage.plugins import PluginRegistry

DEFAULT_RUNNER = "process"

RUNNERS = PluginRegistry("gpstage.runners", "runner", {
    "process": ("container_entry.runners.process:ProcessRunner", None),
    "docker": ("container_entry.runners.docker:DockerRunner", "docker"),
    "apptainer": ("container_entry.runners.apptainer:ApptainerRunner", None),
})


def get_runner(name: str | None) -> Runner:
    """A fresh runner instance for ``name`` (default ``process``)."""
    return RUNNERS.load(name or DEFAULT_RUNNER)()


__all__ = ["DEFAULT_RUNNER", "RUNNERS", "ModuleRun", "RunRequest", "Runner", "get_runner"]
