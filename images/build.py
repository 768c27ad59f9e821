#!/usr/bin/env python3
"""Build gpstage's local container images without Docker Hub (nothing is pulled from any registry).

    .venv/bin/python images/build.py [runtime|bash-module|all] [--docker-host unix:///…/docker.sock]

* ``gpstage/bash-module:1`` — a tiny "third-party module" image: a static busybox, the host's ``/bin/bash``
  and the libraries it links, ``/etc/passwd``, ``/tmp``. No python. Built from a tar in about a second.
* ``gpstage/runtime:<version>`` — Debian bookworm minbase + python3 + gpstage (``/opt/gpstage`` venv, on
  PATH as ``/usr/local/bin/gpstage`` and ``gpstage-entry``) + ``/usr/local/bin/runS3OnBatch.sh``
  (docs/design.md §18). Three stages, each an image of its own, so that a source change redoes only the last:

  1. ``gpstage/runtime-base:<recipe hash>``: ``debootstrap`` a minbase rootfs from the Debian mirror in
     the host's apt sources, ``apt-get install python3 python3-venv ca-certificates`` inside it (chroot,
     clean environment), an empty venv at ``/opt/gpstage``, then ``tar | docker import``. ~35 s.
  2. ``gpstage/runtime-deps:<hash of base + pyproject's dependency tables>``: gpstage's dependencies as
     binary wheels for the base's python/glibc, downloaded by the HOST's pip (pip inside a fresh rootfs
     cannot verify this machine's TLS), installed offline into the venv. ~25 s.
  3. ``gpstage/runtime:<version>``: the gpstage wheel built on the host from a copy of the source tree,
     installed offline, plus the symlinks and ``runS3OnBatch.sh``. ~7 s.

  Stages 2 and 3 run a container of the previous image with ``--network none``, the wheels streamed in
  as a tar on its stdin (so a remote daemon works too), and ``docker commit`` it. Superseded
  intermediate images are untagged after a successful build.

Every image carries the label ``org.gpstage.hash``: a hash of everything that went into it (recipe,
host files, source files' content — git's tracked and untracked-but-not-ignored files, not mtimes). When
the label matches, nothing is done ("up to date"). Status goes to stderr, the image names to stdout.

Importable: :func:`ensure_images` (the test fixtures call it). Standard library + the ``docker`` CLI.
The images carry nothing from the host environment: no credentials, no host CA certificates.

Layout — this file is the entry point: the CLI, :func:`ensure_images`, what counts as gpstage's source
(:data:`ROOT`, :func:`source_files`, :func:`gpstage_version`) and stages 2 and 3 (:func:`ensure_deps`,
:func:`ensure_runtime`). Its sibling modules, plain files next to it (``images/`` is not a package):

* ``rootfs.py`` — the images made from a host-built root filesystem: bash-module and the runtime base;
* ``wheels.py`` — gpstage's wheel and the dependency wheels (host pip);
* ``docker_cli.py`` — the ``docker`` CLI wrapper, content hashing, the ``org.gpstage.hash`` label.

They, and ``scripts/hostutil.py`` that they share with the test services (host commands, apt, the
static-ELF check, mounts; standard library only), are imported by their plain names with this file's
directory and ``scripts/`` put first on ``sys.path`` for the duration of the import (a script run has the
former there already; ``importlib`` loading by path, as tests/fixtures_docker.py does, has neither).
None of them imports this file, and none reads :data:`ROOT`: the source tree's root is passed in, so a
test may point ``ROOT`` (and ``RUNTIME_REPO``) elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMPORT_PATHS = [str(HERE), str(HERE.parent / "scripts")]  # the siblings, and scripts/hostutil.py they share
sys.path[:0] = IMPORT_PATHS
try:
    import bundle
    import rootfs
    import wheels
    from docker_cli import LABEL, Docker, Log, file_sha, install_and_commit, prune, sha256
finally:
    for _path in IMPORT_PATHS:
        sys.path.remove(_path)  # the first occurrence: the one inserted above

ROOT = HERE.parent
CACHE = Path(os.environ.get("GPSTAGE_IMAGES_CACHE", ROOT / "images" / ".cache"))

RUNTIME_REPO = "gpstage/runtime"
DEPS_REPO = "gpstage/runtime-deps"
EXTRAS = "s3,gcs,azure,docker"  # docs/design.md §18
BUNDLE_EXTRAS = ("s3", "gcs", "azure")  # the entry bundle's default: every storage (docs/entry-bundle.md)
SOURCE_PATHS = ("gpstage", "launchers", "container_entry", "pyproject.toml")
ENTRY_SCRIPT = "container_entry/runS3OnBatch.sh"  # → /usr/local/bin/runS3OnBatch.sh, when it exists
PATH_ENV = rootfs.PATH_ENV

# What runs in a container of the base, the dependency wheels as a tar on stdin. Part of the deps' hash.
DEPS_SCRIPT = """set -eu
mkdir /tmp/in
tar -x -C /tmp/in
/opt/gpstage/bin/pip install -q --no-index --no-deps --no-cache-dir --disable-pip-version-check /tmp/in/wheels/*.whl
rm -rf /tmp/in /root/.cache
"""
# What runs in a container of the deps image, gpstage's wheel (+ runS3OnBatch.sh) as a tar on stdin.
FINAL_SCRIPT = f"""set -eu
mkdir /tmp/in
tar -x -C /tmp/in
/opt/gpstage/bin/pip install -q --no-index --no-cache-dir --disable-pip-version-check \\
    --find-links /tmp/in/wheels 'gpstage[{EXTRAS}]'
/opt/gpstage/bin/pip check -q > /dev/null
for exe in gpstage gpstage-entry; do
  if [ -e /opt/gpstage/bin/$exe ]; then ln -sf /opt/gpstage/bin/$exe /usr/local/bin/$exe; fi
done
if [ -f /tmp/in/runS3OnBatch.sh ]; then install -m 0755 /tmp/in/runS3OnBatch.sh /usr/local/bin/runS3OnBatch.sh; fi
rm -rf /tmp/in /root/.cache
/usr/local/bin/gpstage --help > /dev/null
"""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def gpstage_version() -> str:
    text = (ROOT / "gpstage" / "__init__.py").read_text()
    m = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.MULTILINE)
    if not m:
        raise SystemExit("no __version__ in gpstage/__init__.py")
    return m.group(1)


def source_files() -> list[str]:
    """The source files that make the wheel: git's tracked and untracked-but-not-ignored files (so work in
    progress counts, __pycache__ and *.egg-info do not); a plain walk when this is not a git checkout."""
    done = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                           "--", *SOURCE_PATHS], check=False, capture_output=True)
    if done.returncode == 0:
        names = {n for n in done.stdout.decode().split("\0") if n}
    else:
        names = set()
        for top in SOURCE_PATHS:
            p = ROOT / top
            items = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()]
            names |= {str(q.relative_to(ROOT)) for q in items
                      if "__pycache__" not in q.parts and not any(s.endswith(".egg-info") for s in q.parts)}
    return sorted(n for n in names if (ROOT / n).is_file())  # a deleted, still tracked file is gone


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """One build at a time (two test sessions, or a test and a manual build)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# ---- gpstage/runtime-deps:<hash> and gpstage/runtime:<version> --------------------------------
def ensure_deps(docker: Docker, base: str, base_labels: dict[str, str], files: list[str], log: Log) -> tuple[str, str]:
    """The base + every dependency of gpstage[EXTRAS], keyed by the pyproject's dependency tables: a source
    change does not reinstall them."""
    key = sha256(json.dumps({"recipe": 1, "base": base_labels[LABEL], "deps": wheels.dependency_spec(ROOT),
                             "extras": EXTRAS, "script": DEPS_SCRIPT}))
    ref = f"{DEPS_REPO}:{key[:16]}"
    if docker.labels(ref).get(LABEL) == key:
        return ref, key
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="deps-", dir=CACHE))
    try:
        log(f"{ref}: downloading dependency wheels (cp{base_labels['org.gpstage.python']}, "
            f"glibc {base_labels['org.gpstage.glibc']}, {base_labels['org.gpstage.machine']})")
        wheels.download_dependencies(wheels.build_gpstage_wheel(ROOT, files, work), f"gpstage[{EXTRAS}]",
                                     base_labels, work / "deps")
        install_and_commit(docker, base, DEPS_SCRIPT, {"wheels": work / "deps"}, ref,
                           [f"ENV {PATH_ENV}", 'CMD ["/bin/bash"]', f"LABEL {LABEL}={key}"], work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"{ref}: built in {time.monotonic() - t0:.1f}s")
    return ref, key


def ensure_runtime(docker: Docker, log: Log) -> str:
    version = gpstage_version()
    ref = f"{RUNTIME_REPO}:{version}"
    base, base_labels = rootfs.ensure_base(docker, log, CACHE)
    files = source_files()
    deps, deps_key = ensure_deps(docker, base, base_labels, files, log)
    entry = ROOT / ENTRY_SCRIPT
    key = sha256(json.dumps({
        "recipe": 1, "deps": deps_key, "extras": EXTRAS, "script": FINAL_SCRIPT, "path": PATH_ENV,
        "files": [[n, os.stat(ROOT / n).st_mode & 0o111, file_sha(ROOT / n)] for n in files],
        "entry": file_sha(entry) if entry.is_file() else None,
    }))
    old = docker.inspect(ref)
    if old and (old["Config"].get("Labels") or {}).get(LABEL) == key:
        log(f"{ref}: up to date")
        return ref
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="runtime-", dir=CACHE))
    try:
        items = {"wheels": wheels.build_gpstage_wheel(ROOT, files, work)}
        if entry.is_file():
            items["runS3OnBatch.sh"] = entry
        install_and_commit(docker, deps, FINAL_SCRIPT, items, ref,
                           [f"ENV {PATH_ENV}", 'CMD ["/bin/bash"]', f"LABEL {LABEL}={key}",
                            f"LABEL org.opencontainers.image.version={version}"], work)
        docker.drop_replaced(old, ref)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    prune(docker, DEPS_REPO, deps)
    prune(docker, rootfs.BASE_REPO, base)
    log(f"{ref}: built in {time.monotonic() - t0:.1f}s")
    return ref


# ---- the entry bundle ----------------------------------------------------------------------------
def ensure_entry_bundle(docker: Docker, log: Log, extras: tuple[str, ...] = BUNDLE_EXTRAS,
                        dest: Path | None = None) -> str:
    """The entry bundle (images/bundle.py) with `extras`, in `dest` (default: bundle.default_dest()); its dir."""
    base, base_labels = rootfs.ensure_base(docker, log, CACHE)
    rootfs.need_tools({"bash-static": "bash-static", "strip": "binutils"}, log)
    return str(bundle.ensure_bundle(docker, log, base, base_labels, ROOT, source_files(), gpstage_version(), extras,
                                    dest or bundle.default_dest()))


# ---- entry points -----------------------------------------------------------------------------
def ensure_python_module(docker: Docker, log: Log) -> str:
    """A Debian image with a python that is not gpstage's: the runtime base (python3, an empty venv)."""
    return rootfs.ensure_base(docker, log, CACHE)[0]


BUILDERS = {"bash-module": rootfs.ensure_bash_module, "runtime": ensure_runtime, "bundle": ensure_entry_bundle,
            "static-module": rootfs.ensure_static_module, "busybox-module": rootfs.ensure_busybox_module,
            "user-module": rootfs.ensure_user_module,
            "python-module": ensure_python_module}


def ensure_images(docker_host: str | None = None, which: tuple[str, ...] = tuple(BUILDERS),
                  log: Log = _stderr) -> dict[str, str]:
    """Build what is missing or stale; return {"bash-module": "gpstage/bash-module:1", "runtime": …}.
    `docker_host` defaults to $DOCKER_HOST (then the docker CLI's default)."""
    docker = Docker(docker_host)
    with build_lock():
        return {name: BUILDERS[name](docker, log) for name in which}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", nargs="?", default="all", choices=["all", *BUILDERS])
    ap.add_argument("--docker-host", default=os.environ.get("DOCKER_HOST"),
                    help="the daemon to build in (default: $DOCKER_HOST)")
    ap.add_argument("--extras", default=",".join(BUNDLE_EXTRAS),
                    help="bundle: gpstage extras it holds, comma-separated (default: %(default)s; s3 alone is smallest)")
    ap.add_argument("--dest", type=Path, help="bundle: the directory it goes to, as DEST/<version>-<hash> with DEST/current "
                    "pointing at it (default: $GPSTAGE_BUNDLE_DIR, else ~/.local/share/gpstage/entry-bundle)")
    args = ap.parse_args()
    which = tuple(BUILDERS) if args.image == "all" else (args.image,)
    docker = Docker(args.docker_host)
    with build_lock():
        for name in which:
            if name == "bundle":
                extras = tuple(e for e in args.extras.split(",") if e)
                print(ensure_entry_bundle(docker, _stderr, extras, args.dest))
            else:
                print(BUILDERS[name](docker, _stderr))


if __name__ == "__main__":
    main()
