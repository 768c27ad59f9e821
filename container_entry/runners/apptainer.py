"""The ``apptainer`` runner: ``bash exec.sh`` in the job's ``image`` with ``apptainer exec`` (seed
deployment 2: HPC nodes without docker), the role dirs bound at their identical paths.

What the module gets, as with the docker runner: only the job's variables (``--cleanenv``; the job env
is handed over as ``APPTAINERENV_*`` variables of apptainer's own environment, never on argv), the
image's own PATH, the working dir as cwd (``--pwd``), its stdout/stderr redirected by bash INSIDE the
container straight into the metadata dir (they stream to the same files as with the process runner),
and its own exit code. Beyond that it is contained: ``--contain`` (no host $HOME — where credential
files live —, no host /tmp: the container's /tmp, /var/tmp and $HOME are a per-run scratch dir on disk,
``GPSTAGE_APPTAINER_SCRATCH`` or the system temp dir, removed afterwards) and ``--pid`` (a PID namespace:
when its init ends, every process of the module ends with it, so a time limit or a cancel leaves nothing
behind). apptainer runs as a child of the entry in its own process group; signals go to that group.
A module killed by signal N ends with status 128+N (apptainer's init reports it so), as with docker.
When the entry runs as root, the module runs as the owner of the working dir (``--security uid:…,gid:…``,
root only), so outputs belong to the server's user; ``GPSTAGE_APPTAINER_USER=uid:gid`` overrides.
``resources`` (cpus, memory) are not applied here: on a cluster the scheduler enforces them, and
apptainer's cgroup limits need a systemd cgroup manager; the time limit is the entry's.

Images (the spec's ``image``):

* ``NAME[:TAG]`` or ``docker-daemon:NAME[:TAG]`` — an image of the docker daemon in ``DOCKER_HOST``
  (pulled by the daemon if missing, as the docker runner does). Converted to SIF from
  ``docker-daemon:<image ID>`` with ``--docker-host`` (so a private socket works); if apptainer cannot
  read the daemon, the image is ``docker save``'d (through the docker SDK) and converted from that archive.
* ``docker-archive:PATH`` — a ``docker save`` tarball; ``docker://REF`` — a registry image (apptainer
  pulls it; with a tag, the digest is looked up in the registry first, anonymously, to key the cache).
* a ``.sif`` file or a sandbox directory — used as it is; ``oras://``, ``library://``, ``shub://`` — passed
  to apptainer, which caches them itself.

Conversions are cached as SIF files in ``GPSTAGE_SIF_CACHE`` (default ``~/.cache/gpstage/sif``), named
by the image's content id (``sha256-<hex>.sif``: the docker image ID, the registry digest, or a hash of
the archive's manifest), built under an exclusive lock per image (two jobs never build the same SIF; the
second waits, then uses it) into a temporary file renamed into place, so a SIF in the cache is always
complete. A build that fails or outlasts ``GPSTAGE_SIF_BUILD_TIMEOUT`` (seconds, default 1800) is a
:class:`GpstageError` of one line — the job ends ERROR, exit 125.

The binary: ``GPSTAGE_APPTAINER`` (a path), else ``apptainer`` on PATH, else ``singularity``.

Why a plain subprocess and not spython: the entry needs a child process it can wait for with a timeout
and signal as a process group, with its output going to files, and builds it can kill on a deadline.
spython's ``execute``/``build`` run to completion and capture output (no handle, no timeout, no group),
and it calls ``singularity`` by name. The argv here is short and explicit; nothing but the standard
library is imported at module level (the docker SDK only for daemon images, lazily).
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from typing_extensions import Self

from container_entry.runners.base import ModuleRun, Runner, RunRequest
from gpstage.errors import BadInput, GpstageError
from gpstage.spec import JobSpec

# bash redirects inside the container: $1 the executable, $2 stdout file, $3 stderr file
REDIRECT = 'exec bash "$1" >>"$2" 2>>"$3"'
DEFAULT_BUILD_TIMEOUT_S = 1800.0
REGISTRY_TIMEOUT_S = 30.0
APPTAINER_LOG = "apptainer.log"  # apptainer's own messages, in the run's scratch dir
# the apptainer process's own environment: these, and the operator's APPTAINER_*/SINGULARITY_* settings
HOST_ENV = ("PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "LANG", "LC_ALL", "TZ", "DOCKER_HOST", "DOCKER_CONFIG",
            "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "XDG_RUNTIME_DIR")


# ---- settings ------------------------------------------------------------------------------
def apptainer_binary() -> str:
    """``GPSTAGE_APPTAINER``, else ``apptainer`` on PATH, else ``singularity``."""
    configured = os.environ.get("GPSTAGE_APPTAINER")
    if configured:
        found = shutil.which(configured)  # a path, or a name on PATH
        if not found:
            raise BadInput(f"GPSTAGE_APPTAINER={configured} is not an executable file",
                           "point it at the apptainer (or singularity) binary or wrapper")
        return found
    found = shutil.which("apptainer") or shutil.which("singularity")
    if not found:
        raise BadInput("the apptainer runner needs apptainer (or singularity), which is not on PATH",
                       "install Apptainer, add it to PATH, or set GPSTAGE_APPTAINER to its path")
    return found


def sif_cache_dir() -> Path:
    return Path(os.environ.get("GPSTAGE_SIF_CACHE") or Path.home() / ".cache" / "gpstage" / "sif")


def build_timeout() -> float:
    raw = os.environ.get("GPSTAGE_SIF_BUILD_TIMEOUT")
    try:
        return float(raw) if raw else DEFAULT_BUILD_TIMEOUT_S
    except ValueError:
        raise BadInput(f"GPSTAGE_SIF_BUILD_TIMEOUT={raw!r} is not a number of seconds", "set it to e.g. 1800") from None


def run_as(spec: JobSpec) -> tuple[int, int] | None:
    """The uid/gid the module runs as when it is not this process's own: ``GPSTAGE_APPTAINER_USER``,
    else, when this process is root, the owner of the working dir (None: run as this process)."""
    raw = os.environ.get("GPSTAGE_APPTAINER_USER")
    if raw:
        try:
            uid, _, gid = raw.partition(":")
            wanted = (int(uid), int(gid or uid))
        except ValueError:
            raise BadInput(f"GPSTAGE_APPTAINER_USER={raw!r} is not uid:gid", "set it to numbers, e.g. 1000:1000") from None
    elif os.getuid() == 0:
        st = os.stat(spec.workdir)
        wanted = (st.st_uid, st.st_gid)
    else:
        return None
    if wanted == (os.getuid(), os.getgid()):
        return None
    if os.getuid() != 0:
        raise BadInput(f"only root can run the module as {wanted[0]}:{wanted[1]}", "unset GPSTAGE_APPTAINER_USER")
    return wanted


# ---- images --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Image:
    """The spec's ``image``, classified: ``local`` and ``passthrough`` go to ``apptainer exec`` as they
    are; ``daemon``, ``archive`` and ``registry`` are converted once into the SIF cache."""

    name: str  # as the spec wrote it, for messages
    kind: str  # "local", "passthrough", "daemon", "archive", "registry"
    ref: str  # path, URI, daemon reference, archive path or registry reference


def classify(image: str) -> Image:
    if image.startswith("docker-daemon:"):
        return Image(image, "daemon", image.removeprefix("docker-daemon:").removeprefix("//"))
    if image.startswith("docker-archive:"):
        return Image(image, "archive", image.removeprefix("docker-archive:").removeprefix("//"))
    if image.startswith("docker://"):
        return Image(image, "registry", image.removeprefix("docker://"))
    if re.match(r"^[a-z][a-z0-9+.-]*://", image):  # oras://, library://, shub://, https://...
        return Image(image, "passthrough", image)
    if image.endswith(".sif") or image.startswith(("/", "./", "../")) or os.path.exists(image):
        return Image(image, "local", image)
    return Image(image, "daemon", image)


def _docker_client():
    from container_entry.dockerutil import docker_client  # the docker SDK, only for daemon images

    return docker_client()


def daemon_image_id(ref: str) -> tuple[object, str]:
    """The daemon's image for ``ref`` (pulled by the daemon if missing) and its ID ``sha256:…``."""
    from container_entry.dockerutil import ensure_image

    client = _docker_client()
    ensure_image(client, ref)
    image = client.images.get(ref)
    return image, image.id


