"""The resumable upload engine behind ``Bucket.upload_file``.

Theory of operation
-------------------
1. **Validate** every argument before any request: key rules, part size, routines, headers,
   the file (``FileNotFoundError``, ``IsADirectoryError``), the checkpoint location (taking
   its lock proves it writable: ``CheckpointError`` otherwise).
2. **Plan**: a file smaller than one part goes up with one PutObject. Otherwise parts of the
   (possibly grown) part size tile the file (``_planner``).
3. **Load the checkpoint**, if any. A damaged one (checksum, truncation, unknown version)
   means all parts go up again, and its stale upload is aborted when its id can be read.
   A checkpoint whose source identity (path, size, mtime_ns, inode), target or options
   differ is discarded the same way: the whole object is uploaded again.
4. **Reconcile** with ListParts (all pages). A part counts as done only if OSS has it with
   the planned size *and* the CRC-64 of the local byte range equals the CRC OSS reports. The
   local range is re-read rather than trusted: a file edited in place with its size and
   mtime preserved cannot smuggle stale parts into the object. Any subset of parts can be
   resumed, including parts OSS acknowledged after the last checkpoint write. A vanished
   upload id (NoSuchUpload) means a fresh upload, unless the object already exists with the
   checkpoint's size and CRC (a run killed right after Complete).
5. **Upload** the missing parts: one task per part in flight, at most ``routines`` at a time
   (an ``asyncio.Semaphore``), each streaming its slice in 1 MiB ``pread`` chunks with the
   CRC computed in the reading thread, checked against ``x-oss-hash-crc64ecma`` (a mismatch
   is retried like a transport error). The first part to fail for good cancels the others.
   Errors raised inside a body (the progress hook's, a file that shrank) are the body's
   ``failure``: the transport would report them as a retryable broken connection, so the
   request raises them as they are instead (``Client._request(fatal=...)``).
6. **Checkpoint**: one writer task owns the file. Acknowledged parts are handed to it, before
   anything else is awaited; it rewrites the checkpoint atomically, coalescing parts that
   finish while a write is in flight and spacing writes by a multiple of their own duration
   (so 10,000 small parts do not write gigabytes). A part is recorded only after OSS
   acknowledged it and its CRC matched; every write contains every part recorded before it.
7. **Complete**: the source is stat'ed again first; if it changed, the upload is aborted, the
   checkpoint deleted and ``FileChangedError`` raised: a mixed object is never completed.
   The object's CRC from OSS must equal the fold of the part CRCs (``IntegrityError``
   otherwise, saying the object exists). If Complete's answer is lost and the retry says
   NoSuchUpload, HEAD decides (spec 10.3). The checkpoint is deleted after success. A small
   file's single PutObject is guarded the same way: the source is stat'ed again before the
   body's last chunk is handed over, so a file that changed is never stored (and the object
   the key held before stays as it was).
8. **Failure and cancellation**: with a checkpoint, every acknowledged part is flushed to it
   and the upload is kept for the next run; without one, the multipart upload is aborted so
   no parts are orphaned. No task outlives the call and no ``ExceptionGroup`` escapes it.
   On cancellation that cleanup is shielded and bounded (``FLUSH_TIMEOUT``) and the
   ``CancelledError`` is always re-raised, also when a part failed at the same moment. A
   checkpoint write still in its (uninterruptible) thread when the bound expires goes on;
   the checkpoint's lock is released only when it has ended, so no later run can have its
   checkpoint overwritten by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import logging
import mimetypes
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from os import PathLike
from typing import TYPE_CHECKING, TypeVar

import anyio.lowlevel
import msgspec

from ._checkpoint import (
    Checkpoint,
    CheckpointPart,
    SourceIdentity,
    decode_checkpoint,
    encode_checkpoint,
    options_fingerprint,
    peek_source_path,
    peek_upload_target,
)
from ._crc64 import crc64_fold
from ._errors import (
    CheckpointError,
    FileChangedError,
    IntegrityError,
    NoSuchUploadError,
    OssError,
    ProtocolError,
)
from ._events import (
    BytesSent,
    PartDone,
    PartRetried,
    ProgressEvent,
    ProgressHook,
    UploadCompleted,
    UploadStarted,
)
from ._fileio import (
    CHUNK_SIZE,
    CheckpointLock,
    IoRunner,
    SourceFile,
    ThreadJob,
    read_optional,
    refuse_symlink,
    remove_quietly,
    stat_identity,
    write_atomic,
)
from ._foreign import Adoption, adopt_foreign
from ._http import HttpResponse
from ._models import PartInfo
from ._planner import PartPlan, effective_part_size, plan_parts, validate_part_size

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["UploadResult", "checkpoint_path_for", "route_headers", "upload_file"]

logger = logging.getLogger("aiooss_resume")

_T = TypeVar("_T")

MAX_ROUTINES = 1000
FLUSH_TIMEOUT = 1.0
"""Upper bound, in seconds, on the shielded cleanup after a cancellation: the checkpoint
flush, or the Abort of an upload nobody could resume. The issue promises that a cancelled
upload stops within about a second; a healthy flush or Abort takes milliseconds, and a
checkpoint write cut off by the bound still lands (see theory of operation, point 8)."""
COMPLETE_SLICE = 500
"""Part CRCs folded per event-loop step at Complete (~0.5 ms), so 10,000 parts never hold
the loop for long; a worker thread would hold the GIL for up to the interpreter's 5 ms
switch interval at a time, which is what the loop then waits. (Complete's XML body is
encoded in slices likewise, by ``Client._complete``.)"""

# Where each user header goes in a multipart upload (spec section 9). Anything not listed
# here describes the object and goes on Initiate (and on PutObject for small files).
_PART_ONLY = frozenset({"x-oss-traffic-limit"})
_COMPLETE_ONLY = frozenset({"x-oss-object-acl", "x-oss-callback", "x-oss-callback-var"})
_INITIATE_AND_COMPLETE = frozenset({"x-oss-forbid-overwrite"})
_EVERY_REQUEST = frozenset({"x-oss-request-payer"})
_NOT_SHAPING = _PART_ONLY | _EVERY_REQUEST  # left out of the checkpoint's options fingerprint
_RESERVED = frozenset(
    {
        "authorization", "date", "x-oss-date", "x-oss-content-sha256", "x-oss-security-token",
        "host", "content-length", "transfer-encoding", "content-md5", "expect",
        "x-oss-complete-all", "connection",
    }
)  # fmt: skip
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")

_mime = mimetypes.MimeTypes()  # read the system tables now, at import, not on the event loop


class UploadResult(msgspec.Struct, frozen=True, kw_only=True):
    """What ``upload_file`` stored.

    Attributes:
        bucket, key: where the object is.
        etag: the object's ETag as OSS returned it (quoted).
        crc64: the object's CRC-64/XZ, verified against OSS's.
        size: the object's size in bytes.
        upload_id: the multipart upload id, or None when one PutObject sufficed.
        part_size: the part size used (after growing to fit 10,000 parts), or None.
        parts_uploaded: parts sent by this call (1 for a PutObject).
        parts_resumed: parts found on OSS from an earlier run and kept.
        bytes_resumed: bytes in those parts (not sent again).
        request_id: the request id of the Complete (or PutObject) request.
    """

    bucket: str
    key: str
    etag: str
    crc64: int
    size: int
    upload_id: str | None
    part_size: int | None
    parts_uploaded: int
    parts_resumed: int
    bytes_resumed: int
    request_id: str


class _HeaderPlan(msgspec.Struct, frozen=True):
    put: dict[str, str]
    initiate: dict[str, str]
    part: dict[str, str]
    complete: dict[str, str]
    other: dict[str, str]


def route_headers(headers: Mapping[str, str] | None, key: str) -> _HeaderPlan:
    """Validate the caller's headers and send each on the requests OSS reads it from."""
    if headers is not None and not isinstance(headers, Mapping):
        raise TypeError("headers must be a mapping of header names to values")
    put: dict[str, str] = {}
    initiate: dict[str, str] = {}
    part: dict[str, str] = {}
    complete: dict[str, str] = {}
    other: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("header names and values must be str")
        lower = name.lower()
        if not lower or not set(lower) <= _TOKEN_CHARS:
            raise ValueError(f"invalid header name {name!r}")
        if lower in seen:
            raise ValueError(f"header {name!r} is given twice (names are case-insensitive)")
        seen.add(lower)
        if lower in _RESERVED:
            raise ValueError(f"header {name!r} is set by aiooss_resume and cannot be passed")
        if not value.isascii() or any(c in value for c in "\r\n\0"):
            raise ValueError(
                f"header {name!r} must have a single-line ASCII value "
                "(percent-encode other text yourself)"
            )
        if value != value.strip():
            raise ValueError(f"header {name!r} has leading or trailing spaces")
        put[name] = value
        if lower in _EVERY_REQUEST:
            for target in (initiate, part, complete, other):
                target[name] = value
        elif lower in _PART_ONLY:
            part[name] = value
        elif lower in _COMPLETE_ONLY:
            complete[name] = value
        elif lower in _INITIATE_AND_COMPLETE:
            initiate[name] = value
            complete[name] = value
        else:
            initiate[name] = value
    if "content-type" not in seen:
        content_type = _mime.guess_type(key, strict=False)[0] or "application/octet-stream"
        put["Content-Type"] = content_type
        initiate["Content-Type"] = content_type
    return _HeaderPlan(put, initiate, part, complete, other)


