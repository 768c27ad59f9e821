"""The XML and header parsing of gpstage's S3 client: S3 answers in XML, errors included, and keeps
its error code in the body, not in the status line."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, unquote_plus
from xml.etree import ElementTree

_NEXT_TOKEN = re.compile(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>")


class S3ResponseError(Exception):
    """A non-2xx answer. ``status`` and ``response`` follow botocore's shape so that the retry policy
    and the error descriptions read it the same way."""

    def __init__(self, status: int, code: str, message: str, headers: Any = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.status = status
        self.code = code
        self.headers = headers or {}
        self.response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}


_MONTHS = {name: n for n, name in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                                             "Dec"), 1)}


def http_date(value: str | None) -> datetime | None:
    """An HTTP date header (HEAD's Last-Modified, a refusal's Date) in the one form HTTP/1.1 senders use,
    ``Sun, 06 Nov 1994 08:49:37 GMT``; None if absent or in another form. Read here, not by
    ``email.utils``, whose import the sync path would pay for (docs/design.md §19)."""
    try:
        _weekday, day, month, year, clock, zone = (value or "").split()
        hour, minute, second = clock.split(":")
        if zone not in ("GMT", "UTC", "+0000"):
            return None
        return datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=timezone.utc)
    except (ValueError, KeyError):
        return None


def local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


def child_text(root: ElementTree.Element, name: str) -> str | None:
    for node in root:
        if local_name(node.tag) == name:
            return node.text
    return None


class ListPage:
    """One ListObjectsV2 answer, parsed when read. :attr:`next_hint` is its continuation token found by a
    search of the bytes (no parse), so that a listing can ask for the next page while it reads this one
    (:class:`gpstage.storage.listing.PagedListing`); :meth:`read` parses exactly, and its token is the one
    that counts. The search cannot be fooled by a key: keys come URL-encoded, and XML text has no ``<``."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    @property
    def next_hint(self) -> str | None:
        found = _NEXT_TOKEN.search(self.body)
        return None if found is None else _xml_text(found.group(1))

    @property
    def last_hint(self) -> str | None:
        """The last key on the page, found the same way (a range's end reached: no page to ask for early)."""
        at = self.body.rfind(b"<Key>")
        if at < 0:
            return None
        key = _xml_text(self.body[at + 5: self.body.find(b"<", at + 5)])
        return unquote_plus(key) if b"<EncodingType>url</EncodingType>" in self.body else key

    def read(self) -> tuple[list[tuple[str, int, str, str | None]], str | None]:
        """``(key, size, ETag, LastModified)`` of each object, and the continuation token (None: the last page)."""
        root = ElementTree.fromstring(self.body)
        self.body = b""
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        contents, key, size, etag, modified = (ns + name for name in ("Contents", "Key", "Size", "ETag", "LastModified"))
        decode = unquote_plus if root.findtext(ns + "EncodingType") == "url" else str
        objects = []
        for node in root:
            if node.tag != contents:
                continue
            name = node.findtext(key)
            if name is None:
                raise S3ResponseError(200, "MalformedListing", "the store listed an object without a key")
            objects.append((decode(name), int(node.findtext(size) or 0), node.findtext(etag) or "", node.findtext(modified)))
        more = root.findtext(ns + "IsTruncated") == "true"
        return objects, (root.findtext(ns + "NextContinuationToken") if more else None)


def _xml_text(raw: bytes) -> str:
    text = raw.decode(errors="replace")
    if "&" in text:  # an escaped character: rare enough to import html for
        import html

        text = html.unescape(text)
    return text


def xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def error_of(status: int, body: bytes, headers: Any) -> S3ResponseError:
    code, message = str(status), ""
    if body:
        try:
            root = ElementTree.fromstring(body)
            code = child_text(root, "Code") or code
            message = child_text(root, "Message") or ""
        except ElementTree.ParseError:
            message = body[:200].decode(errors="replace")
    elif status == 404:
        code = "NoSuchKey"
    return S3ResponseError(status, code, message, headers)


META = "x-amz-meta-"


def meta_headers(metadata: dict[str, str] | None) -> dict[str, str]:
    return {f"{META}{k}": v for k, v in (metadata or {}).items()}


def copy_source(bucket: str, key: str) -> str:
    return quote(f"/{bucket}/{key}", safe="/~")
