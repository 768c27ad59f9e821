"""The GA4GH TES 1.1 types (ga4gh/task-execution-schemas, openapi/task_execution_service.openapi.yaml) as
pydantic models: what a client posts and what the server answers. Unknown fields are ignored, as the
schema asks of servers; the ones gpstage cannot honour are refused by :mod:`frontends.tes.mapping`."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CONTENT_MAX = 128 * 1024  # TES: implementations support at least 128 KiB of input content


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class TesState(str, Enum):
    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    PREEMPTED = "PREEMPTED"
    CANCELING = "CANCELING"


class TesFileType(str, Enum):
    FILE = "FILE"
    DIRECTORY = "DIRECTORY"


class TesInput(_Model):
    name: str | None = None
    description: str | None = None
    url: str | None = None
    path: str
    type: TesFileType = TesFileType.FILE
    content: str | None = None
    streamable: bool | None = None


class TesOutput(_Model):
    name: str | None = None
    description: str | None = None
    url: str
    path: str
    path_prefix: str | None = None
    type: TesFileType = TesFileType.FILE


class TesResources(_Model):
    cpu_cores: int | None = None
    preemptible: bool | None = None
    ram_gb: float | None = None
    disk_gb: float | None = None
    zones: list[str] | None = None
    backend_parameters: dict[str, str] | None = None
    backend_parameters_strict: bool | None = None


class TesExecutor(_Model):
    image: str
    command: list[str]
    workdir: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: dict[str, str] | None = None
    ignore_error: bool | None = None


class TesExecutorLog(_Model):
    start_time: str | None = None
    end_time: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int


class TesOutputFileLog(_Model):
    url: str
    path: str
    size_bytes: str


class TesTaskLog(_Model):
    logs: list[TesExecutorLog] = Field(default_factory=list)
    metadata: dict[str, str] | None = None
    start_time: str | None = None
    end_time: str | None = None
    outputs: list[TesOutputFileLog] = Field(default_factory=list)
    system_logs: list[str] | None = None


class TesTask(_Model):
    id: str | None = None
    state: TesState | None = None
    name: str | None = None
    description: str | None = None
    inputs: list[TesInput] | None = None
    outputs: list[TesOutput] | None = None
    resources: TesResources | None = None
    executors: list[TesExecutor] = Field(default_factory=list)
    volumes: list[str] | None = None
    tags: dict[str, str] | None = None
    logs: list[TesTaskLog] | None = None
    creation_time: str | None = None

    def view(self, view: str) -> dict[str, Any]:
        """The task as GetTask/ListTasks return it in ``view`` (MINIMAL, BASIC, FULL)."""
        if view == "MINIMAL":
            return {"id": self.id, "state": self.state.value if self.state else None}
        data = self.model_dump(mode="json", exclude_none=True)
        if view == "BASIC":
            for i in data.get("inputs", ()):
                i.pop("content", None)
            for log in data.get("logs", ()):
                log.pop("system_logs", None)
                for e in log.get("logs", ()):
                    e.pop("stdout", None)
                    e.pop("stderr", None)
        return data