def _target_digest(source: str, endpoint: str, bucket: str, key: str) -> str:
    return hashlib.sha256(
        "\n".join([source, endpoint, bucket, key]).encode("utf-8", "surrogatepass")
    ).hexdigest()[:20]


def _belongs_elsewhere(data: bytes, endpoint: str, bucket: str, key: str) -> bool:
    """Whether a checkpoint's bytes record an upload to another endpoint, bucket or key.

    A damaged checkpoint counts by what can still be read of it; one naming no target at
    all (garbage, empty) does not: it is ours to replace.
    """
    try:
        cp = decode_checkpoint(data)
    except CheckpointError:
        peeked = peek_upload_target(data)
        return peeked is not None and peeked[:3] != (endpoint, bucket, key)
    return (cp.endpoint, cp.bucket, cp.key) != (endpoint, bucket, key)


def checkpoint_path_for(
    source: str,
    checkpoint: bool | str | PathLike[str] | None,
    checkpoint_dir: str | PathLike[str] | None,
    *,
    endpoint: str,
    bucket: str,
    key: str,
) -> str | None:
    """Where the checkpoint lives (absolute), or None when the upload is not resumable.

    ``checkpoint=True`` means ``<file>.cp``, as the OSS SDKs do, unless that file records an
    upload to another target (one file uploaded to two keys): then this target gets its own
    ``<file>.<digest>.cp`` beside it, so neither upload loses its record. Once that file
    exists it is used, whatever ``<file>.cp`` holds by then. This reads the file system
    (call it off the event loop); an unreadable ``<file>.cp`` is a ``CheckpointError``.
    """
    if checkpoint_dir is not None:
        if checkpoint not in (None, True):
            raise ValueError("pass checkpoint=True (or nothing) together with checkpoint_dir")
        directory = os.path.abspath(os.fspath(checkpoint_dir))
        digest = _target_digest(source, endpoint, bucket, key)
        return os.path.join(directory, f"{os.path.basename(source)}.{digest}.cp")
    if checkpoint is None or checkpoint is False:
        return None
    if checkpoint is True:
        plain = source + ".cp"
        specific = f"{source}.{_target_digest(source, endpoint, bucket, key)}.cp"
        if os.path.lexists(specific):
            return specific
        data = read_optional(plain)
        if data is not None and _belongs_elsewhere(data, endpoint, bucket, key):
            return specific
        return plain
    if isinstance(checkpoint, (str, PathLike)):
        path = os.path.abspath(os.fspath(checkpoint))
        if path == source:
            raise ValueError("the checkpoint path must not be the file being uploaded")
        return path
    raise TypeError("checkpoint must be None, a bool, or a path")


def _resolve_paths(
    file_path: str | PathLike[str],
    checkpoint: bool | str | PathLike[str] | None,
    checkpoint_dir: str | PathLike[str] | None,
    *,
    endpoint: str,
    bucket: str,
    key: str,
) -> tuple[str, str | None]:
    path = os.path.abspath(os.fspath(file_path))
    st = os.stat(path)  # FileNotFoundError propagates as is
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"{path!r} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path!r} is not a regular file")
    cp_path = checkpoint_path_for(
        path, checkpoint, checkpoint_dir, endpoint=endpoint, bucket=bucket, key=key
    )
    if cp_path is not None:
        # Neither the checkpoint nor its lock is ever followed through a link (issue 10).
        refuse_symlink(cp_path)
        refuse_symlink(cp_path + ".lock")
        if os.path.isdir(cp_path):
            raise CheckpointError(f"cannot write checkpoint {cp_path!r}: it is a directory")
    return path, cp_path


