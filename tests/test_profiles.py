"""Storage profiles in the settings file: prefix matching, credentials by reference only (a literal secret
is refused), masked `config show`, and a profile's endpoint, credentials and retry policy really used."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gpstage.errors import BadInput, StorageError
from gpstage.jobfiles import spec_url
from gpstage.profiles import StorageProfile, load_profiles, profile_for
from gpstage.sync import sync
from tests.conftest import run_cli


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "config.toml"
    monkeypatch.setenv("GPSTAGE_CONFIG", str(path))

    def write(text: str) -> Path:
        path.write_text(text)
        return path

    return write


def test_longest_prefix_wins_and_matches_whole_path_parts() -> None:
    profiles = {"s3://b/": StorageProfile(region="r1"), "s3://b/jobs/": StorageProfile(region="r2"),
                "s3://other": StorageProfile(region="r3")}
    assert profile_for("s3://b/x", profiles)[0] == "s3://b/"
    assert profile_for("s3://b/jobs/42/out", profiles)[0] == "s3://b/jobs/"
    assert profile_for("s3://b/jobsx/1", profiles)[0] == "s3://b/"
    assert profile_for("s3://other/k", profiles)[0] == "s3://other"
    assert profile_for("s3://otherbucket/k", profiles) is None
    assert profile_for("gs://b/x", profiles) is None


@pytest.mark.parametrize("key", ["secret_access_key", "aws_secret_access_key", "account_key", "connection_string", "token"])
def test_a_literal_secret_is_refused_with_how_to_reference_it(config, key: str) -> None:
    config(f'[storage."s3://b/"]\n{key} = "hunter2"\n')
    with pytest.raises(BadInput, match=f"literal secret \\({key}\\).*_env = \"VARIABLE_NAME\""):
        load_profiles()
    result = run_cli("config", "show", "s3://b/x", env=dict(os.environ))
    assert result.returncode == 2 and "hunter2" not in result.stderr + result.stdout


def test_unknown_keys_are_refused(config) -> None:
    config('[storage."s3://b/"]\nendpoit = "http://x"\n')
    with pytest.raises(BadInput, match="endpoit: unknown key"):
        load_profiles()


@pytest.mark.parametrize(("table", "message"), [
    ("connect_timeout = 0", "connect_timeout is 0; give a number of seconds above 0"),
    ("retry = {attempts = 0}", "retry.attempts is 0; give 1 or more"),
    ("retry = {attemps = 3}", "retry.attemps: unknown key"),
    ("retry = {base_delay = -1}", "retry.base_delay and retry.max_delay must be 0 or more"),
    ('s3_sse = "aes"', "s3_sse is 'aes'; give AES256"),
    ('s3_sse_kms_key_id = "k"', 's3_sse_kms_key_id needs s3_sse = "aws:kms"'),
    ("input_cache_min_size = -1", "input_cache_min_size is -1; give 0 or more bytes"),
    ('read_timeout = "soon"', "read_timeout: Input should be a valid number"),
])
def test_out_of_range_settings_are_refused_naming_the_setting(config, table: str, message: str) -> None:
    path = config(f'[storage."s3://b/"]\n{table}\n')
    with pytest.raises(BadInput) as err:
        load_profiles()
    assert err.value.problem.startswith("storage profile 's3://b/': ") and message in err.value.problem
    assert err.value.fix == f"fix it in {path}"


def test_config_show_masks_every_secret(config, monkeypatch: pytest.MonkeyPatch) -> None:
    config('[storage."s3://b/"]\nendpoint = "http://127.0.0.1:1"\naccess_key_id_env = "GP_KEY"\n'
           'secret_access_key_env = "GP_SECRET"\nretry = {attempts = 7}\n')
    monkeypatch.setenv("GP_KEY", "AKIAEXAMPLEKEYID0001")
    monkeypatch.setenv("GP_SECRET", "very-secret-value-0001")
    result = run_cli("config", "show", "s3://b/jobs/1", "--json", env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["profile"] == "s3://b/" and doc["retry"]["attempts"] == 7
    assert doc["settings"]["access_key_id_env"].startswith("$GP_KEY = AKIA…")
    text = result.stdout + run_cli("config", "show", "s3://b/jobs/1", env=dict(os.environ)).stdout
    for secret in ("very-secret-value-0001", "AKIAEXAMPLEKEYID0001", os.environ["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in text


def test_profile_endpoint_and_named_credentials_are_used(config, tmp_path: Path, bucket: str, s3_endpoint: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    config(f'[storage."s3://{bucket}/"]\nendpoint = "{s3_endpoint}"\naccess_key_id_env = "GP_KEY"\n'
           'secret_access_key_env = "GP_SECRET"\n')
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GP_KEY", "profile-key")
    monkeypatch.setenv("GP_SECRET", "profile-secret")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    assert sync(str(src), f"s3://{bucket}/p").files_copied == 1
    monkeypatch.delenv("GP_SECRET")
    with pytest.raises(BadInput, match="GP_SECRET.*not set"):
        sync(str(src), f"s3://{bucket}/p")


def test_profile_retry_policy_applies(config, tmp_path: Path) -> None:
    config('[storage."s3://nowhere/"]\nendpoint = "http://127.0.0.1:9"\nconnect_timeout = 1\n'
           'retry = {attempts = 1}\n')
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(StorageError, match="cannot reach the S3 endpoint http://127.0.0.1:9") as err:
        sync(str(src), "s3://nowhere/x")
    assert getattr(err.value, "report", None) is None or err.value.report.retries == 0


def test_the_module_does_not_see_variables_a_profile_reads_credentials_from(config, tmp_path: Path, bucket: str,
                                                                            s3_endpoint: str,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from examples.sample_job import lay_out_job
    from gpstage.spec import Role
    from gpstage.stage import stage_in
    from tests.jobs import fresh_node, run_entry, stored

    config(f'[storage."s3://{bucket}/"]\nendpoint = "{s3_endpoint}"\naccess_key_id_env = "GP_KEY"\n'
           'secret_access_key_env = "GP_SECRET"\n')
    monkeypatch.setenv("GP_KEY", "profile-key")
    monkeypatch.setenv("GP_SECRET", "profile-secret-0002")
    spec = lay_out_job(tmp_path / "srv", f"s3://{bucket}/gp")
    Path(spec.executable_path).write_text("env\n")
    stage_in(spec)
    fresh_node(spec)
    assert run_entry("--spec", spec_url(spec)).returncode == 0
    module_env = stored(spec, Role.METADATA, "stdout.txt").decode()
    assert "profile-secret-0002" not in module_env and "GP_KEY=" not in module_env
