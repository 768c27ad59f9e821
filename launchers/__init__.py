"""Launchers: where the container entry runs, behind one interface (:mod:`launchers.base`) —
``local`` (a process on this machine, the embedded default) now; docker, slurm and batch join as one
module each, registered under the ``gpstage.launchers`` entry-point group.

The notebook API (:mod:`launchers.api`) is re-exported here: ``make_job``, ``run``, ``job``.
"""

from launchers.api import job, make_job, run

__all__ = ["job", "make_job", "run"]
