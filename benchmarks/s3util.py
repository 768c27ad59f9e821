"""The benchmark's own S3 calls (boto3): make the bucket, check what a tool stored (byte for byte), clean up.

These run between timed runs, never during one; the request counts are read before they start.
"""

from __future__ import annotations

from typing import Any

from servers import Server
from tools import ACCESS_KEY, BUCKET, SECRET_KEY

TOOL_METADATA = (".gpstage-manifest.json",)  # keys a tool stores about the tree, not part of it


def client(server: Server) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        region_name="us-east-1", config=Config(retries={"max_attempts": 5, "mode": "standard"},
                                                               connect_timeout=10, read_timeout=120))


def ensure_bucket(s3: Any) -> None:
    try:
        s3.head_bucket(Bucket=BUCKET)
    except Exception:  # noqa: BLE001 - any "not there" answer: create it
        s3.create_bucket(Bucket=BUCKET)


def warm_up(s3: Any, prefix: str) -> None:
    """Write and delete a few objects first, so the server's first-write costs (SeaweedFS allocates
    volumes for a new bucket) fall on no tool's timed run."""
    keys = [f"{prefix}/small-{i}" for i in range(64)] + [f"{prefix}/large"]
    for key in keys[:-1]:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x" * 4096)
    s3.put_object(Bucket=BUCKET, Key=keys[-1], Body=b"y" * (16 * 2**20))
    delete_prefix(s3, prefix)


def stored_objects(s3: Any, prefix: str) -> dict[str, dict[str, Any]]:
    """``{path relative to prefix: listed object}`` under ``prefix/``, tool metadata left out: one listing,
    from which :func:`sizes_of` and :func:`digests_of` both read."""
    out: dict[str, dict[str, Any]] = {}
    base = prefix.rstrip("/") + "/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=base):
        for obj in page.get("Contents", ()):
            rel = obj["Key"][len(base):]
            if rel.rsplit("/", 1)[-1] not in TOOL_METADATA:
                out[rel] = obj
    return out


def sizes_of(objects: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {rel: obj["Size"] for rel, obj in objects.items()}


def digests_of(s3: Any, objects: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``{rel: MD5 of its bytes}``: a single-part object's ETag is its MD5; a multipart one's is not (it
    depends on the tool's part size), so those are read back and hashed."""
    import hashlib

    out: dict[str, str] = {}
    for rel, obj in objects.items():
        etag = obj["ETag"].strip('"')
        if "-" in etag:
            h = hashlib.md5(usedforsecurity=False)
            for chunk in s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].iter_chunks(4 << 20):
                h.update(chunk)
            etag = h.hexdigest()
        out[rel] = etag
    return out


def delete_prefix(s3: Any, prefix: str) -> None:
    keys: list[dict[str, str]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix.rstrip("/") + "/"):
        keys += [{"Key": o["Key"]} for o in page.get("Contents", ())]
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys[i:i + 1000], "Quiet": True})


def difference(want: dict[str, Any], got: dict[str, Any], what: str = "size") -> str | None:
    """None if ``got`` holds exactly the files of ``want`` with their ``what`` (size or MD5); else what is
    wrong."""
    if want == got:
        return None
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(r for r in set(want) & set(got) if want[r] != got[r])
    totals = (f"{len(got):,} files / {sum(got.values()):,} bytes, expected {len(want):,} / {sum(want.values()):,}"
              if what == "size" else f"{len(got):,} files, expected {len(want):,}")
    parts = [totals]
    for label, items in (("missing", missing), ("unexpected", extra), (f"wrong {what}", wrong)):
        if items:
            parts.append(f"{len(items)} {label} (e.g. {items[0]})")
    return "; ".join(parts)
