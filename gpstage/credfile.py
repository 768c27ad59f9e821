"""The one credentials file: how a launcher hands storage credentials to an entry it starts elsewhere.

An environment is something an operator can inspect — ``docker inspect``, ``scontrol show job``, a
Batch job's description — so launchers that start the entry in a container or on another node never
put a credential there (docs/design.md §11). They gather the submitter's credentials into ONE JSON
file, mode 0600, delivered beside the job (bind-mounted read-only, copied into the created container,
or on the shared file system) and named by ``GPSTAGE_CREDENTIALS_FILE``, a path. The entry reads it
into its own process (:func:`load`) and never passes what it read to a child.

What it carries: every credential variable of the storage SDKs and of the storage profiles
(:mod:`gpstage.credentials`), and the CONTENT of the credential files such variables name (a Google
service-account key, AWS's shared credentials and config files), which :func:`load` writes back to
private files on the entry's side.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, MutableMapping
from typing import Any

from gpstage.credentials import is_credential
from gpstage.errors import BadInput

ENV_NAME = "GPSTAGE_CREDENTIALS_FILE"
# Variables that name a file of credentials: the file's content travels, not its path.
FILE_VARIABLES = ("GOOGLE_APPLICATION_CREDENTIALS", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")
AWS_DEFAULT_FILES = {"AWS_SHARED_CREDENTIALS_FILE": "~/.aws/credentials", "AWS_CONFIG_FILE": "~/.aws/config"}


def split(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``env`` as (the credential variables — the SDKs' and the storage profiles' — , everything else):
    what a credentials file carries, and what may go into an environment an operator can inspect."""
    from gpstage.profiles import credential_env_names

    names = credential_env_names()
    secret, rest = {}, {}
    for k, v in env.items():
        (secret if (is_credential(k) or k in names) and k != ENV_NAME else rest)[k] = v
    return secret, rest


def gather(env: Mapping[str, str]) -> dict[str, Any]:
    """The credentials in ``env`` (and the files it names) as the file's document; empty when none."""
    values = split(env)[0]
    files = {}
    for var in FILE_VARIABLES:
        path = values.pop(var, None)
        if path is None and var in AWS_DEFAULT_FILES and ("AWS_PROFILE" in values or "AWS_DEFAULT_PROFILE" in values):
            path = os.path.expanduser(AWS_DEFAULT_FILES[var])  # a profile from the default files
            if not os.path.isfile(path):
                continue
        if path is not None:
            try:
                with open(os.path.expanduser(path), encoding="utf-8") as f:
                    files[var] = f.read()
            except FileNotFoundError:
                continue  # as the SDKs do: a credentials file that is not there holds nothing
            except OSError as err:
                raise BadInput(f"{var}={path} cannot be read ({err.strerror})",
                               f"fix {var}, or unset it") from None
    return {"version": 1, "env": values, "files": files} if values or files else {}


def write(path: str, doc: Mapping[str, Any]) -> None:
    """Store ``doc`` at ``path``, readable by its owner only from the first byte on."""
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def load(path: str, environ: MutableMapping[str, str]) -> frozenset[str]:
    """Put the file's credentials into ``environ`` (the entry's own process) and return the names set,
    which the entry keeps from every child. Files travel back to a private dir removed at exit."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        values, files = dict(doc["env"]), dict(doc["files"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BadInput(f"{ENV_NAME}={path}: not a readable gpstage credentials file ({err})",
                       "check the launcher's credentials delivery (docs/design.md §11)") from None
    if files:
        private = tempfile.mkdtemp(prefix="gpstage-credentials-")  # 0700
        atexit.register(shutil.rmtree, private, True)
        for var, content in files.items():
            target = os.path.join(private, var.lower())
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(content)
            values[var] = target
    environ.update(values)
    return frozenset(values)
