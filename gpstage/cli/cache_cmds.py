"""``gpstage cache ls|du|gc``: look after an input cache on storage (docs/input-cache.md)."""

from __future__ import annotations

import re
from typing import Any

import typer

from gpstage.cli.options import JSON_OPTION
from gpstage.cli.output import emit_json, json_errors

app = typer.Typer(help="Look after the input cache on a storage root: list it, size it, collect unreferenced objects.",
                  no_args_is_help=True, rich_markup_mode=None)

ROOT = typer.Argument(..., help="The storage root (as a job spec's storage_root); the cache is the storage profile's "
                      "input_cache_root, else <root>/.gpstage-cache. With --cache-root, ignored.")
CACHE_ROOT = typer.Option(None, "--cache-root", help="The cache's own URL, when it is not derived from the storage root.")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` or plain seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        from gpstage.errors import BadInput

        raise BadInput(f"--older-than {text!r} is not a duration", "write e.g. 7d, 12h, 30m, 90s or 0")
    return float(m[1]) * _UNITS[m[2] or "s"]


def _root(storage_root: str, cache_root: str | None) -> str:
    from gpstage.inputcache.policy import cache_root as derived

    return cache_root or derived(storage_root, storage_root)


def _run(root: str, action: Any) -> Any:
    from gpstage.aio import run_sync
    from gpstage.inputcache.manage import open_cache

    async def go() -> Any:
        async with open_cache(root) as store:
            return await action(store)

    return run_sync(go())


@app.command("ls")
def ls_cmd(storage_root: str = ROOT, cache_root: str | None = CACHE_ROOT, as_json: bool = JSON_OPTION) -> None:
    """Every cached object: its SHA-256, size, when it was written, and the jobs referencing it."""
    from gpstage.inputcache.manage import inventory

    root = _root(storage_root, cache_root)
    with json_errors(as_json):
        found = _run(root, inventory)
    objects = sorted(found.objects.values(), key=lambda o: o.digest)
    if as_json:
        emit_json({"ok": True, "cache_root": root, "objects": [o.to_dict() for o in objects]})
        return
    import datetime as dt

    for o in objects:
        when = dt.datetime.fromtimestamp(o.modified_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S") if o.modified_ns else "-"
        typer.echo(f"{o.digest}  {o.size:>14}  {when}  {', '.join(o.refs) or '(unreferenced)'}")


@app.command("du")
def du_cmd(storage_root: str = ROOT, cache_root: str | None = CACHE_ROOT, as_json: bool = JSON_OPTION) -> None:
    """How much the cache holds, and how much of it jobs still reference."""
    from gpstage.inputcache.manage import inventory

    root = _root(storage_root, cache_root)
    with json_errors(as_json):
        usage = _run(root, inventory).usage()
    if as_json:
        emit_json({"ok": True, "cache_root": root, **usage})
        return
    typer.echo(f"{root}: {usage['objects']} objects, {usage['bytes']:,} bytes; referenced {usage['referenced_objects']} "
               f"objects, {usage['referenced_bytes']:,} bytes, by {usage['markers']} markers of {usage['jobs']} jobs")


@app.command("gc")
def gc_cmd(storage_root: str = ROOT, cache_root: str | None = CACHE_ROOT,
           older_than: str = typer.Option("0", "--older-than", help="Only objects written at least this long ago "
                                          "(7d, 12h, 30m, 90s)."),
           dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be deleted."),
           as_json: bool = JSON_OPTION) -> None:
    """Delete cached objects no job references (no marker under refs/<sha256>/). Safe while jobs stage in:
    a stage-in marks an object before it uses it, and uploads it again if it finds it collected."""
    from gpstage.inputcache.manage import collect

    root = _root(storage_root, cache_root)
    with json_errors(as_json):
        seconds = parse_duration(older_than)
        gone = _run(root, lambda store: collect(store, seconds, dry_run))
    if as_json:
        emit_json({"ok": True, "cache_root": root, "dry_run": dry_run, "deleted": [o.to_dict() for o in gone],
                   "bytes": sum(o.size for o in gone)})
        return
    verb = "would delete" if dry_run else "deleted"
    typer.echo(f"{root}: {verb} {len(gone)} unreferenced objects, {sum(o.size for o in gone):,} bytes")