def _check_routines(routines: object) -> int:
    if isinstance(routines, bool) or not isinstance(routines, int):
        raise TypeError(f"routines must be an int, not {type(routines).__name__}")
    if not 1 <= routines <= MAX_ROUTINES:
        raise ValueError(f"routines must be between 1 and {MAX_ROUTINES}, got {routines}")
    return routines


async def upload_file(
    client: Client,
    bucket: str,
    key: str,
    file_path: str | PathLike[str],
    part_size: int,
    *,
    routines: int,
    checkpoint: bool | str | PathLike[str] | None,
    checkpoint_dir: str | PathLike[str] | None,
    headers: Mapping[str, str] | None,
    on_progress: ProgressHook | None,
) -> UploadResult:
    """See ``Bucket.upload_file``."""
    from ._client import validate_key

    validate_key(key)
    validate_part_size(part_size)
    _check_routines(routines)
    if on_progress is not None and not callable(on_progress):
        raise TypeError("on_progress must be callable")
    if not isinstance(file_path, (str, PathLike)):
        raise TypeError("file_path must be a str or os.PathLike")
    plan_headers = route_headers(headers, key)
    # Path resolution and stat touch the file system: off the event loop (slow mounts).
    path, cp_path = await client._io.run(
        functools.partial(
            _resolve_paths,
            file_path,
            checkpoint,
            checkpoint_dir,
            endpoint=client.endpoint,
            bucket=bucket,
            key=key,
        )
    )
    # A Go SDK / oss2 record of this upload is adopted, one of another is left alone (_foreign).
    distinct = f"{path}.{_target_digest(path, client.endpoint, bucket, key)}.cp"
    fallback = distinct if checkpoint is True and checkpoint_dir is None else None
    cp_path, adoption, adopted_part_size = await adopt_foreign(
        client, bucket, key, path, cp_path, fallback, plan_headers.other
    )
    part_size = adopted_part_size or part_size
    job = _Upload(
        client, bucket, key, path, part_size, routines, cp_path, plan_headers, on_progress
    )
    job.adoption = adoption
    return await job.run()


class _Progress:
    """Turns part bookkeeping into monotone progress events for the caller's hook.

    Counts are high-water marks: ``bytes_done`` is the sum over parts of the furthest byte
    handed to the network (resumed parts count whole), ``parts_done`` the number of distinct
    parts acknowledged (resumed parts included). Neither goes back: not when a request is
    retried, nor when a vanished upload is restarted and its parts are sent again (both then
    stay flat until the re-sent parts pass their old marks). ``finish`` brings ``bytes_done``
    to exactly ``total`` before ``UploadCompleted``, also when nothing had to be sent.

    The hook runs on the event loop. If it raises, the upload fails with that exception (a
    note says where it came from) and the hook is not called again.
    """

    def __init__(self, hook: ProgressHook | None, key: str, total: int) -> None:
        self.hook = hook
        self.key = key
        self.total = total
        self.done = 0
        self.resumed = 0
        self._per_part: dict[int, int] = {}
        self._parts_acknowledged: set[int] = set()
        self._reported = -1  # the bytes_done of the last BytesSent emitted
        self.error: Exception | None = None

    def resume(self, number: int, size: int) -> None:
        self._parts_acknowledged.add(number)
        previous = self._per_part.get(number, 0)
        if size > previous:
            self._per_part[number] = size
            self.done += size - previous
        self.resumed += size

    async def emit(self, event: ProgressEvent) -> None:
        if self.hook is None or self.error is not None:
            return
        try:
            result = self.hook(event)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self.error = exc
            exc.add_note(f"(raised by the on_progress hook, given {type(event).__name__})")
            raise

    async def sent(self, number: int, position: int) -> None:
        # A retry re-sends bytes already counted: only count past the part's high-water mark.
        previous = self._per_part.get(number, 0)
        if position <= previous:
            return
        self._per_part[number] = position
        self.done += position - previous
        await self._bytes_sent()

    async def part_done(self, number: int, size: int, part_count: int) -> None:
        self._parts_acknowledged.add(number)
        await self.emit(
            PartDone(
                key=self.key,
                part_number=number,
                size=size,
                parts_done=len(self._parts_acknowledged),
                part_count=part_count,
            )
        )

    async def finish(self) -> None:
        """Report ``bytes_done == total`` if the last BytesSent did not (all resumed, empty)."""
        self.done = self.total
        if self._reported != self.total:
            await self._bytes_sent()

    async def _bytes_sent(self) -> None:
        if self.hook is None:
            return
        self._reported = self.done
        await self.emit(
            BytesSent(
                key=self.key,
                bytes_done=self.done,
                total_bytes=self.total,
                resumed_bytes=self.resumed,
            )
        )


