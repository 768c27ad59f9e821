"""Tasks as gpstage jobs: create, get, list and cancel them, deliver their outputs, forget them in time.

A task is a job record (its launcher's, in ``$GPSTAGE_STATE_DIR``) plus a task document beside it,
``<state dir>/tes/<id>.json``: the task as submitted and the delivery of its outputs. Both outlive the
server process, so a restarted server — or another one on the same state dir — serves every task, and a
cancel works from any of them. One background pass (:meth:`TaskService.refresh`) refreshes live tasks
from their backends, delivers the outputs of the ones that ended, and cleans those kept longer than
``keep_for`` (their record, their dirs and prefix on storage, their task document).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from frontends.tes.mapping import new_task_id, task_state, to_spec
from frontends.tes.models import TesExecutorLog, TesState, TesTask, TesTaskLog
from gpstage.aio import run_sync
from gpstage.errors import BadInput, GpstageError
from gpstage.jobfiles import read_entry_status
from gpstage.launching import get_launcher, launcher_for
from gpstage.records import JobRecord, Owner, RecordStore
from gpstage.spec import JobSpec
from gpstage.stage import check_storage
from gpstage.statedir import state_dir


class UnknownTask(LookupError):
    """No task of that id on this server (never created, or cleaned after ``keep_for``)."""
PAGE_SIZE, PAGE_MAX = 256, 2048


class TesSettings(BaseModel):
    """``[tes]`` in the settings file (docs/tes.md)."""

    model_config = ConfigDict(extra="forbid")

    launcher: str = Field("local", description="the launcher every task goes to")
    launcher_settings: dict[str, Any] = Field(default_factory=dict, description="over [launchers.<launcher>]")
    runner: str | None = Field(None, description="where executors run (default: docker, or the launcher's own "
                               "for launchers that start the task's image)")
    storage_root: str = Field("nfs:///", description="each task's dirs live under it, at their own prefix")
    work_root: str | None = Field(None, description="the tasks' dirs on this side; default <state dir>/tes/work")
    allow: list[str] | None = Field(None, description="URL prefixes inputs and outputs may use; default: the "
                                    "storage root, the storage profiles' prefixes and file:// of the work root")
    keep_for: float = Field(7 * 86400, ge=0, description="seconds a finished task is kept, then cleaned")
    poll_interval: float = Field(1.0, gt=0, description="seconds between background passes")
    max_request_bytes: int = Field(4 * 2**20, ge=256 * 1024, description="largest request body accepted")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TaskService:
    """What the HTTP layer calls; every method works from any process sharing the state dir."""

    def __init__(self, settings: TesSettings | None = None, store: RecordStore | None = None) -> None:
        self.settings = settings or TesSettings()
        self.store = store or RecordStore()
        self.dir = state_dir() / "tes"
        self.work_root = self.settings.work_root or str(self.dir / "work")
        self.launcher = get_launcher(self.settings.launcher, self.settings.launcher_settings, self.store)
        self.runner = self.settings.runner or self.launcher.settings.runner or "docker"
        if not self.launcher.runs_in_image(self.runner):
            raise BadInput(f"{self.settings.launcher}+{self.runner} cannot run a task's executors in their images",
                           "use runner = \"docker\" or \"apptainer\", or a launcher that starts the image (batch, docker "
                           "with runner = \"process\")")
        self.allow = self.settings.allow if self.settings.allow is not None else self._default_allow()
        self._lock = threading.Lock()

    def _default_allow(self) -> list[str]:
        from gpstage.profiles import load_profiles

        return sorted({self.settings.storage_root, *load_profiles(), f"file://{self.work_root}"})

    # ---- the API ------------------------------------------------------------------------------
    def create(self, task: TesTask) -> str:
        """Check, record and submit ``task``; returns its id once it is recorded (staging goes on in a thread)."""
        task_id = new_task_id()
        spec, placement = to_spec(task, task_id, storage_root=self.settings.storage_root, work_root=self.work_root,
                                  allow=self.allow, runner=self.runner)
        if self.runner == "process" and len({e.image for e in task.executors}) > 1:
            raise BadInput(f"{self.settings.launcher}+process runs every executor in one image, and the task names "
                           f"{len({e.image for e in task.executors})}", "use one image, or a docker/apptainer runner")
        self.launcher.check(spec, self.runner)
        check_storage(spec)  # unknown schemes, missing input sources: before anything is recorded
        task = task.model_copy(update={"id": task_id, "state": None, "logs": None, "creation_time": now_iso()})
        self._save(task_id, {"task": task.model_dump(mode="json", exclude_none=True),
                             "submitter": Owner.current().model_dump(mode="json")})
        threading.Thread(target=self._submit, args=(task_id, spec, placement), daemon=True,
                         name=f"tes-submit-{task_id}").start()
        return task_id

    def _submit(self, task_id: str, spec: JobSpec, placement: Any) -> None:
        from gpstage.sync import async_sync

        try:
            for d in spec.dirs:  # a mount with nothing to stage in (outputs, volumes) still exists, empty
                os.makedirs(d.path, exist_ok=True)
            for path, text in placement.contents.items():
                os.makedirs(os.path.dirname(path), exist_ok=True)
                Path(path).write_text(text, encoding="utf-8")
            for src, dst in placement.directories:
                run_sync(async_sync(src, dst))
            if self._load(task_id).get("cancel_requested"):
                self._update(task_id, cancelled=True, finished_at=now_iso())
                return
            self.launcher.submit(spec)
        except Exception as err:  # noqa: BLE001 - recorded on the task: SYSTEM_ERROR with the reason
            self._update(task_id, submit_error=str(err) if isinstance(err, GpstageError) else f"{type(err).__name__}: {err}")

    def get(self, task_id: str, view: str = "MINIMAL") -> dict[str, Any]:
        return self._view(self._load(task_id), view)

    def list(self, *, name_prefix: str | None = None, state: str | None = None, page_size: int | None = None,
             page_token: str | None = None, view: str = "MINIMAL") -> dict[str, Any]:
        size = min(page_size or PAGE_SIZE, PAGE_MAX)
        start = _offset(page_token)
        docs = sorted((d for d in self._all() if not name_prefix or (d["task"].get("name") or "").startswith(name_prefix)),
                      key=lambda d: (d["task"]["creation_time"], d["task"]["id"]), reverse=True)
        tasks = [self._view(d, view) for d in docs]
        if state:
            tasks = [t for t in tasks if t.get("state") == state]
        page = tasks[start:start + size]
        out: dict[str, Any] = {"tasks": page}
        if start + size < len(tasks):
            out["next_page_token"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return out

    def cancel(self, task_id: str) -> None:
        """Ask the task's job to stop; returns at once (the state says CANCELING until it ended)."""
        doc = self._load(task_id)
        if doc.get("submit_error"):
            return
        try:
            record = self.store.load(task_id)
        except GpstageError:  # not recorded yet: the submit thread sees the request when it records
            self._update(task_id, cancel_requested=True)
            return
        if not record.state.terminal:
            launcher = launcher_for(task_id, self.store)
            self.store.update(task_id, lambda r: setattr(r, "cancel_requested", True))
            threading.Thread(target=launcher.cancel, args=(task_id,), daemon=True).start()

    # ---- the background pass ---------------------------------------------------------------------
    def refresh(self) -> None:
        """Refresh live tasks, deliver the outputs of ended ones, clean the expired ones."""
        from frontends.tes.outputs import deliver

        for doc in self._all():
            task_id = doc["task"]["id"]
            if doc.get("finished_at"):
                if _age(doc["finished_at"]) > self.settings.keep_for:
                    self._forget(task_id)
                continue
            if doc.get("submit_error"):
                self._update(task_id, finished_at=now_iso())
                continue
            try:
                record = launcher_for(task_id, self.store).status(task_id)
            except GpstageError:  # not recorded yet: its submitter is placing the inputs — or died doing so
                submitter = doc.get("submitter")
                if submitter and not Owner.model_validate(submitter).alive():
                    self._update(task_id, submit_error=f"the server that took the task ({Owner.model_validate(submitter)}) "
                                 "stopped before it was submitted; submit it again", finished_at=now_iso())
                continue
            if not record.state.terminal:
                continue
            fields: dict[str, Any] = {"finished_at": now_iso()}
            if record.state.value == "SUCCEEDED":
                try:
                    logs = deliver(record.spec, TesTask.model_validate(doc["task"]).outputs or [])
                    fields |= {"delivered": True, "outputs": [o.model_dump() for o in logs]}
                except GpstageError as err:
                    fields |= {"delivered": False, "delivery_error": str(err)}
            self._update(task_id, **fields)

    def _forget(self, task_id: str) -> None:
        try:
            launcher_for(task_id, self.store).clean(task_id)
        except GpstageError:
            pass  # never recorded, or already cleaned
        shutil.rmtree(Path(self.work_root) / task_id, ignore_errors=True)
        (self.dir / f"{task_id}.json").unlink(missing_ok=True)

    # ---- documents ---------------------------------------------------------------------------------
    def _view(self, doc: dict[str, Any], view: str) -> dict[str, Any]:
        task = TesTask.model_validate(doc["task"])
        record = self._record(task.id or "")
        if doc.get("cancelled"):
            state = TesState.CANCELED
        elif doc.get("submit_error"):
            state = TesState.SYSTEM_ERROR
        elif record is None:
            state = TesState.CANCELING if doc.get("cancel_requested") else TesState.INITIALIZING
        else:
            state = task_state(record, doc.get("delivered"), doc.get("delivery_error"))
        task.state = state
        if view != "MINIMAL":
            task.logs = [self._log(doc, record)]
        return task.view(view)

    def _log(self, doc: dict[str, Any], record: JobRecord | None) -> TesTaskLog:
        system = [m for m in (doc.get("submit_error"), doc.get("delivery_error")) if m]
        if record is None:
            return TesTaskLog(system_logs=system)
        status = read_entry_status(record.spec) if record.state.terminal or record.started_at else None
        executors = [TesExecutorLog(start_time=e.get("start_time"), end_time=e.get("end_time"), stdout=e.get("stdout"),
                                    stderr=e.get("stderr"), exit_code=e.get("exit_code", -1))
                     for e in (status.executors if status else [])]
        if record.message and record.state.value in ("ERROR", "CANCELLED"):
            system.append(f"{record.state.value}: {record.message}")
        return TesTaskLog(logs=executors, start_time=_iso(record.started_at), end_time=_iso(record.ended_at),
                          outputs=doc.get("outputs") or [], system_logs=system or None,
                          metadata={"gpstage_job_id": record.job_id, "launcher": record.launcher, "runner": record.runner})

    def _record(self, task_id: str) -> JobRecord | None:
        try:
            return self.store.load(task_id)
        except GpstageError:
            return None

    def _load(self, task_id: str) -> dict[str, Any]:
        path = self.dir / f"{task_id}.json"
        if "/" in task_id or not path.is_file():
            raise UnknownTask(task_id)
        return json.loads(path.read_text())

    def _all(self) -> list[dict[str, Any]]:
        out = []
        for p in self.dir.glob("*.json") if self.dir.is_dir() else ():
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError):
                continue  # being replaced, or removed meanwhile
        return out

    def _save(self, task_id: str, doc: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{task_id}.json.tmp"
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.dir / f"{task_id}.json")

    def _update(self, task_id: str, **fields: Any) -> None:
        with self._lock:
            doc = self._load(task_id)
            doc.update(fields)
            self._save(task_id, doc)


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        return max(0, int(base64.urlsafe_b64decode(token.encode()).decode()))
    except ValueError:
        raise BadInput(f"page_token {token!r} is not one this server gave", "pass next_page_token as returned") from None


def _age(iso: str) -> float:
    return (datetime.now(timezone.utc) - datetime.fromisoformat(iso.replace("Z", "+00:00"))) / timedelta(seconds=1)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
