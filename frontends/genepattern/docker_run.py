"""``run-with-docker.sh`` for a GenePattern server's local executor (its ``job.commandPrefix``): the
module's command line run in ``GP_JOB_DOCKER_IMAGE`` through gpstage's docker runner (docs/genepattern-server.md).

Flags as GenePattern's run-with-docker.sh and gp-common.sh parse them, before the module's command:
``-c ENV_CUSTOM`` (a site script, relative to the scripts' dir unless absolute, sourced for its
exports), ``-e KEY=VALUE`` (set; ``KEY=`` unsets, ``KEY`` sets empty), ``-u NAME`` (a dotkit: nothing
to load in a container, ignored), ``--`` (end of flags). Variables read: ``GP_JOB_DOCKER_IMAGE``
(required: exit 64 without it, as GenePattern's), ``GP_JOB_WORKING_DIR`` (default: the current dir),
``GP_JOB_MEMORY`` (bytes), ``GP_JOB_DOCKER_BIND_MOUNTS`` and ``DOCKER_BIND_SRC`` (= ``DOCKER_BIND_DST``)
for more dirs to mount.

The module runs as ``local+docker`` runs it on ``nfs:///`` (nothing copied): the working dir and every
dir its arguments name mounted at their own paths, the container removed at the end. Its stdout and
stderr stream to this script's own (the server writes them into the job's files), and — unlike
GenePattern's, whose status was ``docker rm``'s — this exits with the MODULE's code.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path

USAGE = "run-with-docker.sh [-c ENV_CUSTOM] [-e KEY=VALUE]... [-u NAME]... [--] MODULE_COMMAND [ARG]..."
EXIT_USAGE = 64  # GenePattern's run-with-docker.sh: a missing image


def parse_flags(args: list[str], env: dict[str, str]) -> tuple[list[str], str | None]:
    """Apply ``-e`` to ``env``; return the module's command and the ``-c`` script (getopts rules: flags
    come first, a flag's value may be attached, ``--`` ends them)."""
    custom = None
    i = 0
    while i < len(args) and len(args[i]) >= 2 and args[i][0] == "-" and args[i][1] in "ceu":
        flag, value = args[i][1], args[i][2:]
        if not value:
            i += 1
            if i >= len(args):
                raise ValueError(f"-{flag} needs a value")
            value = args[i]
        if flag == "c":
            custom = value
        elif flag == "e":
            key, eq, val = value.partition("=")
            if key:
                if eq and not val:
                    env.pop(key, None)  # KEY= unsets
                else:
                    env[key] = val
        i += 1
    if i < len(args) and args[i] == "--":
        i += 1
    return args[i:], custom


