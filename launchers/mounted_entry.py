"""The entry bundle as the container launchers use it (``docker+process``, ``batch+process``;
docs/entry-bundle.md): the settings, the check before anything is staged, the mount and the command.

With ``entry = "bundle"`` (the default) the module's own image is started with the bundle mounted
read-only at ``/opt/gpstage-entry`` and the bundle's entry as the command, so the image needs nothing of
gpstage; ``entry = "image"`` runs the image's own ``gpstage-entry`` (an image built from gpstage/runtime).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

from container_entry.api import bundle
from launchers.base import LauncherSettings


def _default_bundle() -> str:
    return str(bundle.default_location() / "current")


class EntrySettings(BaseModel):
    """How the entry reaches the module's image with the process runner."""

    entry: Literal["bundle", "image"] = Field(
        "bundle", description="process runner: bundle = the entry bundle mounted read-only at "
        f"{bundle.MOUNT_PATH} and run as the command (the module's image needs nothing of gpstage); image = the "
        "image's own gpstage-entry (an image made from gpstage/runtime)")
    entry_bundle: str = Field(default_factory=_default_bundle, description="the entry bundle's directory on the "
                              "docker host (batch: on every compute node); default: where `images/build.py bundle` "
                              "puts it, $GPSTAGE_BUNDLE_DIR/current or ~/.local/share/gpstage/entry-bundle/current")
    verify_entry_bundle: bool = Field(True, description="check the bundle at entry_bundle on THIS machine before "
                                      "anything is staged: it exists, has this gpstage's format, runs on the backend's "
                                      "machine; false only when it exists on the docker host or the nodes alone (the "
                                      "job then records it unverified)")


def uses_bundle(settings: LauncherSettings, runner: str) -> bool:
    return runner == "process" and getattr(settings, "entry", "image") == "bundle"


def bundle_facts(settings: EntrySettings, machine: Callable[[], str], where: str) -> dict[str, str]:
    """What the job record keeps of the bundle at ``entry_bundle``: its real directory (a later flip of
    ``current`` does not change a submitted job's), version, hash, machine and extras — after refusing a
    missing bundle, one of another format, or one whose binaries do not run on ``machine()`` (the
    backend's ``uname -m``, named by ``where``). With ``verify_entry_bundle`` off (the bundle lives on a
    remote docker host or the Batch nodes alone) it is recorded by path, unverified."""
    path = settings.entry_bundle
    if not settings.verify_entry_bundle:
        return {"path": path, "verified": "no (verify_entry_bundle = false)"}
    real = os.path.realpath(path)
    manifest = bundle.read_manifest(real)
    bundle.check_machine(manifest, real, machine(), where)
    return {"path": real, **manifest.summary()}


def entry_command(bundle_facts_: dict[str, str] | None) -> list[str]:
    """The container command before the entry's arguments."""
    return bundle.command() if bundle_facts_ else ["gpstage-entry"]
