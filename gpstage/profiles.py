"""Storage profiles: per-URL-prefix settings in the settings file (``[storage."s3://bucket/prefix"]``).

A profile sets the endpoint, region, timeouts and retry policy for every URL under its prefix (the
longest matching prefix wins), and says WHERE credentials are — never what they are: names of
environment variables (``*_env``), an AWS profile name, a key file path. A literal secret in the file
is refused with an error that says how to reference it instead (docs/design.md §11).

    [storage."s3://gp-bucket/"]
    endpoint = "https://s3.example.org"
    region = "eu-west-1"
    connect_timeout = 5
    retry = {attempts = 8, base_delay = 0.5}
    access_key_id_env = "GP_S3_KEY_ID"
    secret_access_key_env = "GP_S3_SECRET"
    input_cache = true                 # inputs go through the content-addressed cache (docs/input-cache.md)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from gpstage.config import config_path, load_config
from gpstage.errors import BadInput
from gpstage.retry import RetryPolicy

# Field names people write when they paste a secret; each has a by-reference spelling.
_LITERAL_SECRETS = {
    "secret_access_key": "secret_access_key_env", "aws_secret_access_key": "secret_access_key_env",
    "access_key_id": "access_key_id_env", "aws_access_key_id": "access_key_id_env",
    "session_token": "session_token_env", "aws_session_token": "session_token_env",
    "account_key": "account_key_env", "connection_string": "connection_string_env", "sas_token": "sas_token_env",
    "token": "token_env", "password": "password_env", "secret": "a *_env variable name", "key": "key_file",
    "client_secret": "client_secret_env",
}


class StorageProfile(NamedTuple):
    """Settings for URLs under one prefix. Credentials only by reference.

    A NamedTuple, not a pydantic model nor a dataclass: every sync reads its profile and most settings
    files have none, so pydantic is imported only to validate tables that exist (:func:`load_profiles`),
    and the sync path imports no ``dataclasses`` (docs/design.md §19)."""

    endpoint: str | None = None  # service endpoint URL (S3-compatible store, emulator)
    region: str | None = None
    connect_timeout: float | None = None
    read_timeout: float | None = None
    retry: RetryPolicy | None = None  # retry = {attempts = 8, base_delay = 0.5, max_delay = 5}
    # credentials, by reference
    aws_profile: str | None = None  # a profile of the AWS config/credentials files
    access_key_id_env: str | None = None  # NAME of the variable holding the access key id
    secret_access_key_env: str | None = None  # NAME of the variable holding the secret key
    session_token_env: str | None = None
    account_name: str | None = None  # Azure storage account (not a secret)
    account_key_env: str | None = None
    connection_string_env: str | None = None
    sas_token_env: str | None = None
    key_file: str | None = None  # path of a key file (GCS service account JSON, AWS credentials file)
    project: str | None = None  # Google Cloud project
    # how S3 stores what gpstage writes — uploads and server-side copies alike (the bucket's defaults otherwise)
    s3_sse: str | None = None  # server-side encryption: "AES256", "aws:kms" or "aws:kms:dsse"
    s3_sse_kms_key_id: str | None = None  # the KMS key for aws:kms (an id or ARN: not a secret)
    s3_acl: str | None = None  # a canned ACL: "private", "bucket-owner-full-control", ...
    s3_fast_lane: bool = True  # small GETs and PUTs through obstore when it is installed (gpstage/storage/s3lane.py)
    # the input cache (docs/input-cache.md)
    input_cache: bool | None = None  # inputs dirs under this prefix go through the cache (a spec's input_cache wins)
    input_cache_root: str | None = None  # URL of the cache, on the same store; default <storage_root>/.gpstage-cache
    input_cache_min_size: int | None = None  # smaller files are uploaded as they are; default 1 MiB

    def problems(self) -> list[str]:
        """What the field types cannot say: ranges, and settings that need another one."""
        out = [f"{name} is {value:g}; give a number of seconds above 0"
               for name, value in (("connect_timeout", self.connect_timeout), ("read_timeout", self.read_timeout))
               if value is not None and value <= 0]
        if self.retry is not None and self.retry.attempts < 1:
            out.append(f"retry.attempts is {self.retry.attempts}; give 1 or more")
        if self.retry is not None and (self.retry.base_delay < 0 or self.retry.max_delay < 0):
            out.append("retry.base_delay and retry.max_delay must be 0 or more")
        if self.s3_sse is not None and self.s3_sse not in ("AES256", "aws:kms", "aws:kms:dsse"):
            out.append(f"s3_sse is {self.s3_sse!r}; give AES256, aws:kms or aws:kms:dsse")
        if self.s3_sse_kms_key_id is not None and not (self.s3_sse or "").startswith("aws:kms"):
            out.append("s3_sse_kms_key_id needs s3_sse = \"aws:kms\" (or aws:kms:dsse)")
        if self.input_cache_min_size is not None and self.input_cache_min_size < 0:
            out.append(f"input_cache_min_size is {self.input_cache_min_size}; give 0 or more bytes")
        return out

    def settings(self) -> dict[str, Any]:
        """The settings that are set, as written in the file."""
        return {k: v._asdict() if isinstance(v, RetryPolicy) else v for k, v in self._asdict().items() if v is not None}

    def s3_write_headers(self) -> dict[str, str]:
        """The headers every S3 write (PutObject, CreateMultipartUpload, CopyObject) carries."""
        out = {}
        if self.s3_sse:
            out["x-amz-server-side-encryption"] = self.s3_sse
        if self.s3_sse_kms_key_id:
            out["x-amz-server-side-encryption-aws-kms-key-id"] = self.s3_sse_kms_key_id
        if self.s3_acl:
            out["x-amz-acl"] = self.s3_acl
        return out

    def env_names(self) -> list[str]:
        """The variable names this profile reads credentials from."""
        return [v for k, v in self.settings().items() if k.endswith("_env")]

    def secret(self, field: str, env: Mapping[str, str] | None = None) -> str | None:
        """The value behind ``<field>_env``; a named variable that is not set is an error."""
        name = getattr(self, f"{field}_env")
        if not name:
            return None
        value = (os.environ if env is None else env).get(name)
        if not value:
            raise BadInput(f"storage profile names ${name} for {field}, but it is not set", f"export {name}=… before running")
        return value


def _check_literal_secrets(prefix: str, table: Mapping[str, Any]) -> None:
    for key in table:
        if key.lower() in _LITERAL_SECRETS:
            raise BadInput(f"storage profile {prefix!r} in {config_path()} holds a literal secret ({key})",
                           f"never write secrets in the file: put it in an environment variable and write "
                           f"{_LITERAL_SECRETS[key.lower()]} = \"VARIABLE_NAME\" (or use aws_profile / key_file)")


def load_profiles(config: Mapping[str, Any] | None = None) -> dict[str, StorageProfile]:
    """Every ``[storage."<prefix>"]`` table, validated."""
    tables = (load_config() if config is None else config).get("storage", {})
    if not isinstance(tables, dict):
        raise BadInput(f"{config_path()}: [storage] must hold tables named by URL prefix", 'write [storage."s3://bucket/"]')
    out = {}
    for prefix, table in tables.items():
        if not isinstance(table, dict):
            raise BadInput(f"{config_path()}: storage.{prefix} must be a table",
                           f'write [storage."{prefix}"] with settings under it')
        _check_literal_secrets(prefix, table)
        out[prefix] = _validated(prefix, table)
    return out


def _validated(prefix: str, table: Mapping[str, Any]) -> StorageProfile:
    from pydantic import TypeAdapter, ValidationError

    from gpstage.validation import format_validation_error

    try:
        profile = TypeAdapter(StorageProfile).validate_python(dict(table))
    except ValidationError as err:
        raise BadInput(format_validation_error(err, f"storage profile {prefix!r}"), f"fix it in {config_path()}") from None
    if problems := profile.problems():
        raise BadInput(f"storage profile {prefix!r}: " + "; ".join(problems), f"fix it in {config_path()}")
    return profile


def profile_for(url: str, profiles: Mapping[str, StorageProfile] | None = None) -> tuple[str, StorageProfile] | None:
    """The profile whose prefix is the longest match for ``url`` (prefixes match whole path parts)."""
    profiles = load_profiles() if profiles is None else profiles
    best = None
    for prefix in profiles:
        bare = prefix.rstrip("/")
        if (url.rstrip("/") == bare or url.startswith(bare + "/")) and (best is None or len(bare) > len(best.rstrip("/"))):
            best = prefix
    return (best, profiles[best]) if best is not None else None


def settings_for(url: str) -> StorageProfile:
    """The profile for ``url``, or an empty one (everything from the standard environment)."""
    found = profile_for(url)
    return found[1] if found else StorageProfile()


def credential_env_names() -> set[str]:
    """Every variable any profile reads credentials from: the container entry strips them from the module."""
    try:
        return {name for p in load_profiles().values() for name in p.env_names()}
    except BadInput:
        return set()
