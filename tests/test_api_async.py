"""The notebook API in a running event loop and with inputs by URL, on the S3 server (moto):
``submit_async`` stages without blocking the loop and reports bytes on the loop's thread; a cancelled
``submit_async`` still submits the job whole; ``make_job`` takes URLs as inputs."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpstage.errors import BadInput
from gpstage.spec import InputSource, Role
from launchers import job, make_job, run, submit_async
from launchers.base import JobHandle

pytestmark = pytest.mark.timeout(60)

BIG = 100 * 2**20
WORDS = "the quick brown fox jumps over the lazy dog\n"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # make_job puts work dirs under ./gpstage-jobs


@pytest.fixture
def other_bucket(s3_client) -> Iterator[str]:
    """A second bucket, not the job's storage, holding ``dir/words.txt``."""
    name = f"gpstage-src-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    s3_client.put_object(Bucket=name, Key="dir/words.txt", Body=WORDS.encode())
    yield name
    s3_client.delete_object(Bucket=name, Key="dir/words.txt")
    s3_client.delete_bucket(Bucket=name)


def test_submit_async_keeps_the_loop_ticking_while_100_mib_upload(tmp_path: Path, bucket: str) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(BIG)
    spec = make_job('wc -c < "$INPUT_FILES_DIR/big.bin" > size.txt', inputs=[big])
    exec_sh = Path(spec.metadata_dir, "exec.sh").stat().st_size
    calls: list[tuple[int, int, int]] = []

    async def notebook_cell():
        loop_thread = threading.get_ident()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        try:
            submitting = submit_async(spec, storage=f"s3://{bucket}/nb",
                                      progress=lambda d, t: calls.append((d, t, threading.get_ident())))
            handle = await asyncio.wait_for(submitting, timeout=45)
            ticked = ticks
        finally:
            ticking.cancel()
        return loop_thread, ticked, handle, await handle.wait_async(timeout=45)

    loop_thread, ticked, handle, result = asyncio.run(notebook_cell())
    assert ticked >= 10, f"the loop ticked only {ticked} times while 100 MiB was staged"
    assert isinstance(handle, JobHandle) and handle.job_id == spec.job_id
    assert result.ok and result.state.value == "SUCCEEDED", result.message
    assert Path(spec.workdir, "size.txt").read_text().strip() == str(BIG)
    assert job(spec.job_id).status().state.value == "SUCCEEDED"

    assert calls and {tid for _, _, tid in calls} == {loop_thread}, "progress must be called on the loop's thread"
    pairs = [(d, t) for d, t, _ in calls]
    assert pairs[-1] == (BIG + exec_sh, BIG + exec_sh)
    steps = list(zip([(0, 0), *pairs[:-1]], pairs, strict=True))
    for (d0, t0), (d1, t1) in steps:
        assert d0 <= d1 <= t1 and t0 <= t1 and (d0, t0) != (d1, t1)
    advances = [d1 for (_, t0), (d1, t1) in steps if t1 == t0]  # the calls made as files were copied
    assert advances == sorted(set(advances)) and advances[-1] == BIG + exec_sh  # strictly increasing, up to the total
    assert BIG in {t1 - t0 for (_, t0), (_, t1) in steps}  # the inputs dir's start


def test_a_cancelled_submit_async_still_submits_the_job_whole(bucket: str) -> None:
    spec = make_job("echo from the module")

    async def notebook_cell() -> None:
        task = asyncio.create_task(submit_async(spec, storage=f"s3://{bucket}/nb"))
        await asyncio.sleep(0)  # it has started submitting
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)
        assert job(spec.job_id).status().backend_id is not None  # started before the task ended, not later

    asyncio.run(notebook_cell())
    result = job(spec.job_id).wait(timeout=30)  # recorded and started, though the task was cancelled
    assert result.ok, result.message
    assert job(spec.job_id).logs() == "from the module\n"


def test_run_reports_progress_from_the_staging_thread(tmp_path: Path, bucket: str) -> None:
    small = tmp_path / "small.txt"
    small.write_text(WORDS)
    calls: list[tuple[int, int]] = []
    result = run(make_job("true", inputs=[small]), storage=f"s3://{bucket}/nb", timeout=30,
                 progress=lambda d, t: calls.append((d, t)))
    assert result.ok, result.message
    assert calls[-1][0] == calls[-1][1] > len(WORDS) and [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_make_job_takes_urls_as_inputs(tmp_path: Path, other_bucket: str) -> None:
    local = tmp_path / "local.txt"
    local.write_text("local\n")
    url = f"s3://{other_bucket}/dir/words.txt"
    spec = make_job("true", inputs=[url])
    first = spec.dirs[0]
    assert first.role is Role.INPUTS and first.path == f"{spec.workdir}.inputs"
    assert first.sources == [InputSource(source=url)] and first.sources[0].rel == "words.txt"
    assert Path(first.path).is_dir() and not any(Path(first.path).iterdir())  # created, empty: nothing is fetched yet

    mixed = make_job("true", inputs=[local, url, InputSource(source=url, name="again.txt")])
    first = mixed.dirs[0]
    assert [s.rel for s in first.sources or []] == ["words.txt", "again.txt"]
    assert sorted(p.name for p in Path(first.path).iterdir()) == ["local.txt"]

    with pytest.raises(BadInput, match="would be words.txt"):
        make_job("true", inputs=[url, f"s3://{other_bucket}/elsewhere/words.txt"], workdir=tmp_path / "nope1")
    with pytest.raises(BadInput, match=f"input s3://{other_bucket}/dir/"):
        make_job("true", inputs=[f"s3://{other_bucket}/dir/"], workdir=tmp_path / "nope2")
    assert not (tmp_path / "nope1").exists() and not (tmp_path / "nope2").exists()


def test_a_job_with_a_url_input_sees_the_file(bucket: str, other_bucket: str) -> None:
    spec = make_job('wc -w < "$INPUT_FILES_DIR/words.txt" > count.txt', inputs=[f"s3://{other_bucket}/dir/words.txt"],
                    storage=f"s3://{bucket}/nb")
    result = run(spec, timeout=45)
    assert result.ok, f"{result!r}: {job(spec.job_id).logs('stderr')}"
    assert Path(spec.workdir, "count.txt").read_text().strip() == str(len(WORDS.split()))
