"""The container entry's public surface for the layers above it (launchers, front ends).

A launcher starts ``gpstage-entry`` somewhere; from this package it needs only which runners exist,
how the entry's containers are labelled and reached, how a commit tag becomes an image reference, and
the entry bundle's manifest, command and mount path (:mod:`container_entry.bundle`) — and, for the
local launcher's dispatcher, which forks its entries from a warm interpreter, the entry's command line
as a call (:func:`run_entry`, :func:`warm_entry`); nothing of the entry's lifecycle. pyproject.toml's
import-linter contract lets launchers import this module and no other part of ``container_entry``, so
the lifecycle can change without touching them.
(The files a job leaves behind are read through :mod:`gpstage.jobfiles`, one layer down.)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from container_entry.runners import DEFAULT_RUNNER, RUNNERS

if TYPE_CHECKING:
    from container_entry import bundle
    from container_entry.commit import commit_reference
    from container_entry.dockerutil import LABEL_JOB, LABEL_ROLE, LABEL_STAGING, docker_client, ensure_image

# Imported on first use (PEP 562): a job command checks a runner's name on every submit, and the commit
# code (tarfile, the spec's models) and the bundle's are for the launchers that mount or commit images.
_LAZY = {"bundle": "container_entry.bundle", "commit_reference": "container_entry.commit",
         **dict.fromkeys(("LABEL_JOB", "LABEL_ROLE", "LABEL_STAGING", "docker_client", "ensure_image"),
                         "container_entry.dockerutil")}

__all__ = ["DEFAULT_RUNNER", "bundle", "LABEL_JOB", "LABEL_ROLE", "LABEL_STAGING", "RUNNERS", "commit_reference", "docker_client",
           "ensure_image", "run_entry", "warm_entry"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = import_module(_LAZY[name])
    value = module if name == "bundle" else getattr(module, name)
    globals()[name] = value
    return value


def run_entry(argv: list[str]) -> int:
    """``gpstage-entry argv`` in this process (its environment is ``os.environ``); returns the exit code."""
    from container_entry.cli import run

    return run(argv)


def warm_entry() -> None:
    """Import what every entry imports (the spec's models, the lifecycle, the process runner, the sync),
    so that a process forked after this starts a job without importing them again."""
    from importlib import import_module

    for name in ("container_entry.cli", "container_entry.lifecycle", "container_entry.runners.process",
                 "container_entry.settings", "gpstage.stage", "gpstage.sync"):
        import_module(name)
