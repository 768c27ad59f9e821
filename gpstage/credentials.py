"""Which environment variables carry storage credentials (docs/design.md §11).

Credentials reach gpstage only by reference: the standard variables of each storage SDK, a profile
name, a credential file. This module names them in one place so that the spec can refuse a secret
literally written into it, and the container entry can strip every one of them (secret values and
the references that lead to one) from the module's environment: a module gets no storage access
through gpstage's identity.
"""

from __future__ import annotations

from collections.abc import Mapping

# Values that ARE secrets: never allowed in a job spec.
SECRET_ENV_NAMES = frozenset(
    {
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZURE_CLIENT_SECRET",
        "GOOGLE_OAUTH_ACCESS_TOKEN",
    }
)

# Values that lead to a secret (key ids, profiles, credential files and endpoints, role tokens).
CREDENTIAL_REFERENCE_NAMES = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AZURE_STORAGE_ACCOUNT",
        "AZURE_STORAGE_ACCOUNT_NAME",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_FEDERATED_TOKEN_FILE",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE",
        "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE",
    }
)


def is_credential(name: str) -> bool:
    """True for a variable that is, or points at, a storage credential."""
    upper = name.upper()
    return upper in SECRET_ENV_NAMES or upper in CREDENTIAL_REFERENCE_NAMES


def without_credentials(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` with every credential variable removed."""
    return {k: v for k, v in env.items() if not is_credential(k)}
