"""Conversions of the spec's ``image`` to SIF for the apptainer runner, and their cache.

Daemon images are converted from ``docker-daemon:<image ID>`` with ``--docker-host`` (so a private socket
works); if apptainer cannot read the daemon, the image is ``docker save``'d (through the docker SDK) and
converted from that archive. Archives and registry images are given to ``apptainer build`` as they are;
local SIFs, sandboxes and ``oras://``/``library://``/``shub://`` URIs need no conversion (see
:mod:`container_entry.runners.image_refs` for the kinds and their content ids).

Conversions are cached as SIF files in ``GPSTAGE_SIF_CACHE`` (default ``~/.cache/gpstage/sif``), named
by the image's content id (``sha256-<hex>.sif``: the docker image ID, the registry digest, or a hash of
the archive's manifest), built under an exclusive lock per image (two jobs never build the same SIF; the
second waits, then uses it) into a temporary file renamed into place, so a SIF in the cache is always
complete. A build that fails or outlasts ``GPSTAGE_SIF_BUILD_TIMEOUT`` (seconds, default 1800) is a
:class:`GpstageError` of one line — the job ends ERROR, exit 125. Builds run as a plain subprocess in
their own process group, killed as a group on the deadline (``apptainer build`` spawns mksquashfs).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from typing_extensions import Self

from container_entry.runners.apptainer_command import apptainer_env, one_line
from container_entry.runners.image_refs import (
    Image,
    archive_key,
    classify,
    daemon_image_id,
    parse_registry_ref,
    registry_digest,
)
from gpstage.errors import BadInput, GpstageError

DEFAULT_BUILD_TIMEOUT_S = 1800.0


def sif_cache_dir() -> Path:
    return Path(os.environ.get("GPSTAGE_SIF_CACHE") or Path.home() / ".cache" / "gpstage" / "sif")


def build_timeout() -> float:
    raw = os.environ.get("GPSTAGE_SIF_BUILD_TIMEOUT")
    try:
        return float(raw) if raw else DEFAULT_BUILD_TIMEOUT_S
    except ValueError:
        raise BadInput(f"GPSTAGE_SIF_BUILD_TIMEOUT={raw!r} is not a number of seconds", "set it to e.g. 1800") from None


def _run_killable(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Run ``argv`` in its own process group with output captured; on timeout kill the whole group
    (apptainer build spawns mksquashfs and friends). Returns (exit code or None on timeout, output)."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        out.seek(0)
        return code, out.read().decode(errors="replace")


class _Lock:
    """An exclusive ``flock`` on ``path``, waited for at most ``timeout`` seconds (a build in another job)."""

    def __init__(self, path: Path, timeout: float, what: str) -> None:
        self.path, self.timeout, self.what = path, timeout, what
        self.file: io.TextIOWrapper | None = None

    def __enter__(self) -> Self:
        self.file = open(self.path, "a")  # held until __exit__
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.file.close()
                    raise GpstageError(f"waited {self.timeout:.0f} s for another job's conversion of {self.what}",
                                       f"check for a stuck apptainer build, or remove {self.path}") from None
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        assert self.file
        self.file.close()  # releases the lock


class SifCache:
    """Conversions to SIF, one per image content id, in ``GPSTAGE_SIF_CACHE``."""

    def __init__(self, binary: str, root: Path | None = None, timeout: float | None = None) -> None:
        self.binary = binary
        self.root = root or sif_cache_dir()
        self.timeout = build_timeout() if timeout is None else timeout
        self.built = False  # whether the last resolve() converted (False: a cache hit or a local image)

    def resolve(self, image: str) -> str:
        """The path (or URI) to give ``apptainer exec`` for ``image``, converting it once if needed."""
        self.built = False
        img = classify(image)
        if img.kind == "passthrough":
            return img.ref
        if img.kind == "local":
            if not os.path.exists(img.ref):
                raise GpstageError(f"image {img.ref} does not exist", "fix `image` in the spec (a .sif file, a sandbox dir, "
                                   "a docker image name, docker://, docker-daemon: or docker-archive:)")
            return os.path.abspath(img.ref)
        if img.kind == "archive":
            key = archive_key(img.ref)
            return self._ensure(key, img, lambda tmp: self._build(tmp, f"docker-archive:{os.path.abspath(img.ref)}", img))
        if img.kind == "registry":
            digest = registry_digest(img.ref)
            host = parse_registry_ref(img.ref)[0].split(":")[0]
            extra = ["--no-https"] if host in ("localhost", "127.0.0.1", "::1") else []
            if digest:
                key = digest.replace(":", "-")
                source = f"docker://{_without_tag(img.ref)}@{digest}"
            else:  # the registry would not say: the reference itself keys the cache (a moved tag is not seen)
                key = "ref-" + hashlib.sha256(img.ref.encode()).hexdigest()
                source = f"docker://{img.ref}"
            return self._ensure(key, img, lambda tmp: self._build(tmp, source, img, extra))
        # the docker daemon
        docker_image, image_id = daemon_image_id(img.ref)
        return self._ensure(image_id.replace(":", "-"), img,
                            lambda tmp: self._build_from_daemon(tmp, docker_image, image_id, img))

    # ---- building ----
    def _ensure(self, key: str, img: Image, build) -> str:
        final = self.root / f"{key}.sif"
        if final.is_file():
            return str(final)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GpstageError(f"cannot create the SIF cache {self.root}: {e.strerror}",
                               "set GPSTAGE_SIF_CACHE to a writable dir") from None
        with _Lock(self.root / f"{key}.lock", self.timeout + 60, img.name):
            if final.is_file():  # another job built it while we waited
                return str(final)
            for stale in self.root.glob(f".{key}.*.tmp"):  # a build that died; we hold the lock now
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
            tmp = self.root / f".{key}.{os.getpid()}.tmp"
            tmp.mkdir()
            try:
                build(tmp)
                os.replace(tmp / "image.sif", final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        self.built = True
        return str(final)

    def _build(self, tmp: Path, source: str, img: Image, extra: list[str] | None = None) -> None:
        env = apptainer_env(os.environ)
        if "APPTAINER_TMPDIR" not in env and "SINGULARITY_TMPDIR" not in env:
            env["APPTAINER_TMPDIR"] = env["SINGULARITY_TMPDIR"] = str(tmp)  # unpacked layers: beside the cache
        argv = [self.binary, "build", "--disable-cache", *(extra or []), str(tmp / "image.sif"), source]
        code, output = _run_killable(argv, env, self.timeout)
        if code is None:
            raise GpstageError(f"converting {img.name} to SIF took longer than {self.timeout:.0f} s",
                               "raise GPSTAGE_SIF_BUILD_TIMEOUT, or convert it once by hand into a .sif and use that")
        if code != 0 or not (tmp / "image.sif").is_file():
            raise GpstageError(f"apptainer cannot convert {img.name} to SIF: {one_line(output)}",
                               "check that the image exists and is a valid docker/OCI image")

    def _build_from_daemon(self, tmp: Path, docker_image: object, image_id: str, img: Image) -> None:
        """``docker-daemon:<ID>`` (apptainer reads the daemon itself); if that fails, ``docker save``."""
        host = os.environ.get("DOCKER_HOST")
        try:
            self._build(tmp, f"docker-daemon:{image_id}", img, ["--docker-host", host] if host else [])
            return
        except GpstageError as direct:
            first = direct
        archive = tmp / "image.tar"
        try:
            with open(archive, "wb") as f:
                f.writelines(docker_image.save(named=False))  # type: ignore[attr-defined]
        except Exception as err:  # noqa: BLE001 - the SDK's errors: one line
            raise GpstageError(f"{first.problem}; docker save also failed: {str(err).splitlines()[0][:200]}", first.fix) from None
        self._build(tmp, f"docker-archive:{archive}", img)
        archive.unlink(missing_ok=True)


def _without_tag(ref: str) -> str:
    name = ref.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]
