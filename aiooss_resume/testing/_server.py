"""The local OSS emulator: an aiohttp server speaking the OSS wire protocol.

Theory of operation
-------------------
One low-level ``aiohttp.web.Server`` handler serves every request, because OSS routes on the
*raw* request target and the query (spec 11.2), not on URL patterns. Per request:

1. Parse the raw target and the Host header into bucket, key and decoded query
   (``_protocol.parse_target_candidates``: path style, or virtual-hosted when the Host is
   ``BUCKET.<virtual_host_base>``, ``BUCKET.oss-REGION[-internal].aliyuncs.com`` or a
   ``cname`` host) and pick the operation (``_protocol.route``). Validate the bucket name.
2. Authenticate (``_auth.verify_request``: V1 or V4, STS token, clock skew), with the
   server's clock. A virtual Host with a path that also starts with its bucket can mean
   either key; the one the client signed is taken.
3. Resolve the bucket: fixed list (unknown gives ``NoSuchBucket``) or created on first use.
   Validate the key.
4. Ask the fault plan (``_faults``) what to do to this request, then run the operation,
   streaming any body to the store in 1 MiB pieces hashed off the event loop. A body that
   sends no byte for ``request_timeout`` seconds ends as 400 ``RequestTimeout`` with
   ``Connection: close`` and leaves nothing stored (an inactivity limit, not a total one).
5. Every answer carries ``x-oss-request-id`` (24 upper-case hex), ``Date`` (server clock) and
   ``Server: AliyunOSS``; errors are OSS error documents (or, for HEAD, the ``x-oss-err``
   header) with ``x-oss-ec``.

A known-bad request always ends as an :class:`~._protocol.OssHttpError`, never as a 500:
anything else escaping an operation is a bug of the emulator, logged with its traceback,
answered as 500 ``InternalError`` and counted in ``stats.internal_errors`` so tests can assert
it never happens.

Each finished request appends a :class:`RequestRecord` to ``requests`` and updates ``stats``
(count and in-flight peak per operation). :class:`ThreadedOssServer` runs the same server on
its own event loop in a background thread, for synchronous code such as the official SDKs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
import ssl
import struct
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Final, NamedTuple, NoReturn, final

from aiohttp import web

from .._errors import ProtocolError
from .._models import (
    CompleteResult,
    ErrorDocument,
    InitiateResult,
    ListPartsResult,
    ListUploadsResult,
    PartInfo,
    UploadSummary,
)
from .._signing import format_http_date, uri_encode
from .._xml import (
    decode_complete_request,
    encode_complete_result,
    encode_error,
    encode_initiate_result,
    encode_list_parts_result,
    encode_list_uploads_result,
)
from ._auth import AuthConfig, headers_for_signing, verify_request
from ._conditional import evaluate_preconditions, parse_range, range_start
from ._faults import Effect, FaultContext, FaultPlan
from ._protocol import (
    MAX_OBJECT_SIZE,
    MAX_PART_NUMBER,
    MIN_PART_SIZE,
    OssHttpError,
    Target,
    check_traffic_limit,
    host_bucket,
    parse_target_candidates,
    route,
    validate_bucket_name,
    validate_key,
)
from ._store import (
    BodyResult,
    BodyWriter,
    ObjectMeta,
    PartMeta,
    Store,
    StoreMode,
    UploadMeta,
    headers_subset,
    iso8601_ms,
)

__all__ = [
    "DEFAULT_ACCESS_KEY_ID",
    "DEFAULT_ACCESS_KEY_SECRET",
    "DEFAULT_REGION",
    "DEFAULT_REQUEST_TIMEOUT",
    "OssServer",
    "RequestRecord",
    "ServerCredentials",
    "ServerStats",
    "ThreadedOssServer",
]

log = logging.getLogger("aiooss_resume.testing")

DEFAULT_ACCESS_KEY_ID: Final = "AKIDEXAMPLEEMULATOR0001"
"""The emulator's fixed demo AccessKey ID (never valid anywhere else)."""
DEFAULT_ACCESS_KEY_SECRET: Final = "EmulatorSecretKeyEXAMPLEnotARealSecret00"
"""The emulator's fixed demo AccessKey secret."""
DEFAULT_REGION: Final = "cn-hangzhou"
DEFAULT_REQUEST_TIMEOUT: Final = 60.0
"""Seconds a request body may send nothing before the emulator answers ``RequestTimeout``."""

_CHUNK: Final = 1024 * 1024
_MAX_COMPLETE_BODY: Final = 4 * 1024 * 1024  # 10,000 parts need ~1 MB of XML
_XMLNS: Final = b' xmlns="http://doc.oss-cn-hangzhou.aliyuncs.com"'
_STATUS_CODES: Final = frozenset(s.value for s in HTTPStatus)
_ROOT_TAG: Final = re.compile(rb"^((?:<\?xml[^>]*\?>)?\s*<[A-Za-z][A-Za-z0-9]*)")

# Initiate/PutObject headers that become object metadata (spec 9).
_OBJECT_HEADERS: Final = frozenset(
    {
        "content-type",
        "cache-control",
        "content-disposition",
        "content-encoding",
        "content-language",
        "expires",
        "x-oss-storage-class",
        "x-oss-server-side-encryption",
        "x-oss-server-side-data-encryption",
        "x-oss-server-side-encryption-key-id",
        "x-oss-object-acl",
        "x-oss-tagging",
        "x-oss-forbid-overwrite",
    }
)
_SSE_HEADERS: Final = (
    "x-oss-server-side-encryption",
    "x-oss-server-side-data-encryption",
    "x-oss-server-side-encryption-key-id",
)
# Metadata returned by HeadObject/GetObject under their usual spelling.
_HEAD_ECHO: Final = (
    ("content-type", "Content-Type"),
    ("cache-control", "Cache-Control"),
    ("content-disposition", "Content-Disposition"),
    ("content-encoding", "Content-Encoding"),
    ("content-language", "Content-Language"),
    ("expires", "Expires"),
    *((name, name) for name in _SSE_HEADERS),
)


