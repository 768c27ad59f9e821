"""What ``gpstage tes serve|export`` and ``gpstage run TASK.json`` call (gpstage's CLI finds this module by
import path, as it finds launchers, so ``gpstage`` never imports a front end)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from frontends.tes.models import TesFileType, TesState, TesTask
from gpstage.config import load_config
from gpstage.errors import BadInput
from gpstage.spec import JobSpec

FINAL = {TesState.COMPLETE, TesState.EXECUTOR_ERROR, TesState.SYSTEM_ERROR, TesState.CANCELED}


def settings(overrides: dict[str, Any] | None = None) -> Any:
    """``[tes]`` of the settings file, with command-line values on top."""
    from pydantic import ValidationError

    from frontends.tes.service import TesSettings
    from gpstage.config import config_path
    from gpstage.validation import format_validation_error

    table = load_config().get("tes", {})
    try:
        return TesSettings.model_validate({**table, **{k: v for k, v in (overrides or {}).items() if v is not None}})
    except ValidationError as err:
        raise BadInput(format_validation_error(err, "[tes] settings"), f"fix [tes] in {config_path()}") from None


def serve(host: str, port: int, launcher: str | None, token_file: str | None) -> None:
    from frontends.tes.server import serve as run_server
    from frontends.tes.service import TaskService

    token = None
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as err:
            raise BadInput(f"cannot read --token-file {token_file}: {err.strerror}", "give a readable file") from None
        if len(token) < 16:
            raise BadInput(f"the token in {token_file} is shorter than 16 characters", "use a long random token")
    run_server(host, port, TaskService(settings({"launcher": launcher})), token)


def export(spec: JobSpec) -> dict[str, Any]:
    """A gpstage job as a TES task: one executor (bash on the job's executable, in its image), every
    ``in`` dir a DIRECTORY input from its URL, every ``out`` dir a DIRECTORY output to its URL."""
    if not spec.image and not spec.executors:
        raise BadInput(f"job {spec.job_id} names no image, and a TES executor needs one", "set `image` in the spec")
    executors = ([{"image": e.image, "command": e.command, **e.model_dump(exclude_none=True, exclude={"image", "command"})}
                  for e in spec.executors] if spec.executors
                 else [{"image": spec.image, "command": ["bash", spec.executable_path], "workdir": spec.workdir,
                        "env": spec.env}])
    inputs = [{"url": spec.url_of(d), "path": d.mount_at or d.path, "type": TesFileType.DIRECTORY.value,
               "name": d.role.value} for d in spec.dirs if d.effective_direction.pushes_in]
    outputs = [{"url": spec.url_of(d), "path": d.mount_at or d.path, "type": TesFileType.DIRECTORY.value,
                "name": d.role.value} for d in spec.dirs if d.effective_direction.pulls_out]
    r = spec.resources
    resources = {k: v for k, v in {"cpu_cores": int(r.cpus + 0.999) if r.cpus else None,
                                   "ram_gb": r.memory_mib / 1024 if r.memory_mib else None}.items() if v is not None}
    task = {"name": (spec.module.name if spec.module and spec.module.name else spec.job_id), "executors": executors,
            "inputs": inputs, "outputs": outputs, "tags": {"gpstage_job_id": spec.job_id}}
    return task | ({"resources": resources} if resources else {})


def run_task(path: str, launcher: str | None, timeout: float | None) -> tuple[dict[str, Any], int]:
    """Run a TES task file as ``gpstage run`` does a spec: submit through a task service with the ``[tes]``
    settings, wait for the end (outputs delivered), return the FULL view and an exit code: 0 COMPLETE, the
    failing executor's code on EXECUTOR_ERROR, 125 SYSTEM_ERROR, 143 CANCELED, 124 on --timeout."""
    from frontends.tes.service import TaskService

    try:
        task = TesTask.model_validate(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as err:
        raise BadInput(f"TES task {path}: {str(err).splitlines()[0]}", "give a tesTask JSON document") from None
    service = TaskService(settings({"launcher": launcher}))
    task_id = service.create(task)
    deadline = None if timeout is None else time.monotonic() + timeout
    while TesState(service.get(task_id)["state"]) not in FINAL:
        if deadline is not None and time.monotonic() > deadline:
            return service.get(task_id, "FULL"), 124
        service.refresh()
        time.sleep(service.settings.poll_interval / 4)
    view = service.get(task_id, "FULL")
    state = TesState(view["state"])
    codes = [e.get("exit_code", 0) for log in view.get("logs", ()) for e in log.get("logs", ())]
    failing = next((c for c in codes if c), 1)
    return view, {TesState.COMPLETE: 0, TesState.EXECUTOR_ERROR: failing, TesState.CANCELED: 143}.get(state, 125)
