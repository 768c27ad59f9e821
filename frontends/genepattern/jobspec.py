"""A GenePattern server's submit call as a gpstage job (docs/genepattern-server.md).

The server calls ``<submit script> TASKLIB WORKDIR JOBDEF JOBNAME INPUTSDIR <module argv…>`` with its
own environment map (``GP_JOB_*``, ``S3_ROOT``…; ../shared/CONTRACTS.md has the whole contract). This
module turns that into a :class:`~gpstage.spec.JobSpec` and the ``exec.sh`` the entry runs: tasklib,
working dir and metadata dir (``GP_JOB_METADATA_DIR``, a sibling ``<n>.meta`` in the newest server;
``<workdir>/.gp_metadata`` when absent), and for inputs exactly the FILES the module's argv (and its
stdin) name — each parent dir staged with an ``include`` list, never a user's whole uploads dir.
``exec.sh`` holds only ``cd``, the argv quoted and the stdin redirect: the entry records stdout, stderr
and ``exit_code.txt`` itself (GenePattern's own script wrote those redirections into it).
"""

from __future__ import annotations

import os
import shlex
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from gpstage.errors import BadInput
from gpstage.spec import LEGACY_METADATA_SUBDIR, JobSpec, Role

WALLTIME_DEFAULT_S = 14_400  # GenePattern's default run limit
WALLTIME_RANGE_S = (60, 604_800)  # outside it GenePattern uses the default
USAGE = "TASKLIB WORKDIR JOBDEF JOBNAME INPUTSDIR MODULE_ARGV..."


@dataclass
class SubmitCall:
    """The server's arguments and environment map, as given."""

    tasklib: str
    workdir: str
    jobdef: str
    jobname: str
    inputs_dir: str
    argv: list[str]
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, args: list[str], env: Mapping[str, str]) -> SubmitCall:
        if len(args) < 6:
            raise BadInput(f"submit needs {USAGE}; got {len(args)} argument(s)",
                           "call it as the GenePattern server does (its AWS Batch job runner)")
        tasklib, workdir, jobdef, jobname, inputs_dir, *argv = args
        for what, path in (("TASKLIB", tasklib), ("WORKDIR", workdir)):
            if not os.path.isabs(path):
                raise BadInput(f"{what} {path!r} is not an absolute path", "the server passes absolute paths")
        return cls(_norm(tasklib), _norm(workdir), jobdef, jobname, inputs_dir, argv, env)

    @property
    def gp_job_id(self) -> str:
        """GP_JOB_ID, else the number in JOBNAME (``GP_Job_<n>``), else JOBNAME."""
        return self.env.get("GP_JOB_ID") or self.jobname.removeprefix("GP_Job_") or "job"

    @property
    def metadata_dir(self) -> str:
        given = self.env.get("GP_JOB_METADATA_DIR", "").strip()
        return _norm(given) if given else os.path.join(self.workdir, LEGACY_METADATA_SUBDIR)

    @property
    def stdin_file(self) -> str | None:
        return self.env.get("GP_STDIN_FILE", "").strip() or None


def new_job_id(call: SubmitCall) -> str:
    """``gp-<GP_JOB_ID>-<nonce>``: a resubmitted job (same GP_JOB_ID) gets a new id."""
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in call.gp_job_id)[:80]
    return f"gp-{safe}-{uuid.uuid4().hex[:8]}"


def walltime(value: str | None) -> int:
    """GenePattern's rule: the default when unset, unparsable or outside 60..604,800 s."""
    try:
        seconds = int(float(value or ""))
    except ValueError:
        return WALLTIME_DEFAULT_S
    low, high = WALLTIME_RANGE_S
    return seconds if low <= seconds <= high else WALLTIME_DEFAULT_S


def _positive(value: str | None, kind: type = float) -> float | int | None:
    try:
        number = kind(float(value or ""))
    except ValueError:
        return None
    return number if number > 0 else None


