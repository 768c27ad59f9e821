"""The module's environment, and the scripts and hooks that run around it.

GenePattern SOURCES ``runS3Batch_prerun_custom.sh`` in the shell that then runs the module, so what
it exports reaches the module. The entry reproduces that by sourcing the script in bash and reading
back the exported environment. Credentials the entry used for storage are removed from what the
module sees (docs/design.md §11); operator scripts (custom pre/post-run) keep them, as they sync data.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping

from container_entry.bundle import entry_only_variables, module_bash
from container_entry.record import EntryLog
from gpstage.credentials import without_credentials
from gpstage.errors import GpstageError
from gpstage.spec import JobSpec, Role

# Variables bash itself sets or changes; a sourced script "exporting" them means nothing.
_SHELL_NOISE = frozenset({"SHLVL", "PWD", "OLDPWD", "_"})
# Registry credentials by reference (commit and push): the entry's, never the module's.
_REGISTRY_CREDENTIALS = frozenset({"DOCKER_CONFIG", "DOCKER_AUTH_CONFIG", "REGISTRY_AUTH_FILE"})


class StepFailed(GpstageError):
    """A hook or custom script failed: the job cannot be trusted to run (or to have finished) correctly."""


def module_variables(spec: JobSpec) -> dict[str, str]:
    """The GenePattern variables a module may read."""
    out = {"GP_METADATA_DIR": spec.metadata_dir, "WORKING_DIR": spec.workdir}
    for role, name in ((Role.TASKLIB, "TASKLIB"), (Role.INPUTS, "INPUT_FILES_DIR")):
        d = next((d for d in spec.dirs if d.role is role), None)
        if d:
            out[name] = d.path
    return out


def script_variables(spec: JobSpec, outputs: Mapping[str, str]) -> dict[str, str]:
    """What runS3OnBatch.sh's own shell held when it sourced the custom scripts."""
    return {**module_variables(spec), "S3_ROOT": spec.storage_root, "EXECUTABLE": spec.executable_path,
            "STDOUT_FILENAME": outputs["stdout"], "STDERR_FILENAME": outputs["stderr"],
            "EXITCODE_FILENAME": outputs["exitcode"]}


def module_environment(base: Mapping[str, str], exported: Mapping[str, str | None], spec: JobSpec) -> dict[str, str]:
    """``base`` + what the pre-run script exported (None: it unset it), without credentials, + the
    spec's ``env`` + GenePattern's variables."""
    env = dict(base)
    for k, v in exported.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return {**_without_credentials(env), **spec.env, **module_variables(spec)}


def job_environment(exported: Mapping[str, str | None], spec: JobSpec) -> dict[str, str]:
    """Only the job's own variables, for a module in a container (its image brings PATH, HOME, ...)."""
    exports = {k: v for k, v in exported.items() if v is not None}
    return {**_without_credentials(exports), **spec.env, **module_variables(spec)}


def _without_credentials(env: Mapping[str, str]) -> dict[str, str]:
    """Also without what the entry set for itself only (an entry bundle's CA file)."""
    from gpstage.profiles import credential_env_names

    named = credential_env_names() | _REGISTRY_CREDENTIALS | entry_only_variables()
    return {k: v for k, v in without_credentials(env).items() if k not in named}


def source_script(path: str, env: Mapping[str, str], cwd: str, log: EntryLog) -> dict[str, str | None]:
    """Source ``path`` in bash; return the variables it set (value) or unset (None). Output goes to the log."""
    with tempfile.TemporaryFile() as dump:
        fd = dump.fileno()
        code = _bash(["-c", f'source "$0" || exit $?; env -0 >&{fd}', path], env, cwd, log, pass_fds=(fd,))
        if code != 0:
            raise StepFailed(f"{path} exited {code} while being sourced", "fix the script; its output is in the entry log")
        dump.seek(0)
        after = dict(item.split("=", 1) for item in dump.read().decode(errors="surrogateescape").split("\0") if "=" in item)
    changed: dict[str, str | None] = {k: v for k, v in after.items() if env.get(k) != v and k not in _SHELL_NOISE}
    changed.update({k: None for k in env if k not in after and k not in _SHELL_NOISE})
    return changed


def run_hook(path: str, env: Mapping[str, str], cwd: str, log: EntryLog) -> None:
    """Run a spec hook with bash; a non-zero exit is a failed step."""
    if not os.path.isfile(path):
        raise StepFailed(f"hook {path} does not exist",
                         "fix hooks in the job spec or add the script to the image or a staged dir")
    code = _bash([path], env, cwd, log)
    if code != 0:
        raise StepFailed(f"hook {path} exited {code}", "fix the hook; its output is in the entry log")


def _bash(args: list[str], env: Mapping[str, str], cwd: str, log: EntryLog, pass_fds: tuple[int, ...] = ()) -> int:
    out = log.file
    if out:
        out.flush()
    proc = subprocess.run([module_bash(env), *args], env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, pass_fds=pass_fds,
                          stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT, check=False)
    return proc.returncode
