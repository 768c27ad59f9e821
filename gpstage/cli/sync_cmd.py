"""``gpstage sync SRC DST``, parsed with argparse: the one command whose start-up is its cost.

A GenePattern job dir is ~20 small files, so a sync of it is mostly interpreter start-up; typer (which
imports pydantic for its parameter coercion) alone would triple it (docs/design.md §19). This module
and what it imports stay clear of typer, pydantic and rich (rich only for a progress bar on a terminal).
Exit codes: 0 ok, 2 bad input, 3 storage error (docs/design.md §9).
"""

from __future__ import annotations

import argparse

from gpstage.cli.output import emit_json, json_errors, progress_for

SUMMARY = "Make DST hold the contents of SRC, copying only what differs (aws s3 sync semantics)."
DETAILS = """\
Modes, mtimes and empty dirs survive object stores (kept in .gpstage-manifest.json).

examples:
  gpstage sync ./job s3://bucket/gp/job
  gpstage sync s3://bucket/gp/job ./job --delete
"""


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1; give --jobs 1 or more")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpstage sync", description=f"{SUMMARY}\n\n{DETAILS}",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC", help="source: a path or URL (file://, nfs://, s3://, or any provider's scheme)")
    p.add_argument("dst", metavar="DST", help="destination: a path or URL; the CONTENTS of SRC go here")
    p.add_argument("--delete", action="store_true", help="remove files at DST that SRC does not have (excluded ones are kept)")
    p.add_argument("--checksum", action="store_true", help="compare MD5 checksums instead of size and mtime")
    p.add_argument("-j", "--jobs", type=_at_least_one, default=32, help="transfers in flight at once (default 32)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="glob of paths relative to SRC to leave out; repeatable; '*' also matches '/'")
    p.add_argument("--dry-run", action="store_true", help="only report what would be copied and deleted")
    p.add_argument("--json", dest="as_json", action="store_true", help="print one JSON document on stdout and nothing else")
    return p


def sync_main(argv: list[str]) -> None:
    """Parse ``argv`` (what follows ``gpstage sync``) and sync; raises GpstageError for main() to print."""
    from gpstage.sync import sync

    args = parser().parse_args(argv)
    with json_errors(args.as_json):
        report = sync(args.src, args.dst, delete=args.delete, checksum=args.checksum, jobs=args.jobs,
                      exclude=args.exclude, dry_run=args.dry_run, progress=progress_for("sync", args.as_json))
    if args.as_json:
        emit_json({"ok": True, "report": report.to_dict()})
    else:
        print(report.summary())
