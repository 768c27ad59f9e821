"""fsspec as-is: one recursive ``S3FileSystem.put`` or ``get``, the baseline gpstage is built on.

Usage: python fsspec_copy.py put LOCAL_DIR BUCKET/PREFIX | get BUCKET/PREFIX LOCAL_DIR
The endpoint comes from AWS_ENDPOINT_URL, credentials from the standard AWS environment.
"""

from __future__ import annotations

import os
import sys

import s3fs


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("put", "get"):
        print(__doc__, file=sys.stderr)
        return 2
    verb, src, dst = argv
    fs = s3fs.S3FileSystem(endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    # a trailing slash on the source copies its contents into dst, as the other tools do
    if verb == "put":
        fs.put(src.rstrip("/") + "/", dst, recursive=True)
    else:
        os.makedirs(dst, exist_ok=True)
        fs.get(src.rstrip("/") + "/", dst, recursive=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
