"""Launchers: where the container entry runs, behind one interface (:mod:`launchers.base`) —
``local`` (a process on this machine, the embedded default), ``docker``, ``slurm`` and ``batch`` (AWS
Batch), one module each, named in gpstage's launcher registry (:mod:`gpstage.launching`); plugins add
theirs under the ``gpstage.launchers`` entry-point group. Of ``container_entry`` they use only
:mod:`container_entry.api`.

The notebook API (:mod:`launchers.api`) is re-exported here: ``make_job``, ``run``, ``job``.
"""

from launchers.api import job, make_job, run

__all__ = ["job", "make_job", "run"]