def archive_key(path: str) -> str:
    """A content id for a ``docker save`` archive: the hash of its manifest.json (which names the config
    and layer digests), else of the whole file."""
    if not os.path.isfile(path):
        raise GpstageError(f"image archive {path} does not exist", "fix the docker-archive: path in the spec")
    h = hashlib.sha256()
    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile("manifest.json")
            if member is not None:
                h.update(b"manifest\0" + member.read())
                return f"sha256-{h.hexdigest()}"
    except (tarfile.TarError, KeyError, OSError):
        pass
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256-{h.hexdigest()}"


def parse_registry_ref(ref: str) -> tuple[str, str, str]:
    """``(registry host, repository, tag or digest)`` of a docker reference, with Docker Hub's defaults."""
    name, digest = ref.split("@", 1) if "@" in ref else (ref, "")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, repo = first, rest
    else:
        host, repo = "registry-1.docker.io", name
        if "/" not in repo:
            repo = f"library/{repo}"
    tag = ""
    if ":" in repo.rsplit("/", 1)[-1]:
        repo, _, tag = repo.rpartition(":")
    return host, repo, digest or tag or "latest"


def registry_digest(ref: str, insecure: bool = False) -> str | None:
    """The manifest digest of a registry image (``sha256:…``), asked anonymously with the registry's
    token dance; None when the registry cannot say (offline, private): then the reference keys the cache."""
    host, repo, tag = parse_registry_ref(ref)
    if tag.startswith("sha256:"):
        return tag
    local = host.split(":")[0] in ("localhost", "127.0.0.1", "::1")
    scheme = "http" if insecure or local else "https"
    url = f"{scheme}://{host}/v2/{repo}/manifests/{tag}"
    accept = ("application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, "
              "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")

    def head(token: str | None) -> urllib.request.addinfourl:
        headers = {"Accept": accept, **({"Authorization": f"Bearer {token}"} if token else {})}
        return urllib.request.urlopen(urllib.request.Request(url, method="HEAD", headers=headers),
                                      timeout=REGISTRY_TIMEOUT_S)

    try:
        try:
            response = head(None)
        except urllib.error.HTTPError as err:
            challenge = err.headers.get("WWW-Authenticate", "") if err.code == 401 else ""
            params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
            if not challenge.lower().startswith("bearer") or "realm" not in params:
                return None
            query = urllib.parse.urlencode({k: v for k, v in params.items() if k in ("service", "scope")})
            with urllib.request.urlopen(f"{params['realm']}?{query}", timeout=REGISTRY_TIMEOUT_S) as r:
                body = json.loads(r.read())
            response = head(body.get("token") or body.get("access_token"))
        with response:
            digest = response.headers.get("Docker-Content-Digest")
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return digest if digest and digest.startswith("sha256:") else None


