"""Turn the runs into the report: medians per tool × server × data set × op, the issue's targets, files.

Why medians (and the max for peak RSS): a single slow repetition (a page-cache flush, the server
compacting) should not decide a comparison, while memory is about the worst case. The targets are
computed from the same table, on SeaweedFS only (moto caps every client, so it cannot show a client's
speed), and reported as met or missed — never adjusted.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset
from runner import Run

OP_ORDER = {"up": 0, "noop": 1, "down": 2}
TOOL_ORDER = {"gpstage": 0, "aws": 1, "rclone": 2, "rclone-sizeonly": 3, "fsspec": 4}
SERVER_ORDER = {"seaweedfs": 0, "moto": 1}


@dataclass
class Row:
    server: str
    dataset: str
    op: str
    tool: str
    reps: int = 0
    failed: int = 0
    wall_s: float | None = None
    cpu_s: float | None = None
    server_cpu_s: float | None = None
    requests: int | None = None
    writes: int | None = None
    rss_mib: float | None = None
    request_types: dict[str, int] = field(default_factory=dict)
    ratio: float | None = None  # wall / gpstage's wall for the same server, data set and op

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarise(runs: list[Run], ds_keys: dict[str, str]) -> list[Row]:
    groups: dict[tuple[str, str, str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.server, r.dataset, r.op, r.tool), []).append(r)
    rows = []
    for (server, dataset, op, tool), rs in groups.items():
        ok = [r for r in rs if r.ok]
        row = Row(server, dataset, op, tool, reps=len(rs), failed=len(rs) - len(ok))
        if ok:
            row.wall_s = statistics.median(r.wall_s for r in ok)
            row.cpu_s = statistics.median(r.cpu_s for r in ok)
            row.server_cpu_s = statistics.median(r.server_cpu_s for r in ok)
            row.requests = round(statistics.median(r.requests for r in ok))
            row.writes = round(statistics.median(r.writes for r in ok))
            row.rss_mib = max(r.rss_mib for r in ok)
            row.request_types = min(ok, key=lambda r: abs(r.requests - statistics.median(x.requests for x in ok))).request_types
        rows.append(row)
    for row in rows:
        gp = next((g for g in rows if (g.server, g.dataset, g.op, g.tool) == (row.server, row.dataset, row.op, "gpstage")), None)
        if gp and gp.wall_s and row.wall_s is not None:
            row.ratio = row.wall_s / gp.wall_s
    rows.sort(key=lambda r: (SERVER_ORDER.get(r.server, 9), ds_keys.get(r.dataset, "z"), OP_ORDER.get(r.op, 9),
                             TOOL_ORDER.get(r.tool, 9)))
    return rows


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if x is None else fmt.format(x)


def table(rows: list[Row], ds_keys: dict[str, str]) -> str:
    head = ("| data set | op | server | tool | wall s (median) | × gpstage wall | client CPU s | server CPU s | requests "
            "| peak RSS MiB | ok reps | requests by type |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        status = f"{r.reps - r.failed}/{r.reps}" + (" **FAILED**" if r.failed else "")
        types = ", ".join(f"{k} {v}" for k, v in r.request_types.items())
        lines.append(f"| ({ds_keys.get(r.dataset, '?')}) {r.dataset} | {r.op} | {r.server} | {r.tool} | {_f(r.wall_s)} | "
                     f"{_f(r.ratio)} | {_f(r.cpu_s)} | {_f(r.server_cpu_s)} | "
                     f"{_f(r.requests, '{:,}')} | {_f(r.rss_mib, '{:.0f}')} | "
                     f"{status} | {types} |")
    return "\n".join(lines)


def _get(rows: list[Row], dataset: str, op: str, tool: str, server: str = "seaweedfs") -> Row | None:
    return next((r for r in rows
                 if (r.server, r.dataset, r.op, r.tool) == (server, dataset, op, tool) and r.wall_s is not None), None)


def targets(rows: list[Row], help_s: float | None, sets: dict[str, Dataset]) -> list[dict[str, Any]]:
    """The issue's targets, each {"target", "met" (True/False/None: not measured), "detail"}."""
    out: list[dict[str, Any]] = []

    def check(text: str, met: bool | None, detail: str) -> None:
        out.append({"target": text, "met": met, "detail": detail})

    for ds, key in (("small", "a"), ("gsea", "d")):
        for op in ("up", "down"):
            gp, aws, rc = _get(rows, ds, op, "gpstage"), _get(rows, ds, op, "aws"), _get(rows, ds, op, "rclone")
            where = f"({key}) {ds} {op}"
            if gp and aws:
                check(f"{where}: gpstage wall ≤ 0.4 × aws", gp.wall_s <= 0.4 * aws.wall_s,
                      f"gpstage {gp.wall_s:.2f} s vs aws {aws.wall_s:.2f} s (ratio {gp.wall_s / aws.wall_s:.3f})")
                check(f"{where}: gpstage client CPU ≤ 0.5 × aws", gp.cpu_s <= 0.5 * aws.cpu_s,
                      f"gpstage {gp.cpu_s:.2f} s vs aws {aws.cpu_s:.2f} s (ratio {gp.cpu_s / aws.cpu_s:.3f})")
            else:
                check(f"{where}: gpstage wall ≤ 0.4 × aws, CPU ≤ 0.5 × aws", None, "not measured")
            if gp and rc:
                check(f"{where}: gpstage wall ≤ 1.2 × rclone", gp.wall_s <= 1.2 * rc.wall_s,
                      f"gpstage {gp.wall_s:.2f} s vs rclone {rc.wall_s:.2f} s (ratio {gp.wall_s / rc.wall_s:.3f})")
            else:
                check(f"{where}: gpstage wall ≤ 1.2 × rclone", None, "not measured")
    for op in ("up", "down"):
        gp, rc = _get(rows, "big", op, "gpstage"), _get(rows, "big", op, "rclone")
        mb = sets["big"].nbytes / 1e6
        if gp and rc:
            check(f"(b) big {op}: gpstage throughput ≥ rclone's", gp.wall_s <= rc.wall_s,
                  f"gpstage {mb / gp.wall_s:.1f} MB/s ({gp.wall_s:.3f} s) "
                  f"vs rclone {mb / rc.wall_s:.1f} MB/s ({rc.wall_s:.3f} s)")
        else:
            check(f"(b) big {op}: gpstage throughput ≥ rclone's", None, "not measured")
    for op in ("up", "down"):
        gp = _get(rows, "huge", op, "gpstage")
        check(f"(e) huge {op}: gpstage peak RSS ≤ 150 MiB", None if gp is None else gp.rss_mib <= 150,
              "not measured" if gp is None else f"gpstage {gp.rss_mib:.0f} MiB")
    gp, aws = _get(rows, "noop", "noop", "gpstage"), _get(rows, "noop", "noop", "aws")
    if gp and aws:
        check("(c) no-op: gpstage wall ≤ 0.3 × aws", gp.wall_s <= 0.3 * aws.wall_s,
              f"gpstage {gp.wall_s:.2f} s vs aws {aws.wall_s:.2f} s (ratio {gp.wall_s / aws.wall_s:.3f})")
    else:
        check("(c) no-op: gpstage wall ≤ 0.3 × aws", None, "not measured")
    if gp:
        check("(c) no-op: gpstage ≤ 11 requests and zero transfers", gp.requests <= 11 and gp.writes == 0,
              f"{gp.requests} requests ({', '.join(f'{k} {v}' for k, v in gp.request_types.items())}), {gp.writes} writes, "
              f"{sets['noop'].files:,} keys")
    else:
        check("(c) no-op: gpstage ≤ 11 requests and zero transfers", None, "not measured")
    check("gpstage --help ≤ 0.3 s (median of 5)", None if help_s is None else help_s <= 0.3,
          "not measured" if help_s is None else f"{help_s:.3f} s")
    return out


def target_lines(checks: list[dict[str, Any]]) -> list[str]:
    word = {True: "MET   ", False: "MISSED", None: "n/a   "}
    return [f"- {word[c['met']]} {c['target']} — {c['detail']}" for c in checks]


def write(out_dir: Path, markdown: str, payload: dict[str, Any], suffix: str = "") -> list[Path]:
    """latest<suffix>.md/.json, one copy (the run's date is inside both; git keeps the earlier ones).
    ``-quick`` runs never replace a full run's latest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / f"latest{suffix}.md", out_dir / f"latest{suffix}.json"
    md.write_text(markdown)
    js.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return [md, js]
