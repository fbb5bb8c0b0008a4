"""The request layer: sign -> send -> map errors -> retry, and one method per OSS operation.

Theory of operation
-------------------
``Session`` is what every transfer talks to; ``Client`` is a ``Session`` with configuration
and lifecycle on top (``_client``). It sits below the upload and download engines so that the
import graph points one way: ``Client/Bucket -> upload/download -> transfer core -> this``.
Each OSS request goes through ``Session._request``:

1. fetch credentials from the provider (refreshable credentials plug in there);
2. sign with the current time corrected by the observed clock skew (spec 2.3, 3.1);
3. send through the transport (a body factory is called afresh for every attempt);
4. map a non-2xx answer to ``ServiceError`` (``NoSuchUploadError`` for NoSuchUpload), parse
   the error document or the ``x-oss-err`` header of body-less answers (spec 7.1);
5. run the caller's ``check`` on a 2xx answer (a CRC mismatch raises ``IntegrityError``);
6. on a retryable failure (``_retry.is_retryable``), wait a full-jitter backoff and try again,
   at most ``RetryPolicy.max_attempts`` times. After ``RequestTimeTooSkewed`` the offset
   between the server's ``Date`` and the *uncorrected* local clock is recorded, retried or
   not, and applied to every later signature, which the official Python SDK never does.
   The last real error is raised with a note on how many attempts were made. An error the
   request body (or a response sink) raised on purpose (the caller's ``fatal``: a progress
   hook's exception, a source file that changed, a destination that cannot be written) is
   raised as it is, never retried: the transport can only report it as a broken connection.

Response XML is decoded and Complete's body encoded off the critical path: ListParts pages
(1,000 parts, ~10 ms to decode) in a worker thread, Complete's body for 10,000 parts on the
loop in slices with a yield between them (a thread would hold the GIL up to 5 ms at a time).

Addressing (spec 1.3): endpoints whose host is an IP literal or ``localhost`` use path style
(``/bucket/key``); real domains use virtual-hosted style (``bucket.host/key``); ``path_style``
overrides both.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime

from ._credentials import CredentialsProvider
from ._errors import NoSuchUploadError, OssError, ProtocolError, ServiceError
from ._fileio import IoRunner
from ._http import SINK_CHUNK, BodyFactory, HttpRequest, HttpResponse, SinkFactory, Transport
from ._models import (
    CompleteResult,
    ErrorDocument,
    InitiateResult,
    ListUploadsResult,
    PartInfo,
    UploadSummary,
)
from ._retry import ClockSkew, RetryPolicy
from ._signing import SignatureVersion, encode_query, request_path, sign_request
from ._xml import (
    COMPLETE_REQUEST_CLOSE,
    COMPLETE_REQUEST_OPEN,
    decode_complete_result,
    decode_error,
    decode_error_header,
    decode_initiate_result,
    decode_list_parts_result,
    decode_list_uploads_result,
    encode_complete_parts,
)

__all__ = ["RetryHook", "Session", "validate_bucket_name", "validate_key"]

logger = logging.getLogger("aiooss_resume")

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_ENCODE_SLICE = 500  # parts per loop step when encoding Complete's body (~0.4 ms)

RetryHook = Callable[[int, OssError, float], Awaitable[None] | None]
"""Called before a retry with (failures so far, the error, the delay about to be slept)."""


def validate_bucket_name(name: str) -> str:
    """Return ``name`` if it follows OSS's bucket naming rules (spec 1.6), else ValueError."""
    if not isinstance(name, str) or not _BUCKET_RE.match(name):
        raise ValueError(
            f"invalid bucket name {name!r}: 3-63 characters of lower-case letters, digits and "
            "'-', starting and ending with a letter or digit"
        )
    return name


