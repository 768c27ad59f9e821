"""pydantic's validation errors as gpstage's one-line messages, for every model a user writes: the job
spec, launcher settings, storage profiles."""

from __future__ import annotations

from pydantic import ValidationError


def format_validation_error(err: ValidationError, source: str = "job spec") -> str:
    """One line per problem, each naming the field: ``job spec: dirs.0.path: ... must be absolute``."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if not str(x).startswith("function-"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):  # a model's / a dataclass's word
            msg = "unknown key (check the spelling; see `gpstage spec schema`)"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"{source}: " + "; ".join(parts)
