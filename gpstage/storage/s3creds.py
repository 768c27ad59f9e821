"""Where gpstage's S3 client gets its credentials and region: static keys (a storage profile's, or the
standard environment's), else botocore's chain (profiles, SSO, web identity, container and instance
roles), imported only then and refreshed when the credentials expire."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

DEFAULT_REGION = "us-east-1"


class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: str | None = None


class NoCredentialsError(Exception):
    """No credentials in the environment, profile files, or any role botocore can reach."""


def credential_source(access_key: str | None = None, secret_key: str | None = None, token: str | None = None,
                      aws_profile: str | None = None, credentials_file: str | None = None) -> Credentials | Refreshing:
    """The credentials to sign with: the given static ones (a storage profile read them from the variables
    it names), else static ones from the standard environment, else botocore's chain (profiles, SSO, web
    identity, container and instance roles), refreshed when they expire."""
    if not (access_key and secret_key) and not (aws_profile or credentials_file):
        access_key, secret_key = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        token = os.environ.get("AWS_SESSION_TOKEN") or None
    if access_key and secret_key:
        return Credentials(access_key, secret_key, token)
    import botocore.session

    session = botocore.session.Session(profile=aws_profile)
    if credentials_file:
        session.set_config_variable("credentials_file", credentials_file)
    found = session.get_credentials()
    if found is None:
        raise NoCredentialsError("no AWS credentials found")
    return Refreshing(found)


class Refreshing:
    """botocore's credentials, frozen between refreshes. A refresh may call a role's endpoint (blocking
    network I/O), so the client runs :meth:`refresh` in a worker thread, never in its event loop."""

    def __init__(self, found: Any) -> None:
        self.found = found
        self.frozen: Credentials | None = None

    def current(self) -> Credentials | None:
        """The frozen credentials, or None when a refresh is due."""
        due = getattr(self.found, "refresh_needed", None)  # only botocore's RefreshableCredentials expire
        return None if self.frozen is None or (due is not None and due()) else self.frozen

    def refresh(self) -> Credentials:
        frozen = self.found.get_frozen_credentials()
        self.frozen = Credentials(frozen.access_key, frozen.secret_key, frozen.token)
        return self.frozen


def default_region(aws_profile: str | None = None) -> str:
    """``AWS_REGION`` / ``AWS_DEFAULT_REGION``, else the region of the AWS profile in use (read with
    botocore, only when there is a config file to read), else us-east-1."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    config = os.environ.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config")
    if not region and os.path.isfile(config):
        try:
            import botocore.session

            region = botocore.session.Session(profile=aws_profile).get_config_variable("region")
        except Exception:  # noqa: BLE001 - botocore absent, or a broken profile: the default region
            region = None
    return region or DEFAULT_REGION
