"""The apptainer (or singularity) command on this host, as the apptainer runner and the SIF cache call it:
which binary (``GPSTAGE_APPTAINER``, a path, else ``apptainer`` on PATH, else ``singularity``), the
environment apptainer ITSELF runs with (a few host variables and the operator's ``APPTAINER_*`` /
``SINGULARITY_*`` settings, never the job's), the prefix that forwards a variable into the container
(``APPTAINERENV_`` or ``SINGULARITYENV_``), and apptainer's messages reduced to one line for an error.
Standard library only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from gpstage.errors import BadInput

# the apptainer process's own environment: these, and the operator's APPTAINER_*/SINGULARITY_* settings
HOST_ENV = ("PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "LANG", "LC_ALL", "TZ", "DOCKER_HOST", "DOCKER_CONFIG",
            "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "XDG_RUNTIME_DIR")


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


def apptainer_env(base: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """apptainer's OWN environment: a few host variables and the operator's APPTAINER_*/SINGULARITY_*
    settings — never ``*ENV_*`` forwards, which would reach the module."""
    env = {k: v for k, v in base.items() if k in HOST_ENV or (
        k.startswith(("APPTAINER_", "SINGULARITY_")) and not k.startswith(("APPTAINERENV_", "SINGULARITYENV_")))}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return env


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


def one_line(output: str, limit: int = 300) -> str:
    """The line of apptainer's output that says what went wrong (its last FATAL/ERROR), for a message."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    fatal = [ln for ln in lines if ln.startswith(("FATAL", "ERROR"))]
    line = re.sub(r"\s+", " ", (fatal or lines or ["no output"])[-1])
    return line if len(line) <= limit else line[: limit - 1] + "…"
