"""Job states, exit-code conventions and the ``status.json`` record (docs/design.md §8, §9).

They live in ``gpstage`` so that the container entry (which writes ``status.json``) and the launchers
(which read it) share one definition.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gpstage.exitcodes import EXIT_GPSTAGE_ERROR, EXIT_NOT_FOUND, EXIT_SIGNAL_BASE, EXIT_TIMEOUT

__all__ = ["EXIT_GPSTAGE_ERROR", "EXIT_NOT_FOUND", "EXIT_SIGNAL_BASE", "EXIT_TIMEOUT", "JobState", "JobStatus", "Reason"]


class JobState(str, Enum):
    """The one set of states every launcher maps its backend's states onto."""

    QUEUED = "QUEUED"
    STAGING = "STAGING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"  # the module exited 0
    FAILED = "FAILED"  # the module exited non-zero, was killed, or hit its time limit
    ERROR = "ERROR"  # gpstage or the backend failed: staging, image, launch
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.ERROR, JobState.CANCELLED)


class Reason(str, Enum):
    """Why a job ended the way it did; ``status.json`` carries it beside the exit code."""

    EXITED = "exited"  # the module exited by itself (code 0 or not)
    SIGNAL = "signal"  # killed by a signal (exit code 128 + N)
    TIMEOUT = "timeout"  # time limit hit (exit code 142)
    MISSING_EXECUTABLE = "missing-executable"  # exit code 127
    ERROR = "error"  # gpstage/backend failure (exit code 125)
    CANCELLED = "cancelled"


class JobStatus(BaseModel):
    """The content of ``<metadata dir>/status.json``, written by the entry, read by launchers."""

    model_config = ConfigDict(extra="forbid")

    status_version: int = 1
    job_id: str
    state: JobState
    exit_code: int | None = None
    reason: Reason | None = None
    signal: str | None = Field(None, description="signal name when killed, e.g. SIGTERM")
    message: str | None = Field(None, description="one line for humans, e.g. the staging error")
    failed_phase: str | None = Field(None, description="the step that failed (state ERROR): stage-in, prerun, "
                                     "pre-hooks, run, record, post-hooks, stage-out, postrun, push-metadata")
    module_exit_code: int | None = Field(None, description="what the module's run itself ended with, when it ran "
                                         "(exit_code may differ: 125 when its outputs were not delivered)")
    started_at: datetime | None = None
    ended_at: datetime | None = None
    phases: dict[str, float] = Field(default_factory=dict, description="seconds per phase")
    transfers: list[dict[str, Any]] = Field(default_factory=list, description="transfer reports")
    executors: list[dict[str, Any]] = Field(default_factory=list, description="a sequence of executors (docs/tes.md): "
                                            "one entry each that started: index, image, start_time, end_time, exit_code, "
                                            "stdout and stderr (the last 10 KiB of each)")
