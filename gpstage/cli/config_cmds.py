"""``gpstage config show URL``: the effective storage settings for a URL, secrets masked."""

from __future__ import annotations

import os
from typing import Any

import typer

from gpstage.cli.options import JSON_OPTION
from gpstage.cli.output import emit_json, json_errors

app = typer.Typer(help="Inspect gpstage's settings file (GPSTAGE_CONFIG).", no_args_is_help=True, rich_markup_mode=None)

# The standard variables each scheme's SDK reads, shown when set.
SCHEME_ENV_PREFIXES = {"s3": ("AWS_",), "gs": ("GOOGLE_", "STORAGE_EMULATOR_HOST", "GCSFS_", "CLOUDSDK_"),
                       "az": ("AZURE_STORAGE_", "AZURE_CLIENT_", "AZURE_TENANT_"), "abfs": ("AZURE_STORAGE_",)}


def mask(name: str, value: str) -> str:
    """Credentials shown only as "set": a key id keeps 4 characters so two keys can be told apart."""
    from gpstage.credentials import SECRET_ENV_NAMES, is_credential

    secretish = (name.upper() in SECRET_ENV_NAMES
                 or any(w in name.upper() for w in ("SECRET", "TOKEN", "PASSWORD", "KEY", "CONNECTION")))
    if not (is_credential(name) or secretish):
        return value
    if name.upper().endswith(("KEY_ID", "ACCESS_KEY_ID")) and len(value) > 8:
        return f"{value[:4]}… (set, {len(value)} characters)"
    return f"**** (set, {len(value)} characters)"


def effective(url: str) -> dict[str, Any]:
    from gpstage.config import config_path
    from gpstage.profiles import profile_for
    from gpstage.retry import RetryPolicy
    from gpstage.urls import split_url

    scheme = split_url(url).scheme
    found = profile_for(url)
    prefix, profile = found if found else (None, None)
    out: dict[str, Any] = {"url": url, "config_file": str(config_path()), "profile": prefix}
    if profile:
        settings = profile.settings()
        for field in [k for k in settings if k.endswith("_env")]:
            name = settings[field]
            value = os.environ.get(name)
            settings[field] = f"${name} = {mask(field.removesuffix('_env'), value)}" if value else f"${name} (NOT SET)"
        if profile.key_file:
            settings["key_file"] = f"{profile.key_file} ({'exists' if os.path.exists(profile.key_file) else 'MISSING'})"
        out["settings"] = settings
    retry = (profile.retry if profile else None) or RetryPolicy()
    out["retry"] = {"attempts": retry.attempts, "base_delay": retry.base_delay, "max_delay": retry.max_delay}
    prefixes = SCHEME_ENV_PREFIXES.get(scheme, ())
    out["environment"] = {k: mask(k, v) for k, v in sorted(os.environ.items()) if prefixes and k.startswith(prefixes)}
    return out


@app.command("show")
def show_cmd(url: str = typer.Argument(..., help="A storage URL, e.g. s3://bucket/gp/jobs"),
             as_json: bool = JSON_OPTION) -> None:
    """Print the settings gpstage uses for URL: the matching storage profile (longest prefix), the retry
    policy, and the standard environment it falls back to — every credential masked."""
    with json_errors(as_json):
        info = effective(url)
    if as_json:
        return emit_json({"ok": True, **info})
    typer.echo(f"url:          {info['url']}\nconfig file:  {info['config_file']}")
    typer.echo(f"profile:      {info['profile'] or 'none (the standard environment only)'}")
    for k, v in info.get("settings", {}).items():
        typer.echo(f"  {k}: {v}")
    r = info["retry"]
    typer.echo(f"retry:        {r['attempts']} attempts, backoff {r['base_delay']:g} s .. {r['max_delay']:g} s")
    if info["environment"]:
        typer.echo("environment:")
        for k, v in info["environment"].items():
            typer.echo(f"  {k}={v}")
