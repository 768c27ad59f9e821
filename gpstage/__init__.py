"""gpstage — stage GenePattern job dirs between a server and any storage URL, and run the job's module.

This package owns storage: the job spec, URL → provider, sync, stage-in/out, job states. It knows
nothing of containers (``container_entry``) or backends (``launchers``), and imports neither.
"""

__version__ = "0.1.0"
