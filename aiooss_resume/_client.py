"""``Client`` and ``Bucket``: configuration, lifecycle, and the public operations.

Theory of operation
-------------------
One ``Client`` owns one HTTP transport (one aiohttp session and its connection pool) and is
safe to share across any number of concurrent transfers; a web app creates it once, in its
lifespan. ``Client`` is a ``_session.Session`` (sign -> send -> map errors -> retry, one
method per OSS operation) with configuration and lifecycle on top; ``Bucket`` is the public
face of the transfers (``_uploader``, ``_downloader``). The import graph points one way:
this module imports the engines, the engines import the request layer, never this module.
"""

from __future__ import annotations

import random
import re
import ssl as ssl_module
from collections.abc import Mapping
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
from ._downloader import DownloadResult, download_file
from ._events import ProgressHook
from ._fileio import IoRunner
from ._headers import ObjectOptions
from ._http import AiohttpTransport, Transport
from ._many import ManyUploads
from ._many_types import UploadOne
from ._models import UploadSummary
from ._planner import DEFAULT_PART_SIZE
from ._retry import ClockSkew, RetryPolicy
from ._session import RetryHook, Session, validate_bucket_name, validate_key
from ._signing import SignatureVersion, is_ip_endpoint_host
from ._stream import DEFAULT_STREAM_PART_SIZE, StreamSource, upload_stream
from ._stream_parts import Reopen
from ._uploader import UploadResult, upload_file

if TYPE_CHECKING:
    import aiohttp

__all__ = ["Bucket", "Client", "RetryHook", "validate_bucket_name", "validate_key"]

_REGION_FROM_HOST = re.compile(r"^oss-([a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com$")
_DUAL_STACK_HOST = re.compile(r"^([a-z0-9-]+)\.oss\.aliyuncs\.com$")


def _region_from_host(host: str) -> str | None:
    for pattern in (_REGION_FROM_HOST, _DUAL_STACK_HOST):
        match = pattern.match(host)
        if match:
            return match.group(1)
    return None


@final
class Client(Session):
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


