"""gpstage's own S3 client: the few requests a sync needs, signed with SigV4 by one signer, sent by
whichever transport suits them: small answers (listings, HEADs, deletes, a multipart upload's start and
end) and multipart parts over plain HTTP/1.1 connections (:mod:`gpstage.storage.s3plain`), as are downloads
above 1 MiB and a client's first PLAIN_FIRST whole-object GETs and PUTs; the other small GETs of a
download and single PUTs through obstore's fast lane (:mod:`gpstage.storage.s3lane`) when it takes them
(never on gpstage.aio's threads); ranged reads of inputs and server-side copies over an aiohttp session
made on first use (and everything when a proxy is set). So a sync between a local dir and S3 without a
proxy needs no loop-bound session, and can run on threads (:meth:`S3Provider.runs_on_threads`).

Why not botocore/s3fs: profiling a 1,000-file sync showed ~1 ms of client CPU per request inside
botocore's request pipeline (serialisers, event hooks, signers) and ~0.35 s of imports, while the
requests themselves are simple. Here a request costs ~0.1-0.2 ms, so the client stops being the
bottleneck of small-file syncs. botocore is still used — lazily — to find credentials when they are
not plain environment variables (profiles, SSO, web identity, container and instance roles).

Only the operations gpstage uses: ListObjectsV2, HeadObject, GetObject (whole or ranged), PutObject,
multipart upload, CopyObject and UploadPartCopy (the input cache), DeleteObjects.
Every method is ONE request; retries, counting and orchestration belong to the caller.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit
from xml.etree import ElementTree

from gpstage import aio
from gpstage.storage import listing
from gpstage.storage.s3creds import Credentials, Refreshing
from gpstage.storage.s3lane import ClockSkewed, ObstoreLane
from gpstage.storage.s3plain import PlainTransport, changed_since_listed, proxied
from gpstage.storage.s3xml import (
    META,
    ListPage,
    S3ResponseError,
    child_text,
    copy_source,
    error_of,
    http_date,
    local_name,
    meta_headers,
    xml_escape,
)
from gpstage.storage.source import FileRange

DOWNLOAD_CHUNK = 2**20  # aiohttp's blocks of a download, with a proxy
NOT_TAKEN = object()  # what S3Client._in_lane answers when the request is the own client's to send
PLAIN_FIRST = 32  # a client's first whole-object GETs and PUTs go over s3plain, the rest through the lane
UNSIGNED = "UNSIGNED-PAYLOAD"  # the body is protected by TLS, Content-MD5 and size checks, not the signature


def encode_key(key: str) -> str:
    """S3's URI encoding of a key: every byte but unreserved ones, '/' kept (keys are never decoded)."""
    return quote(key, safe="/~")


