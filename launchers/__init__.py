"""Launchers: where the container entry runs, behind one interface (:mod:`launchers.base`) —
``local`` (a process on this machine, the embedded default), ``docker``, ``slurm`` and ``batch`` (AWS
Batch), one module each, named in gpstage's launcher registry (:mod:`gpstage.launching`); plugins add
theirs under the ``gpstage.launchers`` entry-point group. Of ``container_entry`` they use only
:mod:`container_entry.api`.

The notebook API (:mod:`launchers.api`) is re-exported here: ``make_job``, ``run``, ``job``. It is
imported on first use, not with the package: the local dispatcher (``python -m launchers.local_queue``)
starts once per burst of jobs and must not pay for the notebook API's imports (docs/design.md §19).
"""

from __future__ import annotations

from typing import Any

__all__ = ["job", "make_job", "run", "submit_async"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from launchers import api

        return getattr(api, name)
    raise AttributeError(f"module 'launchers' has no attribute {name!r}")
