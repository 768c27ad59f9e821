"""Exit codes of gpstage's commands and of ``gpstage-entry`` (docs/design.md §9), in a module of their own
so the command line can name them without importing the job-state models (pydantic) on every start."""

EXIT_GPSTAGE_ERROR = 125  # gpstage or the backend failed (state ERROR)
EXIT_NOT_FOUND = 127  # the executable does not exist
EXIT_TIMEOUT = 142  # GenePattern's run-limit code: the time limit was hit (state FAILED)
EXIT_SIGNAL_BASE = 128  # killed by signal N -> 128 + N