@final
class Bucket(ManyUploads):
    """A bucket of a ``Client``: where uploads go. Create it with ``client.bucket(name)``.

    ``upload_many`` and ``upload_dir`` (many files under one budget) come from
    ``ManyUploads``."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name

    def _upload_one(self) -> UploadOne:
        return upload_file  # the engine upload_many/upload_dir run for each file

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
        options: ObjectOptions | None = None,
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
            routines: how many parts are uploaded concurrently, 1 to 1000 (default 1); a
                value outside that range is a ``ValueError``.
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
            options: the common headers, typed (``ObjectOptions``: ACL, storage class,
                encryption, metadata, content type, tags, forbid-overwrite, traffic limit);
                they combine with ``headers``, and a header given both ways is a
                ``ValueError``.

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
            options=options,
        )

    async def download_file(
        self,
        key: str,
        file_path: str | PathLike[str],
        part_size: int = DEFAULT_PART_SIZE,
        *,
        routines: int = 1,
        checkpoint: bool | str | PathLike[str] | None = None,
        checkpoint_dir: str | PathLike[str] | None = None,
        on_progress: ProgressHook | None = None,
        options: ObjectOptions | None = None,
        direct_io: bool = False,
    ) -> DownloadResult:
        """Download ``key`` to ``file_path``, resumably, in Range GETs of ``part_size`` bytes.

        The bytes go to ``<file_path>.tmp``, which is fsynced and renamed over ``file_path``
        once the whole object's CRC-64 matched; a reader never sees a half file. With a
        checkpoint (``True``: ``<file_path>.dcp``), an interrupted download resumes with the
        ranges it finished, if the object did not change (ETag, size, CRC-64).
        ``options=ObjectOptions(traffic_limit=...)`` throttles each ranged GET; any other
        field is a ``ValueError`` (it describes an object, which a download does not set).

        ``direct_io=True`` writes the temp file around the page cache (``O_DIRECT``, Linux,
        where the file system allows it; elsewhere buffered as usual): much less kernel CPU
        on machines where new page-cache pages are costly, but the finished file is not in
        the cache and each write waits for the device, which can be slower on network file
        systems or disks. Off by default; see the Downloading page.

        Raises:
            ValueError, TypeError, IsADirectoryError: bad arguments, before any request.
            ServiceError: OSS refused a request (404 NoSuchKey: no such object).
            TransportError: the network failed and retries ran out.
            FileChangedError: the object changed during the download (412 on If-Match);
                its checkpoint is deleted, so the next run downloads it all again.
            IntegrityError: the bytes' CRC-64 differs from the object's.
            CheckpointError: the checkpoint cannot be written or is locked by another run.
        """
        return await download_file(
            self.client,
            self.name,
            key,
            file_path,
            part_size,
            routines=routines,
            checkpoint=checkpoint,
            checkpoint_dir=checkpoint_dir,
            on_progress=on_progress,
            options=options,
            direct_io=direct_io,
        )

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort an unfinished multipart upload, discarding its parts."""
        await self.client._abort(self.name, validate_key(key), upload_id)

    async def list_uploads(self, prefix: str = "") -> list[UploadSummary]:
        """Every unfinished multipart upload in the bucket whose key starts with ``prefix``."""
        return await self.client._list_uploads(self.name, prefix)

    async def upload_stream(
        self,
        key: str,
        source: StreamSource | None,
        part_size: int = DEFAULT_STREAM_PART_SIZE,
        *,
        routines: int = 1,
        size: int | None = None,
        checkpoint: str | PathLike[str] | None = None,
        reopen: Reopen | None = None,
        headers: Mapping[str, str] | None = None,
        on_progress: ProgressHook | None = None,
        options: ObjectOptions | None = None,
    ) -> UploadResult:
        """Upload what an async stream yields to ``key``, in parts of ``part_size`` bytes.

        For a body the caller does not hold as a file: a web request's (``request.stream()``),
        a download being relayed, a generator producing an archive. Memory is bounded: at
        most ``routines + 1`` parts are held, whatever the sizes of the chunks the stream
        yields, and the stream is read only as fast as OSS takes the parts. A stream that
        ends within its first part goes up with one PutObject, a longer one by multipart
        upload; every part's CRC-64 is checked, and the whole object's after Complete.

        Args:
            key: the object key (1-1023 UTF-8 bytes, not starting with ``/`` or ``\\``).
            source: an async iterable of bytes-like chunks, or an object with an
                ``async read(n)`` (preferred when it has both: aiohttp's ``StreamReader``
                iterates lines), or a binary file-like object (``io.BytesIO``, a pipe,
                ``sys.stdin.buffer``), whose blocking ``read(n)`` runs in the library's
                worker threads. None only with ``reopen``, which is then called with 0.
            part_size: 100 KiB to 5 GiB (default 8 MiB, boto3's); grown to fit 10,000
                parts when ``size`` is given. Without ``size`` it is the caller's bound on
                the stream's length: 10,000 parts of it.
            routines: parts uploaded concurrently, 1 to 1000 (default 1).
            size: the stream's exact length, if known: the part size grows to fit, and a
                stream yielding more or fewer bytes fails with ``StreamLengthError``.
            checkpoint: where to keep the checkpoint of a resumable upload (a path; given
                together with ``reopen``).
            reopen: ``reopen(offset)`` returns the same stream from byte ``offset`` (an
                async iterable or reader, or an awaitable of one). With it, an interrupted
                upload keeps its acknowledged parts in ``checkpoint`` and a later call
                resumes from the first part missing; without it, a failed or cancelled
                upload is aborted on OSS (its bytes cannot be read again), leaving no parts
                behind (a killed process aborts nothing: ``aiooss-resume uploads`` finds
                what it left). Pass ``size`` too when the length is known.
            headers: object metadata and options, as for ``upload_file``.
            on_progress: a sync or async callable receiving ``ProgressEvent`` objects;
                ``total_bytes`` and ``part_count`` are -1 until the end while the stream's
                length is unknown.
            options: typed object options (``ObjectOptions``), as for ``upload_file``;
                a header given both here and in ``headers`` is a ``ValueError``.

        Returns:
            An ``UploadResult`` describing the stored object.

        Raises:
            ValueError, TypeError: bad arguments, before the stream is read; a chunk that
                is not bytes-like, or a ``read(n)`` returning None (a non-blocking file), is
                a ``TypeError`` when it is read (the upload aborted).
            StreamLengthError: the stream's length differs from ``size``, or it outgrew
                10,000 parts: the upload was aborted and nothing stored.
            ServiceError, TransportError, IntegrityError, CheckpointError: as for
                ``upload_file``.
            FileChangedError: a reopened stream's bytes differ from the checkpoint's.
            Exception: any exception the stream raises, as it is (the upload aborted, or
                kept for a resume with ``reopen``).
        """
        return await upload_stream(
            self.client,
            self.name,
            key,
            source,
            part_size,
            routines=routines,
            size=size,
            checkpoint=checkpoint,
            reopen=reopen,
            headers=headers,
            on_progress=on_progress,
            options=options,
        )
