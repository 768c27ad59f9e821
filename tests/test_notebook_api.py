"""The notebook API as the README shows it: make_job + run, awaiting inside a running event loop,
readable reprs, and a handle on a job submitted elsewhere."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from examples.sample_job import MODULE, expected_counts
from gpstage.errors import BadInput
from launchers import job, make_job, run

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # make_job puts work dirs under ./gpstage-jobs


def sample(**kwargs):
    module = Path("module")  # a copy: the module writes into its TASKLIB, never into the source tree
    shutil.copytree(MODULE, module, dirs_exist_ok=True)
    command = f'bash "$TASKLIB/wordcount.sh" "$INPUT_FILES_DIR/words.txt" "{module.absolute()}/libraries" 0 0'
    return make_job(command, tasklib=module / "tasklib", inputs=[module / "inputs/words.txt"],
                    libraries=[module / "libraries"], **kwargs)


def test_make_job_and_run_locally(tmp_path: Path) -> None:
    spec = sample()
    assert spec.workdir == str(tmp_path / "gpstage-jobs" / spec.job_id)
    result = run(spec)
    assert result.ok and result.exit_code == 0
    assert Path(spec.workdir, "counts.txt").read_text() == expected_counts()
    assert repr(result).startswith(f"<JobResult {spec.job_id} SUCCEEDED exit_code=0 on local+process: 2 outputs")
    assert "wordcount: reading" in Path(result.stdout).read_text()


def test_run_through_s3_storage(tmp_path: Path, bucket: str) -> None:
    result = run(sample(), storage=f"s3://{bucket}/nb", max_parallel=2)
    assert result.ok, result.message
    assert any(t["url"].startswith(f"s3://{bucket}/nb/") for t in result.transfers)


def test_await_a_handle_inside_a_running_loop() -> None:
    async def notebook_cell():
        handle = run(make_job("sleep 0.5; echo from the module"), wait=False)
        assert repr(handle).startswith(f"<JobHandle {handle.job_id} on local:")
        return handle, await handle

    handle, result = asyncio.run(notebook_cell())
    assert result.ok
    assert job(handle.job_id).logs() == "from the module\n"
    assert job(handle.job_id).status().state.value == "SUCCEEDED"


def test_missing_paths_are_one_line_errors_and_nothing_is_created(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="input /nonexistent/input.txt does not exist"):
        make_job("true", inputs=["/nonexistent/input.txt"])
    with pytest.raises(BadInput, match="tasklib"):
        make_job("true", tasklib="no-such-module")
    assert not (tmp_path / "gpstage-jobs").exists()