class _CheckpointWriter:
    """The one task that writes the checkpoint; parts are handed to it with ``record``.

    A write runs in a worker thread that cannot be interrupted; only waiting for it can be.
    Writes never overlap: the job of the last one is kept (``_job``) and the next write
    first waits for it to end, so a snapshot can never land after a newer one. ``stop``
    ends the loop by a flag, waiting for a write in flight; if ``stop`` itself is cancelled
    (the bound on the cleanup after a cancellation), the loop task is cancelled and ended
    but its write goes on in its thread. ``call_when_idle`` runs a callback once no write
    is in a thread any more: the caller releases the checkpoint's lock with it.
    """

    MIN_GAP = 0.01
    GAP_FACTOR = 10.0

    def __init__(
        self,
        path: str,
        checkpoint: Checkpoint,
        io: IoRunner,
        previous: _CheckpointWriter | None = None,
    ) -> None:
        self.path = path
        self._checkpoint = checkpoint
        self._parts: dict[int, CheckpointPart] = {p.number: p for p in checkpoint.parts}
        self._io = io
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopping = False
        self._version = 0  # bumped by every record
        self._saved = 0  # the version the file on disk holds
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        # A write of the writer this one replaces may still be in its thread.
        self._job: ThreadJob | None = previous._job if previous is not None else None
        self.error: CheckpointError | None = None
        self.writes = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def record(self, part: CheckpointPart) -> None:
        self._parts[part.number] = part
        self._version += 1
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            started = time.monotonic()
            try:
                await self.write(force=False)
            except CheckpointError as exc:
                self.error = exc
                return
            # Space writes by a multiple of their cost; parts finishing meanwhile coalesce
            # (``record`` leaves ``_wake`` set, so the next write follows the gap).
            gap = max(self.MIN_GAP, self.GAP_FACTOR * (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(gap):
                    await self._stop.wait()

    async def write(self, *, force: bool) -> None:
        async with self._lock:
            if self._job is not None:
                await self._job.wait()  # a write whose waiter was cancelled
                self._job = None
            version = self._version
            if version == self._saved and not force:
                return
            parts = [self._parts[n] for n in sorted(self._parts)]
            snapshot = msgspec.structs.replace(self._checkpoint, parts=parts)
            job = self._job = ThreadJob()
            try:
                await self._io.run(
                    job.run, _write_snapshot, self.path, snapshot, abandon_on_cancel=True
                )
            except OSError as exc:
                raise CheckpointError(
                    f"cannot write checkpoint {self.path!r}: {exc.strerror or exc}"
                ) from exc
            finally:
                job.abandon()  # settles it if no thread ever started it
            self._job = None
            self._saved = version
            self.writes += 1

    async def flush(self, *, force: bool = False) -> None:
        """Write now if anything was recorded since the last write; raise a writer error."""
        if self.error is not None:
            raise self.error
        await self.write(force=force)

    async def stop(self) -> None:
        """End the writer task after any write in flight (see the class docstring)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._stop.set()
        self._wake.set()
        try:
            await asyncio.wait([task])  # raises only if we are cancelled, never cancels it
        except asyncio.CancelledError:
            task.cancel()
            await _wait_ended(task)
            raise
        _retrieve(task)

    def call_when_idle(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once no checkpoint write is in a worker thread (maybe now)."""
        if self._job is None:
            callback()
        else:
            self._job.call_when_done(callback)


def _write_snapshot(path: str, checkpoint: Checkpoint) -> None:
    _encode_and_write(path, checkpoint)  # looked up at call time: the tests wrap it


def _encode_and_write(path: str, checkpoint: Checkpoint) -> None:
    write_atomic(path, encode_checkpoint(checkpoint))


async def _wait_ended(task: asyncio.Task[None]) -> None:
    """Wait for an already-cancelled task to end (a few loop steps), whatever else is
    cancelled meanwhile, so that it does not outlive its owner."""
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([task])
    _retrieve(task)


def _retrieve(task: asyncio.Task[None]) -> None:
    # The writer loop reports checkpoint errors in ``error``; anything else is a bug, and
    # must not replace the error the upload is failing with.
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("the checkpoint writer failed", exc_info=exc)


async def _shielded(awaitable: Awaitable[_T]) -> _T:
    """Run ``awaitable`` to completion even if the caller is cancelled meanwhile.

    That ``CancelledError`` is re-raised afterwards, so the inner work never outlives this
    call: bound the work itself (``asyncio.timeout`` inside) to bound the wait.
    """
    task = asyncio.ensure_future(awaitable)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            cancelled = exc
            if task.done():
                break
    if cancelled is not None:
        # Consume the outcome so it is not reported as never retrieved, and re-raise the
        # original exception: anyio recognises its cancel scopes' by their message.
        if not task.cancelled():
            task.exception()
        raise cancelled
    return task.result()


def _cancellation_of(group: BaseExceptionGroup[BaseException]) -> asyncio.CancelledError:
    """The CancelledError a TaskGroup swallowed (its error group's context), else a new one.

    Re-raising the original matters under anyio: a cancel scope recognises its own
    cancellation by the message.
    """
    context, seen = group.__context__, set()
    while context is not None and id(context) not in seen:
        if isinstance(context, asyncio.CancelledError):
            return context
        seen.add(id(context))
        context = context.__context__
    return asyncio.CancelledError()


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    leaves = list({id(e): e for e in leaves}.values())  # one failure may end several parts
    real = [e for e in leaves if not isinstance(e, asyncio.CancelledError)]
    first = real[0] if real else leaves[0]
    if len(real) > 1:
        first.add_note(f"({len(real) - 1} other part request(s) failed too)")
    return first


def _response_crc(resp: HttpResponse) -> int | None:
    value = resp.header("x-oss-hash-crc64ecma")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ProtocolError(f"x-oss-hash-crc64ecma is not a number: {value[:40]!r}") from None


class _Body:
    """A part's body: a fresh chunk iterator per attempt, with the CRC of what was sent.

    An error that must end the request (the progress hook's, a source that shrank or
    changed) is kept in ``failure`` before it is raised through the transport, which would
    report it as a broken connection; the request raises ``failure`` instead of retrying.
    A ``whole_object`` body (PutObject) stat's the source before its last chunk is handed
    over, so OSS never receives the whole body of a file that changed while it was read.
    """

    def __init__(
        self, job: _Upload, number: int, offset: int, size: int, *, whole_object: bool = False
    ) -> None:
        self.job = job
        self.number = number
        self.offset = offset
        self.size = size
        self.whole_object = whole_object
        self.crc = 0
        self.failure: Exception | None = None
        self.sent_whole = False  # some attempt handed over every byte

    def __call__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    def fatal(self) -> Exception | None:
        return self.failure

    def _fail(self, exc: Exception) -> Exception:
        if self.failure is None:
            self.failure = exc
        return self.failure

    async def _chunks(self) -> AsyncIterator[bytes]:
        self.crc = 0
        position = 0
        while position < self.size:
            n = min(CHUNK_SIZE, self.size - position)
            try:
                data, self.crc = await self.job.src.read(self.offset + position, n, self.crc)
            except EOFError:
                raise self._fail(self._changed("it became shorter")) from None
            if self.whole_object and position + n == self.size:
                await self._check_source()
            yield data
            position += n
            if position == self.size:
                self.sent_whole = True
            try:
                await self.job.progress.sent(self.number, position)
            except Exception as exc:
                if position < self.size:
                    raise self._fail(exc) from None  # stop sending: the upload has failed
                self._fail(exc)  # every byte is out: let OSS answer, then fail

    async def _check_source(self) -> None:
        change = await self.job._source_change()
        if change is not None:
            raise self._fail(self._changed(change))

    def _changed(self, detail: str) -> FileChangedError:
        if not self.whole_object:
            return self.job._file_changed(detail)  # a part: the multipart upload is aborted
        where = f"oss://{self.job.bucket}/{self.job.key}"
        if self.sent_whole:
            outcome = (
                f"an earlier attempt, whose answer was lost, had sent the whole file as it was "
                f"before the change, so {where} may hold that version"
            )
        else:
            outcome = f"it was not stored ({where} was left as it was)"
        return FileChangedError(
            f"{self.job.path!r} changed while it was being uploaded ({detail}); {outcome}; "
            "run the upload again"
        )

    def check(self, resp: HttpResponse) -> None:
        reported = _response_crc(resp)
        if reported is not None and reported != self.crc:
            raise IntegrityError(
                f"part {self.number}: CRC-64 mismatch (sent {self.crc}, OSS stored {reported})",
                expected=self.crc,
                actual=reported,
            )


class _Upload:
    """One call of ``upload_file``."""

    adoption: Adoption | None = None  # another tool's record of this upload (_foreign)

    def __init__(
        self,
        client: Client,
        bucket: str,
        key: str,
        path: str,
        part_size: int,
        routines: int,
        cp_path: str | None,
        headers: _HeaderPlan,
        on_progress: ProgressHook | None,
    ) -> None:
        self.client = client
        self.io = client._io
        self.bucket = bucket
        self.key = key
        self.path = path
        self.requested_part_size = part_size
        self.routines = routines
        self.cp_path = cp_path
        self.headers = headers
        self.hook = on_progress
        self.src: SourceFile
        self.identity: SourceIdentity
        self.progress: _Progress
        self.writer: _CheckpointWriter | None = None
        self.upload_id: str | None = None
        self.resumed: set[int] = set()
        self.completing = False
        self.on_disk = False  # True once a checkpoint file names self.upload_id

    # ------------------------------------------------------------------ entry

    async def run(self) -> UploadResult:
        lock = CheckpointLock(self.cp_path) if self.cp_path else None
        if lock is not None:
            # A cancel while the lock is taken in its thread releases it there.
            await self.io.run_owned(lock.acquire, lambda _: lock.release())
        try:
            self.src = await SourceFile.open(self.path, self.io)
            try:
                self.identity = await self.io.run(stat_identity, self.path)
                self.progress = _Progress(self.hook, self.key, self.identity.size)
                part_size = effective_part_size(self.identity.size, self.requested_part_size)
                if self.identity.size < part_size:
                    if self.cp_path:
                        await self._discard_checkpoint_file("the file now fits in one request")
                    return await self._put_object()
                return await self._multipart(part_size)
            finally:
                await self.src.aclose()
        finally:
            if lock is not None:
                if self.writer is not None:
                    # Not while a write cut off by a cancellation may still land.
                    self.writer.call_when_idle(lock.release)
                else:
                    lock.release()

    async def _on_retry(self, number: int, failures: int, error: OssError, delay: float) -> None:
        await self.progress.emit(
            PartRetried(
                key=self.key, part_number=number, attempt=failures, error=str(error), delay=delay
            )
        )

    def _retry_hook(self, number: int) -> Callable[[int, OssError, float], Awaitable[None]]:
        async def hook(failures: int, error: OssError, delay: float) -> None:
            await self._on_retry(number, failures, error, delay)

        return hook

    def _file_changed(self, detail: str) -> FileChangedError:
        return FileChangedError(
            f"{self.path!r} changed while it was being uploaded ({detail}); the multipart "
            "upload was not completed, run the upload again"
        )

    async def _source_change(self) -> str | None:
        """How the source differs from the identity taken at the start, or None."""
        try:
            current = await self.io.run(stat_identity, self.path)
        except FileNotFoundError:
            return "it was removed"
        return None if current == self.identity else _identity_difference(self.identity, current)

    async def _check_source_unchanged(self) -> None:
        change = await self._source_change()
        if change is not None:
            raise self._file_changed(change)

    # ------------------------------------------------------------------ one request

    async def _put_object(self) -> UploadResult:
        size = self.identity.size
        # The body checks the source before its last byte: a file that changed while it was
        # read is never stored. (Once every byte was read unchanged, the object is a
        # faithful copy, whatever happens to the file afterwards.)
        body = _Body(self, 1, 0, size, whole_object=True)
        await self.progress.emit(
            UploadStarted(
                key=self.key, total_bytes=size, part_count=1, part_size=size, upload_id=None
            )
        )
        resp = await self.client._put_object(
            self.bucket,
            self.key,
            body,
            size,
            self.headers.put,
            body.check,
            self._retry_hook(1),
            fatal=body.fatal,
        )
        if body.failure is not None:  # the hook failed after the last byte was sent
            body.failure.add_note(f"(oss://{self.bucket}/{self.key} was stored nevertheless)")
            raise body.failure
        await self.progress.sent(1, size)
        result = UploadResult(
            bucket=self.bucket,
            key=self.key,
            etag=resp.header("etag"),
            crc64=body.crc,
            size=size,
            upload_id=None,
            part_size=None,
            parts_uploaded=1,
            parts_resumed=0,
            bytes_resumed=0,
            request_id=resp.header("x-oss-request-id"),
        )
        await self._emit_completed(result)
        return result

    async def _emit_completed(self, result: UploadResult) -> None:
        await self.progress.finish()
        await self.progress.emit(
            UploadCompleted(
                key=self.key,
                total_bytes=result.size,
                etag=result.etag,
                crc64=result.crc64,
                upload_id=result.upload_id,
                parts_uploaded=result.parts_uploaded,
                parts_resumed=result.parts_resumed,
            )
        )

    # ------------------------------------------------------------------ checkpoint

    def _fingerprint(self, part_size: int) -> str:
        # Only what shapes the object: a throttle (x-oss-traffic-limit) or who pays for the
        # requests may change between runs without costing the parts already uploaded.
        def shaping(headers: Mapping[str, str]) -> dict[str, str]:
            return {k: v for k, v in headers.items() if k.lower() not in _NOT_SHAPING}

        return options_fingerprint(
            part_size=part_size,
            initiate_headers=shaping(self.headers.initiate),
            complete_headers=shaping(self.headers.complete),
        )

    async def _abort_quietly(self, bucket: str, key: str, upload_id: str, why: str) -> None:
        try:
            await self.client._abort(bucket, key, upload_id, self.headers.other)
            logger.info("aborted upload %s of %s (%s)", upload_id, key, why)
        except OssError as exc:
            # NoSuchUpload: already gone. Anything else: the caller's upload still proceeds;
            # OSS lifecycle rules or `aiooss-resume uploads` can clean up the leftover.
            logger.warning("could not abort upload %s of %s: %s", upload_id, key, exc)

    def _owns(self, endpoint: str, bucket: str, key: str, source_path: str | None) -> bool:
        """Whether an upload a checkpoint names is this call's to abort.

        A checkpoint is data from disk, not a command: only an upload of this very file to
        this very target (endpoint, bucket, key, source path) is ours. Its content may have
        changed since (size, mtime): that makes it stale, not someone else's, and the Abort
        goes to this call's own bucket and key, where OSS binds the upload id.
        """
        return (endpoint, bucket, key, source_path) == (
            self.client.endpoint,
            self.bucket,
            self.key,
            self.path,
        )

    def _leave_upload(self, endpoint: str, bucket: str, key: str, upload_id: str, why: str) -> None:
        logger.warning(
            "leaving upload %s of oss://%s/%s (endpoint %s) untouched: %s; it is not this "
            "upload's to abort. Find it with `aiooss-resume uploads oss://%s/%s`, abort it "
            "with `aiooss-resume abort oss://%s/%s %s` if nobody will resume it",
            upload_id, bucket, key, endpoint, why, bucket, key, bucket, key, upload_id,
        )  # fmt: skip

    async def _drop_stale(
        self, endpoint: str, bucket: str, key: str, upload_id: str, source: str | None, why: str
    ) -> None:
        """Abort a stale upload a checkpoint names if this call owns it, else name it."""
        if self._owns(endpoint, bucket, key, source):
            await self._abort_quietly(bucket, key, upload_id, why)
        else:
            self._leave_upload(endpoint, bucket, key, upload_id, why)

    async def _discard_checkpoint_file(self, why: str) -> None:
        assert self.cp_path is not None
        data = await self.io.run(read_optional, self.cp_path)
        if data is None:
            return
        target = peek_upload_target(data)
        if target is not None:
            endpoint, bucket, key, upload_id = target
            if (endpoint, bucket, key) != (self.client.endpoint, self.bucket, self.key):
                # Another target's record (an explicit checkpoint= path): this call writes no
                # checkpoint, so it leaves that file, and its upload, as they are.
                self._leave_upload(endpoint, bucket, key, upload_id, why)
                logger.warning("checkpoint %s is kept: it records another target", self.cp_path)
                return
            await self._drop_stale(endpoint, bucket, key, upload_id, peek_source_path(data), why)
        await self.io.run(remove_quietly, self.cp_path)

    async def _load_checkpoint(self, part_size: int) -> Checkpoint | None:
        assert self.cp_path is not None
        data = await self.io.run(read_optional, self.cp_path)
        if self.adoption is not None:
            adopted = self.adoption.take(data, self.identity, self._fingerprint(part_size))
            if adopted is not None:
                return adopted
        if data is None:
            return None
        try:
            cp = decode_checkpoint(data)
        except CheckpointError as exc:
            logger.warning(
                "checkpoint %s is damaged (%s): uploading all parts again", self.cp_path, exc
            )
            # Nothing of a damaged file is verified: its upload is aborted only when what can
            # be read of it names this very target and file, so the Abort goes to our own
            # bucket and key (an upload id is bound to them on OSS) and at worst ends an
            # upload of this same file to this same object. Anything else is named, not
            # touched.
            target = peek_upload_target(data)
            if target is not None:
                await self._drop_stale(*target, peek_source_path(data), "its checkpoint is damaged")
            return None
        if (cp.endpoint, cp.bucket, cp.key) != (self.client.endpoint, self.bucket, self.key):
            # checkpoint=True never gets here (checkpoint_path_for picks a name of our own);
            # an explicit path does: overwriting it would lose that upload's parts.
            raise CheckpointError(
                f"checkpoint {self.cp_path!r} records upload {cp.upload_id} of "
                f"oss://{cp.bucket}/{cp.key} at {cp.endpoint}, not of oss://{self.bucket}/"
                f"{self.key}: pass another checkpoint path (or resume or abort that upload "
                "first); nothing was uploaded"
            )
        reason = ""
        if cp.source != self.identity:
            reason = "the source file changed since: " + _identity_difference(
                cp.source, self.identity
            )
        elif cp.part_size != part_size or cp.options_fingerprint != self._fingerprint(part_size):
            reason = "the part size or object options differ"
        if reason:
            logger.warning(
                "not resuming from checkpoint %s: %s; uploading the whole object again",
                self.cp_path,
                reason,
            )
            await self._drop_stale(
                cp.endpoint, cp.bucket, cp.key, cp.upload_id, cp.source.path, reason
            )
            return None
        return cp

    # ------------------------------------------------------------------ multipart

    async def _multipart(self, part_size: int) -> UploadResult:
        plan = plan_parts(self.identity.size, part_size)
        done: dict[int, CheckpointPart] = {}
        checkpoint = await self._load_checkpoint(part_size) if self.cp_path else None
        if checkpoint is not None:
            try:
                server_parts = await self.client._list_parts(
                    self.bucket, self.key, checkpoint.upload_id, self.headers.other
                )
            except NoSuchUploadError:
                finished = await self._already_completed(plan, checkpoint)
                if finished is not None:
                    return finished
                logger.warning(
                    "upload %s from checkpoint %s no longer exists; starting a new one",
                    checkpoint.upload_id,
                    self.cp_path,
                )
                checkpoint = None
            else:
                done = await self._reconcile(plan, checkpoint, server_parts)
                self.upload_id = checkpoint.upload_id
                self.on_disk = True  # the checkpoint file already names this upload
        # From here on an upload id may exist: every exit either records it or aborts it.
        try:
            if checkpoint is None:
                checkpoint = await self._initiate(part_size)
            if self.cp_path is not None:
                self.writer = _CheckpointWriter(self.cp_path, checkpoint, self.io)
                for part in done.values():
                    self.writer.record(part)
                await self.writer.flush(force=True)  # the upload id is on disk before any part
                self.on_disk = True
                self.writer.start()
            for number, part in done.items():
                self.progress.resume(number, part.size)
            self.resumed = set(done)
            await self.progress.emit(
                UploadStarted(
                    key=self.key,
                    total_bytes=self.identity.size,
                    part_count=len(plan),
                    part_size=part_size,
                    upload_id=self.upload_id,
                    resumed=bool(done),
                    resumed_bytes=self.progress.resumed,
                    resumed_parts=len(done),
                )
            )
            return await self._upload_and_complete(plan, part_size, done)
        except asyncio.CancelledError:
            await self._clean_up_after_cancel()
            raise
        except Exception as exc:
            await self._after_failure(exc)
            raise
        finally:
            if self.writer is not None:
                await self.writer.stop()

    async def _clean_up_after_cancel(self) -> None:
        """Flush (or abort), shielded and bounded; never replaces the CancelledError."""

        async def bounded() -> None:
            try:
                async with asyncio.timeout(FLUSH_TIMEOUT):
                    await self._after_failure(None)
            except TimeoutError:
                logger.warning(
                    "upload of %s cancelled: its cleanup (checkpoint flush or Abort of upload "
                    "%s) did not finish within %g s and was cut short",
                    self.key,
                    self.upload_id,
                    FLUSH_TIMEOUT,
                )
            except Exception:
                logger.exception("upload of %s cancelled: its cleanup failed", self.key)

        await _shielded(bounded())

    async def _initiate(self, part_size: int) -> Checkpoint:
        result = await self.client._initiate(
            self.bucket, self.key, self.headers.initiate, self._retry_hook(0)
        )
        self.upload_id = result.upload_id
        return Checkpoint(
            endpoint=self.client.endpoint,
            bucket=self.bucket,
            key=self.key,
            upload_id=result.upload_id,
            part_size=part_size,
            options_fingerprint=self._fingerprint(part_size),
            source=self.identity,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    async def _reconcile(
        self, plan: list[PartPlan], checkpoint: Checkpoint, server_parts: list[PartInfo]
    ) -> dict[int, CheckpointPart]:
        server = {p.part_number: p for p in server_parts}
        recorded = {p.number: p for p in checkpoint.parts}
        done: dict[int, CheckpointPart] = {}
        for planned in plan:
            listed = server.get(planned.number)
            if listed is None or listed.size != planned.size:
                continue
            local = await self.src.crc_range(planned.offset, planned.size)
            mine = recorded.get(planned.number)
            if listed.crc64 is not None:
                ok = listed.crc64 == local
            else:  # no CRC from the server: fall back on the recorded ETag and CRC
                ok = mine is not None and _same_etag(mine.etag, listed.etag) and mine.crc64 == local
            if ok:
                done[planned.number] = CheckpointPart(
                    planned.number, planned.size, listed.etag, local
                )
        logger.info(
            "resuming upload %s: %d of %d parts already on OSS",
            checkpoint.upload_id,
            len(done),
            len(plan),
        )
        return done

    async def _already_completed(
        self, plan: list[PartPlan], checkpoint: Checkpoint
    ) -> UploadResult | None:
        """A run killed after Complete: OSS already holds exactly this file under the key.

        Decided by HEAD (size and CRC-64) against the whole local file, so it holds even
        when the last checkpoint write before the kill did not list every part.
        """
        head = await self.client._head(self.bucket, self.key, self.headers.other)
        if head is None:
            return None
        try:
            reported = _response_crc(head)
            length = int(head.header("content-length", "-1"))
        except (ValueError, ProtocolError):
            return None
        if reported is None or length != self.identity.size:
            return None
        if await self.src.crc_range(0, self.identity.size) != reported:
            return None
        self.upload_id = checkpoint.upload_id
        assert self.cp_path is not None
        await self.io.run(remove_quietly, self.cp_path)
        for p in plan:
            self.progress.resume(p.number, p.size)
        await self.progress.emit(
            UploadStarted(
                key=self.key,
                total_bytes=self.identity.size,
                part_count=len(plan),
                part_size=checkpoint.part_size,
                upload_id=checkpoint.upload_id,
                resumed=True,
                resumed_bytes=self.identity.size,
                resumed_parts=len(plan),
            )
        )
        result = UploadResult(
            bucket=self.bucket,
            key=self.key,
            etag=head.header("etag"),
            crc64=reported,
            size=self.identity.size,
            upload_id=checkpoint.upload_id,
            part_size=checkpoint.part_size,
            parts_uploaded=0,
            parts_resumed=len(plan),
            bytes_resumed=self.identity.size,
            request_id=head.header("x-oss-request-id"),
        )
        await self._emit_completed(result)
        return result

    async def _upload_and_complete(
        self,
        plan: list[PartPlan],
        part_size: int,
        done: dict[int, CheckpointPart],
    ) -> UploadResult:
        restarted = False
        while True:
            try:
                await self._upload_parts(plan, done)
                break
            except NoSuchUploadError as exc:
                # The upload vanished under us (expired, aborted elsewhere): start over once.
                if restarted:
                    raise
                restarted = True
                logger.warning(
                    "upload %s disappeared (%s); starting a new one", self.upload_id, exc
                )
                self.on_disk = False
                checkpoint = await self._initiate(part_size)
                done.clear()
                self.resumed.clear()
                if self.writer is not None:
                    await self.writer.stop()
                    self.writer = _CheckpointWriter(
                        self.writer.path, checkpoint, self.io, previous=self.writer
                    )
                    await self.writer.flush(force=True)
                    self.on_disk = True
                    self.writer.start()
        await self._check_source_unchanged()
        if self.writer is not None:
            await self.writer.stop()  # from here on, only this task touches the checkpoint
            await self.writer.flush()
        return await self._complete(plan, part_size, done)

    async def _upload_parts(self, plan: list[PartPlan], done: dict[int, CheckpointPart]) -> None:
        semaphore = asyncio.Semaphore(self.routines)
        parts_total = len(plan)

        def release(_: asyncio.Task[None]) -> None:
            semaphore.release()

        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        try:
            async with asyncio.TaskGroup() as group:
                for planned in plan:
                    if planned.number in done:
                        continue
                    await semaphore.acquire()
                    if self.writer is not None and self.writer.error is not None:
                        semaphore.release()
                        raise self.writer.error
                    part_task = group.create_task(self._send_part(planned, done, parts_total))
                    # A done callback, so it runs after the TaskGroup's own (callbacks run in
                    # order): see the drain below.
                    part_task.add_done_callback(release)
                # Wait for the last parts here, in the body, not in the TaskGroup's exit: a
                # part failing must cancel us at this await, which the TaskGroup then undoes.
                # (Python 3.11 does not undo a cancel that lands in its exit, and an outside
                # cancel could no longer be told apart from it.)
                for _ in range(self.routines):
                    await semaphore.acquire()
        except BaseExceptionGroup as group_error:
            if task.cancelling() > cancelling:
                # We were cancelled while a part failed for good: the TaskGroup reports the
                # failure (Python 3.11), but the cancellation must win, or it is lost.
                raise _cancellation_of(group_error) from None
            raise _first_error(group_error) from None

    async def _send_part(
        self, planned: PartPlan, done: dict[int, CheckpointPart], parts_total: int
    ) -> None:
        assert self.upload_id is not None
        body = _Body(self, planned.number, planned.offset, planned.size)
        resp = await self.client._upload_part(
            self.bucket,
            self.key,
            self.upload_id,
            planned.number,
            body,
            planned.size,
            self.headers.part,
            body.check,
            self._retry_hook(planned.number),
            fatal=body.fatal,
        )
        etag = resp.header("etag")
        if not etag:
            raise ProtocolError(f"UploadPart {planned.number} answered without an ETag")
        # Acknowledged: record it before anything else is awaited (a cancel or a hook error
        # from here on must not lose it).
        part = CheckpointPart(planned.number, planned.size, etag, body.crc)
        done[planned.number] = part
        if self.writer is not None:
            self.writer.record(part)
        if body.failure is not None:  # the hook failed after the last byte was sent
            raise body.failure
        await self.progress.sent(planned.number, planned.size)
        await self.progress.part_done(planned.number, planned.size, parts_total)

    async def _complete(
        self,
        plan: list[PartPlan],
        part_size: int,
        done: dict[int, CheckpointPart],
    ) -> UploadResult:
        assert self.upload_id is not None
        parts = [done[p.number] for p in plan]
        expected = await _fold_crcs(parts)
        # A cancel that arrived during the final flush must stop us here, before Complete
        # makes the object real.
        await anyio.lowlevel.checkpoint_if_cancelled()
        self.completing = True
        try:
            result, resp = await self.client._complete(
                self.bucket,
                self.key,
                self.upload_id,
                ((p.number, p.etag) for p in parts),  # lazily: see _client._encode_complete
                self.headers.complete,
                self._retry_hook(0),
            )
        except NoSuchUploadError as exc:
            # Spec 10.3: Complete may have succeeded and its answer been lost.
            head = await self.client._head(self.bucket, self.key, self.headers.other)
            if head is None or not _head_matches(head, self.identity.size, expected):
                exc.add_note(
                    f"upload {self.upload_id} is gone and oss://{self.bucket}/{self.key} does "
                    "not hold this file"
                )
                raise
            etag, request_id = head.header("etag"), head.header("x-oss-request-id")
        else:
            etag, request_id = result.etag or resp.header("etag"), resp.header("x-oss-request-id")
            reported = _response_crc(resp)
            if reported is None:
                head = await self.client._head(self.bucket, self.key, self.headers.other)
                reported = _response_crc(head) if head is not None else None
            if reported is not None and reported != expected:
                if self.cp_path is not None:
                    await self.io.run(remove_quietly, self.cp_path)
                raise IntegrityError(
                    f"oss://{self.bucket}/{self.key} exists but its CRC-64 ({reported}) differs "
                    f"from the uploaded parts' ({expected}); the object is corrupt, upload again",
                    expected=expected,
                    actual=reported,
                )
        if self.cp_path is not None:
            await self.io.run(remove_quietly, self.cp_path)
        result_obj = UploadResult(
            bucket=self.bucket,
            key=self.key,
            etag=etag,
            crc64=expected,
            size=self.identity.size,
            upload_id=self.upload_id,
            part_size=part_size,
            parts_uploaded=len(parts) - len(self.resumed),
            parts_resumed=len(self.resumed),
            bytes_resumed=sum(p.size for p in parts if p.number in self.resumed),
            request_id=request_id,
        )
        await self._emit_completed(result_obj)
        return result_obj

    async def _after_failure(self, error: Exception | None) -> None:
        """Keep what can be resumed; abort what cannot. ``error`` is None on cancellation."""
        if self.writer is not None:
            await self.writer.stop()
        if isinstance(error, FileChangedError):
            if self.upload_id is not None:
                await self._abort_quietly(self.bucket, self.key, self.upload_id, "file changed")
            if self.cp_path is not None:
                await self.io.run(remove_quietly, self.cp_path)
            return
        if isinstance(error, IntegrityError) and error.actual is not None and self.completing:
            return  # Complete consumed the upload id: there is nothing left to resume
        if self.writer is not None and self.on_disk:
            try:
                await self.writer.flush()
            except CheckpointError as exc:
                if error is not None:
                    error.add_note(f"and the checkpoint could not be saved: {exc}")
                return
            if error is not None:
                error.add_note(
                    "the upload can be resumed: run the same upload again "
                    f"(checkpoint {self.writer.path})"
                )
            return
        if self.upload_id is not None and not self.on_disk:
            # Nothing records this upload, so nobody could resume it: do not orphan it.
            await self._abort_quietly(self.bucket, self.key, self.upload_id, "upload failed")


async def _fold_crcs(parts: list[CheckpointPart]) -> int:
    """The object's CRC-64 from its parts', folded on the loop in slices of
    ``COMPLETE_SLICE`` parts with a yield between them (see ``COMPLETE_SLICE``)."""
    crc = 0
    for start in range(0, len(parts), COMPLETE_SLICE):
        crc = crc64_fold(((p.crc64, p.size) for p in parts[start : start + COMPLETE_SLICE]), crc)
        await asyncio.sleep(0)
    return crc


def _same_etag(a: str, b: str) -> bool:
    return a.strip('"').upper() == b.strip('"').upper()


def _head_matches(head: HttpResponse, size: int, crc: int) -> bool:
    try:
        length = int(head.header("content-length", "-1"))
        reported = _response_crc(head)
    except (ValueError, ProtocolError):
        return False
    return length == size and reported == crc


def _identity_difference(old: SourceIdentity, new: SourceIdentity) -> str:
    changes = [
        f"{name} {getattr(old, name)} -> {getattr(new, name)}"
        for name in ("path", "size", "mtime_ns", "inode", "device")
        if getattr(old, name) != getattr(new, name)
    ]
    return ", ".join(changes) or "identity differs"
