"""The entry's settings: command-line flags over environment variables over defaults.

Environment names follow GenePattern's runS3OnBatch.sh where it has one (``STDOUT_FILENAME``,
``STDERR_FILENAME``, ``EXITCODE_FILENAME``, ``GP_METADATA_DIR``), so existing job definitions keep
working; gpstage's own settings are ``GPSTAGE_*``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from gpstage.errors import BadInput
from gpstage.jobfiles import EXITCODE_NAME, STDERR_NAME, STDOUT_NAME

PRERUN_SCRIPT = "/usr/local/bin/runS3Batch_prerun_custom.sh"
POSTRUN_SCRIPT = "/usr/local/bin/runS3Batch_postrun_custom.sh"


@dataclass(frozen=True)
class EntrySettings:
    stdout_name: str = STDOUT_NAME  # relative names are inside the metadata dir
    stderr_name: str = STDERR_NAME
    exitcode_name: str = EXITCODE_NAME
    prerun_script: str = PRERUN_SCRIPT  # sourced (its exports reach the module) if it exists
    postrun_script: str = POSTRUN_SCRIPT
    log_push_interval: float = 30.0  # seconds between pushes of the metadata dir while the module runs; 0: never
    kill_grace: float = 10.0  # seconds between TERM and KILL at the time limit
    jobs: int | None = None  # parallel transfers per dir (None: the sync engine's default)
    quiet: bool = False  # do not echo the entry log to stderr
    # Wrapper mode (docker runner inside a container): a dir of the DOCKER HOST, mounted at the same path in
    # the entry's container, under which each staged dir P lives at ROOT + P (docs/wrapper-mode.md).
    staging_root: str | None = None
    # After a successful run, commit the module image with TASKLIB and libraries and push it here:
    # REGISTRY/REPO:TAG, or REGISTRY/REPO (tag from the module version) or REGISTRY/NS/ (name too).
    commit_tag: str | None = None
    cancel_poll_interval: float = 0.0  # seconds between looks for a cancel request on storage; 0: never

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: object) -> EntrySettings:
        """Read ``env``; ``overrides`` (flags given on the command line) win over it."""
        values: dict[str, object] = {
            "stdout_name": env.get("STDOUT_FILENAME") or cls.stdout_name,
            "stderr_name": env.get("STDERR_FILENAME") or cls.stderr_name,
            "exitcode_name": env.get("EXITCODE_FILENAME") or cls.exitcode_name,
            "prerun_script": env.get("GPSTAGE_PRERUN_SCRIPT") or cls.prerun_script,
            "postrun_script": env.get("GPSTAGE_POSTRUN_SCRIPT") or cls.postrun_script,
            "log_push_interval": _number(env, "GPSTAGE_LOG_PUSH_INTERVAL", cls.log_push_interval),
            "kill_grace": _number(env, "GPSTAGE_KILL_GRACE", cls.kill_grace),
            "jobs": int(_number(env, "GPSTAGE_JOBS", 0)) or None,
            "staging_root": env.get("GPSTAGE_STAGING_ROOT") or None,
            "commit_tag": env.get("GPSTAGE_COMMIT_TAG") or None,
            "cancel_poll_interval": _number(env, "GPSTAGE_CANCEL_POLL_INTERVAL", cls.cancel_poll_interval),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        root = values["staging_root"]
        if root is not None and (not isinstance(root, str) or not os.path.isabs(root) or root.rstrip("/") == ""):
            raise BadInput(f"GPSTAGE_STAGING_ROOT={root!r} must be an absolute path other than /",
                           "point it at the docker host's staging dir, mounted at the same path in this container")
        if isinstance(root, str):
            values["staging_root"] = os.path.normpath(root)
        return cls(**values)  # type: ignore[arg-type]

    def in_metadata(self, metadata_dir: str, name: str) -> str:
        return name if os.path.isabs(name) else os.path.join(metadata_dir, name)


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadInput(f"{name}={raw!r} is not a number", f"set {name} to a number of seconds (or unset it)") from None
    if value < 0:
        raise BadInput(f"{name}={raw!r} is negative", f"set {name} to 0 or more")
    return value
