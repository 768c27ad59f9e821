"""pydantic's validation errors as gpstage's one-line messages, for every model a user writes (the job
spec, launcher settings, storage profiles), and the checks those models share."""

from __future__ import annotations

import re

from pydantic import ValidationError

from gpstage.credentials import SECRET_ENV_NAMES

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


def check_env_names(v: dict[str, str]) -> dict[str, str]:
    """An ``env`` mapping of a spec: valid variable names, and no credential among them (credentials go
    by reference, never in a spec)."""
    for name in v:
        if not ENV_NAME.match(name):
            raise ValueError(f"env name {name!r} is not a valid variable name")
        if name.upper() in SECRET_ENV_NAMES:
            raise ValueError(f"env {name} is a credential; never put secrets in a spec, "
                             "give them to the launcher's environment instead")
    return v
