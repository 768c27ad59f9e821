"""gpstage's settings file (docs/design.md §13): one TOML file, named by ``GPSTAGE_CONFIG``, default
``~/.config/gpstage/config.toml`` (``$XDG_CONFIG_HOME`` respected). It holds one table per launcher
(``[launchers.local]``, ``[launchers.docker]`` …) — and the storage profiles. A launcher validates its
own table with its own pydantic model; the CLI's ``--set key=value`` and the Python API's keyword
arguments override single values.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpstage.errors import BadInput

if TYPE_CHECKING:
    from pydantic import BaseModel


def config_path() -> Path:
    if os.environ.get("GPSTAGE_CONFIG"):
        return Path(os.environ["GPSTAGE_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "gpstage" / "config.toml"


def load_config() -> dict[str, Any]:
    """The whole settings file as a dict; ``{}`` when the default file does not exist."""
    path = config_path()
    if not path.exists():
        if os.environ.get("GPSTAGE_CONFIG"):
            raise BadInput(f"GPSTAGE_CONFIG names {path}, which does not exist", "create the file or unset GPSTAGE_CONFIG")
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise BadInput(f"settings file {path}: {err}", "fix the TOML syntax") from None


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``["max_parallel=2", "image=x"]`` → dict; pydantic converts the strings to each field's type."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--set {pair!r} is not key=value", "write e.g. --set max_parallel=2")
        out[key.strip()] = value
    return out


def launcher_settings(model: type[BaseModel], name: str, overrides: dict[str, Any] | None = None) -> BaseModel:
    """``[launchers.<name>]`` of the settings file, overridden by ``overrides``, validated by ``model``."""
    from pydantic import ValidationError

    from gpstage.validation import format_validation_error

    table = load_config().get("launchers", {}).get(name, {})
    if not isinstance(table, dict):
        raise BadInput(f"settings file {config_path()}: [launchers.{name}] must be a table", "see the README")
    try:
        return model.model_validate({**table, **(overrides or {})})
    except ValidationError as err:
        raise BadInput(format_validation_error(err, f"settings of the {name} launcher"),
                       f"fix [launchers.{name}] in {config_path()} or the --set values") from None
