"""Server-side stage-in / stage-out of a job spec: nesting, nfs no-op, the stored spec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpstage.listing import list_url
from gpstage.spec import Role, parse_spec
from gpstage.stage import stage_in, stage_out
from tests.conftest import run_cli


def make_job(tmp_path: Path, root: str) -> Path:
    base = tmp_path / "gp"
    (base / "taskLib/Mod.1").mkdir(parents=True)
    (base / "taskLib/Mod.1/run.sh").write_text("echo run\n")
    (base / "uploads/7").mkdir(parents=True)
    (base / "uploads/7/in.gct").write_text("data\n")
    (base / "uploads/7/.DS_Store").write_text("junk")
    (base / "jobResults/7/.gp_metadata").mkdir(parents=True)
    (base / "jobResults/7/.gp_metadata/exec.sh").write_text("bash run.sh\n")
    spec = {"job_id": "7", "storage_root": root,
            "dirs": [{"role": "tasklib", "path": str(base / "taskLib/Mod.1")},
                     {"role": "inputs", "path": str(base / "uploads/7")},
                     {"role": "workdir", "path": str(base / "jobResults/7")}]}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(spec))
    return path


def test_stage_in_and_out_through_s3(bucket: str, tmp_path: Path) -> None:
    spec_path = make_job(tmp_path, f"s3://{bucket}/gp")
    spec = parse_spec(spec_path.read_text())
    transfers = {t.role: t for t in stage_in(spec)}
    assert transfers["inputs"].report.files_copied == 1  # .DS_Store left out by GenePattern's excludes
    assert transfers["metadata"].report.files_copied == 1
    assert transfers["workdir"].report.files_copied == 0  # the nested metadata dir is not synced twice
    work_url = spec.url_of(spec.dir(Role.WORKDIR))
    assert work_url == f"s3://{bucket}/gp{spec.workdir}"
    assert "job.json" in list_url(f"s3://{bucket}/gp{spec.metadata_dir}").files
    # the "container" writes outputs into the workdir on storage; stage-out brings them home
    out = tmp_path / "container_out"
    out.mkdir()
    (out / "result.txt").write_text("42\n")
    from gpstage.sync import sync

    sync(str(out), work_url)
    back = {t.role: t for t in stage_out(spec)}
    assert back["workdir"].report.files_copied == 1
    assert (Path(spec.workdir) / "result.txt").read_text() == "42\n"
    assert "inputs" not in back  # inputs only go in


def test_nfs_root_is_a_verified_no_op(tmp_path: Path) -> None:
    spec_path = make_job(tmp_path, "nfs:///")
    proc = run_cli("stage-in", str(spec_path), "--json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert all(d["skipped"] and d["report"] is None for d in doc["dirs"])
    spec = parse_spec(spec_path.read_text())
    assert (Path(spec.metadata_dir) / "job.json").exists()


def test_stage_in_missing_input_dir_exits_2(tmp_path: Path) -> None:
    spec_path = make_job(tmp_path, f"file://{tmp_path}/store")
    spec = json.loads(spec_path.read_text())
    spec["dirs"][1]["path"] = str(tmp_path / "nope")
    spec_path.write_text(json.dumps(spec))
    proc = run_cli("stage-in", str(spec_path))
    assert proc.returncode == 2 and "inputs dir" in proc.stderr and "does not exist" in proc.stderr


@pytest.mark.parametrize(("root", "cache", "on_loop"), [("nfs:///", False, False), ("file://{tmp}/store", False, False),
                                                       ("file://{tmp}/store", True, True)])
def test_a_jobs_staging_runs_without_asyncio_unless_the_input_cache_needs_a_loop(tmp_path: Path, root: str,
                                                                                   cache: bool, on_loop: bool) -> None:
    """gpstage.stage.run_stage: a shared file system (nothing to copy) and local copies take gpstage.aio's
    threads, on the server and in the entry; the input cache's store-to-store work keeps its loop. The
    outputs come back either way."""
    spec_path = make_job(tmp_path, root.format(tmp=tmp_path))
    spec_path.write_text(json.dumps({**json.loads(spec_path.read_text()), "input_cache": cache}))
    code = ("import sys; from pathlib import Path; from gpstage.stage import read_spec, run_stage, stage_in, stage_out;"
            "spec = read_spec(sys.argv[1]); stage_in(spec); run_stage(spec, True, node=True);"
            "Path(spec.workdir, 'result.txt').write_text('42'); run_stage(spec, False, node=True); stage_out(spec);"
            "print('asyncio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(spec_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(on_loop)
    assert (tmp_path / "gp/jobResults/7/result.txt").read_text() == "42"
