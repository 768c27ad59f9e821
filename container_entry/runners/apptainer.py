"""The ``apptainer`` runner: ``bash exec.sh`` in the job's ``image`` with ``apptainer exec`` (seed
deployment 2: HPC nodes without docker), the role dirs bound at their identical paths (a dir's
``mount_at`` when it has one).

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

Images (the spec's ``image``): a docker daemon image (``NAME[:TAG]``, ``docker-daemon:``), a
``docker-archive:``, a ``docker://`` registry image — converted once to SIF and cached (see
:mod:`container_entry.runners.sif`, :mod:`container_entry.runners.image_refs`) — or a ``.sif`` file, a
sandbox directory, an ``oras://``/``library://``/``shub://`` URI, given to apptainer as they are.
The binary, and apptainer's own environment: :mod:`container_entry.runners.apptainer_command`.

Executors (a spec's ``executors``, docs/tes.md): each in its own image (converted once, as the module's;
:meth:`ApptainerRunner.prepare_image` converts them all before the first runs), its command run exactly
(``apptainer exec IMAGE ARGV…``: no shell needed in the image), in its ``workdir`` (``--pwd``; none:
apptainer's default), with the same containment, user and environment. Its stdin, stdout and stderr are
apptainer's own, opened by the entry on the files (owned by the user it runs as), so apptainer's own
messages (``--quiet``: errors only) land in its stderr file.

Why a plain subprocess and not spython: the entry needs a child process it can wait for with a timeout
and signal as a process group, with its output going to files, and builds it can kill on a deadline.
spython's ``execute``/``build`` run to completion and capture output (no handle, no timeout, no group),
and it calls ``singularity`` by name. The argv here is short and explicit; nothing but the standard
library is imported at module level (the docker SDK only for daemon images, lazily).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from container_entry.runners.apptainer_command import apptainer_binary, apptainer_env, env_prefix, one_line
from container_entry.runners.base import ContainerRunner, ModuleRun, RunRequest, Streams, mounts, open_streams, tail
from container_entry.runners.image_refs import archive_key  # noqa: F401 - re-exported, as before the split
from container_entry.runners.sif import SifCache
from gpstage.errors import BadInput, GpstageError
from gpstage.spec import JobSpec

# bash redirects inside the container: $1 the executable, $2 stdout file, $3 stderr file
REDIRECT = 'exec bash "$1" >>"$2" 2>>"$3"'
APPTAINER_LOG = "apptainer.log"  # apptainer's own messages, in the run's scratch dir


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


def bind_options(binds: list[tuple[str, str]]) -> list[str]:
    """``--mount type=bind,source=P,destination=D`` per ``(P, D)``, parents first (by destination);
    CSV-quoted, so commas, colons and spaces in paths are safe (``--bind`` splits on both)."""
    out: list[str] = []
    for source, dest in sorted(set(binds), key=lambda b: (b[1].count("/"), b[1])):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(["type=bind", f"source={source}", f"destination={dest}"])
        out += ["--mount", buf.getvalue()]
    return out


# ---- running ---------------------------------------------------------------------------------
class ApptainerRun(ModuleRun):
    """``log_path``: where apptainer's own messages went — its log in the scratch dir, or (an executor)
    the run's stderr file itself, then nothing is appended there."""

    def __init__(self, proc: subprocess.Popen[bytes], scratch: Path, image: str, stderr_path: str,
                 log_path: str | None = None) -> None:
        self.proc, self.scratch, self.image, self.stderr_path = proc, scratch, image, stderr_path
        self.log_path = log_path or str(scratch / APPTAINER_LOG)
        self._checked = False
        self._signalled = False  # a cancel or time limit reached it: a FATAL then is the signal's doing

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
        status 255 means the container never ran the module — an ERROR, not the module's exit code —
        unless the entry signalled it: a cancel while apptainer was still setting the container up makes it
        fail so ("failed to find loop device: unexpected EOF"), and the job is CANCELLED, not in ERROR."""
        if code == 0:
            return
        try:
            text = tail(self.log_path, 65536)
        except OSError:
            return
        if not text.strip():
            return
        if self.log_path != self.stderr_path:
            try:
                with open(self.stderr_path, "a") as err:
                    err.write(text if text.endswith("\n") else text + "\n")
            except OSError:
                pass
        if code == 255 and not self._signalled and any(ln.lstrip().startswith("FATAL") for ln in text.splitlines()):
            raise GpstageError(f"apptainer could not run the module in {self.image}: {one_line(text)}",
                               "check that the image has bash (an executor: its command) and that the job's "
                               "dirs exist on this node")

    def send_signal(self, sig: int) -> None:
        if self.proc.returncode is not None:
            return
        self._signalled = True
        try:
            os.killpg(self.proc.pid, sig)  # apptainer, its init and the module: one process group
        except (ProcessLookupError, PermissionError):
            pass

    def cleanup(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


class ApptainerRunner(ContainerRunner):
    name = "apptainer"

    def __init__(self) -> None:
        self.images: dict[str, str] = {}  # image -> what `apptainer exec` is given (a SIF in the cache, ...)

    def check(self, spec: JobSpec) -> None:
        super().check(spec)
        apptainer_binary()

    def prepare_image(self, image: str, log: Callable[[str], None]) -> None:
        started = time.monotonic()
        cache = SifCache(apptainer_binary())
        self.images[image] = cache.resolve(image)
        if cache.built:
            log(f"converted {image} to SIF in {time.monotonic() - started:.1f} s")

    def start(self, request: RunRequest) -> ModuleRun:
        spec, image = request.spec, request.run_image
        assert image
        if request.executor is None:
            self.require_outputs_in_dirs(request)
            command = ["bash", "-c", REDIRECT, "gpstage-module", request.argv[-1], request.stdout_path, request.stderr_path]
        else:
            command = request.argv
        binary = apptainer_binary()
        sif = self.images.get(image) or SifCache(binary).resolve(image)
        user = run_as(spec)
        scratch = self._scratch(user)
        argv = [binary, "--quiet", "exec", "--cleanenv", "--contain", "--pid", "--workdir", str(scratch),
                *(["--pwd", request.cwd] if request.cwd else []), *bind_options(mounts(spec)),
                *(["--security", f"uid:{user[0]},gid:{user[1]}"] if user else []), sif, *command]
        prefix = env_prefix(binary)
        env = {**apptainer_env(request.env), **{prefix + k: v for k, v in request.job_env.items()}}
        streams = self._streams(request, scratch, user)
        try:
            proc = subprocess.Popen(argv, cwd=scratch, env=env, stdin=streams.stdin or subprocess.DEVNULL,
                                    stdout=streams.stdout, stderr=streams.stderr, start_new_session=True)
        except OSError as e:
            shutil.rmtree(scratch, ignore_errors=True)
            raise GpstageError(f"cannot start {binary}: {e.strerror}",
                               "check GPSTAGE_APPTAINER / the apptainer install") from None
        finally:
            streams.close()
        log_path = None if request.executor is None else request.stderr_path
        return ApptainerRun(proc, scratch, image, request.stderr_path, log_path)

    @staticmethod
    def _streams(request: RunRequest, scratch: Path, user: tuple[int, int] | None) -> Streams:
        """apptainer's stdio: an executor's own files; for exec.sh (bash redirects it in the container),
        apptainer's log in the scratch dir."""
        try:
            if request.executor is not None:
                return open_streams(request, user)
            log = open(scratch / APPTAINER_LOG, "ab")  # noqa: SIM115 - closed by Streams.close
            return Streams(None, log, log)
        except OSError:
            shutil.rmtree(scratch, ignore_errors=True)
            raise

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
