"""``Client`` and ``Bucket``: configuration, lifecycle, and sign -> send -> retry -> map errors.

Theory of operation
-------------------
One ``Client`` owns one HTTP transport (one aiohttp session and its connection pool) and is
safe to share across any number of concurrent uploads; a web app creates it once, in its
lifespan. Each OSS request goes through ``Client._request``:

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
   request body raised on purpose (the caller's ``fatal``: a progress hook's exception, a
   source file that changed) is raised as it is, never retried: the transport can only
   report it as a broken connection.

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
import random
import re
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from os import PathLike
from types import TracebackType
from typing import TYPE_CHECKING, Self, final

from yarl import URL

from ._credentials import (
    Credentials,
    CredentialsProvider,
    resolve_credentials_provider,
    resolve_region,
)
from ._errors import NoSuchUploadError, OssError, ProtocolError, ServiceError
from ._events import ProgressHook
from ._fileio import IoRunner
from ._http import AiohttpTransport, BodyFactory, HttpRequest, HttpResponse, Transport
from ._models import (
    CompleteResult,
    ErrorDocument,
    InitiateResult,
    ListUploadsResult,
    PartInfo,
    UploadSummary,
)
from ._planner import DEFAULT_PART_SIZE
from ._retry import ClockSkew, RetryPolicy
from ._signing import (
    SignatureVersion,
    encode_query,
    is_ip_endpoint_host,
    request_path,
    sign_request,
)
from ._uploader import UploadResult, upload_file

if TYPE_CHECKING:
    import aiohttp

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

__all__ = ["Bucket", "Client", "validate_bucket_name", "validate_key"]

logger = logging.getLogger("aiooss_resume")

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_REGION_FROM_HOST = re.compile(r"^oss-([a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com$")
_DUAL_STACK_HOST = re.compile(r"^([a-z0-9-]+)\.oss\.aliyuncs\.com$")
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


def _region_from_host(host: str) -> str | None:
    for pattern in (_REGION_FROM_HOST, _DUAL_STACK_HOST):
        match = pattern.match(host)
        if match:
            return match.group(1)
    return None


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


@final
class Client:
    """An OSS client for one endpoint; use it as ``async with Client(...) as client``.

    Args:
        endpoint: ``https://oss-cn-hangzhou.aliyuncs.com``, ``http://127.0.0.1:9000``...
            Without a scheme, ``https`` is used.
        credentials: a ``Credentials``, any ``CredentialsProvider``, or None to read
            ``OSS_ACCESS_KEY_ID``/``OSS_ACCESS_KEY_SECRET``/``OSS_SESSION_TOKEN`` (then the
            ``ALIBABA_CLOUD_*`` family) from the environment.
        region: the region id (``cn-hangzhou``), needed for V4. Defaults to ``OSS_REGION``,
            ``ALIBABA_CLOUD_REGION_ID``, or what an ``oss-<region>.aliyuncs.com`` host says.
        signature_version: ``"v4"`` (default) or ``"v1"``.
        path_style: force path-style (True) or virtual-hosted (False) addressing; by default
            IP and ``localhost`` endpoints use path style, domains virtual-hosted style.
        session: an ``aiohttp.ClientSession`` to use; it stays the caller's to close.
        transport: any ``Transport`` (e.g. ``aiooss_resume.testing.MockTransport``); excludes
            ``session``.
        retry: attempts and backoff for every request (default: 3 attempts, full jitter).
        connect_timeout: seconds to establish a connection.
        read_timeout: seconds without progress (sending or waiting) before a request fails.
        io_threads: worker threads for file reads and checkpoint writes, on the library's own
            limiter (never anyio's default one, which a FastAPI app shares).
        ssl: an ``ssl.SSLContext`` for ``https`` endpoints, e.g. one trusting a private CA
            (``ssl.create_default_context(cafile="ca.pem")``); default: the system's CAs.
            Verification is always on; a certificate that does not verify is a
            ``TransportError`` with ``retryable`` False.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        credentials: Credentials | CredentialsProvider | None = None,
        region: str | None = None,
        signature_version: SignatureVersion = "v4",
        path_style: bool | None = None,
        session: aiohttp.ClientSession | None = None,
        transport: Transport | None = None,
        retry: RetryPolicy | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        io_threads: int = 8,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        url = URL(endpoint if "://" in endpoint else f"https://{endpoint}")
        if url.user is not None or url.password is not None:
            # Not echoed: the user-info may hold a password (and repr(client) shows endpoint).
            raise ValueError(
                "invalid endpoint: it must not contain user-info (user:password@); "
                "pass credentials= instead"
            )
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"invalid endpoint {endpoint!r}: expected http(s)://host[:port]")
        if url.path not in ("", "/") or url.query_string or url.fragment:
            raise ValueError(f"invalid endpoint {endpoint!r}: it must not have a path or query")
        if signature_version not in ("v1", "v4"):
            raise ValueError("signature_version must be 'v1' or 'v4'")
        if session is not None and transport is not None:
            raise ValueError("pass either session or transport, not both")
        if ssl is not None and (transport is not None or url.scheme != "https"):
            raise ValueError("ssl applies to an https endpoint without a custom transport")
        self._scheme = url.scheme
        self._netloc = url.raw_authority
        self.endpoint = f"{url.scheme}://{url.raw_authority}"
        self.signature_version: SignatureVersion = signature_version
        self._path_style = (
            is_ip_endpoint_host(url.raw_authority) if path_style is None else path_style
        )
        self.region = resolve_region(region) or _region_from_host(url.host)
        if signature_version == "v4" and not self.region:
            raise ValueError(
                "signature version v4 needs a region: pass region='cn-hangzhou' (for example), "
                "or set OSS_REGION"
            )
        self._credentials = resolve_credentials_provider(credentials)
        self.retry = retry or RetryPolicy()
        self._transport: Transport = transport or AiohttpTransport(
            session, connect_timeout=connect_timeout, read_timeout=read_timeout, ssl=ssl
        )
        self._skew = ClockSkew()
        self._rng = random.random
        self._io = IoRunner(io_threads)
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"Client({self.endpoint!r}, region={self.region!r}, "
            f"signature_version={self.signature_version!r})"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the transport (and the aiohttp session if the client created it)."""
        self._closed = True
        await self._transport.aclose()

    def bucket(self, name: str) -> Bucket:
        """A handle on bucket ``name`` (validated, no request made)."""
        return Bucket(self, validate_bucket_name(name))

    @property
    def clock_offset(self) -> float:
        """Seconds added to the local clock when signing, learned from the server."""
        return self._skew.offset

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
    ) -> HttpResponse:
        """Sign, send, map errors, retry. ``fatal``, asked after a failed attempt, returns
        an exception to raise at once instead (one the body raised through the transport)."""
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
                    HttpRequest(method, url, signed, body, content_length)
                )
                if not 200 <= resp.status < 300:
                    raise _service_error(resp)
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

    # ------------------------------------------------------------------ operations

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


@final
class Bucket:
    """A bucket of a ``Client``: where uploads go. Create it with ``client.bucket(name)``."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name

    def __repr__(self) -> str:
        return f"Bucket({self.name!r}, endpoint={self.client.endpoint!r})"

    async def upload_file(
        self,
        key: str,
        file_path: str | PathLike[str],
        part_size: int = DEFAULT_PART_SIZE,
        *,
        routines: int = 1,
        checkpoint: bool | str | PathLike[str] | None = None,
        checkpoint_dir: str | PathLike[str] | None = None,
        headers: Mapping[str, str] | None = None,
        on_progress: ProgressHook | None = None,
    ) -> UploadResult:
        """Upload a local file to ``key``, resumably, in parts of ``part_size`` bytes.

        Files smaller than one part (and empty files) go up with one PutObject; larger
        files by multipart upload with ``routines`` parts in flight at once. Every part's
        CRC-64 is checked as it is acknowledged, and the whole object's after Complete.

        Args:
            key: the object key (1-1023 UTF-8 bytes, not starting with ``/`` or ``\\``).
            file_path: the local file.
            part_size: 100 KiB to 5 GiB (default 100 KiB, as the OSS documentation says);
                grown automatically when the file would need more than 10,000 parts.
            routines: how many parts are uploaded concurrently (default 1).
            checkpoint: None/False: not resumable. True: resumable, with the checkpoint at
                ``<file_path>.cp``. A path: resumable, with the checkpoint there.
            checkpoint_dir: resumable, with the checkpoint in this directory under a name
                derived from the source path and the target. A checkpoint the Go SDK or
                oss2 left for this very upload is adopted (docs/resuming.md).
            headers: object metadata and options (``Content-Type``, ``x-oss-meta-*``,
                ``x-oss-object-acl``, ``x-oss-storage-class``, server-side encryption,
                ``x-oss-forbid-overwrite``, ``x-oss-tagging``, ``x-oss-traffic-limit``...),
                each sent on the request(s) where OSS expects it.
            on_progress: a sync or async callable receiving ``ProgressEvent`` objects.

        Returns:
            An ``UploadResult`` describing the stored object.

        Raises:
            ValueError, TypeError, FileNotFoundError, IsADirectoryError: bad arguments,
                before any request is made.
            ServiceError: OSS refused a request (``code`` and ``request_id`` say why).
            TransportError: the network failed and retries ran out.
            IntegrityError: a CRC-64 mismatch that retries did not cure.
            CheckpointError: the checkpoint cannot be written or is locked by another run,
                or an explicit path holds another target's checkpoint (ours or another
                tool's), which is not overwritten.
            FileChangedError: the file changed while it was being uploaded: the multipart
                upload was aborted, or the single PutObject not stored (the message says
                if an earlier attempt, whose answer was lost, may have stored it).
        """
        return await upload_file(
            self.client,
            self.name,
            key,
            file_path,
            part_size,
            routines=routines,
            checkpoint=checkpoint,
            checkpoint_dir=checkpoint_dir,
            headers=headers,
            on_progress=on_progress,
        )

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort an unfinished multipart upload, discarding its parts."""
        await self.client._abort(self.name, validate_key(key), upload_id)

    async def list_uploads(self, prefix: str = "") -> list[UploadSummary]:
        """Every unfinished multipart upload in the bucket whose key starts with ``prefix``."""
        return await self.client._list_uploads(self.name, prefix)
