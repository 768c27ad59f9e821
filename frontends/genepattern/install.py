"""Writing the drop-in job-runner scripts a GenePattern server calls (docs/genepattern-server.md).

Each script is three lines of ``/bin/sh``: it runs this package with absolute paths to the interpreter,
the settings file and the state dir written in, because the server REPLACES the environment of every
call (no PATH, no HOME, no credentials — those come by reference from the settings file's storage
profiles). Files are written 0755 through a temporary file and a rename, so the server never runs a
half-written script; ``uninstall`` removes only files that say gpstage wrote them.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path

from gpstage.errors import BadInput

MARK = "# gpstage drop-in for GenePattern"
# script name (the server's defaults) → the call it makes (frontends/genepattern/cli.py)
SCRIPTS = {
    "runOnBatch-v0.4.sh": "submit",  # aws-batch-script
    "runOnBatch.sh": "submit",  # the older runner's name
    "awsCheckStatus.sh": "status",  # aws-batch-check-status-script
    "awsSyncDirectory.sh": "sync",  # aws-batch-synch-script
    "awsCancelJob.sh": "cancel",  # aws-batch-cancel-job-script
    "awsPostJobDelete.sh": "delete",  # postJobDeleteScript
    "run-with-docker.sh": "run-with-docker",  # the local executor's job.commandPrefix
}


def script_text(name: str, call: str, config: Path, state_dir: Path, launcher: str, root: str | None,
                env: dict[str, str]) -> str:
    argv = [sys.executable, "-I", "-m", "frontends.genepattern", "--config", str(config), "--state-dir", str(state_dir),
            "--launcher", launcher, *(["--storage-root", root] if root else []), call]
    home = os.environ.get("HOME", "/")
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    return (f"#!/bin/sh\n{MARK}'s {name} ({call}); written by `gpstage-genepattern install-scripts`.\n"
            f": \"${{HOME:={home}}}\" \"${{PATH:=/usr/local/bin:/usr/bin:/bin}}\"; export HOME PATH\n{exports}"
            f"exec {' '.join(shlex.quote(a) for a in argv)} \"$@\"\n")


def parse_env(pairs: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` settings every call gets (an endpoint, a region, DOCKER_HOST, or a REFERENCE to
    credentials such as AWS_SHARED_CREDENTIALS_FILE or AWS_PROFILE); a variable that holds a secret
    itself is refused — it would sit in a script anyone who can read it sees."""
    from gpstage.credentials import SECRET_ENV_NAMES
    from gpstage.profiles import credential_env_names

    env = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name.replace("_", "").isalnum():
            raise BadInput(f"--env {pair!r} is not NAME=VALUE", "write it as NAME=VALUE, e.g. AWS_REGION=us-east-1")
        env[name] = value
    secret = sorted(k for k in env if k.upper() in SECRET_ENV_NAMES or k in credential_env_names())
    if secret:
        raise BadInput(f"--env {', '.join(secret)}: a secret never goes into a script",
                       "reference it instead: a storage profile's key_file / aws_profile / *_env, or a credentials "
                       "file's path (AWS_SHARED_CREDENTIALS_FILE)")
    return env


def install(directory: Path, config: Path, state_dir: Path, launcher: str, storage_root: str | None,
            env: dict[str, str] | None = None) -> list[Path]:
    """Write every script into ``directory``; returns their paths."""
    from gpstage.launching import LAUNCHERS

    if launcher not in LAUNCHERS:
        raise BadInput(f"unknown launcher {launcher!r}", f"use one of: {', '.join(LAUNCHERS.names())}")
    if not config.is_file():
        raise BadInput(f"settings file {config} does not exist", "create it (it may be empty) or pass --config")
    directory.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, call in SCRIPTS.items():
        text = script_text(name, call, config.resolve(), state_dir.resolve(), launcher, storage_root, env or {})
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o755)
            os.replace(tmp, directory / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(directory / name)
    return written


def uninstall(directory: Path) -> list[Path]:
    """Remove the scripts gpstage wrote (a file of the same name that is not ours is left alone)."""
    removed = []
    for name in SCRIPTS:
        path = directory / name
        try:
            if MARK in path.read_text(errors="replace")[:300]:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue
    return removed