class ServerCredentials(NamedTuple):
    """The credentials the emulator accepts (plain strings)."""

    access_key_id: str
    access_key_secret: str
    security_token: str | None = None


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the emulator saw it, appended to ``server.requests`` when answered.

    ``status`` is 0 and ``code`` names the fault when the connection was dropped instead of
    answered; ``faults`` lists the fault rules that fired on it.
    """

    operation: str
    method: str
    bucket: str | None
    key: str | None
    part_number: int | None
    upload_id: str | None
    status: int
    code: str
    bytes_received: int
    request_id: str
    raw_target: str = ""
    faults: tuple[str, ...] = ()
    bytes_sent: int = 0
    """Object body bytes written to the socket (GetObject), counting a faulted, cut body."""


@dataclass
class ServerStats:
    """Counters per operation. ``peak_in_flight`` is the most concurrent requests seen.

    An operation is in flight from the end of authentication to the end of its answer, so
    the UploadPart peak equals the number of parts a client really sends at once.
    """

    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    in_flight: Counter[str] = field(default_factory=Counter)
    peak_in_flight: Counter[str] = field(default_factory=Counter)
    bytes_received: int = 0
    bytes_sent: int = 0
    internal_errors: int = 0

    def reset(self) -> None:
        """Zero every counter (in-flight counts of running requests are kept)."""
        self.requests.clear()
        self.errors.clear()
        self.peak_in_flight = Counter(self.in_flight)
        self.bytes_received = 0
        self.bytes_sent = 0
        self.internal_errors = 0


class _Dropped(Exception):
    """The connection was closed on purpose (fault): nothing more is to be sent.

    ``graceful``: the fault already sent what it meant to and closed the transport (which
    flushes it); aborting it now would throw those bytes away.
    """

    def __init__(self, reason: str, *, graceful: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.graceful = graceful


@dataclass(slots=True)
class _Ctx:
    request: web.BaseRequest
    request_id: str
    operation: str = "Unknown"
    bucket: str | None = None
    key: str | None = None
    part_number: int | None = None
    upload_id: str | None = None
    bytes_received: int = 0
    bytes_sent: int = 0
    effect: Effect | None = None
    continued: bool = False
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT

    async def read_chunk(self) -> bytes:
        """The next piece of the body (``b""`` at its end); ``RequestTimeout`` when idle.

        The limit is on each wait, not on the whole body: a slow but moving upload (or a
        throttling fault, which sleeps between reads) never trips it.
        """
        try:
            # asyncio.timeout, not wait_for: no task per chunk on the upload hot path
            async with asyncio.timeout(self.request_timeout):
                return await self.request.content.readany()
        except TimeoutError:
            raise OssHttpError("RequestTimeout", headers={"Connection": "close"}) from None

    async def body_wanted(self) -> None:
        """Say ``100 Continue`` to a client that waits for it, once, before reading a body.

        The low-level aiohttp server does not do this by itself (only the router does), and
        a client sending ``Expect: 100-continue`` would otherwise stall before every body.
        """
        if self.continued:
            return
        self.continued = True
        if self.request.headers.get("Expect", "").lower() == "100-continue":
            await self.request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


# OSS reads integer parameters as ASCII digits only. Python's int() would also take "١"
# (an Arabic-Indic one), "+1", " 1 " and "1_0", so every integer from the wire is checked
# against this first.
_ASCII_DIGITS: Final = re.compile(r"[0-9]{1,20}", re.ASCII)
# Copy requests are PUTs told apart by a header, not the query (spec 11.2 routes on the
# query): without this check they would store an empty object or part.
_COPY_OPERATIONS: Final = {"PutObject": "CopyObject", "UploadPart": "UploadPartCopy"}


def _ascii_int(raw: str) -> int | None:
    """``raw`` as a non-negative integer if it is 1-20 ASCII digits, else None."""
    return int(raw) if _ASCII_DIGITS.fullmatch(raw) else None


def _part_number_value(target: Target) -> int | None:
    raw = target.query_map.get("partNumber")
    return None if raw is None else _ascii_int(raw)


def _bool_header(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _etag_matches(stored: str, given: str) -> bool:
    # spec 5.6 step 4: compare case-insensitively with the quotes optional.
    return stored.strip().strip('"').upper() == given.strip().strip('"').upper()


def _http_date(timestamp: float) -> str:
    return format_datetime(datetime.fromtimestamp(int(timestamp), UTC), usegmt=True)


def _cut(ctx: _Ctx, length: int) -> int:
    """How many of ``length`` body bytes a truncating fault lets through (never all)."""
    keep = ctx.effect.truncate_after_bytes if ctx.effect is not None else None
    if keep is None:
        return length // 2
    return min(keep, max(length - 1, 0))


async def _reset_after_flush(request: web.BaseRequest) -> None:
    """Let the bytes already written leave, then reset the connection (TCP RST).

    The wait is for aiohttp's transport buffer (bounded: a client that stops reading
    cannot hold the request forever); SO_LINGER 0 then makes close() send RST rather than
    FIN, so the client sees ECONNRESET mid-body, not an orderly end.
    """
    transport = request.transport
    if transport is None:
        return
    # With a zero high-water mark the protocol stays paused until the buffer is empty,
    # which is what the writer's drain() waits for.
    transport.set_write_buffer_limits(high=0)
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(5.0):
            await request.writer.drain()
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _check_request_timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("request_timeout must be a number of seconds")
    if not value > 0:  # also refuses NaN
        raise ValueError("request_timeout must be positive")
    return float(value)


@final
class OssServer:
    """A local OSS-compatible server (async context manager).

    ``async with OssServer(root=tmp) as server:`` starts it on ``host:port`` (port 0 picks a
    free one) and exposes ``endpoint``, ``credentials``, ``region``, ``faults``,
    ``requests`` and ``stats``. Without ``root`` a temporary directory is used and removed on
    exit. With ``ssl_context`` (e.g. ``self_signed_tls().server_context``) it serves HTTPS.
    See ``docs/testing.md``.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        access_key_id: str = DEFAULT_ACCESS_KEY_ID,
        access_key_secret: str = DEFAULT_ACCESS_KEY_SECRET,
        security_token: str | None = None,
        region: str = DEFAULT_REGION,
        buckets: Iterable[str] | None = None,
        store: StoreMode = "disk",
        clock: Callable[[], datetime] | None = None,
        max_skew: timedelta = timedelta(minutes=15),
        list_parts_page_size: int | None = None,
        namespace_xml: bool = False,
        virtual_host_base: str | None = "localhost",
        cname: Mapping[str, str] | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError("ssl_context must be an ssl.SSLContext (see self_signed_tls)")
        self._ssl_context = ssl_context
        if store not in ("disk", "discard"):
            raise ValueError("store must be 'disk' or 'discard'")
        if list_parts_page_size is not None and not 1 <= list_parts_page_size <= 1000:
            raise ValueError("list_parts_page_size must be within 1..1000")
        self._cname = {h.lower(): b for h, b in (cname or {}).items()}
        for cname_host, cname_bucket in self._cname.items():
            try:
                validate_bucket_name(cname_bucket)
            except OssHttpError:
                raise ValueError(
                    f"invalid bucket name {cname_bucket!r} for cname {cname_host!r}"
                ) from None
        self._request_timeout = _check_request_timeout(request_timeout)
        self._root_arg = Path(root) if root is not None else None
        self._host = host
        self._port = port
        self._credentials = ServerCredentials(access_key_id, access_key_secret, security_token)
        self._region = region
        self._fixed_buckets = None if buckets is None else tuple(buckets)
        for bucket in self._fixed_buckets or ():
            try:
                validate_bucket_name(bucket)
            except OssHttpError:
                raise ValueError(f"invalid bucket name {bucket!r}") from None
        self._store_mode: StoreMode = store
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        """The server's clock; replace it at any time to simulate skew."""
        self.max_skew = max_skew
        self.list_parts_page_size = list_parts_page_size
        self.namespace_xml = namespace_xml
        self._virtual_host_base = virtual_host_base
        self.faults = FaultPlan()
        self.requests: list[RequestRecord] = []
        self.stats = ServerStats()
        self._store: Store | None = None
        self._root: Path | None = None
        self._temp_root = False
        self._runner: web.ServerRunner | None = None
        self._web_server: web.Server | None = None
        self._bound_port: int | None = None
        self._closing: asyncio.Event | None = None

    # -- lifecycle

    async def start(self) -> None:
        """Start listening. Prefer ``async with``."""
        if self._runner is not None:
            raise RuntimeError("server already started")
        loop = asyncio.get_running_loop()
        if self._root_arg is None:
            self._root = Path(
                await loop.run_in_executor(None, lambda: tempfile.mkdtemp(prefix="oss-emulator-"))
            )
            self._temp_root = True
        else:
            self._root = self._root_arg
        store = Store(self._root, self._store_mode)
        await loop.run_in_executor(None, store.open_sync)
        for bucket in self._fixed_buckets or ():
            await loop.run_in_executor(None, store.create_bucket_sync, bucket)
        self._store = store
        self._closing = asyncio.Event()
        server = web.Server(
            self._handle,
            access_log=None,
            # Content-Encoding is object metadata in OSS: bodies are stored as sent.
            auto_decompress=False,
            lingering_time=5.0,
        )
        self._web_server = server
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, ssl_context=self._ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        for address in runner.addresses:
            if isinstance(address, tuple):
                self._bound_port = int(address[1])
                break
        log.info("OSS emulator listening on %s (root %s)", self.endpoint, self._root)

    async def aclose(self) -> None:
        """Stop serving: stalled requests are released, open connections closed."""
        if self._closing is not None:
            self._closing.set()
        runner, self._runner = self._runner, None
        # A TLS connection closes with a close_notify exchange that an idle keep-alive client
        # (requests' pool) never answers; without this its socket outlives the loop.
        open_tls = (
            [h.transport for h in self._web_server.connections if h.transport is not None]
            if self._ssl_context is not None and self._web_server is not None
            else []
        )
        if runner is not None:
            await runner.cleanup()
        for transport in open_tls:
            transport.abort()
        if self._temp_root and self._root is not None:
            root = self._root
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: shutil.rmtree(root, ignore_errors=True)
            )
            self._temp_root = False

    async def __aenter__(self) -> OssServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- public properties

    @property
    def endpoint(self) -> str:
        """``http://HOST:PORT`` (``https://`` with ``ssl_context``): a client's endpoint."""
        if self._bound_port is None:
            raise RuntimeError("server not started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{host}:{self._bound_port}"

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("server not started")
        return self._bound_port

    @property
    def credentials(self) -> ServerCredentials:
        return self._credentials

    @property
    def region(self) -> str:
        return self._region

    @property
    def root(self) -> Path:
        """The directory holding every object and upload."""
        if self._root is None:
            raise RuntimeError("server not started")
        return self._root

    @property
    def store_mode(self) -> StoreMode:
        return self._store_mode

    @property
    def request_timeout(self) -> float:
        """Seconds a request body may stay silent before ``RequestTimeout``; settable."""
        return self._request_timeout

    @request_timeout.setter
    def request_timeout(self, value: float) -> None:
        self._request_timeout = _check_request_timeout(value)

    # -- assertion helpers (synchronous: small file reads, for tests)

    def _require_store(self) -> Store:
        if self._store is None:
            raise RuntimeError("server not started")
        return self._store

    def object_info(self, bucket: str, key: str) -> ObjectMeta | None:
        """The stored metadata of an object (size, ETag, CRC-64, headers), or None."""
        return self._require_store()._read_object_sync(bucket, key)

    def object_path(self, bucket: str, key: str) -> Path:
        """The file holding an object's bytes; ``FileNotFoundError`` if there is none."""
        path = self._require_store().object_data_path(bucket, key)
        if path is None:
            raise FileNotFoundError(f"no stored bytes for oss://{bucket}/{key}")
        return path

    def read_object(self, bucket: str, key: str) -> bytes:
        """An object's bytes; ``FileNotFoundError`` if missing (or with ``store='discard'``)."""
        return self.object_path(bucket, key).read_bytes()

    def list_uploads(self, bucket: str) -> list[UploadSummary]:
        """The open multipart uploads of ``bucket``, sorted by key then upload id."""
        return [
            UploadSummary(u.key, u.upload_id, iso8601_ms(u.initiated))
            for u in self._require_store().list_uploads_sync(bucket)
        ]

    def list_parts(self, bucket: str, upload_id: str) -> list[PartInfo]:
        """The parts uploaded so far to an open upload (empty if it is unknown)."""
        store = self._require_store()
        state = store._load_upload_sync(bucket, upload_id)
        if state is None:
            return []
        return [
            PartInfo(p.part_number, p.etag, p.size, p.crc64, iso8601_ms(p.last_modified))
            for p in sorted(state.parts.values(), key=lambda p: p.part_number)
        ]

    # -- request handling

    def _now(self) -> datetime:
        now = self.clock()
        return now if now.tzinfo is not None else now.replace(tzinfo=UTC)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        ctx = _Ctx(
            request=request,
            request_id=secrets.token_hex(12).upper(),
            request_timeout=self.request_timeout,
        )
        response: web.StreamResponse | None = None
        code = ""
        tracked = False
        try:
            try:
                headers = headers_for_signing(request.headers.items())
                target = self._authenticate(ctx, headers)
                assert target.bucket is not None  # route() refuses service-level requests
                await self._resolve_bucket(target.bucket, ctx.operation)
                if target.key is not None:
                    validate_key(target.key)
                check_traffic_limit(headers, target.query_map)
                copy = _COPY_OPERATIONS.get(ctx.operation)
                if copy is not None and "x-oss-copy-source" in headers:
                    ctx.operation = copy
                    raise OssHttpError(
                        "NotImplemented", f"{copy} (x-oss-copy-source) is not emulated."
                    )
                ctx.effect = self.faults.evaluate(
                    ctx.operation,
                    ctx.part_number,
                    ctx.request_id,
                    range_start=range_start(headers.get("range"))
                    if ctx.operation == "GetObject"
                    else None,
                )
                self.stats.in_flight[ctx.operation] += 1
                tracked = True
                self.stats.peak_in_flight[ctx.operation] = max(
                    self.stats.peak_in_flight[ctx.operation],
                    self.stats.in_flight[ctx.operation],
                )
                response = await self._run_operation(ctx, target, headers)
            except OssHttpError as error:
                code = error.code
                response = self._error_response(ctx, error)
            except _Dropped:
                raise
            except (ConnectionError, asyncio.CancelledError):
                raise
            except Exception as exc:
                # An emulator bug, not a client error: log it and answer as OSS would.
                log.exception("emulator internal error on %s %s", request.method, request.path)
                self.stats.internal_errors += 1
                code = "InternalError"
                response = self._error_response(
                    ctx, OssHttpError("InternalError", f"Emulator bug: {type(exc).__name__}")
                )
        except _Dropped as dropped:
            code = dropped.reason
            if not dropped.graceful:
                self._abort(request)
            response = None
        except ConnectionError:
            code = "ConnectionError"
            response = None
        finally:
            if tracked:
                self.stats.in_flight[ctx.operation] -= 1
            status = response.status if response is not None else 0
            self.stats.requests[ctx.operation] += 1
            self.stats.bytes_received += ctx.bytes_received
            self.stats.bytes_sent += ctx.bytes_sent
            if status >= 300 or status == 0:
                self.stats.errors[ctx.operation] += 1
            self.requests.append(
                RequestRecord(
                    operation=ctx.operation,
                    method=request.method,
                    bucket=ctx.bucket,
                    key=ctx.key,
                    part_number=ctx.part_number,
                    upload_id=ctx.upload_id,
                    status=status,
                    code=code,
                    bytes_received=ctx.bytes_received,
                    request_id=ctx.request_id,
                    raw_target=request.raw_path,
                    faults=tuple(ctx.effect.fired) if ctx.effect is not None else (),
                    bytes_sent=ctx.bytes_sent,
                )
            )
        if response is None:
            # The transport is already closed; aiohttp discards whatever is returned.
            return web.Response(status=499)
        return response

    def _authenticate(self, ctx: _Ctx, headers: Mapping[str, str]) -> Target:
        """Parse, route and verify the request; the logical target its signature covers.

        With two candidate targets (see ``parse_target_candidates``), a signature mismatch on
        the first one makes the second one tried; if neither verifies, the first one's error
        is the answer.
        """
        request = ctx.request
        candidates = parse_target_candidates(
            request.raw_path, request.host, self._virtual_host_base, self._cname
        )
        first_state = (ctx.bucket, ctx.key, ctx.upload_id, ctx.part_number, ctx.operation)
        first_error: OssHttpError | None = None
        for target in candidates:
            ctx.bucket, ctx.key = target.bucket, target.key
            ctx.upload_id = target.query_map.get("uploadId")
            ctx.part_number = _part_number_value(target)
            state = (ctx.bucket, ctx.key, ctx.upload_id, ctx.part_number, ctx.operation)
            try:
                ctx.operation = route(request.method, target)
                state = (ctx.bucket, ctx.key, ctx.upload_id, ctx.part_number, ctx.operation)
                assert target.bucket is not None  # route() refuses service-level requests
                validate_bucket_name(target.bucket)
            except OssHttpError as error:
                # a shape this reading cannot have; another reading may still be signed
                if first_error is None:
                    first_error, first_state = error, state
                continue
            try:
                verify_request(
                    method=request.method,
                    bucket=target.bucket,
                    key=target.key,
                    query=target.query,
                    headers=headers,
                    config=AuthConfig(
                        self._credentials.access_key_id,
                        self._credentials.access_key_secret,
                        self._region,
                        self._credentials.security_token,
                        self.max_skew,
                    ),
                    now=self._now(),
                )
            except OssHttpError as error:
                if error.code != "SignatureDoesNotMatch":
                    raise  # the same for every reading, or this one's signature matched
                if first_error is None:
                    first_error, first_state = error, state
                continue
            return target
        assert first_error is not None
        ctx.bucket, ctx.key, ctx.upload_id, ctx.part_number, ctx.operation = first_state
        raise first_error

    @staticmethod
    def _abort(request: web.BaseRequest) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    async def _resolve_bucket(self, bucket: str, operation: str) -> None:
        store = self._require_store()
        if self._fixed_buckets is not None:
            if bucket not in self._fixed_buckets:
                raise OssHttpError("NoSuchBucket", details={"BucketName": bucket})
            return
        await store.ensure_bucket(bucket)

    # -- responses

    def _base_headers(self, ctx: _Ctx) -> dict[str, str]:
        return {
            "x-oss-request-id": ctx.request_id,
            "Date": format_http_date(self._now()),
            "Server": "AliyunOSS",
        }

    def _xml(self, body: bytes) -> bytes:
        if self.namespace_xml:
            return _ROOT_TAG.sub(lambda m: m.group(1) + _XMLNS, body, count=1)
        return body

    def _virtual_hosted(self, ctx: _Ctx) -> bool:
        """Whether the request's Host already names its bucket (virtual-hosted or cname)."""
        host = ctx.request.host or ""
        named = host_bucket(host, self._virtual_host_base, self._cname)
        return ctx.bucket is not None and named == ctx.bucket

    def _host_id(self, ctx: _Ctx) -> str:
        host = ctx.request.host.rsplit(":", 1)[0] if ctx.request.host else self._host
        if self._virtual_hosted(ctx):
            return host
        return f"{ctx.bucket}.{host}" if ctx.bucket else host

    def _error_response(self, ctx: _Ctx, error: OssHttpError) -> web.Response:
        doc = ErrorDocument(
            code=error.code,
            message=error.message,
            request_id=ctx.request_id,
            host_id=self._host_id(ctx),
            ec=error.ec,
            details=error.details,
        )
        try:
            body = encode_error(doc)
        except ValueError:
            # a detail XML cannot carry (a key with control characters): leave details out
            body = encode_error(
                ErrorDocument(doc.code, doc.message, doc.request_id, doc.host_id, doc.ec)
            )
        body = self._xml(body)
        headers = self._base_headers(ctx)
        headers.update(error.headers)
        headers["x-oss-ec"] = error.ec
        if ctx.request.method == "HEAD":
            headers["x-oss-err"] = base64.b64encode(body).decode("ascii")
            return web.Response(status=error.status, headers=headers)
        headers["Content-Type"] = "application/xml"
        return web.Response(status=error.status, body=body, headers=headers)

    def _xml_response(
        self, ctx: _Ctx, body: bytes, headers: Mapping[str, str] = {}
    ) -> web.Response:
        all_headers = self._base_headers(ctx)
        all_headers.update(headers)
        all_headers["Content-Type"] = "application/xml"
        return web.Response(status=200, body=self._xml(body), headers=all_headers)

    def _apply_response_faults(self, ctx: _Ctx, headers: dict[str, str]) -> None:
        effect = ctx.effect
        if effect is None:
            return
        crc = headers.get("x-oss-hash-crc64ecma")
        if crc is not None and effect.wrong_crc:
            headers["x-oss-hash-crc64ecma"] = str((int(crc) ^ 0x5A5A) & 0xFFFFFFFFFFFFFFFF)
        if effect.omit_crc:
            headers.pop("x-oss-hash-crc64ecma", None)

    # -- the operations

    async def _run_operation(
        self, ctx: _Ctx, target: Target, headers: Mapping[str, str]
    ) -> web.StreamResponse:
        effect = ctx.effect
        if effect is not None:
            if effect.delay:
                await asyncio.sleep(effect.delay)
            if effect.stall is not None:
                assert self._closing is not None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), effect.stall)
                raise _Dropped("stall")
            for hook in effect.hooks:
                hooked = await hook(
                    FaultContext(
                        operation=ctx.operation,
                        method=ctx.request.method,
                        bucket=ctx.bucket,
                        key=ctx.key,
                        part_number=ctx.part_number,
                        upload_id=ctx.upload_id,
                        request_id=ctx.request_id,
                        request=ctx.request,
                    )
                )
                if hooked is not None:
                    return hooked
            # A GetObject has no request body: its reset cuts the response body instead.
            reset_request = effect.reset_after_bytes is not None and ctx.operation != "GetObject"
            if effect.error is not None or reset_request:
                await self._drain(ctx)
                if effect.error is not None:
                    status, code, message = effect.error
                    raise OssHttpError(code, message, status=status)
        operation = ctx.operation
        if operation == "PutBucket":
            return self._plain(ctx, 200)
        if operation == "PutObject":
            response = await self._put_object(ctx, target, headers)
        elif operation == "GetObject":
            return await self._get_object(ctx, target, headers, head=False)
        elif operation == "HeadObject":
            return await self._get_object(ctx, target, headers, head=True)
        elif operation == "DeleteObject":
            assert target.bucket is not None
            assert target.key is not None
            await self._require_store().delete_object(target.bucket, target.key)
            response = self._plain(ctx, 204)
        elif operation == "InitiateMultipartUpload":
            response = await self._initiate(ctx, target, headers)
        elif operation == "UploadPart":
            response = await self._upload_part(ctx, target, headers)
        elif operation == "ListParts":
            response = await self._list_parts(ctx, target)
        elif operation == "CompleteMultipartUpload":
            response = await self._complete(ctx, target, headers)
        elif operation == "AbortMultipartUpload":
            response = await self._abort_upload(ctx, target)
        elif operation == "ListMultipartUploads":
            response = await self._list_uploads(ctx, target)
        else:  # pragma: no cover - route() only returns the names above
            raise OssHttpError("NotImplemented")
        if effect is not None and effect.drop_response:
            raise _Dropped("drop_response")
        if effect is not None and (
            effect.truncate_response or effect.truncate_after_bytes is not None
        ):
            await self._send_truncated(ctx, response)
        return response

    async def _send_truncated(self, ctx: _Ctx, response: web.StreamResponse) -> NoReturn:
        """Send ``response`` cut short, then close the connection (``truncate_response``).

        The status line and headers go out whole, with a ``Content-Length`` larger than the
        body bytes that follow (the first half of the body, or ``truncate_after_bytes`` of
        it, never all; none if it is empty). A HEAD answer has no body to cut, so it is cut
        inside its headers instead. The bytes are written raw, so no part of aiohttp's
        response machinery can complete them.
        """
        body = b""
        if isinstance(response, web.Response) and isinstance(response.body, bytes):
            body = response.body
        reason = HTTPStatus(response.status).phrase if response.status in _STATUS_CODES else ""
        lines = [f"HTTP/1.1 {response.status} {reason}"]
        lines += [
            f"{name}: {value}"
            for name, value in response.headers.items()
            if name.lower() not in ("content-length", "transfer-encoding", "connection")
        ]
        head_only = ctx.request.method == "HEAD"
        if head_only:
            raw = ("\r\n".join(lines[: max(1, len(lines) // 2)]) + "\r\n").encode("latin-1")
        else:
            lines.append(f"Content-Length: {max(len(body), 1)}")
            raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body[: _cut(ctx, len(body))]
        transport = ctx.request.transport
        if transport is not None:
            transport.write(raw)
            transport.close()  # flushes what was written, then closes
        raise _Dropped("truncate_response", graceful=True)

    def _plain(self, ctx: _Ctx, status: int, headers: Mapping[str, str] = {}) -> web.Response:
        all_headers = self._base_headers(ctx)
        all_headers.update(headers)
        self._apply_response_faults(ctx, all_headers)
        return web.Response(status=status, headers=all_headers)

    async def _throttle(self, ctx: _Ctx, started: float, done: int) -> None:
        rate = ctx.effect.throttle_bytes_per_sec if ctx.effect is not None else None
        if rate:
            loop = asyncio.get_running_loop()
            ahead = started + done / rate - loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)

    async def _drain(self, ctx: _Ctx) -> None:
        """Read and drop the body (honouring reset_after_bytes and throttle)."""
        await ctx.body_wanted()
        reset_at = ctx.effect.reset_after_bytes if ctx.effect is not None else None
        started = asyncio.get_running_loop().time()
        if reset_at == 0:
            raise _Dropped("reset_after_bytes")
        while True:
            chunk = await ctx.read_chunk()
            if not chunk:
                break
            ctx.bytes_received += len(chunk)
            if reset_at is not None and ctx.bytes_received >= reset_at:
                ctx.bytes_received = reset_at  # "read N bytes, then reset"
                raise _Dropped("reset_after_bytes")
            await self._throttle(ctx, started, ctx.bytes_received)
        if reset_at is not None:
            # the body was shorter than the reset point: reset at its end anyway
            raise _Dropped("reset_after_bytes")

    def _check_length(self, ctx: _Ctx, limit: int) -> None:
        request = ctx.request
        length = request.content_length
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        if length is None and not chunked:
            raise OssHttpError("MissingContentLength")
        if length is not None and length > limit:
            raise OssHttpError(
                "EntityTooLarge",
                details={"MaxSizeAllowed": str(limit), "ProposedSize": str(length)},
                headers={"Connection": "close"},
            )

    async def _receive_body(self, ctx: _Ctx, limit: int = MAX_OBJECT_SIZE) -> BodyResult:
        """Stream the body into the store: 1 MiB pieces, hashed and written off the loop.

        The previous piece is written while the next one is read, so at most two pieces
        (plus aiohttp's own read buffer) are in memory per request.
        """
        self._check_length(ctx, limit)
        await ctx.body_wanted()
        store = self._require_store()
        writer = await store.new_body_writer(md5="Content-MD5" in ctx.request.headers)
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[None] | None = None
        reset_at = ctx.effect.reset_after_bytes if ctx.effect is not None else None
        started = loop.time()
        # Chunks are handed over as a list: no copying into one buffer and out again.
        buffer: list[bytes] = []
        buffered = 0

        async def flush(pieces: list[bytes], writer: BodyWriter = writer) -> None:
            nonlocal pending
            if writer.cheap:  # a CRC only (~20 us per MiB): not worth a thread hop
                writer.write(pieces)
                return
            if pending is not None:
                await pending
            pending = loop.run_in_executor(None, writer.write, pieces)

        try:
            while True:
                chunk = await ctx.read_chunk()
                if not chunk:
                    break
                ctx.bytes_received += len(chunk)
                if reset_at is not None and ctx.bytes_received >= reset_at:
                    ctx.bytes_received = reset_at  # "read N bytes, then reset"
                    raise _Dropped("reset_after_bytes")
                if ctx.bytes_received > limit:
                    raise OssHttpError(
                        "EntityTooLarge",
                        details={"MaxSizeAllowed": str(limit)},
                        headers={"Connection": "close"},
                    )
                buffer.append(chunk)
                buffered += len(chunk)
                if buffered >= _CHUNK:
                    await flush(buffer)
                    buffer, buffered = [], 0
                await self._throttle(ctx, started, ctx.bytes_received)
            if buffer:
                await flush(buffer)
            if pending is not None:
                await pending
                pending = None
            if reset_at is not None:
                raise _Dropped("reset_after_bytes")
            body = await store.finish(writer)
        except BaseException:
            if pending is not None:
                with contextlib.suppress(Exception):
                    await pending
            await store.discard(writer)
            raise
        try:
            self._check_md5(ctx, body.md5)
        except OssHttpError:
            await store.drop_body(body)
            raise
        return body

    @staticmethod
    def _check_md5(ctx: _Ctx, md5: bytes) -> None:
        given = ctx.request.headers.get("Content-MD5")
        if given is None:
            return
        try:
            decoded = base64.b64decode(given.strip(), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != 16:
            raise OssHttpError(
                "InvalidDigest", "The Content-MD5 you specified is not valid.",
                details={"Content-MD5": given},
            )  # fmt: skip
        if decoded != md5:
            raise OssHttpError(
                "InvalidDigest",
                "The Content-MD5 you specified did not match what we received.",
                details={"ExpectedContentMD5": given},
            )

    async def _put_object(
        self, ctx: _Ctx, target: Target, headers: Mapping[str, str]
    ) -> web.StreamResponse:
        assert target.bucket is not None
        assert target.key is not None
        body = await self._receive_body(ctx)
        metadata = headers_subset(headers.items(), _OBJECT_HEADERS)
        metadata.setdefault("content-type", "application/octet-stream")
        stored = await self._require_store().put_object(
            target.bucket,
            target.key,
            body,
            metadata,
            now=self._now().timestamp(),
            forbid_overwrite=_bool_header(headers.get("x-oss-forbid-overwrite")),
        )
        if stored is None:
            raise OssHttpError("FileAlreadyExists", details={"Key": target.key})
        response_headers = {
            "ETag": stored.etag,
            "Content-MD5": stored.content_md5,
            "x-oss-hash-crc64ecma": str(stored.crc64),
        }
        response_headers.update({n: metadata[n] for n in _SSE_HEADERS if n in metadata})
        return self._plain(ctx, 200, response_headers)

    def _object_headers(self, meta: ObjectMeta) -> dict[str, str]:
        headers = {
            "ETag": meta.etag,
            "Last-Modified": _http_date(meta.last_modified),
            "x-oss-object-type": meta.object_type,
            "x-oss-storage-class": meta.headers.get("x-oss-storage-class", "Standard"),
            "x-oss-hash-crc64ecma": str(meta.crc64),
            "Accept-Ranges": "bytes",
        }
        if meta.content_md5:
            headers["Content-MD5"] = meta.content_md5
        for stored_name, wire_name in _HEAD_ECHO:
            if stored_name in meta.headers:
                headers[wire_name] = meta.headers[stored_name]
        headers.update({n: v for n, v in meta.headers.items() if n.startswith("x-oss-meta-")})
        tagging = meta.headers.get("x-oss-tagging")
        if tagging:
            headers["x-oss-tagging-count"] = str(len([t for t in tagging.split("&") if t]))
        return headers

    async def _get_object(
        self, ctx: _Ctx, target: Target, headers: Mapping[str, str], *, head: bool
    ) -> web.StreamResponse:
        """GetObject / HeadObject: conditions, then the range, then the body (with faults).

        The data file is opened once, before the headers go out: a GetObject racing a
        PutObject or Complete of the same key sends the old bytes whole (the file stays
        readable after it is replaced), as OSS finishes a GET of the version it started.
        """
        assert target.bucket is not None
        assert target.key is not None
        store = self._require_store()
        opened = await store.open_object(target.bucket, target.key, data=not head)
        if opened is None:
            raise OssHttpError("NoSuchKey", details={"Key": target.key})
        meta, data = opened
        try:
            return await self._send_object(ctx, meta, data, headers, head=head)
        finally:
            if data is not None:
                # closing a read-only descriptor does not block; no await here, so the
                # request is recorded before a client seeing its end can look
                os.close(data)

    async def _send_object(
        self,
        ctx: _Ctx,
        meta: ObjectMeta,
        data: int | None,
        headers: Mapping[str, str],
        *,
        head: bool,
    ) -> web.StreamResponse:
        store = self._require_store()
        response_headers = self._base_headers(ctx)
        response_headers.update(self._object_headers(meta))
        self._apply_response_faults(ctx, response_headers)
        if evaluate_preconditions(headers, meta.etag, meta.last_modified) == "not_modified":
            kept = ("ETag", "Last-Modified", "x-oss-hash-crc64ecma")
            not_modified = self._base_headers(ctx)
            not_modified.update({n: response_headers[n] for n in kept if n in response_headers})
            return web.Response(status=304, headers=not_modified)
        start, end = 0, meta.size - 1
        status = 200
        if not head and "range" in headers:
            standard = headers.get("x-oss-range-behavior", "").strip().lower() == "standard"
            selected = parse_range(headers["range"], meta.size, standard=standard)
            if selected is not None:
                start, end = selected
                status = 206
                response_headers["Content-Range"] = f"bytes {start}-{end}/{meta.size}"
        if not head and meta.size and data is None:
            raise OssHttpError(
                "NotImplemented",
                "GetObject is not available with store='discard': bodies are not kept.",
            )
        effect = ctx.effect
        if effect is not None and effect.drop_response:
            raise _Dropped("drop_response")
        length = end - start + 1 if meta.size else 0
        truncate = effect is not None and (
            effect.truncate_response or effect.truncate_after_bytes is not None
        )
        if truncate and (head or not length):
            # nothing to cut short in the body: cut the headers (HEAD) or promise a byte
            await self._send_truncated(ctx, web.Response(status=status, headers=response_headers))
        # How many body bytes go out before a fault cuts the body (None: all of them).
        cut_at: int | None = None
        if truncate:
            cut_at = _cut(ctx, length)
        elif effect is not None and effect.reset_after_bytes is not None and not head:
            cut_at = min(effect.reset_after_bytes, max(length - 1, 0))
        corrupt_at = length // 2 if effect is not None and effect.corrupt_body else None
        response = web.StreamResponse(status=status, headers=response_headers)
        response.content_length = length
        await response.prepare(ctx.request)
        if data is not None:
            loop = asyncio.get_running_loop()
            started = loop.time()
            rate = effect.throttle_bytes_per_sec if effect is not None else None
            # throttled: ~10 writes per second, each sent once its time has come
            piece = min(_CHUNK, max(1, rate // 10)) if rate else _CHUNK
            stop = length if cut_at is None else cut_at
            while ctx.bytes_sent < stop:
                want = min(piece, stop - ctx.bytes_sent)
                chunk = await store.pread(data, start + ctx.bytes_sent, want)
                if not chunk:  # the file shrank under us (truncated on disk): nothing sane
                    raise _Dropped("object shorter than its metadata")
                if corrupt_at is not None and ctx.bytes_sent <= corrupt_at < ctx.bytes_sent + len(
                    chunk
                ):
                    spot = corrupt_at - ctx.bytes_sent
                    chunk = chunk[:spot] + bytes([chunk[spot] ^ 0xFF]) + chunk[spot + 1 :]
                await self._throttle(ctx, started, ctx.bytes_sent + len(chunk))
                await response.write(chunk)
                ctx.bytes_sent += len(chunk)
        if truncate:
            transport = ctx.request.transport
            if transport is not None:
                transport.close()  # flushes what was written, then closes
            raise _Dropped("truncate_response", graceful=True)
        if cut_at is not None:
            await _reset_after_flush(ctx.request)
            raise _Dropped("reset_after_bytes", graceful=True)
        await response.write_eof()
        return response

    async def _initiate(
        self, ctx: _Ctx, target: Target, headers: Mapping[str, str]
    ) -> web.StreamResponse:
        assert target.bucket is not None
        assert target.key is not None
        await self._drain_small(ctx)
        metadata = headers_subset(headers.items(), _OBJECT_HEADERS)
        meta = await self._require_store().create_upload(
            target.bucket, target.key, metadata, now=self._now().timestamp()
        )
        body = self._encode_key_doc(
            lambda url: encode_initiate_result(
                InitiateResult(meta.bucket, meta.key, meta.upload_id), url_encode=url
            ),
            target,
        )
        response = self._xml_response(
            ctx, body, {n: metadata[n] for n in _SSE_HEADERS if n in metadata}
        )
        return response

    async def _drain_small(self, ctx: _Ctx) -> bytes:
        """Read a small body (Complete XML, or the empty body of other requests)."""
        await ctx.body_wanted()
        data = bytearray()
        while True:
            chunk = await ctx.read_chunk()
            if not chunk:
                break
            ctx.bytes_received += len(chunk)
            data += chunk
            if len(data) > _MAX_COMPLETE_BODY:
                raise OssHttpError(
                    "EntityTooLarge",
                    "The request body is too large.",
                    headers={"Connection": "close"},
                )
        self._check_md5(ctx, hashlib.md5(bytes(data)).digest())
        return bytes(data)

    @staticmethod
    def _encode_key_doc(encode: Callable[[bool], bytes], target: Target) -> bytes:
        url = target.query_map.get("encoding-type", "").lower() == "url"
        try:
            return encode(url)
        except ValueError:
            # A key XML 1.0 cannot carry (control characters) is sent percent-encoded.
            return encode(True)

    def _require_upload_id(self, target: Target) -> str:
        upload_id = target.query_map.get("uploadId", "")
        if not upload_id:
            raise OssHttpError("NoSuchUpload", details={"UploadId": upload_id})
        return upload_id

    async def _upload_part(
        self, ctx: _Ctx, target: Target, headers: Mapping[str, str]
    ) -> web.StreamResponse:
        assert target.bucket is not None
        assert target.key is not None
        raw_number = target.query_map.get("partNumber", "")
        number = ctx.part_number  # None unless ASCII digits (_part_number_value)
        if number is None or not 1 <= number <= MAX_PART_NUMBER:
            raise OssHttpError(
                "InvalidArgument",
                "Part number must be an integer between 1 and 10000, inclusive.",
                details={"ArgumentName": "partNumber", "ArgumentValue": raw_number},
            )
        upload_id = self._require_upload_id(target)
        store = self._require_store()
        upload = await store.get_upload(target.bucket, target.key, upload_id)
        if upload is None:
            raise OssHttpError("NoSuchUpload", details={"UploadId": upload_id})
        body = await self._receive_body(ctx)
        part = await store.put_part(
            target.bucket, target.key, upload_id, number, body, self._now().timestamp()
        )
        if part is None:
            raise OssHttpError("NoSuchUpload", details={"UploadId": upload_id})
        response_headers = {
            "ETag": part.etag,
            "Content-MD5": body.content_md5,
            "x-oss-hash-crc64ecma": str(part.crc64),
        }
        response_headers.update({n: upload.headers[n] for n in _SSE_HEADERS if n in upload.headers})
        return self._plain(ctx, 200, response_headers)

    @staticmethod
    def _int_param(target: Target, name: str, default: int, *, minimum: int) -> int:
        raw = target.query_map.get(name, "")
        if raw == "":
            return default
        value = _ascii_int(raw)
        if value is None or value < minimum:
            raise OssHttpError(
                "InvalidArgument",
                f"Argument {name} must be an integer >= {minimum}.",
                details={"ArgumentName": name, "ArgumentValue": raw},
            )
        return value

    async def _list_parts(self, ctx: _Ctx, target: Target) -> web.StreamResponse:
        assert target.bucket is not None
        assert target.key is not None
        upload_id = self._require_upload_id(target)
        store = self._require_store()
        upload = await store.get_upload(target.bucket, target.key, upload_id)
        parts = await store.list_parts(target.bucket, target.key, upload_id)
        if upload is None or parts is None:
            raise OssHttpError("NoSuchUpload", details={"UploadId": upload_id})
        # spec 5.5: default and maximum 1000 (larger values are clamped).
        max_parts = min(self._int_param(target, "max-parts", 1000, minimum=1), 1000)
        if self.list_parts_page_size is not None:
            max_parts = min(max_parts, self.list_parts_page_size)
        marker = self._int_param(target, "part-number-marker", 0, minimum=0)
        after = [p for p in parts if p.part_number > marker]
        page = after[:max_parts]
        result = ListPartsResult(
            bucket=target.bucket,
            key=target.key,
            upload_id=upload_id,
            part_number_marker=marker,
            # spec 5.5: the last part number of the page even when not truncated; 0 if empty.
            next_part_number_marker=page[-1].part_number if page else 0,
            max_parts=max_parts,
            is_truncated=len(after) > len(page),
            parts=tuple(
                PartInfo(p.part_number, p.etag, p.size, p.crc64, iso8601_ms(p.last_modified))
                for p in page
            ),
            storage_class=upload.headers.get("x-oss-storage-class", "Standard"),
        )
        body = self._encode_key_doc(
            lambda url: encode_list_parts_result(result, url_encode=url), target
        )
        return self._xml_response(ctx, body)

    async def _complete(
        self, ctx: _Ctx, target: Target, headers: Mapping[str, str]
    ) -> web.StreamResponse:
        bucket, key = target.bucket, target.key
        assert bucket is not None
        assert key is not None
        upload_id = self._require_upload_id(target)
        store = self._require_store()
        # spec 5.6 check order: 1 NoSuchUpload, 2 MalformedXML, 3 InvalidPartOrder,
        # 4 InvalidPart, 5 EntityTooSmall, 6 FileAlreadyExists.
        if await store.get_upload(bucket, key, upload_id) is None:
            raise OssHttpError("NoSuchUpload", details={"UploadId": upload_id})
        body = await self._drain_small(ctx)
        complete_all = headers.get("x-oss-complete-all", "").strip().lower() == "yes"
        requested: list[tuple[int, str]] | None = None
        if complete_all:
            if body.strip():
                raise OssHttpError(
                    "InvalidArgument",
                    "Should not specify both complete-all header and the part list.",
                    details={"ArgumentName": "x-oss-complete-all", "ArgumentValue": "yes"},
                )
        else:
            try:
                requested = decode_complete_request(body) if body.strip() else []
            except ProtocolError:
                raise OssHttpError("MalformedXML") from None
            if not requested:
                raise OssHttpError("MalformedXML")

        def select(uploaded: Mapping[int, PartMeta]) -> list[PartMeta]:
            if requested is None:
                chosen = [uploaded[n] for n in sorted(uploaded)]
                if not chosen:
                    raise OssHttpError("InvalidPart", "The upload has no parts to complete.")
            else:
                previous = 0
                for number, _etag in requested:
                    if not previous < number <= MAX_PART_NUMBER:
                        raise OssHttpError("InvalidPartOrder")
                    previous = number
                chosen = []
                for number, etag in requested:
                    part = uploaded.get(number)
                    if part is None or not _etag_matches(part.etag, etag):
                        raise OssHttpError(
                            "InvalidPart", details={"PartNumber": str(number), "ETag": etag}
                        )
                    chosen.append(part)
            for part in chosen[:-1]:
                if part.size < MIN_PART_SIZE:
                    raise OssHttpError(
                        "EntityTooSmall",
                        details={
                            "PartNumber": str(part.part_number),
                            "ProposedSize": str(part.size),
                            "MinSizeAllowed": str(MIN_PART_SIZE),
                        },
                    )
            return chosen

        def object_headers(upload: UploadMeta) -> dict[str, str]:
            result = {n: v for n, v in upload.headers.items() if n != "x-oss-forbid-overwrite"}
            result.setdefault("content-type", "application/octet-stream")
            # spec 9: the SDKs send the ACL with Complete.
            if "x-oss-object-acl" in headers:
                result["x-oss-object-acl"] = headers["x-oss-object-acl"]
            return result

        def forbid(upload: UploadMeta) -> bool:
            if "x-oss-forbid-overwrite" in headers:
                return _bool_header(headers["x-oss-forbid-overwrite"])
            return _bool_header(upload.headers.get("x-oss-forbid-overwrite"))

        try:
            stored = await store.complete(
                bucket,
                key,
                upload_id,
                select,
                object_headers,
                now=self._now().timestamp(),
                forbid_overwrite=forbid,
            )
        except FileExistsError:
            raise OssHttpError("FileAlreadyExists", details={"Key": key}) from None
        if stored is None:
            raise OssHttpError("NoSuchUpload", details={"UploadId": upload_id})
        # virtual-hosted: the Host already names the bucket, as in OSS's own Location
        bucket_path = "" if self._virtual_hosted(ctx) else f"/{bucket}"
        location = f"http://{ctx.request.host}{bucket_path}/{uri_encode(key, keep_slash=True)}"
        result = CompleteResult(bucket=bucket, key=key, etag=stored.etag, location=location)
        xml = self._encode_key_doc(
            lambda url: encode_complete_result(result, url_encode=url), target
        )
        response_headers = {"ETag": stored.etag, "x-oss-hash-crc64ecma": str(stored.crc64)}
        response_headers.update({n: stored.headers[n] for n in _SSE_HEADERS if n in stored.headers})
        self._apply_response_faults(ctx, response_headers)
        return self._xml_response(ctx, xml, response_headers)

    async def _abort_upload(self, ctx: _Ctx, target: Target) -> web.StreamResponse:
        assert target.bucket is not None
        assert target.key is not None
        upload_id = self._require_upload_id(target)
        await self._drain_small(ctx)
        if not await self._require_store().abort(target.bucket, target.key, upload_id):
            raise OssHttpError("NoSuchUpload", details={"UploadId": upload_id})
        return self._plain(ctx, 204)

    async def _list_uploads(self, ctx: _Ctx, target: Target) -> web.StreamResponse:
        assert target.bucket is not None
        q = target.query_map
        prefix = q.get("prefix", "")
        delimiter = q.get("delimiter", "")
        key_marker = q.get("key-marker", "")
        upload_id_marker = q.get("upload-id-marker", "")
        max_uploads = min(self._int_param(target, "max-uploads", 1000, minimum=1), 1000)
        uploads = await self._require_store().list_uploads(target.bucket)
        selected: list[UploadSummary] = []
        prefixes: list[str] = []
        truncated = False
        next_key, next_id = "", ""
        for upload in uploads:
            if not upload.key.startswith(prefix):
                continue
            if key_marker:
                if upload.key < key_marker:
                    continue
                if upload.key == key_marker and (
                    not upload_id_marker or upload.upload_id <= upload_id_marker
                ):
                    continue
            common = None
            if delimiter:
                rest = upload.key[len(prefix) :]
                index = rest.find(delimiter)
                if index >= 0:
                    common = prefix + rest[: index + len(delimiter)]
                    if prefixes and prefixes[-1] == common:
                        continue
            if len(selected) + len(prefixes) >= max_uploads:
                truncated = True
                break
            if common is not None:
                prefixes.append(common)
                next_key, next_id = common, ""
            else:
                selected.append(
                    UploadSummary(upload.key, upload.upload_id, iso8601_ms(upload.initiated))
                )
                next_key, next_id = upload.key, upload.upload_id
        result = ListUploadsResult(
            bucket=target.bucket,
            prefix=prefix,
            delimiter=delimiter,
            key_marker=key_marker,
            upload_id_marker=upload_id_marker,
            next_key_marker=next_key,
            next_upload_id_marker=next_id,
            max_uploads=max_uploads,
            is_truncated=truncated,
            uploads=tuple(selected),
            common_prefixes=tuple(prefixes),
        )
        body = self._encode_key_doc(
            lambda url: encode_list_uploads_result(result, url_encode=url), target
        )
        return self._xml_response(ctx, body)


@final
class ThreadedOssServer:
    """:class:`OssServer` on its own event loop in a background thread (sync context manager).

    ``with ThreadedOssServer(root=tmp) as server:`` for synchronous code (the official SDKs)
    and benchmarks. Takes the same arguments as :class:`OssServer`; the counters and the
    fault plan may be read and changed from the calling thread.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        access_key_id: str = DEFAULT_ACCESS_KEY_ID,
        access_key_secret: str = DEFAULT_ACCESS_KEY_SECRET,
        security_token: str | None = None,
        region: str = DEFAULT_REGION,
        buckets: Iterable[str] | None = None,
        store: StoreMode = "disk",
        clock: Callable[[], datetime] | None = None,
        max_skew: timedelta = timedelta(minutes=15),
        list_parts_page_size: int | None = None,
        namespace_xml: bool = False,
        virtual_host_base: str | None = "localhost",
        cname: Mapping[str, str] | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.server = OssServer(
            root,
            host=host,
            port=port,
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            security_token=security_token,
            region=region,
            buckets=buckets,
            store=store,
            clock=clock,
            max_skew=max_skew,
            list_parts_page_size=list_parts_page_size,
            namespace_xml=namespace_xml,
            virtual_host_base=virtual_host_base,
            cname=cname,
            request_timeout=request_timeout,
            ssl_context=ssl_context,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread and the server; returns once it listens."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.server.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.server.aclose())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

        thread = threading.Thread(target=run, name="oss-emulator", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._loop, self._thread = loop, thread

    def stop(self) -> None:
        """Stop the server and join its thread."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    def __enter__(self) -> ThreadedOssServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # The same surface as OssServer.

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def credentials(self) -> ServerCredentials:
        return self.server.credentials

    @property
    def region(self) -> str:
        return self.server.region

    @property
    def root(self) -> Path:
        return self.server.root

    @property
    def faults(self) -> FaultPlan:
        return self.server.faults

    @property
    def requests(self) -> list[RequestRecord]:
        return self.server.requests

    @property
    def stats(self) -> ServerStats:
        return self.server.stats

    @property
    def request_timeout(self) -> float:
        return self.server.request_timeout

    @request_timeout.setter
    def request_timeout(self, value: float) -> None:
        self.server.request_timeout = value

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.server.clock

    @clock.setter
    def clock(self, value: Callable[[], datetime]) -> None:
        self.server.clock = value

    def object_info(self, bucket: str, key: str) -> ObjectMeta | None:
        return self.server.object_info(bucket, key)

    def object_path(self, bucket: str, key: str) -> Path:
        return self.server.object_path(bucket, key)

    def read_object(self, bucket: str, key: str) -> bytes:
        return self.server.read_object(bucket, key)

    def list_uploads(self, bucket: str) -> list[UploadSummary]:
        return self.server.list_uploads(bucket)

    def list_parts(self, bucket: str, upload_id: str) -> list[PartInfo]:
        return self.server.list_parts(bucket, upload_id)
