"""The docker CLI and content hashing, for images/build.py and its sibling modules.

Owns: :class:`Docker` (the ``docker`` CLI pointed at one daemon: inspect, ``import`` a tar, drop a replaced
image), :func:`install_and_commit` (run a script in a ``--network none`` container fed a tar on stdin, then
``docker commit``), :func:`prune` (untag superseded intermediate images), and the content hashes that
decide whether an image is up to date: :func:`sha256`, :func:`file_sha` and the image label :data:`LABEL`
that carries them.

Standard library only; imports no sibling module (``which`` comes from scripts/hostutil.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

from hostutil import which

LABEL = "org.gpstage.hash"  # every image carries the hash of everything that went into it

Log = Callable[[str], None]


# ---- content hashing --------------------------------------------------------------------------
def sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- docker CLI -------------------------------------------------------------------------------
class Docker:
    def __init__(self, host: str | None) -> None:
        exe = which("docker")
        if not exe:
            raise SystemExit("no docker CLI on PATH (apt-get install docker.io; scripts/services.py start docker does)")
        self.exe = exe
        self.env = dict(os.environ)
        if host:
            self.env["DOCKER_HOST"] = host
            self.env.pop("DOCKER_CONTEXT", None)

    def __call__(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
        kw.setdefault("capture_output", True)
        done = subprocess.run([self.exe, *args], env=self.env, text=True, **kw)  # noqa: PLW1510 - check below
        if check and done.returncode:
            raise SystemExit(f"docker {' '.join(args[:3])} … failed ({done.returncode}): {(done.stderr or '').strip()}")
        return done

    def inspect(self, ref: str) -> dict | None:
        done = self("image", "inspect", ref, check=False)
        return json.loads(done.stdout)[0] if done.returncode == 0 else None

    def labels(self, ref: str) -> dict[str, str]:
        info = self.inspect(ref)
        return (info or {}).get("Config", {}).get("Labels") or {}

    def import_tar(self, ref: str, changes: list[str], feed: Callable[[io.BufferedWriter], None]) -> None:
        """`docker import - REF`, the tar written to its stdin by `feed`."""
        argv = [self.exe, "import"] + [a for c in changes for a in ("-c", c)] + ["-", ref]
        proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        assert proc.stdin is not None
        try:
            feed(proc.stdin)
        finally:
            proc.stdin.close()
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.wait():
            raise SystemExit(f"docker import {ref} failed: {err.strip()}")

    def drop_replaced(self, old: dict | None, ref: str) -> None:
        """Remove the image a rebuild untagged, unless something else still uses it (then rmi refuses)."""
        new = self.inspect(ref)
        if old and new and old["Id"] != new["Id"]:
            self("rmi", old["Id"], check=False)


def install_and_commit(docker: Docker, image: str, script: str, items: dict[str, Path], ref: str,
                       changes: list[str], log_dir: Path) -> None:
    """Run `script` in a container of `image` (no network) with `items` as a tar on stdin, commit it as `ref`.
    Files copied in and deleted by the script in the same container leave nothing in the new layer."""
    name = f"gpstage-build-{uuid.uuid4().hex[:12]}"
    argv = [docker.exe, "run", "-i", "--name", name, "--network", "none", image, "/bin/sh", "-c", script]
    try:
        with open(log_dir / f"{name}.log", "w+b") as out:
            proc = subprocess.Popen(argv, env=docker.env, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)
            assert proc.stdin is not None
            try:
                with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
                    for arcname, path in items.items():
                        tar.add(path, arcname=arcname)
            finally:
                proc.stdin.close()
            if proc.wait():
                out.seek(0)
                raise SystemExit(f"building {ref} failed:\n{out.read().decode(errors='replace')[-3000:]}")
        docker("commit", *[a for c in changes for a in ("-c", c)], name, ref)
    finally:
        docker("rm", "-f", name, check=False)


def prune(docker: Docker, repo: str, keep: str) -> None:
    """Untag the other (older) images of an intermediate repo; their layers go when nothing uses them."""
    done = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repo, check=False)
    for ref in done.stdout.split():
        if ref != keep:
            docker("rmi", ref, check=False)