def validate_key(key: str) -> str:
    """Return ``key`` if OSS accepts it as an object key (spec 1.6), else ValueError."""
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    if not key:
        raise ValueError("key must not be empty")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("key is not valid Unicode (it holds a lone surrogate)") from None
    if len(encoded) > 1023:
        raise ValueError(f"key is {len(encoded)} bytes in UTF-8; OSS allows at most 1023")
    if key[0] in "/\\":
        raise ValueError("key must not start with '/' or '\\'")
    return key


def _service_error(resp: HttpResponse) -> ServiceError:
    doc: ErrorDocument | None = None
    try:
        if resp.body:
            doc = decode_error(resp.body)
        elif resp.header("x-oss-err"):
            doc = decode_error_header(resp.header("x-oss-err"))
    except ProtocolError:
        doc = None
    code = doc.code if doc else ""
    cls = NoSuchUploadError if code == "NoSuchUpload" else ServiceError
    return cls(
        resp.status,
        code,
        doc.message if doc else "",
        (doc.request_id if doc and doc.request_id else resp.header("x-oss-request-id")),
        ec=(doc.ec if doc and doc.ec else resp.header("x-oss-ec")),
        host_id=doc.host_id if doc else "",
        details=doc.details if doc else None,
        server_date=resp.header("date"),
    )


class _Requests:
    """Sign -> send -> map errors -> retry: ``_request``, which every operation uses.

    ``Client.__init__`` sets every attribute below; the engines are given the ``Client`` as
    a ``Session`` and use nothing else of it.
    """

    endpoint: str
    signature_version: SignatureVersion
    region: str | None
    retry: RetryPolicy
    _scheme: str
    _netloc: str
    _path_style: bool
    _credentials: CredentialsProvider
    _transport: Transport
    _skew: ClockSkew
    _rng: Callable[[], float]
    _io: IoRunner
    _closed: bool

    # ------------------------------------------------------------------ plumbing

    def _url(self, bucket: str | None, key: str | None, query: Sequence[tuple[str, str]]) -> str:
        host = self._netloc
        if bucket and not self._path_style:
            host = f"{bucket}.{host}"
        url = f"{self._scheme}://{host}{request_path(bucket, key, path_style=self._path_style)}"
        if query:
            url += "?" + encode_query(query)
        return url

    async def _request(
        self,
        method: str,
        bucket: str | None,
        key: str | None,
        *,
        query: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        body: bytes | BodyFactory | None = None,
        content_length: int | None = None,
        check: Callable[[HttpResponse], None] | None = None,
        on_retry: RetryHook | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        fatal: Callable[[], BaseException | None] | None = None,
        sink: SinkFactory | None = None,
    ) -> HttpResponse:
        """Sign, send, map errors, retry. ``fatal``, asked after a failed attempt, returns
        an exception to raise at once instead (one the body raised through the transport).
        ``sink`` receives a 2xx answer's body (see ``_http``), also from a transport that
        returned the body whole."""
        if self._closed:
            raise RuntimeError("this Client is closed")
        failures = 0
        url = self._url(bucket, key, query)
        while True:
            signed_at = self._skew.now(datetime.now(UTC))
            try:
                creds = await self._credentials.get_credentials()
                signed = sign_request(
                    method=method,
                    bucket=bucket,
                    key=key,
                    query=query,
                    headers=headers or {},
                    access_key_id=creds.access_key_id,
                    access_key_secret=creds.access_key_secret,
                    security_token=creds.security_token,
                    version=self.signature_version,
                    region=self.region,
                    now=signed_at,
                )
                resp = await self._transport.send(
                    HttpRequest(method, url, signed, body, content_length, sink)
                )
                if not 200 <= resp.status < 300:
                    raise _service_error(resp)
                if sink is not None and resp.body:
                    resp = await _feed(resp, sink())
                if check is not None:
                    check(resp)
                return resp
            except OssError as exc:
                cause = fatal() if fatal is not None else None
                if cause is not None:
                    # As itself (the transport's wrapping of it is noise), its cause kept.
                    raise cause from cause.__cause__
                failures += 1
                if isinstance(exc, ServiceError) and exc.code == "RequestTimeTooSkewed":
                    # Against the raw local clock (the server's Date is absolute), and
                    # whether or not this request is retried: later ones need it too.
                    self._skew.observe(exc.server_date, datetime.now(UTC))
                    logger.warning("clock skew detected; offset now %.1f s", self._skew.offset)
                if not self.retry.should_retry(exc, failures):
                    if failures > 1:
                        exc.add_note(f"(gave up after {failures} attempts)")
                    raise
                delay = self.retry.backoff(failures - 1, self._rng)
                logger.info("retrying %s after %s (attempt %d)", method, exc, failures + 1)
                if on_retry is not None:
                    result = on_retry(failures, exc, delay)
                    if result is not None:
                        await result
                await (sleep or asyncio.sleep)(delay)


