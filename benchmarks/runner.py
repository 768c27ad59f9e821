"""The benchmark loop: for each server, data set and repetition, run every tool and check its result.

Why each tool gets its own prefix and directory: one tool's objects must never make another's run a
no-op (or a collision). Why verification after every run: a tool that exits 0 having copied nothing
would otherwise look like the fastest; every up, no-op and down is checked against the data set's
exact ``{path: size}`` map, and a mismatch fails the run loudly. Repetitions interleave the tools
(rep 1 of every tool, then rep 2, ...), each in a rotated order, reversed every other time, so slow
drift on the machine and the state a heavy run leaves behind hit them all alike.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import s3util
from datasets import Dataset, local_digests, local_sizes, source_digests
from measure import run_measured
from servers import Server
from tools import Tool

WRITE_TYPES = ("PUT", "POST", "COPY")  # request types that store something
RECLAIM_BYTES = 2**30  # a repetition storing this much per tool is deleted and vacuumed at once (Runner._cleanup)
MANY_FILES = 100  # a download of this many files or more is deleted at the end of the run (Runner._discard)


@dataclass
class Run:
    tool: str
    server: str
    dataset: str
    op: str
    rep: int
    wall_s: float = 0.0
    cpu_s: float = 0.0
    rss_mib: float = 0.0
    server_cpu_s: float = 0.0
    requests: int = 0
    request_types: dict[str, int] = field(default_factory=dict)
    writes: int = 0
    ok: bool = True
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Case:
    server: Server
    dataset: Dataset
    source: Path
    reps: int
    tool_reps: dict[str, int] = field(default_factory=dict)  # fewer repetitions for some tools

    def runs_tool(self, tool: Tool, rep: int) -> bool:
        if tool.datasets is not None and self.dataset.name not in tool.datasets:
            return False
        owner = "rclone" if tool.name == "rclone-sizeonly" else tool.name
        return rep <= self.tool_reps.get(owner, self.reps)


class Runner:
    def __init__(self, tools: list[Tool], rundir: Path, run_id: str, say: Callable[[str], None]) -> None:
        self.tools = tools
        self.rundir = rundir
        self.run_id = run_id
        self.say = say
        self.runs: list[Run] = []
        self.s3: Any = None  # boto3 client of the server being benchmarked
        self.logs = rundir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    # -- one measured command ------------------------------------------------------------------
    def _timed(self, case: Case, tool: Tool, op: str, local: Path, prefix: str, rep: int, record: bool = True,
               count: bool = True) -> Run:
        """Run one tool once; ``count=False`` for untimed runs that overlap (server counters are global)."""
        server, ds = case.server, case.dataset
        run = Run(tool.name, server.name, ds.name, op, rep)
        log = self.logs / f"{server.name}-{ds.name}-{tool.name}.log"
        timeout = 60 + ds.files / 40 + ds.nbytes / 8e6  # generous: only a hung tool should ever meet it
        if count:
            os.sync()  # untimed: no timed run pays for the writeback of an earlier run's gigabyte
        before, cpu0 = (server.settled_counts(), server.cpu_seconds()) if count else (Counter(), 0.0)
        m = run_measured(tool.command(op, local, prefix, server), tool.env(server), log, timeout)
        after, cpu1 = (server.settled_counts(), server.cpu_seconds()) if count else (Counter(), 0.0)
        delta = Counter({k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)})
        run.wall_s, run.cpu_s, run.rss_mib, run.server_cpu_s = m.wall_s, m.cpu_s, m.rss_mib, cpu1 - cpu0
        run.requests, run.request_types = sum(delta.values()), dict(sorted(delta.items()))
        run.writes = sum(delta.get(k, 0) for k in WRITE_TYPES)
        if m.timed_out or m.exit_code != 0:
            run.ok = False
            why = f"timed out after {timeout:.0f} s" if m.timed_out else f"exit code {m.exit_code}"
            run.error = f"{why}; last output: {_tail(log)}"
        else:
            self._verify(case, run, local, prefix)
        if not run.ok:
            print(f"!! FAILED {tool.name} {op} ({server.name}, {ds.name}, rep {rep}): {run.error}", file=sys.stderr, flush=True)
        if record:
            self.runs.append(run)
        return run

    def _verify(self, case: Case, run: Run, local: Path, prefix: str) -> None:
        """Sizes first (cheap, and the clearer message), then every file's bytes against the source's."""
        if run.op == "down":
            problem = (s3util.difference(case.dataset.sizes, local_sizes(local))
                       or s3util.difference(source_digests(case.source), local_digests(local), "content"))
        else:
            stored = s3util.stored_objects(self.s3, prefix)
            problem = (s3util.difference(case.dataset.sizes, s3util.sizes_of(stored))
                       or s3util.difference(source_digests(case.source), s3util.digests_of(self.s3, stored), "content"))
        if problem:
            run.ok, run.error = False, f"destination is wrong after {run.op}: {problem}"

    # -- a server's whole matrix ---------------------------------------------------------------
    def run_cases(self, cases: list[Case]) -> None:
        warmed: set[str] = set()
        for case in cases:
            self.s3 = s3util.client(case.server)
            if case.server.name not in warmed:
                s3util.ensure_bucket(self.s3)
                s3util.warm_up(self.s3, f"{self.run_id}/warm-up")
                warmed.add(case.server.name)
            self.say(f"== {case.server.name}: {case.dataset.describe()}, {case.reps} rep(s)")
            if case.dataset.ops == ("noop",):
                self._noop_only(case)
            else:
                for rep in range(1, case.reps + 1):
                    self._one_rep(case, rep)

    def _prefix(self, case: Case, tool: Tool, rep: int | str) -> str:
        owner = "rclone" if tool.name == "rclone-sizeonly" else tool.name  # the reference re-syncs rclone's copy
        return f"{self.run_id}/{case.dataset.name}/{owner}/r{rep}"

    def _order(self, rep: int) -> list[Tool]:
        """The tools rotated by one place per repetition, so no tool always runs first (on a cold server), and
        walked backwards from there every other repetition, so no tool always runs right after the same one. A rotation alone
        keeps every tool's predecessor: gpstage came after fsspec in every repetition but the first, and
        fsspec's download frees 2 GiB just before, memory this VM's host takes back; (e) down took gpstage
        1.26–1.51 s run first and 2.71–3.24 s after fsspec (2026-12-04). rclone's size-only reference stays
        right after rclone."""
        main = [t for t in self.tools if t.name != "rclone-sizeonly"]
        step = 1 if rep % 2 else -1
        out: list[Tool] = []
        for tool in (main[(rep - 1 + step * i) % len(main)] for i in range(len(main))):
            out.append(tool)
            out += [t for t in self.tools if t.name == "rclone-sizeonly" and tool.name == "rclone"]
        return out

    def _cleanup(self, case: Case, prefixes: list[str]) -> None:
        """moto keeps every object in RAM: delete what a repetition stored. SeaweedFS keeps its data on disk
        and is wiped as a whole at the end (deleting there only costs time between runs), but a repetition
        of a data set of RECLAIM_BYTES or more is deleted and vacuumed at once: (e) stores ~9 GiB per
        repetition, and 7 of them filled a 73 GB disk."""
        if case.server.name == "moto" or case.dataset.nbytes >= RECLAIM_BYTES:
            for prefix in prefixes:
                s3util.delete_prefix(self.s3, prefix)
            case.server.reclaim()

    def _one_rep(self, case: Case, rep: int) -> None:
        failed_up: set[str] = set()
        for tool in (t for t in self._order(rep) if case.runs_tool(t, rep)):
            prefix = self._prefix(case, tool, rep)
            for op in (o for o in case.dataset.ops if o in tool.ops):
                if op != "up" and (tool.name in failed_up or ("rclone" in failed_up and tool.name == "rclone-sizeonly")):
                    self.runs.append(Run(tool.name, case.server.name, case.dataset.name, op, rep, ok=False,
                                         error="not run: the upload before it failed"))
                    continue
                local = case.source
                if op == "down":  # into a fresh, empty directory
                    local = self.rundir / "dl" / f"{case.dataset.name}-{tool.name}-r{rep}"
                    shutil.rmtree(local, ignore_errors=True)
                    local.mkdir(parents=True)
                run = self._timed(case, tool, op, local, prefix, rep)
                if op == "up" and not run.ok:
                    failed_up.add(tool.name)
                if op == "down":
                    self._discard(case, local)
            if any(o in tool.ops for o in case.dataset.ops):
                self.say(_line(self.runs, tool.name, case, rep))
        self._cleanup(case, [self._prefix(case, t, rep) for t in self.tools if case.runs_tool(t, rep)])

    def _discard(self, case: Case, local: Path) -> None:
        """A checked download of many files is moved aside and deleted with the run dir at the end, not now:
        ext4 skips inodes freed in the last ~30 s when it allocates new ones, reading each one's inode block
        (perf: ``recently_deleted``, ``find_inode_bit``): 1,000 creations cost 0.69–0.89 s of kernel time within
        30 s of deleting 1,000 files, 0.03 s otherwise, here — a penalty for whichever tool came next.
        A download of a few files (one 1 GiB file, say) is deleted at once: few inodes, and the disk space."""
        if case.dataset.files < MANY_FILES:
            shutil.rmtree(local, ignore_errors=True)
            return
        spent = self.rundir / "spent"
        spent.mkdir(exist_ok=True)
        local.rename(spent / f"{case.server.name}-{local.name}")

    def _noop_only(self, case: Case) -> None:
        """Each tool uploads its own copy once (untimed, all at the same time, but checked), then only the
        re-sync of the unchanged tree is timed. Own copies matter: gpstage's no-op reads its manifest,
        rclone's the mtime metadata it stored."""
        here = [t for t in self.tools if t.datasets is None or case.dataset.name in t.datasets]
        seeders = [t for t in here if "noop" in t.ops and t.name != "rclone-sizeonly"]
        for tool in (t for t in here if "noop" not in t.ops):
            self.say(f"   {tool.name}: no sync mode, so no no-op to time")
        started = time.monotonic()
        with ThreadPoolExecutor(max(1, len(seeders))) as pool:
            seeds = list(pool.map(lambda t: self._timed(case, t, "up", case.source, self._prefix(case, t, "base"), 0,
                                                        record=False, count=False), seeders))
        self.say(f"   initial uploads (untimed, in parallel): {time.monotonic() - started:.1f} s")
        ready = {seed.tool for seed in seeds if seed.ok}
        self.runs += [seed for seed in seeds if not seed.ok]
        if "rclone" in ready:
            ready.add("rclone-sizeonly")
        for rep in range(1, case.reps + 1):
            for tool in (t for t in self._order(rep) if t.name in ready and case.runs_tool(t, rep)):
                self._timed(case, tool, "noop", case.source, self._prefix(case, tool, "base"), rep)
                self.say(_line(self.runs, tool.name, case, rep))
        self._cleanup(case, [self._prefix(case, t, "base") for t in seeders])


def _line(runs: list[Run], tool: str, case: Case, rep: int) -> str:
    mine = [r for r in runs
            if r.tool == tool and r.server == case.server.name and r.dataset == case.dataset.name and r.rep == rep]
    parts = [f"{r.op} {r.wall_s:.2f}s/{r.requests}req" + ("" if r.ok else " FAILED") for r in mine]
    return f"   rep {rep} {tool:16} " + "  ".join(parts)


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])[-600:]
