"""Many jobs at once: 50 on the local launcher through S3 (queued by max_parallel) and 10 with the
docker runner — no cross-talk, every output right, the record store consistent."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from examples.sample_job import lay_out_job
from gpstage.launching import get_launcher
from gpstage.records import RecordStore
from gpstage.spec import Role
from gpstage.states import JobState

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


def word(i: int) -> str:
    """A word of letters only (the module counts letters), different for every job."""
    return f"job{chr(97 + i // 26)}{chr(97 + i % 26)}"


def run_many(tmp_path: Path, storage_root: str, count: int, settings: dict, **job: object) -> None:
    launcher = get_launcher("local", {"poll_interval": 0.2, **settings})
    specs = []
    for i in range(count):
        spec = lay_out_job(tmp_path / f"job{i}", storage_root, job_id=f"many-{i}", **job)
        Path(spec.dir(Role.INPUTS).path, "words.txt").write_text(f"{word(i)} " * (i + 1))
        specs.append(spec)
    with ThreadPoolExecutor(8) as pool:  # submitted at once, from several threads
        list(pool.map(launcher.submit, specs))
        results = list(pool.map(lambda s: launcher.wait(s.job_id, timeout=500), specs))
    for i, (spec, result) in enumerate(zip(specs, results, strict=True)):
        assert result.state is JobState.SUCCEEDED, result.message
        assert Path(spec.workdir, "counts.txt").read_text() == f"{word(i)}\t{i + 1}\n"  # its own input, nobody else's
        status = json.loads(Path(spec.metadata_dir, "status.json").read_text())
        assert status["job_id"] == spec.job_id
    records = RecordStore().all()
    assert sorted(r.job_id for r in records) == sorted(s.job_id for s in specs)
    assert all(r.state is JobState.SUCCEEDED and r.collected for r in records)


def test_fifty_local_jobs_on_s3(tmp_path: Path, bucket: str) -> None:
    run_many(tmp_path, f"s3://{bucket}/gp", 50, {"max_parallel": 2})


def test_ten_local_jobs_with_the_docker_runner(tmp_path: Path, images, docker_host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    run_many(tmp_path, "nfs:///", 10, {"runner": "docker", "max_parallel": 2}, image=images["bash-module"])
