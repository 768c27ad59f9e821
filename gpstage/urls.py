"""Storage URLs: splitting them and mapping a job dir onto its URL (docs/design.md §1).

Keys are literal: nothing here %-encodes or decodes. A bare local path is a ``file`` URL.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from gpstage.errors import BadInput


class SplitUrl(NamedTuple):
    scheme: str
    rest: str  # everything after "scheme://", e.g. "bucket/key" or "/abs/path"


def split_url(url: str) -> SplitUrl:
    """Split ``url`` into scheme and the rest; a bare path becomes ``file`` with an absolute path."""
    if not url or not url.strip():
        raise BadInput("empty storage URL", "give a path or a URL such as s3://bucket/prefix")
    scheme, sep, rest = url.partition("://")
    if not sep:
        return SplitUrl("file", os.path.abspath(os.path.expanduser(url)))
    if not scheme or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
        raise BadInput(f"malformed storage URL {url!r}", "write it as SCHEME://LOCATION, e.g. s3://bucket/prefix")
    return SplitUrl(scheme.lower(), rest)


def dir_url(storage_root: str, path: str) -> str:
    """The URL of local dir ``path`` under ``storage_root``: the two joined by exactly one slash.

    ``s3://bucket`` + ``/opt/gp/jobResults/5`` → ``s3://bucket/opt/gp/jobResults/5``;
    ``nfs:///`` + ``/opt/x`` → ``nfs:///opt/x`` (a plain ``rstrip("/")`` would lose the empty host).
    """
    if not os.path.isabs(path):
        raise BadInput(f"job dir path {path!r} is not absolute", "use an absolute path such as /opt/gp/jobs/1")
    scheme, rest = split_url(storage_root)
    base = rest.rstrip("/")
    return f"{scheme}://{base}/{path.lstrip('/')}"


def join_url(url: str, rel: str) -> str:
    """``url`` with the relative key ``rel`` appended under it."""
    if not rel:
        return url
    return f"{url}{rel}" if url.endswith("/") else f"{url}/{rel}"