def run_with_docker(args: list[str]) -> int:
    from container_entry.environment import source_script
    from container_entry.lifecycle import Entry
    from container_entry.record import EntryLog
    from container_entry.runners import get_runner
    from container_entry.settings import EntrySettings
    from frontends.genepattern.jobspec import SubmitCall, exec_script
    from gpstage.errors import GpstageError
    from gpstage.spec import JobSpec

    env = dict(os.environ)
    try:
        command, custom = parse_flags(args, env)
    except ValueError as e:
        print(f"run-with-docker.sh: {e}; usage: {USAGE}", file=sys.stderr)
        return EXIT_USAGE
    if custom:
        script = custom if os.path.isabs(custom) else str(Path(sys.argv[0]).resolve().parent / custom)
        if os.path.isfile(script):
            for k, v in source_script(script, env, os.getcwd(), EntryLog(quiet=True)).items():
                env.pop(k, None) if v is None else env.__setitem__(k, v)
    image = env.get("GP_JOB_DOCKER_IMAGE", "").strip()
    if not image:
        print("Missing required variable: 'job.docker.image' (GP_JOB_DOCKER_IMAGE)", file=sys.stderr)
        return EXIT_USAGE
    if not command:
        print(f"run-with-docker.sh: no module command; usage: {USAGE}", file=sys.stderr)
        return EXIT_USAGE
    workdir = os.path.normpath(env.get("GP_JOB_WORKING_DIR") or os.getcwd())
    metadata = tempfile.mkdtemp(prefix="gpstage-run-with-docker-")
    try:
        call = SubmitCall(tasklib=workdir, workdir=workdir, jobdef="", jobname="", inputs_dir="", argv=command,
                          env={"GP_JOB_METADATA_DIR": metadata})
        Path(metadata, "exec.sh").write_text(exec_script(call))
        memory = _memory_mib(env.get("GP_JOB_MEMORY"))
        spec = JobSpec.model_validate({
            "job_id": f"gp-docker-{uuid.uuid4().hex[:10]}", "storage_root": "nfs:///", "image": image,
            "dirs": [{"role": "workdir", "path": workdir}, {"role": "metadata", "path": metadata},
                     *({"role": "inputs", "path": d, "direction": "inout"}  # mounted as they are: nothing copied
                       for d in _mounts(command, env, (workdir, metadata)))],
            **({"resources": {"memory_mib": memory}} if memory else {}),
        })
        settings = EntrySettings.from_env({}, quiet=True, log_push_interval=0)
        entry = Entry(spec, get_runner("docker"), settings, env)
        with _streamed(Path(metadata, "stdout.txt"), sys.stdout.buffer), \
                _streamed(Path(metadata, "stderr.txt"), sys.stderr.buffer):
            code = entry.run()
        if code == 125:  # gpstage could not run it (image, docker): say why, on stderr like the module's
            log = Path(metadata, "gpstage-entry.log")
            lines = [ln for ln in (log.read_text(errors="replace").splitlines() if log.exists() else []) if "error" in ln]
            print(f"run-with-docker.sh: {lines[-1] if lines else 'gpstage could not run the module'}", file=sys.stderr)
        return code
    except GpstageError as e:
        print(f"run-with-docker.sh: {e}", file=sys.stderr)
        return 125
    finally:
        shutil.rmtree(metadata, ignore_errors=True)


def _memory_mib(value: str | None) -> int | None:
    try:
        return max(1, int(value or "") // (1 << 20))
    except ValueError:
        return None


def _mounts(command: list[str], env: Mapping[str, str], own: tuple[str, ...]) -> list[str]:
    """The dirs to mount besides the job's own: those the arguments name (a file's parent, or the dir),
    GP_JOB_DOCKER_BIND_MOUNTS, and DOCKER_BIND_SRC when it equals DOCKER_BIND_DST — outermost only."""
    found: set[str] = set()
    for arg in command[1:]:
        path = arg[arg.index("/"):] if "/" in arg else ""
        if path and os.path.isabs(path) and os.path.exists(path):
            found.add(os.path.normpath(path if os.path.isdir(path) else os.path.dirname(path)))
    found |= {os.path.normpath(m) for m in env.get("GP_JOB_DOCKER_BIND_MOUNTS", "").split(":") if os.path.isabs(m)}
    src, dst = env.get("DOCKER_BIND_SRC"), env.get("DOCKER_BIND_DST")
    if src and os.path.isabs(src) and (dst or src) == src:
        found.add(os.path.normpath(src))

    def inside(p: str, d: str) -> bool:
        return p == d or d == "/" or p.startswith(d.rstrip("/") + "/")

    kept = sorted(d for d in found if d != "/" and not any(inside(d, o) for o in own))
    return [d for d in kept if not any(inside(d, o) for o in kept if o != d)]


class _streamed:
    """Copy what is appended to ``path`` into ``out`` while the module runs (a thread polling every
    0.1 s), and the rest at the end: the module's output reaches the server as it is written."""

    def __init__(self, path: Path, out) -> None:  # noqa: ANN001 - a binary stream
        self.path, self.out, self.offset = path, out, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _streamed:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        self._copy()

    def _loop(self) -> None:
        while not self.done.wait(0.1):
            self._copy()

    def _copy(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                while chunk := f.read(1 << 16):
                    self.out.write(chunk)
                    self.offset += len(chunk)
            self.out.flush()
        except FileNotFoundError:
            pass
