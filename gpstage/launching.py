"""Finding launchers by name without importing them (docs/design.md §15): the built-in ones are named
here by import path (so a plain checkout knows them), plugins add theirs through the
``gpstage.launchers`` entry-point group, and the job commands work with either while ``gpstage``
never imports ``launchers`` (import-linter checks it)."""

from __future__ import annotations

from typing import Any

from gpstage.plugins import PluginRegistry

DEFAULT_LAUNCHER = "local"

LAUNCHERS = PluginRegistry("gpstage.launchers", "launcher", {
    "local": ("launchers.local:LocalLauncher", None),
    "docker": ("launchers.docker:DockerLauncher", "docker"),
    "batch": ("launchers.batch:BatchLauncher", "batch"),
    "slurm": ("launchers.slurm:SlurmLauncher", None),
})


# What a built-in launcher can start before the job is read (``gpstage run``): the local launcher's
# dispatcher, which imports the entry's code meanwhile (docs/design.md §16). "module:function", no arguments.
PRESTART = {"local": "launchers.local_queue:prestart"}


def prestart(name: str | None = None) -> None:
    """Start what launcher ``name`` needs before any job arrives, in the background, if it has anything."""
    target = PRESTART.get(name or DEFAULT_LAUNCHER)
    if target:
        import importlib

        module, function = target.split(":")
        getattr(importlib.import_module(module), function)()


def get_launcher(name: str | None = None, overrides: dict[str, Any] | None = None, store: Any = None) -> Any:
    """A launcher instance: ``[launchers.<name>]`` from the settings file, then ``overrides`` on top."""
    from gpstage.config import launcher_settings

    name = name or DEFAULT_LAUNCHER
    cls = LAUNCHERS.load(name)
    return cls(launcher_settings(cls.Settings, name, overrides), store)


def launcher_for(job_id: str, store: Any = None) -> Any:
    """The launcher a recorded job was submitted with, with the settings it was submitted with."""
    from gpstage.records import RecordStore

    store = store or RecordStore()
    record = store.load(job_id)
    cls = LAUNCHERS.load(record.launcher)
    return cls(cls.Settings.model_validate(record.settings), store)
