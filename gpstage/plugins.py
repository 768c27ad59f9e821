"""Named implementations loaded on first use: built-ins by import path, third parties by entry point.

Storage providers (``gpstage.storage``), runners (``gpstage.runners``) and launchers
(``gpstage.launchers``) are all found this way, as fsspec finds its filesystems: one table per kind
names the built-ins by import path (so a plain checkout resolves them exactly as an installed wheel
does), entry points of that group add third parties' on top, nothing heavy is imported until a name is
used, and a missing optional package is reported with the ``pip install`` that fixes it. ``gpstage``
itself never imports ``launchers`` or ``container_entry``; it only names them.
"""

from __future__ import annotations

import importlib
from functools import cached_property
from typing import Any

from gpstage.errors import BadInput, MissingDependency


class PluginRegistry:
    """One kind of plugin: ``builtin`` maps a name to ``("module:attr", pip extra or None)``."""

    def __init__(self, group: str, kind: str, builtin: dict[str, tuple[str, str | None]]) -> None:
        self.group = group
        self.kind = kind  # for messages: "storage scheme", "runner", "launcher"
        self.builtin = builtin

    @cached_property
    def _entry_points(self) -> dict[str, Any]:
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        return sorted({*self.builtin, *self._entry_points})

    def __contains__(self, name: str) -> bool:
        return name in self.builtin or name in self._entry_points

    def load(self, name: str) -> Any:
        """The object registered as ``name``; one-line errors for an unknown name or a missing package."""
        if name in self.builtin:
            target, extra = self.builtin[name]
            module, _, attr = target.partition(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except ImportError as err:
                fix = f"pip install 'gpstage[{extra}]'" if extra else "reinstall gpstage"
                raise MissingDependency(f"the {name} {self.kind} needs {err.name or 'a package'}, which is not installed",
                                        fix) from None
        if name in self._entry_points:
            ep = self._entry_points[name]
            try:
                return ep.load()
            except ImportError as err:
                raise MissingDependency(f"the {name} {self.kind} plugin {ep.value} cannot be imported ({err})",
                                        "install the plugin's package and its dependencies") from None
        raise BadInput(f"unknown {self.kind} {name!r}", f"use one of: {', '.join(self.names())}, or install a plugin "
                       f"that registers it under the {self.group!r} entry-point group")