class Signer:
    """AWS Signature Version 4 for the ``s3`` service; the derived key is cached per day and region."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.offset = timedelta(0)  # the store's clock minus ours, once a request was refused as skewed
        self._keys: dict[tuple[str, str, str], bytes] = {}

    def _key(self, secret: str, day: str) -> bytes:
        cached = self._keys.get((secret, day, self.region))
        if cached is None:
            k = hmac.digest(f"AWS4{secret}".encode(), day.encode(), "sha256")
            for part in (self.region, "s3", "aws4_request"):
                k = hmac.digest(k, part.encode(), "sha256")
            self._keys = {(secret, day, self.region): k}
            cached = k
        return cached

    def sign(self, method: str, host: str, path: str, query: str, headers: dict[str, str], creds: Credentials) -> None:
        """Add ``x-amz-date``, the token and ``Authorization`` to ``headers`` (names in lower case)."""
        now = datetime.now(timezone.utc) + self.offset
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        headers["host"] = host
        headers["x-amz-date"] = stamp
        headers.setdefault("x-amz-content-sha256", UNSIGNED)
        if creds.token:
            headers["x-amz-security-token"] = creds.token
        names = sorted(headers)
        canonical = "\n".join((method, path, query, "".join(f"{n}:{headers[n].strip()}\n" for n in names),
                               ";".join(names), headers["x-amz-content-sha256"]))
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._key(creds.secret_key, day), to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                                    f"SignedHeaders={';'.join(names)}, Signature={signature}")


def canonical_query(params: dict[str, str]) -> str:
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))


class S3Client:
    """Requests against one endpoint. Path-style addressing for custom endpoints (every S3-compatible
    store understands it); virtual-hosted style on AWS itself."""

    def __init__(self, endpoint: str | None, region: str, credentials: Credentials | Refreshing, *,
                 connect_timeout: float, read_timeout: float, pool: int, write_headers: dict[str, str] | None = None,
                 lane: ObstoreLane | None = None) -> None:
        self.lane = lane  # download GETs and small PUTs through obstore, when it takes them (s3lane.py)
        self.custom_endpoint = endpoint is not None
        self.write_headers = write_headers or {}  # encryption and ACL for every object written (a storage profile's)
        self.endpoint = (endpoint or f"https://s3.{region}.amazonaws.com").rstrip("/")
        self.signer = Signer(region)
        self.credentials = credentials
        self.timeouts = (connect_timeout, read_timeout)
        self.pool = pool
        self.session: Any = None  # aiohttp's, made on first use: a sync of small files may never need it
        self.plain = None if proxied() else PlainTransport(connect_timeout, read_timeout)  # listings, HEADs, deletes
        # The lane costs once (obstore's import and one store per bucket: ~25 ms) and saves per request:
        # a job dir's 20 files are over before it pays back, a 1,000-file sync is not (design, "The S3 fast lane").
        self.plain_first = PLAIN_FIRST if self.plain is not None else 0

    def _session(self) -> Any:
        if self.session is None:
            import aiohttp

            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.pool, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeouts[0], sock_read=self.timeouts[1]),
                auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding"), trust_env=True)
        return self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.plain is not None:
            self.plain.close()
        if self.lane is not None:
            await aio.to_thread(self.lane.close)

    def _where(self, bucket: str, key: str) -> tuple[str, str, str]:
        """(scheme://host, host, canonical path) for ``bucket``/``key``."""
        split = urlsplit(self.endpoint)
        if self.custom_endpoint or "." in bucket:
            path = f"{split.path}/{bucket}/{encode_key(key)}" if key else f"{split.path}/{bucket}"
            return f"{split.scheme}://{split.netloc}", split.netloc, path or "/"
        host = f"{bucket}.{split.netloc}"
        return f"{split.scheme}://{host}", host, f"/{encode_key(key)}"

    async def request(self, method: str, bucket: str, key: str = "", params: dict[str, str] | None = None,
                      data: bytes | FileRange | None = None, headers: dict[str, str] | None = None,
                      small: bool = False, into: FileRange | None = None) -> Any:
        """Send one signed request; raise :class:`S3ResponseError` unless it succeeded. The caller reads
        (and thereby releases) the returned response. ``small``: the answer is small and read whole, so
        the request may go over the standard library in a worker thread (:mod:`gpstage.storage.s3plain`);
        ``into`` (with that transport only): the body is written there by the thread."""
        base, host, path = self._where(bucket, key)
        query = canonical_query(params or {})
        target = f"{path}?{query}" if query else path
        for attempt in (1, 2):
            hdrs = {k.lower(): v for k, v in (headers or {}).items()}
            self.signer.sign(method, host, path, query, hdrs, await self._credentials())
            if (small or into) and self.plain is not None:
                resp = await aio.to_thread(self.plain.send, method, base, target, hdrs, data, into)
            else:
                from yarl import URL

                resp = await self._session().request(method, URL(f"{base}{target}", encoded=True), data=data, headers=hdrs)
            if resp.status < 300:
                return resp
            error = error_of(resp.status, await resp.read(), resp.headers)
            if attempt == 1 and error.code == "RequestTimeTooSkewed" and self._learn_clock(resp.headers):
                continue  # signed again with the store's time: once, never in a loop
            raise error
        raise AssertionError("unreachable")

    async def _credentials(self) -> Credentials:
        if isinstance(self.credentials, Credentials):
            return self.credentials
        return self.credentials.current() or await aio.to_thread(self.credentials.refresh)

    def _learn_clock(self, headers: Any) -> bool:
        """Adopt the store's clock from a refusal's ``Date`` header; False when it gives none."""
        server = http_date(headers.get("Date"))
        if server is None or server.tzinfo is None:
            return False
        self.signer.offset = server - datetime.now(timezone.utc)
        return True

    # ---- operations ---------------------------------------------------------------------
    async def list_page(self, bucket: str, prefix: str, token: str | None, start_after: str | None = None) -> ListPage:
        """One ListObjectsV2 page (up to 1,000 keys) of the keys after ``start_after`` (a full key; sent only
        on a listing's first request, the token carries it on), parsed when the caller reads it."""
        params = {"list-type": "2", "prefix": prefix, "encoding-type": "url", "max-keys": str(listing.PAGE_KEYS)}
        if token:
            params["continuation-token"] = token
        elif start_after:
            params["start-after"] = start_after
        return ListPage(await (await self.request("GET", bucket, params=params, small=True)).read())

    async def _in_lane(self, key: str, op: Callable[[ObstoreLane], Awaitable[Any]], writes: bool = False,
                       whole: bool = False) -> Any:
        """``op(lane)`` when the lane takes ``key`` (``writes``: and the write needs no header of the own
        client's); :data:`NOT_TAKEN` otherwise, and for the first :data:`PLAIN_FIRST` ``whole``-object
        requests, which s3plain sends, and on gpstage.aio's threads (the lane's calls need a loop). A store
        that refuses the lane's clock gets NOT_TAKEN too, and from then on every request of this client's,
        which adopts the store's clock."""
        if self.lane is None or not self.lane.takes(key) or (writes and self.write_headers) or aio.on_threads():
            return NOT_TAKEN
        if whole and self.plain_first > 0:
            self.plain_first -= 1
            return NOT_TAKEN
        try:
            return await op(self.lane)
        except ClockSkewed:
            self.lane = None
            return NOT_TAKEN

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        done = await self._in_lane(key, lambda lane: lane.get(bucket, key), whole=True)
        return done if done is not NOT_TAKEN else await self._get_own(bucket, key)

    async def _get_own(self, bucket: str, key: str) -> bytes:
        resp = await self.request("GET", bucket, key, small=True)
        return await resp.read()

    async def get_then(self, bucket: str, key: str, then: Callable[[bytes], None]) -> BaseException | None:
        """The whole object handed to ``then`` in a worker thread (in the lane's, when it takes the key);
        ``then``'s failure is returned (:meth:`ObstoreLane.get_then`)."""
        done = await self._in_lane(key, lambda lane: lane.get_then(bucket, key, then), whole=True)
        if done is not NOT_TAKEN:
            return done
        data = await self._get_own(bucket, key)
        try:
            await aio.to_thread(then, data)
        except Exception as exc:  # noqa: BLE001 - as the lane does
            return exc
        return None

    def batchable(self, keys: list[str]) -> list[int]:
        """The indexes of the ``keys`` :meth:`get_many` takes: those the lane takes, if they are more than
        the client's first PLAIN_FIRST whole-object requests (a job dir's few are done before the lane pays);
        none on gpstage.aio's threads."""
        lane = None if aio.on_threads() else self.lane
        taken = [i for i, key in enumerate(keys) if lane.takes(key)] if lane is not None else []
        return taken if len(taken) > self.plain_first else []

    async def get_many(self, bucket: str, calls: Sequence[tuple[str, Callable[[bytes], None]]],
                       workers: int) -> tuple[dict[int, Exception], dict[int, BaseException]]:
        """:meth:`ObstoreLane.get_many` (the caller checked :meth:`batchable`). A store that refuses the
        lane's clock turns the lane off, as in :meth:`_in_lane`: those calls' request errors are ClockSkewed."""
        assert self.lane is not None
        requests, local = await self.lane.get_many(bucket, calls, workers)
        if any(isinstance(e, ClockSkewed) for e in requests.values()):
            self.lane = None
        return requests, local

    async def get_into(self, bucket: str, key: str, into: FileRange, etag: str | None, ranged: bool) -> None:
        """The listed object's bytes ``into`` that part of an existing file (``ranged``: a Range GET for
        them, else the whole object), conditional on the listed ``etag`` so that an object replaced
        meanwhile is never mixed. Over s3plain the worker thread writes them as they arrive
        (:func:`~gpstage.storage.s3plain.receive_file`); with a proxy, aiohttp's blocks are written in a thread."""
        headers = {"If-Match": etag} if etag else {}
        if ranged:
            headers["Range"] = f"bytes={into.offset}-{into.offset + into.length - 1}"
        resp = await self.request("GET", bucket, key, headers=headers, into=into)
        if self.plain is not None:
            return
        try:
            if resp.content_length != into.length:
                raise changed_since_listed(resp.content_length, into.length)
            with open(into.path, "r+b") as f:
                f.seek(into.offset)
                async for block in resp.content.iter_chunked(DOWNLOAD_CHUNK):
                    await aio.to_thread(f.write, block)
        finally:
            resp.release()

    async def get_range(self, bucket: str, key: str, offset: int, length: int) -> bytes:
        resp = await self.request("GET", bucket, key, headers={"Range": f"bytes={offset}-{offset + length - 1}"})
        return await resp.read()

    async def head(self, bucket: str, key: str) -> dict[str, Any] | None:
        """HeadObject: size, ETag, LastModified and user metadata (``meta``), or None if there is no such key."""
        try:
            resp = await self.request("HEAD", bucket, key, small=True)
        except S3ResponseError as err:
            if err.status == 404:
                return None
            raise
        resp.release()
        h = resp.headers
        meta = {k[len(META):].lower(): v for k, v in h.items() if k.lower().startswith(META)}
        return {"Size": int(h.get("Content-Length") or 0), "ETag": h.get("ETag", ""),
                "LastModified": http_date(h.get("Last-Modified")), "meta": meta}

    async def put_bytes(self, bucket: str, key: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
        """PutObject with Content-MD5 (or a signed payload, in the lane), so the store refuses a body damaged
        on the way; returns the ETag."""
        if not metadata:
            done = await self._in_lane(key, lambda lane: lane.put(bucket, key, data), writes=True, whole=True)
            if done is not NOT_TAKEN:
                return done
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        resp = await self.request("PUT", bucket, key, data=data,
                                  headers={"Content-MD5": md5, **self.write_headers, **meta_headers(metadata)}, small=True)
        resp.release()
        return resp.headers.get("ETag", "")

    async def create_multipart(self, bucket: str, key: str, metadata: dict[str, str] | None = None) -> str:
        resp = await self.request("POST", bucket, key, params={"uploads": ""},
                                  headers={**self.write_headers, **meta_headers(metadata)}, small=True)
        return child_text(ElementTree.fromstring(await resp.read()), "UploadId") or ""

    async def copy_object(self, bucket: str, key: str, src_bucket: str, src_key: str,
                          metadata: dict[str, str] | None = None) -> None:
        """CopyObject (up to 5 GiB): the store copies the bytes; ``metadata`` replaces the user metadata."""
        headers = {"x-amz-copy-source": copy_source(src_bucket, src_key), **self.write_headers}  # as an upload is stored
        if metadata is not None:
            headers |= {"x-amz-metadata-directive": "REPLACE", **meta_headers(metadata)}
        resp = await self.request("PUT", bucket, key, headers=headers)
        text = await resp.read()  # S3 may answer 200 with an error inside the body
        if b"<Error>" in text:
            raise error_of(500, text, resp.headers)

    async def upload_part_copy(self, bucket: str, key: str, upload_id: str, number: int, src_bucket: str, src_key: str,
                               first: int, last: int) -> str:
        """UploadPartCopy: bytes ``first``..``last`` of the source become part ``number``; returns its ETag."""
        resp = await self.request("PUT", bucket, key, params={"partNumber": str(number), "uploadId": upload_id},
                                  headers={"x-amz-copy-source": copy_source(src_bucket, src_key),
                                           "x-amz-copy-source-range": f"bytes={first}-{last}"})
        text = await resp.read()
        if b"<Error>" in text:
            raise error_of(500, text, resp.headers)
        return child_text(ElementTree.fromstring(text), "ETag") or ""

    async def upload_part(self, bucket: str, key: str, upload_id: str, number: int, data: bytes | FileRange) -> str:
        """One UploadPart; returns its ETag. s3plain in a worker thread sends a :class:`FileRange` from
        the file itself (``sendfile``) and bytes as they are, without a copy; aiohttp (a proxy is set) the bytes."""
        if isinstance(data, FileRange) and self.plain is None:
            data = await aio.to_thread(data.read)
        resp = await self.request("PUT", bucket, key, params={"partNumber": str(number), "uploadId": upload_id}, data=data,
                                  small=True)
        resp.release()
        return resp.headers["ETag"]

    async def complete_multipart(self, bucket: str, key: str, upload_id: str, etags: list[str]) -> None:
        parts = "".join(f"<Part><PartNumber>{i}</PartNumber><ETag>{xml_escape(e)}</ETag></Part>" for i, e in enumerate(etags, 1))
        body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        resp = await self.request("POST", bucket, key, params={"uploadId": upload_id}, data=body, small=True)
        text = await resp.read()  # S3 may answer 200 with an error inside the body
        if b"<Error>" in text:
            raise error_of(500, text, resp.headers)

    async def list_multipart_page(self, bucket: str, prefix: str, markers: tuple[str, str] | None
                                  ) -> tuple[list[tuple[str, str]], tuple[str, str] | None]:
        """One ListMultipartUploads page: (key, upload id) pairs and the markers of the next page."""
        params = {"uploads": "", "prefix": prefix, "encoding-type": "url"}
        if markers:
            params["key-marker"], params["upload-id-marker"] = markers
        root = ElementTree.fromstring(await (await self.request("GET", bucket, params=params, small=True)).read())
        url_encoded = child_text(root, "EncodingType") == "url"
        uploads = []
        for node in root:
            if local_name(node.tag) == "Upload":
                fields = {local_name(c.tag): c.text or "" for c in node}
                uploads.append((unquote_plus(fields["Key"]) if url_encoded else fields["Key"], fields["UploadId"]))
        more = child_text(root, "IsTruncated") == "true"
        next_markers = (child_text(root, "NextKeyMarker") or "", child_text(root, "NextUploadIdMarker") or "") if more else None
        return uploads, next_markers

    async def abort_multipart(self, bucket: str, key: str, upload_id: str) -> None:
        resp = await self.request("DELETE", bucket, key, params={"uploadId": upload_id}, small=True)
        resp.release()

    async def delete_objects(self, bucket: str, keys: list[str]) -> None:
        """DeleteObjects for up to 1,000 keys; any per-key error fails the call."""
        objects = "".join(f"<Object><Key>{xml_escape(k)}</Key></Object>" for k in keys)
        body = f"<Delete><Quiet>true</Quiet>{objects}</Delete>".encode()
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        resp = await self.request("POST", bucket, params={"delete": ""}, data=body, headers={"Content-MD5": md5}, small=True)
        root = ElementTree.fromstring(await resp.read())
        for node in root:
            if local_name(node.tag) == "Error":
                fields = {local_name(c.tag): c.text or "" for c in node}
                raise S3ResponseError(500, fields.get("Code", "DeleteFailed"),
                                      f"{fields.get('Key')}: {fields.get('Message', '')}")
