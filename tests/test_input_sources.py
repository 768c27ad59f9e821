"""Inputs by URL (docs/input-cache.md): a file an inputs dir names by ``source`` is placed at stage-in —
server-side on the job's store, streamed in bounded memory from another, downloaded into a shared dir —
and a bad source is refused before anything is recorded or copied."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from gpstage.aio import run_sync
from gpstage.errors import BadInput
from gpstage.launching import get_launcher
from gpstage.records import RecordStore
from gpstage.spec import JobSpec
from gpstage.stage import check_storage, stage_in
from gpstage.storage import read_url
from gpstage.storage.s3 import PART_SIZE
from gpstage.storage.source import FileSource, ObjectSource
from gpstage.urls import join_url
from tests.fixtures_clouds import gcs_put


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(source kind, bytes) of every read an upload made."""
    seen: list[tuple[str, int]] = []
    for cls in (FileSource, ObjectSource):
        real = cls.read

        async def read(self, offset: int, length: int, _real=real, _kind=cls.__name__) -> bytes:  # type: ignore[no-untyped-def]
            data = await _real(self, offset, length)
            seen.append((_kind, len(data)))
            return data

        monkeypatch.setattr(cls, "read", read)
    return seen


def spec_with(tmp_path: Path, root: str, *sources: dict[str, str]) -> JobSpec:
    return JobSpec.model_validate({"job_id": f"src-{uuid.uuid4().hex[:6]}", "storage_root": root, "dirs": [
        {"role": "workdir", "path": str(tmp_path / "work")},
        {"role": "inputs", "path": str(tmp_path / "inputs"), "sources": list(sources)}]})


def stored(spec: JobSpec, name: str) -> bytes:
    return run_sync(read_url(join_url(spec.url_of(spec.dirs[1]), name)))


def test_a_source_in_another_bucket_is_copied_server_side(tmp_path: Path, bucket: str, s3_client,
                                                          reads: list[tuple[str, int]]) -> None:
    other = f"gpstage-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=other)
    data = os.urandom(3 * 2**20)
    try:
        s3_client.put_object(Bucket=other, Key="refs/genome.fa", Body=data)
        spec = spec_with(tmp_path, f"s3://{bucket}/gp", {"source": f"s3://{other}/refs/genome.fa"})
        check_storage(spec)
        stage_in(spec)
        assert stored(spec, "genome.fa") == data
        assert reads == []  # no byte of it passed through this process
    finally:
        s3_client.delete_object(Bucket=other, Key="refs/genome.fa")
        s3_client.delete_bucket(Bucket=other)


def test_a_source_on_another_scheme_is_streamed_in_parts(tmp_path: Path, bucket: str, gcs_bucket: str, gcs_fs,
                                                         gcs_endpoint: str, reads: list[tuple[str, int]]) -> None:
    data = os.urandom(2 * PART_SIZE + 12345)  # a multipart upload fed by ranged GETs
    gcs_put(gcs_fs, gcs_endpoint, gcs_bucket, "cohort/expr.gct", data)
    spec = spec_with(tmp_path, f"s3://{bucket}/gp", {"source": f"gs://{gcs_bucket}/cohort/expr.gct", "name": "data/expr.gct"})
    stage_in(spec)
    assert stored(spec, "data/expr.gct") == data
    assert {kind for kind, _ in reads} == {"ObjectSource"} and max(n for _, n in reads) <= PART_SIZE  # bounded memory
    assert sum(n for _, n in reads) == len(data)


def test_a_local_source_and_a_shared_dir(tmp_path: Path) -> None:
    """file:// sources into an nfs:/// job, whose inputs dir IS its path: the file lands in that dir."""
    src = tmp_path / "elsewhere" / "words.txt"
    src.parent.mkdir()
    src.write_text("alpha beta\n")
    os.chmod(src, 0o640)
    spec = spec_with(tmp_path, "nfs:///", {"source": f"file://{src}"})
    check_storage(spec)
    stage_in(spec)
    placed = tmp_path / "inputs" / "words.txt"
    assert placed.read_text() == "alpha beta\n" and placed.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("source, message", [
    ("s3://{bucket}/no/such/object.gct", "does not exist"),
    ("nosuchscheme://bucket/x.gct", "unknown storage scheme nosuchscheme://"),
])
def test_a_bad_source_is_refused_before_anything_is_recorded(tmp_path: Path, bucket: str, source: str,
                                                             message: str) -> None:
    spec = spec_with(tmp_path, f"s3://{bucket}/gp", {"source": source.format(bucket=bucket)})
    with pytest.raises(BadInput) as err:
        get_launcher("local", {}).submit(spec)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert RecordStore().all() == []
    assert not (tmp_path / "work").exists()
