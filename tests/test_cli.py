"""The ``gpstage`` CLI as users and the GenePattern server run it: a subprocess, JSON on stdout, exit codes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gpstage.testing.storage import make_tricky_tree, snapshot
from tests.conftest import run_cli


def _json(proc) -> dict:
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


def test_sync_round_trip_to_s3_and_back_is_identical_and_incremental(bucket: str, tmp_path: Path, cli_env) -> None:
    src, back = tmp_path / "src", tmp_path / "back"
    src.mkdir()
    make_tricky_tree(src, big=3 * 2**20)
    url = f"s3://{bucket}/opt/gp/jobResults/5"
    up = run_cli("sync", str(src), url, "--json", env=cli_env)
    assert up.returncode == 0, up.stderr
    assert _json(up)["report"]["files_copied"] == 6
    down = run_cli("sync", url, str(back), "--json", env=cli_env)
    assert down.returncode == 0, down.stderr
    assert snapshot(back) == snapshot(src)
    assert stat.S_IMODE((back / "module.sh").stat().st_mode) == 0o755
    for a, b in ((str(src), url), (url, str(back))):
        again = run_cli("sync", a, b, "--json", env=cli_env)
        report = _json(again)["report"]
        assert again.returncode == 0 and report["files_copied"] == 0 and report["files_skipped"] == 6


def test_json_output_is_one_document_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a/f").write_text("x")
    proc = run_cli("sync", str(tmp_path / "a"), str(tmp_path / "b"), "--json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and doc["ok"] is True
    assert set(doc["report"]) >= {"files_copied", "bytes_copied", "files_skipped", "files_deleted", "retries", "seconds"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["sync", "/definitely/not/here", "/tmp/x"], "does not exist"),
        (["sync", "/tmp", "foo://bucket/x"], "unknown storage scheme foo://"),
        (["sync", "/tmp", "s3://"], "names no bucket"),
        (["sync", "/tmp", "file://relative/path"], "absolute path"),
        (["sync", "/tmp", "/tmp/inside"], "overlap"),
        (["sync", "/tmp/a", "/tmp/b", "--jobs", "0"], "--jobs"),
        (["stage-in", "/no/such/spec.json"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], needle: str, cli_env) -> None:
    proc = run_cli(*args, env=cli_env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(("Usage:", "Try "))]
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr and (len(lines) == 1 or args[-2] == "--jobs")


def test_missing_bucket_exits_3(s3_endpoint: str, tmp_path: Path, cli_env) -> None:
    (tmp_path / "f").write_text("x")
    proc = run_cli("sync", str(tmp_path), "s3://no-such-bucket-gpstage/x", env=cli_env)
    assert proc.returncode == 3 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_unreachable_endpoint_exits_3_in_bounded_time(tmp_path: Path, cli_env) -> None:
    env = {**cli_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # discard port: nothing listens
    proc = run_cli("sync", "s3://bucket/x", str(tmp_path / "d"), env=env, timeout=60)
    assert proc.returncode == 3 and "cannot reach the S3 endpoint http://127.0.0.1:9" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_missing_credentials_exit_3(s3_endpoint: str, tmp_path: Path, cli_env) -> None:
    env = {k: v for k, v in cli_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    proc = run_cli("sync", "s3://bucket/x", str(tmp_path / "d"), env=env, timeout=60)
    assert proc.returncode == 3 and "no AWS credentials" in proc.stderr and "AWS_ACCESS_KEY_ID" in proc.stderr


def test_json_error_document_on_failure(tmp_path: Path) -> None:
    proc = run_cli("sync", "/definitely/not/here", str(tmp_path), "--json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 2 and doc["ok"] is False and doc["exit_code"] == 2 and "does not exist" in doc["error"]


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a/f").write_text("x")
    doc = json.loads(run_cli("sync", str(tmp_path / "a"), str(tmp_path / "b"), "--dry-run", "--json").stdout)
    assert doc["report"]["files_copied"] == 1 and doc["report"]["dry_run"] and not (tmp_path / "b").exists()


def test_ls_shows_modes_from_the_manifest(bucket: str, tmp_path: Path, cli_env) -> None:
    (tmp_path / "x.sh").write_text("echo\n")
    os.chmod(tmp_path / "x.sh", 0o750)
    assert run_cli("sync", str(tmp_path), f"s3://{bucket}/p", env=cli_env).returncode == 0
    doc = _json(run_cli("ls", f"s3://{bucket}/p", "--json", env=cli_env))
    assert [(f["path"], f["mode"], f["size"]) for f in doc["files"]] == [("x.sh", "0750", 5)]


def test_help_explains_every_command() -> None:
    out = run_cli("--help").stdout
    for cmd in ("sync", "stage-in", "stage-out", "ls", "spec"):
        assert cmd in out
    assert "--delete" in run_cli("sync", "--help").stdout


def test_sync_loads_neither_typer_nor_pydantic_nor_rich_nor_aiohttp(bucket: str, tmp_path: Path, cli_env) -> None:
    """docs/design.md §19: a small sync is mostly start-up, so its path stays clear of the heavy CLI stack
    — to S3 and back and on the file system alike — and, on S3, of aiohttp and obstore (a job dir's few
    requests go over the standard library; the fast lane starts after PLAIN_FIRST of them), and of
    dataclasses (with inspect, ~10 ms)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a/f").write_text("x")
    probe = ("import sys; from gpstage.cli import main\n"
             "for src, dst in zip(sys.argv[1::2], sys.argv[2::2]): main(['sync', src, dst, '--json'])\n"
             "heavy = ('typer', 'pydantic', 'rich', 'aiohttp', 'obstore', 'dataclasses')\n"
             "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)")
    url = f"s3://{bucket}/lean"
    proc = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "a"), url, url, str(tmp_path / "b"),
                           str(tmp_path / "b"), str(tmp_path / "c")], capture_output=True, text=True, env=cli_env, timeout=120)
    assert proc.returncode == 0 and proc.stderr.strip().splitlines()[-1] == "[]", proc.stderr
    assert (tmp_path / "c/f").read_text() == "x"


@pytest.mark.parametrize("args, started", [
    (["run", "job.json"], [None]),
    (["run", "job.json", "--detach", "--set", "max_parallel=2"], [None]),
    (["run", "--launcher", "docker", "job.json"], ["docker"]),
    (["run", "job.json", "-l", "slurm"], ["slurm"]),
    (["run", "--launcher=batch", "job.json"], ["batch"]),
    (["run", "-lslurm", "job.json"], ["slurm"]),
    (["run", "--help"], []),
    (["status", "job"], []),
])
def test_run_starts_its_launchers_background_part_before_anything_else(args: list[str], started: list,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`gpstage run` asks the named (or default) launcher to start what it runs in the background (the
    local dispatcher) before typer and pydantic load, so that the two start-ups overlap; other commands
    and --help start nothing."""
    import gpstage.cli as cli
    import gpstage.launching as launching

    asked: list = []
    monkeypatch.setattr(launching, "prestart", asked.append)
    monkeypatch.setattr("gpstage.cli.app.app", lambda args: None)
    cli.main(args)
    assert asked == started
