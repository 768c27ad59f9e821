"""Where gpstage keeps its state on this machine: ``$GPSTAGE_STATE_DIR``, else ``$XDG_STATE_HOME/gpstage``,
else ``~/.local/state/gpstage`` (docs/design.md §14). A module of its own, importing nothing: the job
records need it, and so do callers that must not pay for the records' pydantic models (the input cache's
hash index; ``gpstage run`` starting the local dispatcher before it reads the job spec)."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    if os.environ.get("GPSTAGE_STATE_DIR"):
        return Path(os.environ["GPSTAGE_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "gpstage"
