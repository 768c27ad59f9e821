"""The entry bundle as the entry and the launchers see it (docs/entry-bundle.md).

The bundle is ``gpstage-entry`` with its own python, libraries, dynamic loader and a static bash in one
read-only, relocatable directory. A container launcher mounts it at :data:`MOUNT_PATH` in an UNMODIFIED
module image and runs :func:`command` — the image needs nothing of gpstage, not even a libc (the way
Tekton's and Argo's entrypoint binaries reach a step's image, without a docker socket). images/bundle.py
builds it from the constants here; ``bundle.json`` (:class:`Manifest`) says what it is.

Inside a running bundle (:func:`running_bundle`), the entry keeps the bundle off the module's way: the
module runs with the image's own bash when it has one (:func:`module_bash`; the static one only when it
has none), the bundle is never on the module's PATH, and what the entry set for itself
(:func:`prepare_process`: the bundle's CA certificates when the image has none) is not passed on
(:func:`entry_only_variables`).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gpstage.errors import BadInput

MOUNT_PATH = "/opt/gpstage-entry"  # where launchers mount the bundle in the module's container (read-only)
MANIFEST = "bundle.json"
FORMAT = 1  # of the bundle's layout and manifest; a launcher refuses a bundle of another format
LAUNCHER = "gpstage-entry"  # the bundle's command: a script its static bash runs
STATIC_BASH = "bin/bash"
CA_FILE = "etc/ca-certificates.crt"

# The launch script. Run by the bundle's own static bash, so nothing of the image is needed; the loader is
# called explicitly (the python binary's PT_INTERP names the image's /lib64, which may not exist) with the
# bundle's libraries, and python finds its home from its own path. -I: no PYTHON* variable, user site or
# current directory of the image reaches the entry. Nothing is exported: the module's environment is the
# image's and the job's, not the bundle's.
LAUNCH_SCRIPT = """# gpstage-entry from the bundle this file lives in; run it with the bundle's bin/bash.
here="${{BASH_SOURCE[0]%/*}}"
exec "$here/{loader}" --library-path "$here/lib" "$here/bin/python3" -I -m container_entry "$@"
"""

_set_here: set[str] = set()  # variables prepare_process set in this process


@dataclass(frozen=True)
class Manifest:
    """``bundle.json``: what a launcher checks before it stages anything, and records in the job record."""

    version: str  # gpstage's
    hash: str  # of everything that went into the bundle
    machine: str  # uname -m of the binaries inside
    python: str
    extras: list[str] = field(default_factory=list)
    format: int = FORMAT
    loader: str = ""

    def summary(self) -> dict[str, str]:
        return {"version": self.version, "hash": self.hash[:12], "machine": self.machine,
                "extras": ",".join(self.extras)}


def default_location() -> Path:
    """Where ``images/build.py bundle`` puts bundles (``…/current`` is the newest) and launchers look by
    default: ``$GPSTAGE_BUNDLE_DIR``, else ``~/.local/share/gpstage/entry-bundle``."""
    return Path(os.environ.get("GPSTAGE_BUNDLE_DIR") or Path.home() / ".local/share/gpstage/entry-bundle")


def command(mount: str = MOUNT_PATH) -> list[str]:
    """The container command that runs the mounted bundle's entry (arguments follow)."""
    return [f"{mount}/{STATIC_BASH}", f"{mount}/{LAUNCHER}"]


def read_manifest(path: str | Path, setting: str = "entry_bundle") -> Manifest:
    """The manifest of the bundle at ``path``; one line naming the fix when there is none or it is not one."""
    fix = f"build it (python images/build.py bundle) or point the launcher setting {setting} at one"
    file = Path(path) / MANIFEST
    try:
        doc = json.loads(file.read_text())
    except FileNotFoundError:
        raise BadInput(f"no entry bundle at {path} (no {MANIFEST})", fix) from None
    except (OSError, ValueError) as e:
        raise BadInput(f"cannot read the entry bundle's {file}: {e}", fix) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise BadInput(f"the entry bundle at {path} has format {found}; this gpstage reads format {FORMAT}",
                       "rebuild the bundle with this gpstage (python images/build.py bundle)")
    try:
        return Manifest(**{k: doc[k] for k in Manifest.__dataclass_fields__ if k in doc})
    except TypeError as e:
        raise BadInput(f"the entry bundle's {file} is incomplete: {e}", fix) from None


def check_machine(manifest: Manifest, path: str, machine: str, where: str) -> None:
    """Refuse a bundle whose binaries cannot run on ``machine`` (``where`` names it: "the docker host")."""
    aliases = {"amd64": "x86_64", "arm64": "aarch64"}
    if aliases.get(machine, machine) != manifest.machine:
        raise BadInput(f"the entry bundle at {path} is built for {manifest.machine}, and {where} is "
                       f"{aliases.get(machine, machine)}",
                       f"build the bundle on a {aliases.get(machine, machine)} machine and point entry_bundle at it")


# ---- inside a running bundle -------------------------------------------------------------------
def running_bundle() -> Path | None:
    """The bundle this process runs from, or None (an installed gpstage)."""
    home = Path(sys.prefix)
    return home if (home / MANIFEST).is_file() else None


def prepare_process() -> None:
    """In a bundle: give the storage clients the bundle's CA certificates when the image has none (an
    image without /etc/ssl is common). Set in this process only; :func:`entry_only_variables` keeps it
    from the module and the hooks."""
    home = running_bundle()
    if home is None or "SSL_CERT_FILE" in os.environ or "SSL_CERT_DIR" in os.environ:
        return
    paths = ssl.get_default_verify_paths()
    if (paths.cafile and os.path.isfile(paths.cafile)) or (paths.capath and os.path.isdir(paths.capath)
                                                            and any(os.scandir(paths.capath))):
        return  # the image's own certificates
    os.environ["SSL_CERT_FILE"] = str(home / CA_FILE)
    _set_here.add("SSL_CERT_FILE")


def entry_only_variables() -> frozenset[str]:
    """Variables this process set for itself (never passed to a child)."""
    return frozenset(_set_here)


def module_bash(env: Mapping[str, str]) -> str:
    """The bash that runs exec.sh and the scripts: the image's (its PATH), else the bundle's static one."""
    found = shutil.which("bash", path=env.get("PATH") or os.defpath)
    if found:
        return found
    home = running_bundle()
    if home is not None:
        return str(home / STATIC_BASH)
    return "bash"  # the runner's error names it