class Session(_Requests):
    """The request layer one ``Client`` is built on: one method per OSS operation."""

    async def _put_object(
        self,
        bucket: str,
        key: str,
        body: BodyFactory,
        size: int,
        headers: Mapping[str, str],
        check: Callable[[HttpResponse], None],
        on_retry: RetryHook | None,
        *,
        fatal: Callable[[], BaseException | None] | None = None,
    ) -> HttpResponse:
        return await self._request(
            "PUT",
            bucket,
            key,
            headers=headers,
            body=body,
            content_length=size,
            check=check,
            on_retry=on_retry,
            fatal=fatal,
        )

    async def _initiate(
        self, bucket: str, key: str, headers: Mapping[str, str], on_retry: RetryHook | None
    ) -> InitiateResult:
        resp = await self._request(
            "POST",
            bucket,
            key,
            query=[("uploads", ""), ("encoding-type", "url")],
            headers=headers,
            body=b"",
            on_retry=on_retry,
        )
        return decode_initiate_result(resp.body)

    async def _upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        body: BodyFactory,
        size: int,
        headers: Mapping[str, str],
        check: Callable[[HttpResponse], None],
        on_retry: RetryHook | None,
        *,
        fatal: Callable[[], BaseException | None] | None = None,
    ) -> HttpResponse:
        return await self._request(
            "PUT",
            bucket,
            key,
            query=[("partNumber", str(number)), ("uploadId", upload_id)],
            headers=headers,
            body=body,
            content_length=size,
            check=check,
            on_retry=on_retry,
            fatal=fatal,
        )

    async def _list_parts(
        self, bucket: str, key: str, upload_id: str, headers: Mapping[str, str] | None = None
    ) -> list[PartInfo]:
        """Every part of the upload, following ``NextPartNumberMarker`` across pages."""
        parts: list[PartInfo] = []
        marker = 0
        while True:
            resp = await self._request(
                "GET",
                bucket,
                key,
                query=[
                    ("uploadId", upload_id),
                    ("max-parts", "1000"),
                    ("part-number-marker", str(marker)),
                    ("encoding-type", "url"),
                ],
                headers=headers,
            )
            page = await self._io.run(decode_list_parts_result, resp.body)
            parts.extend(page.parts)
            if not page.is_truncated:
                return parts
            if page.next_part_number_marker <= marker:
                raise ProtocolError("ListParts is truncated but its marker does not advance")
            marker = page.next_part_number_marker

    async def _complete(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Iterable[tuple[int, str]],
        headers: Mapping[str, str],
        on_retry: RetryHook | None,
    ) -> tuple[CompleteResult, HttpResponse]:
        body = await _encode_complete(parts)
        resp = await self._request(
            "POST",
            bucket,
            key,
            query=[("uploadId", upload_id), ("encoding-type", "url")],
            headers={**headers, "Content-Type": "application/xml"},
            body=body,
            on_retry=on_retry,
        )
        if resp.body and resp.status == 200:
            try:
                return decode_complete_result(resp.body), resp
            except ProtocolError:
                if "x-oss-callback" not in {h.lower() for h in headers}:
                    raise
        # A callback answer replaces the XML (spec 5.6); the ETag header still holds.
        return CompleteResult(bucket=bucket, key=key, etag=resp.header("etag")), resp

    async def _abort(
        self, bucket: str, key: str, upload_id: str, headers: Mapping[str, str] | None = None
    ) -> None:
        await self._request("DELETE", bucket, key, query=[("uploadId", upload_id)], headers=headers)

    async def _head(
        self, bucket: str, key: str, headers: Mapping[str, str] | None = None
    ) -> HttpResponse | None:
        """The object's headers, or None if it does not exist."""
        try:
            return await self._request("HEAD", bucket, key, headers=headers)
        except ServiceError as exc:
            if exc.status == 404:
                return None
            raise

    async def _get_range(
        self,
        bucket: str,
        key: str,
        start: int,
        end: int,
        headers: Mapping[str, str],
        sink: SinkFactory,
        check: Callable[[HttpResponse], None],
        on_retry: RetryHook | None,
        *,
        fatal: Callable[[], BaseException | None] | None = None,
    ) -> HttpResponse:
        """GetObject of bytes ``[start, end]`` (inclusive, spec: Range), streamed to ``sink``."""
        return await self._request(
            "GET",
            bucket,
            key,
            headers={**headers, "Range": f"bytes={start}-{end}"},
            check=check,
            on_retry=on_retry,
            fatal=fatal,
            sink=sink,
        )

    async def _list_uploads(self, bucket: str, prefix: str) -> list[UploadSummary]:
        uploads: list[UploadSummary] = []
        key_marker = upload_id_marker = ""
        while True:
            query = [("uploads", ""), ("max-uploads", "1000"), ("encoding-type", "url")]
            if prefix:
                query.append(("prefix", prefix))
            if key_marker:
                query.append(("key-marker", key_marker))
            if upload_id_marker:
                query.append(("upload-id-marker", upload_id_marker))
            resp = await self._request("GET", bucket, None, query=query)
            page: ListUploadsResult = await self._io.run(decode_list_uploads_result, resp.body)
            uploads.extend(page.uploads)
            if not page.is_truncated:
                return uploads
            if (page.next_key_marker, page.next_upload_id_marker) == (
                key_marker,
                upload_id_marker,
            ):
                raise ProtocolError("ListMultipartUploads is truncated but does not advance")
            key_marker, upload_id_marker = page.next_key_marker, page.next_upload_id_marker


