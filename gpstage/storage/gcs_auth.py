"""Google credentials for the gs:// provider: a storage profile's key file, else Application Default
Credentials; google-auth is imported only here, on connect, and a failure is one line saying how to fix it."""

from __future__ import annotations

import os
from typing import Any

from gpstage.errors import StorageError

SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"


def default_credentials(url: str) -> tuple[Any, str | None]:
    """Application Default Credentials, or a one-line error that says how to provide them."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        creds, project = google.auth.default(scopes=[SCOPE])
    except DefaultCredentialsError as err:
        raise StorageError(f"{url}: no Google credentials found ({' '.join(str(err).split()).split('. ')[0][:160]})",
                           "set GOOGLE_APPLICATION_CREDENTIALS to a key file or run `gcloud auth application-default login`; "
                           "for an emulator set STORAGE_EMULATOR_HOST") from None
    return creds, project


def credentials_from_file(path: str, url: str) -> tuple[Any, str | None]:
    """A service-account (or other) key file named by a storage profile's ``key_file``."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        creds, project = google.auth.load_credentials_from_file(os.path.expanduser(path), scopes=[SCOPE])
    except (DefaultCredentialsError, OSError, ValueError) as err:
        raise StorageError(f"{url}: cannot load the Google key file {path} ({' '.join(str(err).split())[:160]})",
                           "fix key_file in the storage profile") from None
    return creds, project
