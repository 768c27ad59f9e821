"""GenePattern's runS3OnBatch.sh argument contract, turned into a job spec.

``TASKLIB INPUT_FILES_DIR S3_ROOT WORKING_DIR EXECUTABLE`` with ``GP_METADATA_DIR`` (default
``$WORKING_DIR/.gp_metadata``) from the environment. Each dir lives at ``S3_ROOT`` + its absolute
path, as today; S3_ROOT may be any storage URL gpstage knows. Unlike the original script, only
leading and trailing whitespace is trimmed, so paths with spaces work (GP-8983, GP-9552).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from pydantic import ValidationError

from gpstage.errors import BadInput
from gpstage.spec import LEGACY_METADATA_SUBDIR, JobSpec, format_validation_error

LEGACY_ARGS = ("TASKLIB", "INPUT_FILES_DIR", "S3_ROOT", "WORKING_DIR", "EXECUTABLE")
USAGE = "gpstage-entry " + " ".join(LEGACY_ARGS)


def spec_from_legacy(args: Sequence[str], env: Mapping[str, str]) -> JobSpec:
    """The job spec equivalent to a runS3OnBatch.sh call."""
    if len(args) != len(LEGACY_ARGS):
        raise BadInput(f"legacy mode takes {len(LEGACY_ARGS)} arguments, got {len(args)}",
                       f"call `{USAGE}`, or `gpstage-entry --spec URL`")
    tasklib, inputs, root, workdir, executable = (a.strip() for a in args)
    for name, value in zip(LEGACY_ARGS, (tasklib, inputs, root, workdir, executable), strict=True):
        if not value:
            raise BadInput(f"legacy argument {name} is empty", f"call `{USAGE}` with every argument set")
    workdir = _absolute(workdir, "WORKING_DIR")
    metadata = _absolute(env.get("GP_METADATA_DIR", "").strip() or f"{workdir}/{LEGACY_METADATA_SUBDIR}", "GP_METADATA_DIR")
    dirs = [{"role": "workdir", "path": workdir}, {"role": "metadata", "path": metadata}]
    for role, path, name in (("tasklib", tasklib, "TASKLIB"), ("inputs", inputs, "INPUT_FILES_DIR")):
        path = _absolute(path, name)
        if path not in (d["path"] for d in dirs):  # GenePattern may pass the working dir twice
            dirs.append({"role": role, "path": path})
    data = {
        "job_id": _job_id(env, workdir),
        "storage_root": root,
        "dirs": dirs,
        "executable": executable if os.path.isabs(executable) else os.path.normpath(os.path.join(workdir, executable)),
    }
    try:
        return JobSpec.model_validate(data)
    except ValidationError as err:
        raise BadInput(format_validation_error(err, "legacy arguments"), f"usage: {USAGE}") from None


def _absolute(path: str, name: str) -> str:
    if not os.path.isabs(path):
        raise BadInput(f"{name} {path!r} is not an absolute path", "GenePattern passes absolute paths; so must you")
    return os.path.normpath(path)


def _job_id(env: Mapping[str, str], workdir: str) -> str:
    """AWS Batch's job id when there is one, else the working dir's name (GenePattern's job number)."""
    for candidate in (env.get("AWS_BATCH_JOB_ID", ""), os.path.basename(workdir)):
        cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", candidate).strip("-._")[:128]
        if cleaned:
            return cleaned
    return "job"