async def _feed(resp: HttpResponse, write: Callable[[bytes], Awaitable[None]]) -> HttpResponse:
    """Hand a body a transport returned whole (``MockTransport``) to a sink, as
    ``AiohttpTransport`` streams it."""
    view = memoryview(resp.body)
    for start in range(0, len(view), SINK_CHUNK):
        await write(bytes(view[start : start + SINK_CHUNK]))
    return HttpResponse(resp.status, resp.headers, b"")


async def _encode_complete(parts: Iterable[tuple[int, str]]) -> bytes:
    """Complete's body, encoded on the loop ``_ENCODE_SLICE`` parts at a time.

    ~1 MB of XML for 10,000 parts takes ~8 ms of Python: in a worker thread that would hold
    the GIL, so the loop would wait up to the 5 ms switch interval at a time; in slices it
    never waits more than ~0.5 ms. ``parts`` is consumed lazily, so that a caller passing a
    generator never holds 10,000 tuples at once: they would be garbage-collector-tracked
    survivors, enough to set off a full collection (a 15-25 ms pause) right here.
    """
    pairs = iter(parts)
    pieces = [COMPLETE_REQUEST_OPEN]
    while piece := list(itertools.islice(pairs, _ENCODE_SLICE)):
        pieces.append(encode_complete_parts(piece))
        del piece
        await asyncio.sleep(0)
    pieces.append(COMPLETE_REQUEST_CLOSE)
    return b"".join(pieces)