# ---- the SIF cache ---------------------------------------------------------------------------
def _one_line(output: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    fatal = [ln for ln in lines if ln.startswith(("FATAL", "ERROR"))]
    line = re.sub(r"\s+", " ", (fatal or lines or ["no output"])[-1])
    return line if len(line) <= limit else line[: limit - 1] + "…"


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


def apptainer_env(base: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """apptainer's OWN environment: a few host variables and the operator's APPTAINER_*/SINGULARITY_*
    settings — never ``*ENV_*`` forwards, which would reach the module."""
    env = {k: v for k, v in base.items() if k in HOST_ENV or (
        k.startswith(("APPTAINER_", "SINGULARITY_")) and not k.startswith(("APPTAINERENV_", "SINGULARITYENV_")))}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return env


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
        return self._ensure(image_id.replace(":", "-"), img, lambda tmp: self._build_from_daemon(tmp, docker_image, image_id, img))

    # ---- building ----
    def _ensure(self, key: str, img: Image, build) -> str:
        final = self.root / f"{key}.sif"
        if final.is_file():
            return str(final)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GpstageError(f"cannot create the SIF cache {self.root}: {e.strerror}", "set GPSTAGE_SIF_CACHE to a writable dir") from None
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
            raise GpstageError(f"apptainer cannot convert {img.name} to SIF: {_one_line(output)}",
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


_ENV_PREFIX: dict[str, str] = {}


def env_prefix(binary: str) -> str:
    """``APPTAINERENV_`` for apptainer, ``SINGULARITYENV_`` for SingularityCE (asked once per binary)."""
    if binary not in _ENV_PREFIX and os.path.basename(binary) == "apptainer":
        _ENV_PREFIX[binary] = "APPTAINERENV_"
    if binary not in _ENV_PREFIX:
        try:
            out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False,
                                 env=apptainer_env(os.environ)).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        _ENV_PREFIX[binary] = "SINGULARITYENV_" if out.startswith("singularity") else "APPTAINERENV_"
    return _ENV_PREFIX[binary]


def bind_options(paths: list[str]) -> list[str]:
    """``--mount type=bind,source=P,destination=P`` per dir, parents first; CSV-quoted, so commas,
    colons and spaces in paths are safe (``--bind`` splits on both)."""
    out: list[str] = []
    for p in sorted(set(paths), key=lambda x: (x.count("/"), x)):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(["type=bind", f"source={p}", f"destination={p}"])
        out += ["--mount", buf.getvalue()]
    return out


# ---- running ---------------------------------------------------------------------------------
class ApptainerRun(ModuleRun):
    def __init__(self, proc: subprocess.Popen[bytes], scratch: Path, image: str, stderr_path: str) -> None:
        self.proc, self.scratch, self.image, self.stderr_path = proc, scratch, image, stderr_path
        self._checked = False

    def wait(self, timeout: float | None) -> int | None:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if not self._checked:
            self._checked = True
            self._after_exit(code)
        return code

    def _after_exit(self, code: int) -> None:
        """apptainer's own messages: appended to the module's stderr when the run failed; a FATAL with
        status 255 means the container never ran the module — an ERROR, not the module's exit code."""
        try:
            with open(self.scratch / APPTAINER_LOG, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 65536))
                text = f.read().decode(errors="replace")
        except OSError:
            return
        if code == 0 or not text.strip():
            return
        try:
            with open(self.stderr_path, "a") as err:
                err.write(text if text.endswith("\n") else text + "\n")
        except OSError:
            pass
        if code == 255 and any(ln.lstrip().startswith("FATAL") for ln in text.splitlines()):
            raise GpstageError(f"apptainer could not run the module in {self.image}: {_one_line(text)}",
                               "check that the image has bash and that the job's dirs exist on this node")

    def send_signal(self, sig: int) -> None:
        if self.proc.returncode is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)  # apptainer, its init and the module: one process group
        except (ProcessLookupError, PermissionError):
            pass

    def cleanup(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


class ApptainerRunner(Runner):
    name = "apptainer"

    def check(self, spec: JobSpec) -> None:
        if not spec.image:
            raise BadInput("the apptainer runner needs the module's image", "set `image` in the job spec")
        apptainer_binary()

    def start(self, request: RunRequest) -> ModuleRun:
        spec = request.spec
        assert spec.image
        outside = [p for p in (request.stdout_path, request.stderr_path) if not any(
            p.startswith(d.path.rstrip("/") + "/") for d in spec.dirs)]
        if outside:
            raise BadInput(f"{outside[0]} is outside the job's dirs, so the module's container cannot write it",
                           "keep STDOUT_FILENAME / STDERR_FILENAME inside the metadata dir")
        binary = apptainer_binary()
        image = SifCache(binary).resolve(spec.image)
        user = run_as(spec)
        scratch = self._scratch(user)
        argv = [binary, "--quiet", "exec", "--cleanenv", "--contain", "--pid", "--workdir", str(scratch),
                "--pwd", request.cwd, *bind_options([d.path for d in spec.dirs]),
                *(["--security", f"uid:{user[0]},gid:{user[1]}"] if user else []),
                image, "bash", "-c", REDIRECT, "gpstage-module", request.argv[-1], request.stdout_path, request.stderr_path]
        prefix = env_prefix(binary)
        env = {**apptainer_env(request.env), **{prefix + k: v for k, v in request.job_env.items()}}
        try:
            with open(scratch / APPTAINER_LOG, "ab") as log:
                proc = subprocess.Popen(argv, cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        start_new_session=True)
        except OSError as e:
            shutil.rmtree(scratch, ignore_errors=True)
            raise GpstageError(f"cannot start {binary}: {e.strerror}", "check GPSTAGE_APPTAINER / the apptainer install") from None
        return ApptainerRun(proc, scratch, spec.image, request.stderr_path)

    @staticmethod
    def _scratch(user: tuple[int, int] | None) -> Path:
        """The run's own dir for the container's /tmp, /var/tmp and $HOME (``--workdir``), on disk."""
        parent = os.environ.get("GPSTAGE_APPTAINER_SCRATCH") or None
        try:
            if parent:
                os.makedirs(parent, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix="gpstage-apptainer-", dir=parent))
            for sub, mode in (("tmp", 0o1777), ("var_tmp", 0o1777), ("home", 0o700)):
                (scratch / sub).mkdir()
                os.chmod(scratch / sub, mode)
                if user and sub == "home":
                    os.chown(scratch / sub, *user)
        except OSError as e:
            raise GpstageError(f"cannot create the container's scratch dir: {e}",
                               "set GPSTAGE_APPTAINER_SCRATCH to a writable dir with free space") from None
        return scratch
