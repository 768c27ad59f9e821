"""Wheels for the runtime image, made on the host with the host's pip (pip inside a fresh rootfs cannot
verify this machine's TLS), for images/build.py.

Owns: :func:`build_gpstage_wheel` (gpstage's wheel from a copy of the source files, so nothing is written
into the tree), :func:`download_dependencies` (binary wheels of the dependencies for the base image's
python/glibc/machine) and :func:`dependency_spec` (what decides those wheels, hashed into the deps stage); for the entry bundle,
:func:`requirements` (what it installs besides gpstage) and :func:`install_target` (``pip install --target``).
The source tree's root is always a parameter (the tests build from a copy of the tree).

Standard library only; imports no sibling module.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path


def dependency_spec(root: Path) -> str:
    """What decides the dependency wheels: the pyproject's dependency tables (other edits do not count)."""
    text = (root / "pyproject.toml").read_text()
    try:
        import tomllib
    except ModuleNotFoundError:  # python 3.10: the whole file
        return text
    project = tomllib.loads(text).get("project", {})
    return json.dumps({k: project.get(k) for k in ("dependencies", "optional-dependencies", "requires-python")},
                      sort_keys=True)


def pip(*args: str, log_name: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], check=False, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"pip {log_name} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def build_gpstage_wheel(root: Path, files: list[str], work: Path) -> Path:
    """gpstage's wheel, from a copy of the source files (so nothing is written into the tree); returns the
    directory holding it."""
    src, wheels = work / "src", work / "wheels"
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, src / name)
    (src / "README.md").write_text("gpstage\n")  # pyproject's readme; not hashed, so README edits don't rebuild
    pip("wheel", "-q", "--no-deps", "-w", str(wheels), str(src), log_name="wheel (gpstage)")
    return wheels


def platform_args(labels: dict[str, str]) -> list[str]:
    """pip's arguments for binary wheels that run on the base image's python/glibc/machine (its `labels`)."""
    py, glibc, machine = labels["org.gpstage.python"], labels["org.gpstage.glibc"], labels["org.gpstage.machine"]
    major, minor = glibc.split(".")[:2]
    platforms = [f"manylinux_{major}_{m}_{machine}" for m in range(int(minor), 4, -1)]
    platforms += [f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]
    return ["--only-binary=:all:", "--python-version", py, "--implementation", "cp", "--abi", f"cp{py}",
            *[a for p in platforms for a in ("--platform", p)]]


def download_dependencies(gpstage_wheels: Path, requirement: str, labels: dict[str, str], dest: Path) -> None:
    """Binary wheels of `requirement`'s dependencies (e.g. ``gpstage[s3]``, its own wheel found in
    `gpstage_wheels`) for the base's python/glibc/machine, as its `labels` give them (host pip)."""
    pip("download", "-q", "-d", str(dest), *platform_args(labels), "--find-links", str(gpstage_wheels), requirement,
        log_name="download (dependencies)")
    for own in dest.glob("gpstage-*"):
        own.unlink()


def requirements(root: Path, extras: tuple[str, ...], leave_out: frozenset[str]) -> list[str]:
    """gpstage's dependencies (less `leave_out`, by project name) and those of `extras`, as pip requirement
    strings with their markers: what the entry bundle installs next to gpstage's own wheel."""
    try:
        import tomllib
    except ModuleNotFoundError:  # python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"no extra {', '.join(unknown)} in pyproject.toml (known: {', '.join(optional)})")
    wanted = list(project.get("dependencies", [])) + [r for e in extras for r in optional[e]]

    def name(req: str) -> str:
        return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")

    return [r for r in dict.fromkeys(wanted) if name(r) not in leave_out and name(r) != "gpstage"]


def install_target(requirements: list[str], labels: dict[str, str], target: Path, no_deps: bool = False) -> None:
    """``pip install --target`` binary wheels of `requirements` for the base's python/glibc/machine (host pip)."""
    pip("install", "-q", "--target", str(target), "--no-compile", "--disable-pip-version-check", "--no-warn-conflicts",
        *(["--no-deps"] if no_deps else []), *platform_args(labels), *requirements, log_name="install --target")