def input_files(call: SubmitCall) -> dict[str, list[str]]:
    """Parent dir → names of the files the module's argv and stdin name, outside the job's own dirs.
    An argument names a file when it is an existing file's absolute path, or ends with one after a
    flag (``-i/path``, ``--in=/path``)."""
    own = (call.workdir, call.tasklib, call.metadata_dir)
    found: dict[str, list[str]] = {}
    for arg in [*call.argv, *([call.stdin_file] if call.stdin_file else [])]:
        path = _file_in(arg)
        if path is None or any(path == d or path.startswith(d + "/") for d in own):
            continue
        parent, name = os.path.split(path)
        names = found.setdefault(parent, [])
        if name not in names:
            names.append(name)
    for mount in (m for m in call.env.get("GP_JOB_DOCKER_BIND_MOUNTS", "").split(":") if m.strip()):
        d = _norm(mount.strip())
        if os.path.isabs(d) and not any(d == o or d.startswith(o + "/") or o.startswith(d + "/") for o in own):
            found.setdefault(d, [])  # mounted in the server's containers: the dir exists in ours too
    return found


def _file_in(arg: str) -> str | None:
    for i, ch in enumerate(arg):
        if ch == "/" and (i == 0 or arg[i - 1] in "=:-" or arg[:i].startswith("-")):
            candidate = os.path.normpath(arg[i:])
            if os.path.isfile(candidate):
                return candidate
            if i == 0:
                return None
    return None


def _norm(path: str) -> str:
    return os.path.normpath(path.strip()) if path.strip() else path


def exec_script(call: SubmitCall) -> str:
    """``exec.sh``: cd to the working dir, the module's argv each quoted, stdin if it has one."""
    line = " ".join(shlex.quote(a) for a in call.argv)
    if call.stdin_file:
        line += f" < {shlex.quote(call.stdin_file)}"
    return f"#!/bin/bash\n# written by gpstage's GenePattern submit script for job {call.gp_job_id}\n" \
           f"cd {shlex.quote(call.workdir)} || exit 125\n{line}\n"


def build_spec(call: SubmitCall, job_id: str, storage_root: str) -> JobSpec:
    """The job: its own dirs, the named input files (``include``), image, resources and module."""
    if not call.argv:
        raise BadInput("the submit call names no module command", f"call it with {USAGE}")
    dirs: list[dict[str, object]] = [{"role": Role.WORKDIR.value, "path": call.workdir},
                                     {"role": Role.METADATA.value, "path": call.metadata_dir}]
    if os.path.isdir(call.tasklib):
        dirs.append({"role": Role.TASKLIB.value, "path": call.tasklib})
    inputs = input_files(call)
    for parent in sorted(inputs):
        if any(PurePosixPath(parent).is_relative_to(other) for other in inputs if other != parent):
            continue  # a dir inside another input dir: staged with it (its files are included there)
        names = [os.path.relpath(os.path.join(p, n), parent) for p, ns in inputs.items()
                 if PurePosixPath(p).is_relative_to(parent) for n in ns]
        dirs.append({"role": Role.INPUTS.value, "path": parent, "include": names})
    env = call.env
    module = {k: v for k, v in (("name", env.get("GP_MODULE_NAME")), ("lsid", env.get("GP_MODULE_LSID"))) if v}
    resources = {"time_s": walltime(env.get("GP_JOB_WALLTIME_SEC")), "cpus": _positive(env.get("GP_JOB_CPU_COUNT")),
                 "memory_mib": _positive(env.get("GP_JOB_MEMORY_MB"), int)}
    return JobSpec.model_validate({
        "job_id": job_id, "storage_root": storage_root, "dirs": dirs,
        "executable": os.path.join(call.metadata_dir, "exec.sh"),
        "image": env.get("GP_JOB_DOCKER_IMAGE") or None,
        "resources": {k: v for k, v in resources.items() if v is not None},
        **({"module": module} if module else {}),
    })
