"""Bad input never gives a traceback: fuzzed job specs and legacy arguments, unsafe storage keys,
clashing dirs, missing roots, wrong credentials — each refused with one line and the right exit code,
nothing written outside the job."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from container_entry.legacy import spec_from_legacy
from gpstage.errors import BadInput, GpstageError, StorageError
from gpstage.spec import parse_spec
from gpstage.storage.tree import check_key
from gpstage.sync import sync
from tests.conftest import run_cli

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                           max_leaves=20)
spec_like = st.fixed_dictionaries({}, optional={
    "spec_version": st.sampled_from([1, 2, "1", None]), "job_id": st.text(max_size=40),
    "storage_root": (st.sampled_from(["s3://b", "file:///x", "nfs:///", "bogus://x", "relative", "", "s3://"])
                     | st.text(max_size=20)),
    "dirs": st.lists(st.fixed_dictionaries({}, optional={
        "role": st.sampled_from(["tasklib", "inputs", "libraries", "metadata", "workdir", "other"]),
        "path": st.sampled_from(["/a", "/a/b", "/a/../b", "rel", "/", "/a/", "/x\x00y"]) | st.text(max_size=15),
        "direction": st.sampled_from(["in", "out", "inout", "sideways"]), "url": st.text(max_size=15)}), max_size=5),
    "env": st.dictionaries(st.text(max_size=12), st.text(max_size=8), max_size=3) | json_values,
    "resources": json_values, "hooks": json_values, "executable": st.text(max_size=15),
})


def one_line(err: Exception) -> None:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text, text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_like)
def test_fuzzed_specs_parse_or_give_one_line(data: dict) -> None:
    try:
        parse_spec(json.dumps(data))
    except BadInput as err:
        one_line(err)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_as_a_spec_gives_one_line(text: str) -> None:
    try:
        parse_spec(text)
    except BadInput as err:
        one_line(err)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=7), st.dictionaries(st.sampled_from(["GP_METADATA_DIR", "AWS_BATCH_JOB_ID"]),
                                                                    st.text(max_size=20)))
def test_fuzzed_legacy_arguments_give_a_spec_or_one_line(args: list[str], env: dict) -> None:
    try:
        spec_from_legacy(args, env)
    except BadInput as err:
        one_line(err)


@pytest.mark.parametrize("key", ["../x", "a/../../b", "/abs", "a\\..\\b", "a\x00b", "./a", "a//b"])
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(StorageError) as err:
        check_key(key, "s3://b/p")
    one_line(err.value)


@pytest.mark.parametrize(("spec", "message"), [
    ({"dirs": [{"role": "workdir", "path": "/j/w"}, {"role": "inputs", "path": "/j/w"}]}, "same path"),
    ({"dirs": [{"role": "workdir", "path": "/j/w"}, {"role": "tasklib", "path": "/j/w/t", "direction": "out"},
               {"role": "inputs", "path": "/j/w/t/i", "direction": "in"}]}, "does not cover"),
    ({"storage_root": "bogus://x"}, "unknown storage scheme bogus://"),
    ({"storage_root": "gopher://x"}, "unknown storage scheme gopher://"),
])
@pytest.mark.parametrize("command", [["run"], ["spec", "validate"]])
def test_clashing_dirs_and_unknown_schemes_are_refused_by_the_cli(tmp_path: Path, spec: dict, message: str | None,
                                                                  command: list[str]) -> None:
    """`gpstage spec validate` refuses exactly what `gpstage run` refuses, before anything happens."""
    full = {"job_id": "bad", "storage_root": "s3://b", "dirs": [{"role": "workdir", "path": "/j/w"}], **spec}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(full))
    result = run_cli(*command, str(path), env=dict(os.environ))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_a_missing_local_root_and_wrong_credentials_are_one_line(tmp_path: Path, bucket: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BadInput) as err:
        sync(str(tmp_path / "nope"), f"s3://{bucket}/x")
    one_line(err.value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(GpstageError) as err2:
        sync(str(src), f"s3://{bucket}/x")
    one_line(err2.value)
    assert "credentials" in str(err2.value)


def test_a_symlink_out_of_the_job_dir_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("ok")
    (src / "leak").symlink_to("/etc")
    dst = tmp_path / "dst"
    with pytest.raises(StorageError) as err:
        sync(str(src), str(dst))
    one_line(err.value)
    assert not dst.exists() or not any(dst.iterdir())


def test_a_name_too_long_for_this_file_system_is_a_clear_error(tmp_path: Path, bucket: str, s3_client) -> None:
    s3_client.put_object(Bucket=bucket, Key=f"long/{'x' * 300}.txt", Body=b"x")
    s3_client.put_object(Bucket=bucket, Key="long/fine.txt", Body=b"fine")
    with pytest.raises(StorageError) as err:
        sync(f"s3://{bucket}/long", str(tmp_path / "dst"))
    one_line(err.value)
    assert (tmp_path / "dst" / "fine.txt").read_text() == "fine"  # the rest arrived; nothing half-written
    assert [p.name for p in (tmp_path / "dst").iterdir()] == ["fine.txt"]
