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
TOOL_ORDER = {name: i for i, name in enumerate(("gpstage", "aws", "rclone", "rclone-sizeonly", "s5cmd", "s5cmd-matched", "fsspec",
                                                "obstore", "py-floor", "py-floor-asyncio",
                                                "py-floor-command"))}
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


RIVALS = ("rclone", "s5cmd", "s5cmd-matched", "aws")  # "best rival": the fastest of these on a row


def _rival(rows: list[Row], dataset: str, op: str, key: Any) -> Row | None:
    found = [r for t in RIVALS if (r := _get(rows, dataset, op, t)) is not None]
    return min(found, key=key) if found else None


def floor_note(rows: list[Row], dataset: str, op: str, ref: Row | None) -> str:
    """The Python floor on a row (benchmarks/stdlib_copy.py alone, with asyncio imported, and that started as an
    installed command), as ratios to ``ref``: where a floor itself misses a target, no Python client of its
    shape meets it on this machine."""
    parts = [f"{r.tool} {r.wall_s:.2f} s" + (f" ({r.wall_s / ref.wall_s:.2f} × {ref.tool})" if ref and ref.wall_s else "")
             for t in ("py-floor", "py-floor-asyncio", "py-floor-command")
             if (r := _get(rows, dataset, op, t)) is not None]
    return f"; Python floor: {', '.join(parts)}" if parts else ""


def targets(rows: list[Row], help_s: float | None, sets: dict[str, Dataset]) -> list[dict[str, Any]]:
    """The targets of benchmarks/README.md, each {"target", "met" (True/False/None: not measured), "detail"},
    from the SeaweedFS rows. The best rival is the fastest of rclone, s5cmd (both settings) and aws on the
    same row; the lowest rival CPU is that row's lowest client CPU among them."""
    out: list[dict[str, Any]] = []

    def check(text: str, met: bool | None, detail: str) -> None:
        out.append({"target": text, "met": met, "detail": detail})

    def vs_best(where: str, ds: str, op: str, factor: float) -> tuple[Row | None, Row | None]:
        gp, best = _get(rows, ds, op, "gpstage"), _rival(rows, ds, op, lambda r: r.wall_s)
        text = f"{where}: gpstage wall ≤ {factor:g} × best rival"
        if gp and best:
            check(text, gp.wall_s <= factor * best.wall_s, f"gpstage {gp.wall_s:.2f} s vs {best.tool} {best.wall_s:.2f} s "
                  f"(ratio {gp.wall_s / best.wall_s:.3f}){floor_note(rows, ds, op, best)}")
        else:
            check(text, None, "not measured")
        return gp, best

    for op in ("up", "down"):
        gp, _ = vs_best(f"(a) small {op}", "small", op, 1.0)
        low = _rival(rows, "small", op, lambda r: r.cpu_s)
        text = f"(a) small {op}: gpstage client CPU ≤ 1.0 × the lowest rival CPU"
        check(text, None if not (gp and low) else gp.cpu_s <= low.cpu_s,
              "not measured" if not (gp and low) else f"gpstage {gp.cpu_s:.2f} s vs {low.tool} {low.cpu_s:.2f} s")
    for op in ("up", "down"):
        vs_best(f"(d) gsea {op}", "gsea", op, 0.9)
    for key, ds in (("b", "big"), ("e", "huge")):
        for op in ("up", "down"):
            gp, _ = vs_best(f"({key}) {ds} {op}", ds, op, 1.0)
            check(f"({key}) {ds} {op}: gpstage peak RSS ≤ 150 MiB", None if gp is None else gp.rss_mib <= 150,
                  "not measured" if gp is None else f"gpstage {gp.rss_mib:.0f} MiB")
    per_key: dict[str, float] = {}
    for key, ds, rss in (("c", "noop", None), ("f", "noop100k", 200)):
        gp, ref = _get(rows, ds, "noop", "gpstage"), _get(rows, ds, "noop", "rclone-sizeonly")
        keys = sets[ds].files if ds in sets else 0
        if gp and keys:
            per_key[ds] = gp.wall_s / keys
        text = f"({key}) no-op of {keys:,} keys: gpstage wall ≤ 1.0 × rclone --size-only --fast-list"
        check(text, None if not (gp and ref) else gp.wall_s <= ref.wall_s,
              "not measured" if not (gp and ref) else f"gpstage {gp.wall_s:.2f} s vs {ref.wall_s:.2f} s "
              f"(ratio {gp.wall_s / ref.wall_s:.3f})")
        if rss is None:
            check(f"({key}) no-op: gpstage ≤ 11 requests and zero transfers",
                  None if gp is None else gp.requests <= 11 and gp.writes == 0,
                  "not measured" if gp is None else f"{gp.requests} requests "
                  f"({', '.join(f'{k} {v}' for k, v in gp.request_types.items())}), {gp.writes} writes")
        else:
            check(f"({key}) no-op: gpstage peak RSS ≤ {rss} MiB", None if gp is None else gp.rss_mib <= rss,
                  "not measured" if gp is None else f"gpstage {gp.rss_mib:.0f} MiB")
    if "noop" in per_key and "noop100k" in per_key:
        ratio = per_key["noop100k"] / per_key["noop"]
        check("(f) no-op: time per key no worse than at (c)", ratio <= 1.0, f"{per_key['noop100k'] * 1e6:.1f} µs vs "
              f"{per_key['noop'] * 1e6:.1f} µs per key (ratio {ratio:.3f})")
    else:
        check("(f) no-op: time per key no worse than at (c)", None, "not measured (full run only)")
    for op in ("up", "down"):
        gp, rc = _get(rows, "gpjob", op, "gpstage"), _get(rows, "gpjob", op, "rclone")
        text = f"(g) gpjob {op}: gpstage wall ≤ 1.5 × rclone"
        check(text, None if not (gp and rc) else gp.wall_s <= 1.5 * rc.wall_s,
              "not measured" if not (gp and rc) else f"gpstage {gp.wall_s:.2f} s vs rclone {rc.wall_s:.2f} s "
              f"(ratio {gp.wall_s / rc.wall_s:.3f}){floor_note(rows, 'gpjob', op, rc)}")
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
