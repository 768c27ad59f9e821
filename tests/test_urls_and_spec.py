"""URL mapping (docs/design.md §1) and job-spec validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpstage.errors import BadInput, UnsafePath
from gpstage.jobfiles import spec_url
from gpstage.spec import DEFAULT_STAGE_IN_EXCLUDES, Direction, Role, load_spec, parse_spec, spec_schema
from gpstage.storage.tree import Excluder, check_key
from gpstage.urls import dir_url, join_url, split_url


@pytest.mark.parametrize(
    ("root", "path", "url"),
    [
        ("s3://bucket", "/opt/gp/jobResults/5", "s3://bucket/opt/gp/jobResults/5"),
        ("s3://bucket/", "/opt/gp/jobResults/5", "s3://bucket/opt/gp/jobResults/5"),
        ("s3://bucket/gp/", "/opt/x", "s3://bucket/gp/opt/x"),
        ("nfs:///", "/opt/x", "nfs:///opt/x"),
        ("file:///", "/opt/x", "file:///opt/x"),
        ("file:///data/root", "/opt/x", "file:///data/root/opt/x"),
        ("/data/root", "/opt/x", "file:///data/root/opt/x"),
        ("s3://bucket", "/opt/a b/ü%20", "s3://bucket/opt/a b/ü%20"),  # literal: no %-encoding
    ],
)
def test_dir_url(root: str, path: str, url: str) -> None:
    assert dir_url(root, path) == url


def test_join_and_split_keep_the_empty_host() -> None:
    assert join_url("nfs:///", "a") == "nfs:///a"
    assert join_url("s3://b/x", "a") == "s3://b/x/a"
    assert split_url("nfs:///opt/x") == ("nfs", "/opt/x")
    assert split_url("relative/dir").scheme == "file"


def test_relative_dir_path_refused() -> None:
    with pytest.raises(BadInput):
        dir_url("s3://b", "opt/x")


def spec_dict(**over) -> dict:
    base = {"job_id": "42", "storage_root": "s3://bucket",
            "dirs": [{"role": "tasklib", "path": "/opt/gp/taskLib/Mod.1"},
                     {"role": "inputs", "path": "/opt/gp/uploads/42"},
                     {"role": "workdir", "path": "/opt/gp/jobResults/42"}]}
    base.update(over)
    return base


def test_spec_defaults_follow_genepattern() -> None:
    spec = parse_spec(json.dumps(spec_dict()))
    assert spec.metadata_dir == "/opt/gp/jobResults/42/.gp_metadata"
    assert spec.executable_path == "/opt/gp/jobResults/42/.gp_metadata/exec.sh"
    assert spec_url(spec) == "s3://bucket/opt/gp/jobResults/42/.gp_metadata/job.json"
    assert spec.dir(Role.INPUTS).effective_direction is Direction.IN
    assert spec.dir(Role.TASKLIB).effective_direction is Direction.INOUT
    assert spec.parent_of(spec.dir(Role.METADATA)) is spec.dir(Role.WORKDIR)


def test_spec_yaml_is_accepted(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec_dict()))
    assert load_spec(tmp_path / "job.yaml").job_id == "42"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"colour": "blue"}, "colour: unknown key"),
        ({"spec_version": 2}, "spec_version"),
        ({"job_id": "../x"}, "job_id"),
        ({"storage_root": "::"}, "storage_root"),
        ({"env": {"AWS_SECRET_ACCESS_KEY": "x"}}, "credential"),
        ({"env": {"1BAD": "x"}}, "not a valid variable name"),
        ({"resources": {"cpus": 0}}, "resources.cpus"),
        ({"dirs": [{"role": "workdir", "path": "relative"}]}, "dirs.0.path"),
        ({"dirs": [{"role": "workdir", "path": "/a/../b"}]}, "normalised"),
        ({"dirs": [{"role": "workdir", "path": "/a"}, {"role": "inputs", "path": "/a"}]}, "same path"),
        ({"dirs": [{"role": "workdir", "path": "/a"}, {"role": "workdir", "path": "/b"}]}, "exactly one workdir"),
        ({"dirs": [{"role": "inputs", "path": "/a"}]}, "workdir"),
        ({"dirs": [{"role": "workdir", "path": "/w"}, {"role": "inputs", "path": "/i"},
                   {"role": "tasklib", "path": "/i/t", "direction": "inout"}]}, "does not cover"),
        ({"dirs": [{"role": "workdir", "path": "/w"},
                   {"role": "inputs", "path": "/i", "url": "s3://bucket/w"}]}, "same storage URL"),
    ],
)
def test_bad_specs_name_the_field(change: dict, needle: str) -> None:
    with pytest.raises(BadInput) as err:
        parse_spec(json.dumps(spec_dict(**change)))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_nesting_is_legal_when_directions_agree() -> None:
    spec = parse_spec(json.dumps(spec_dict(dirs=[{"role": "workdir", "path": "/w"}, {"role": "inputs", "path": "/w/in"}])))
    assert [d.role for d in spec.nested_in(spec.dir(Role.WORKDIR))] == [Role.INPUTS, Role.METADATA]


def test_schema_is_json_schema() -> None:
    schema = spec_schema()
    assert schema["type"] == "object" and "dirs" in schema["properties"] and schema["additionalProperties"] is False


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/abs", "a\\b", "a//b", "./a", "a/\x00"])
def test_unsafe_keys_refused(key: str) -> None:
    with pytest.raises(UnsafePath):
        check_key(key, "s3://b/p")


def test_excludes_match_like_aws_and_default_excludes_reach_any_depth() -> None:
    ex = Excluder(DEFAULT_STAGE_IN_EXCLUDES)
    for rel in (".DS_Store", "a/.DS_Store", ".git/config", "sub/.gitignore", "notes.txt~"):
        assert ex.excluded(rel), rel
    for rel in ("data.gct", "sub/github.txt", "my.git"):
        assert not ex.excluded(rel), rel
    assert Excluder(["*.log"]).excluded("deep/dir/x.log")  # '*' crosses '/'
