"""Upload from an async stream: the engine behind ``Bucket.upload_stream``.

Theory of operation
-------------------
A stream (a web request's body, a relayed download, a generator producing a tarball) can be
read once, in order, and its length may be unknown. So, unlike a file, every part is held
in memory from the moment it is read until OSS acknowledged it (a retry sends it again from
there), and the number of parts held is what bounds memory:

1. **Validate** every argument before reading a byte or sending a request: key, part size,
   routines, headers, ``size`` (0 to OSS's 48.8 TiB), the source (an object with an
   ``async read(n)``, preferred, as aiohttp's ``StreamReader`` iterates *lines*; an async
   iterable of bytes; or a file-like object whose blocking ``read(n)`` is then run by the
   ``IoRunner``, as boto3's ``upload_fileobj`` takes), ``reopen`` together with an explicit
   ``checkpoint=`` path (there is no source file to put ``<file>.cp`` beside).
2. **Cut** (``_PartReader``): the source's chunks, whatever their sizes, are cut into parts
   of ``part_size`` bytes (grown to fit 10,000 parts when ``size`` is given, as for files).
   A chunk that is not bytes-like is a ``TypeError``, and so is a ``read(n)`` returning None
   (a non-blocking file with no data ready: taken for the end, it would truncate); a stream
   longer or shorter than ``size`` a ``StreamLengthError`` (too long: at the first byte too
   many, before it is sent); without ``size``, a stream that needs part 10,001 a
   ``StreamLengthError`` before that part is sent. Each part is held as blocks of at most
   1 MiB: views of the source's own ``bytes`` chunks (no copy), short pieces joined, mutable
   buffers copied; its CRC-64 continued block by block as it is cut, on the loop, which the
   reader yields to after every MiB (``_stream_parts._PartReader``).
3. **One request or many**: a stream that ends within its first part (empty included) goes
   up with one PutObject; anything longer by multipart upload.
4. **Backpressure** (the shared ``_transfer.run_parts``, given the parts as an async
   iterator): the next part is read only once the previous one was handed to a part task,
   and a part task is started only when one of the ``routines`` slots is free: the reader
   waits for OSS, so at most ``routines`` parts in flight plus the one being filled are
   held, ``routines + 1`` parts, whatever the chunk sizes (no frame keeps a reference to
   a part once its task holds it).
5. **Checks**: every part's CRC-64 against ``x-oss-hash-crc64ecma`` (retried like a
   transport error), the object's against the fold of the parts' after Complete, as for
   files (``_upload_resume._Resume._complete``).
6. **Failure and cancellation**: without ``reopen`` nothing can resume the upload (the
   bytes already read are gone), so the multipart upload is aborted: no parts are left
   billed on OSS (a killed process aborts nothing, and nothing records its upload id).
   With ``reopen`` and ``checkpoint``, every acknowledged part is flushed to
   the checkpoint (same format and discipline as a file's: atomic, checksummed, per-part
   CRC-64, locked) and the upload is kept. A ``StreamLengthError``, or a reopened stream
   whose bytes differ from the checkpoint's, aborts the upload and removes the checkpoint.
7. **Resume**: a later call with the same checkpoint loads it (the stream's identity is
   its target, part size, options and ``size``, or -1 when unknown), keeps the parts that
   OSS lists with the recorded size and CRC-64 (ETag when OSS reports no CRC), and calls
   ``reopen(offset)`` at the first part not kept. Kept parts met further on are read from
   the reopened stream and their CRC-64 compared with the checkpoint's (a difference is a
   ``FileChangedError``), not sent again. The checkpoint also records how many bytes of the
   stream were read (``stream_read``): a reopened stream ending before that is not the same
   stream either (``FileChangedError``). A vanished upload id means a fresh upload,
   unless it was a run killed after Complete (``_finished_earlier``: the checkpoint records
   the whole stream and its end, and HEAD shows that size and CRC-64).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Mapping
from os import PathLike
from typing import Any

import msgspec

from ._checkpoint import (
    STREAM_SOURCE,
    Checkpoint,
    CheckpointPart,
    SourceIdentity,
    encode_checkpoint,
)
from ._errors import (
    FileChangedError,
    IntegrityError,
    NoSuchUploadError,
    ProtocolError,
    StreamLengthError,
)
from ._events import ProgressHook, UploadStarted
from ._fileio import refuse_symlink, remove_quietly, write_atomic
from ._headers import ObjectOptions, merge_headers
from ._planner import (
    MAX_OBJECT_SIZE,
    MAX_PARTS,
    effective_part_size,
    plan_parts,
    validate_part_size,
)
from ._put_once import put_object_once
from ._session import Session, validate_key
from ._stream_parts import (
    Reopen,
    StreamSource,
    _HeldPart,
    _Part,
    _PartBody,
    _PartReader,
    check_source,
    chunks_of,
    kept_parts,
    no_chunks,
    recorded_object,
    resume_offset,
)
from ._transfer import (
    _CheckpointWriter,
    _head_matches,
    _Progress,
    check_routines,
    clean_up_after_cancel,
    release_lock,
    run_parts,
    take_lock,
)
from ._upload_plan import UploadResult, route_headers
from ._upload_resume import _Resume

__all__ = ["DEFAULT_STREAM_PART_SIZE", "STREAM_SOURCE", "StreamSource", "upload_stream"]

logger = logging.getLogger("aiooss_resume")

DEFAULT_STREAM_PART_SIZE = 8 * 1024 * 1024
"""boto3's ``multipart_chunksize``: 10,000 parts of it hold 78 GiB. (The 100 KiB default of
``upload_file`` would cap a stream of unknown size at 977 MiB.)"""


async def upload_stream(
    client: Session,
    bucket: str,
    key: str,
    source: StreamSource | None,
    part_size: int,
    *,
    routines: int,
    size: int | None,
    checkpoint: str | PathLike[str] | None,
    reopen: Reopen | None,
    headers: Mapping[str, str] | None,
    on_progress: ProgressHook | None,
    options: ObjectOptions | None = None,
) -> UploadResult:
    """See ``Bucket.upload_stream``."""
    validate_key(key)
    validate_part_size(part_size)
    check_routines(routines)
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int or None, not {type(size).__name__}")
        if not 0 <= size <= MAX_OBJECT_SIZE:
            raise ValueError(f"size must be between 0 and {MAX_OBJECT_SIZE}, got {size}")
    if on_progress is not None and not callable(on_progress):
        raise TypeError("on_progress must be callable")
    if reopen is not None and not callable(reopen):
        raise TypeError("reopen must be a callable taking a byte offset")
    if source is None and reopen is None:
        raise TypeError("source must be an async iterable of bytes or have an async read(n)")
    if source is not None:
        check_source(source)
    if (reopen is None) != (checkpoint is None):
        raise ValueError(
            "reopen= and checkpoint= go together: a stream upload is resumable only when the "
            "stream can be reopened at an offset, and its checkpoint needs an explicit path"
        )
    if checkpoint is not None and not isinstance(checkpoint, (str, PathLike)):
        raise TypeError("checkpoint must be a path (str or os.PathLike)")
    plan_headers = route_headers(merge_headers(options, headers), key)
    cp_path = None
    if checkpoint is not None:
        cp_path = await client._io.run(_check_checkpoint_path, os.fspath(checkpoint))
    job = _StreamUpload(client, bucket, key, STREAM_SOURCE, part_size, routines, cp_path,
                        plan_headers, on_progress)  # fmt: skip
    job.source, job.reopen, job.size = source, reopen, size
    return await job.run()


def _check_checkpoint_path(path: str) -> str:
    path = os.path.abspath(path)
    refuse_symlink(path)
    refuse_symlink(path + ".lock")
    if os.path.isdir(path):
        raise ValueError(f"checkpoint {path!r} is a directory; pass a file path")
    return path


def _stream_changed(cp_path: str | None, detail: str) -> FileChangedError:
    return FileChangedError(
        f"the reopened stream is not the one the checkpoint {cp_path} records ({detail}); "
        "the multipart upload was aborted, upload the stream again"
    )


async def _close_streams(streams: list[object], key: str) -> None:
    # Async generators (ours, the caller's) are closed here, now, rather than by the
    # garbage collector's finalizer at some later point, in some other task.
    for stream in streams:
        if inspect.isasyncgen(stream):
            try:
                await stream.aclose()
            except Exception:  # the stream's own cleanup: not the upload's outcome
                logger.warning("closing the stream of %s failed", key, exc_info=True)


async def _known(value: int) -> int:
    return value


def _save(path: str, checkpoint: Checkpoint) -> None:
    write_atomic(path, encode_checkpoint(checkpoint))


class _StreamUpload(_Resume):
    """One call of ``upload_stream``; ``_Resume`` gives it Initiate, the checkpoint's
    loading and validation, Complete with its CRC check, and the progress events."""

    source: StreamSource | None
    reopen: Reopen | None
    size: int | None
    part_count = -1  # unknown until the stream ends, unless size= was given
    finished: UploadResult | None = None  # by an earlier run, killed after Complete
    recorded: Checkpoint | None = None  # the checkpoint the writer writes (stream_read)
    _iterators: list[AsyncIterator[Any]]

    async def run(self) -> UploadResult:
        self._iterators = []
        lock = await take_lock(self.io, self.cp_path)
        try:
            known = self.size if self.size is not None else -1
            self.identity = SourceIdentity(path=STREAM_SOURCE, size=known, mtime_ns=0, inode=0)
            self.progress = _Progress(self.hook, self.key, known)
            part_size = self.requested_part_size
            if self.size is not None:
                part_size = effective_part_size(self.size, part_size)
                self.part_count = -(-self.size // part_size)
            checkpoint, done = await self._resume_state(part_size)
            if self.finished is not None:
                return self.finished
            if checkpoint is not None:
                offset, at_end = resume_offset(done, part_size, self.size)
                reader = await self._open(offset, part_size, at_end=at_end)
                return await self._multipart(part_size, reader, checkpoint, done)
            reader = await self._open(0, part_size)
            first = await reader.next_part()
            if first.size < part_size or await reader.at_end():
                if self.cp_path is not None:  # a stale or damaged one, its upload dropped
                    await self.io.run(remove_quietly, self.cp_path)
                return await self._put_object(first)
            reader.put_back(first)
            del first  # held by the reader until it is sent, then by no one
            return await self._multipart(part_size, reader, None, {})
        finally:
            release_lock(lock, self.writer)
            await _close_streams([*self._iterators, self.source], self.key)

    async def _open(self, offset: int, part_size: int, *, at_end: bool = False) -> _PartReader:
        """A reader of the stream from ``offset``: the source, or ``reopen(offset)``."""
        if at_end:  # nothing is left to read, and the stream may not be reopened at its end
            return _PartReader(no_chunks(), part_size, offset, self.size)
        source = self.source
        if offset or source is None:
            assert self.reopen is not None
            opened = self.reopen(offset)
            source = await opened if inspect.isawaitable(opened) else opened
            check_source(source)
        iterator = chunks_of(source, self.io)
        self._iterators.append(iterator)
        return _PartReader(iterator, part_size, offset, self.size)

    async def _resume_state(self, part_size: int) -> tuple[Checkpoint | None, dict[int, Any]]:
        if self.cp_path is None:
            return None, {}
        checkpoint = await self._load_checkpoint(part_size)
        if checkpoint is None:
            return None, {}
        try:
            listed = await self.client._list_parts(
                self.bucket, self.key, checkpoint.upload_id, self.headers.other
            )
        except NoSuchUploadError:
            self.finished = await _finished_earlier(self, checkpoint, part_size)
            why = "no longer exists; starting a new one"
            if self.finished is None:
                logger.warning("upload %s of %s %s", checkpoint.upload_id, self.cp_path, why)
            return None, {}
        self.upload_id, self.on_disk = checkpoint.upload_id, True
        done = kept_parts(checkpoint, listed)
        logger.info("resuming stream upload %s: %d parts on OSS", self.upload_id, len(done))
        return checkpoint, done

    # ------------------------------------------------------------------ one request

    async def _put_object(self, part: _Part) -> UploadResult:
        size = part.size
        body = _PartBody(self.progress, 1, part)
        self.progress.total = size
        await self.progress.emit(
            UploadStarted(
                key=self.key, total_bytes=size, part_count=1, part_size=size, upload_id=None
            )
        )
        resp, _ = await put_object_once(
            self.client, self.bucket, self.key, body, size, self.headers.put, body.check,
            self._retry_hook(1), fatal=body.fatal, head_headers=self.headers.other,
            sent_crc=lambda: _known(part.crc),
        )  # fmt: skip
        if body.failure is not None:
            body.failure.add_note(f"(oss://{self.bucket}/{self.key} was stored nevertheless)")
            raise body.failure
        await self.progress.sent(1, size)
        result = UploadResult(
            bucket=self.bucket, key=self.key, etag=resp.header("etag"), crc64=body.crc,
            size=size, upload_id=None, part_size=None, parts_uploaded=1, parts_resumed=0,
            bytes_resumed=0, request_id=resp.header("x-oss-request-id"),
        )  # fmt: skip
        await self._emit_completed(result)
        return result

    # ------------------------------------------------------------------ multipart

    async def _multipart(
        self,
        part_size: int,
        reader: _PartReader,
        checkpoint: Checkpoint | None,
        done: dict[int, CheckpointPart],
    ) -> UploadResult:
        try:
            if checkpoint is None:
                checkpoint = await self._initiate(part_size)
            self.recorded = checkpoint
            if self.cp_path is not None:
                self.writer = _CheckpointWriter(
                    self.cp_path, checkpoint, done.values(), self.io, _save
                )
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
                    part_count=self.part_count,
                    part_size=part_size,
                    upload_id=self.upload_id,
                    resumed=bool(done),
                    resumed_bytes=self.progress.resumed,
                    resumed_parts=len(done),
                )
            )
            checkpoint, reader = await _send_parts(self, reader, part_size, checkpoint, done)
            total = reader.received
            plan = plan_parts(total, part_size)
            if len(plan) < max(done, default=0) or total < checkpoint.stream_read:
                raise _stream_changed(
                    self.cp_path,
                    f"it ended after {total} bytes, but {checkpoint.stream_read} bytes, up to "
                    f"part {max(done)}, were read before",
                )
            if self.writer is not None:
                await self.writer.stop()  # from here on, only this task touches the checkpoint
                await self.writer.flush()
            self.identity = msgspec.structs.replace(self.identity, size=total)
            self.progress.total = total
            return await self._complete(plan, part_size, done)
        except asyncio.CancelledError:
            what, cleanup = f"upload of {self.key}", "checkpoint flush or Abort"
            await clean_up_after_cancel(self._after_failure(None), what, cleanup)
            raise
        except Exception as exc:
            await self._after_failure(exc)
            raise
        finally:
            if self.writer is not None:
                await self.writer.stop()

    async def _held_parts(
        self, reader: _PartReader, part_size: int, done: dict[int, CheckpointPart]
    ) -> AsyncGenerator[_HeldPart, None]:
        """The parts to send, in order, each with its CRC-64; kept parts are checked."""
        number = reader.offset // part_size + 1
        try:
            part = await reader.next_part()
            while part.size:
                if number > MAX_PARTS:
                    raise StreamLengthError(
                        f"the stream is longer than {MAX_PARTS} parts of {part_size} bytes (at "
                        f"least {reader.received} bytes): pass a larger part_size, or size= so "
                        "that the part size grows to fit",
                        expected=None,
                        actual=reader.received,
                    )
                kept = done.get(number)
                if kept is None:
                    yield _HeldPart(number, part)
                elif (kept.size, kept.crc64) != (part.size, part.crc):
                    raise _stream_changed(
                        self.cp_path, f"part {number}'s bytes differ from the checkpoint's"
                    )
                del part  # not held while the next part fills (the memory bound)
                number += 1
                part = await reader.next_part()
                self._note_read(reader)  # written with the next part recorded
        finally:  # the source may have failed after yielding more: a longer stream
            self._note_read(reader)

    def _note_read(self, reader: _PartReader) -> None:
        """Record in the checkpoint how much of the stream has been read (``stream_read``)."""
        if self.recorded is not None:
            self.recorded.stream_read = max(self.recorded.stream_read, reader.received)

    def _sender(
        self, done: dict[int, CheckpointPart]
    ) -> Callable[[_HeldPart], Coroutine[Any, Any, None]]:
        async def send(held: _HeldPart) -> None:
            assert self.upload_id is not None
            size, crc = held.part.size, held.part.crc
            body = _PartBody(self.progress, held.number, held.part)
            resp = await self.client._upload_part(
                self.bucket, self.key, self.upload_id, held.number, body, size,
                self.headers.part, body.check, self._retry_hook(held.number), fatal=body.fatal,
            )  # fmt: skip
            etag = resp.header("etag")
            if not etag:
                raise ProtocolError(f"UploadPart {held.number} answered without an ETag")
            part = CheckpointPart(held.number, size, etag, crc)
            done[held.number] = part  # acknowledged: recorded before anything else is awaited
            if self.writer is not None:
                self.writer.record(part)
            if body.failure is not None:
                raise body.failure
            await self.progress.sent(held.number, part.size)
            await self.progress.part_done(held.number, part.size, self.part_count)

        return send

    async def _after_failure(self, error: Exception | None) -> None:
        """Keep what can be resumed; abort what cannot. ``error`` is None on cancellation."""
        if self.writer is not None:
            await self.writer.stop()
        if isinstance(error, IntegrityError) and error.actual is not None and self.completing:
            return  # Complete consumed the upload id: there is nothing left to resume
        final = isinstance(error, (FileChangedError, StreamLengthError))
        if self.writer is not None and self.on_disk and not final:
            await _keep_for_resume(self.writer, error)
            return
        if self.upload_id is not None:
            await self._abort_quietly(self.bucket, self.key, self.upload_id, "stream failed")
            if error is not None:
                error.add_note(f"(the multipart upload {self.upload_id} was aborted)")
        if self.cp_path is not None and final:
            await self.io.run(remove_quietly, self.cp_path)


async def _send_parts(
    job: _StreamUpload,
    reader: _PartReader,
    part_size: int,
    checkpoint: Checkpoint,
    done: dict[int, CheckpointPart],
) -> tuple[Checkpoint, _PartReader]:
    """Send the stream's parts; if the upload id vanishes meanwhile and the stream can be
    reopened, once more from ``reopen(0)`` with a new upload. The checkpoint and reader used."""
    restarted = False
    while True:
        held = job._held_parts(reader, part_size, done)
        try:
            await run_parts(held, job.routines, job._sender(done), job.writer)
            return checkpoint, reader
        except NoSuchUploadError as exc:
            if job.reopen is None:  # nothing to start over from: the caller's stream is spent
                exc.add_note(f"(upload {job.upload_id} vanished: aborted elsewhere or expired)")
                raise
            if restarted:
                exc.add_note(
                    f"(upload {job.upload_id} vanished too, after a first one did and the stream "
                    "was started over: calling upload_stream again starts a new upload from "
                    "reopen(0))"
                )
                raise
        finally:
            await held.aclose()  # now, not by the garbage collector in another task
        restarted = True
        checkpoint, reader = await _restart(job, part_size, done)


async def _restart(
    job: _StreamUpload, part_size: int, done: dict[int, CheckpointPart]
) -> tuple[Checkpoint, _PartReader]:
    """A new upload, its checkpoint on disk, and the stream from ``reopen(0)``: the upload id
    vanished during the parts (NoSuchUpload: aborted elsewhere, or expired)."""
    logger.warning(
        "upload %s of %s vanished (NoSuchUpload); starting a new one from reopen(0)",
        job.upload_id, job.key,
    )  # fmt: skip
    job.on_disk = False
    checkpoint = await job._initiate(part_size)
    job.recorded = checkpoint
    done.clear()
    job.resumed.clear()
    if job.writer is not None:
        await job.writer.stop()
        job.writer = _CheckpointWriter(
            job.writer.path, checkpoint, (), job.io, _save, previous=job.writer
        )
        await job.writer.flush(force=True)  # the new upload id is on disk before any part
        job.on_disk = True
        job.writer.start()
    await _close_streams([*job._iterators, job.source], job.key)  # spent: read from reopen(0)
    job._iterators.clear()
    job.source = None
    return checkpoint, await job._open(0, part_size)


async def _keep_for_resume(writer: _CheckpointWriter[Any, Any], error: Exception | None) -> None:
    try:
        await writer.flush(force=True)  # with stream_read as it is now
    except Exception as exc:
        if error is not None:
            error.add_note(f"and the checkpoint could not be saved: {exc}")
        return
    if error is not None:
        error.add_note(
            "the upload can be resumed: call upload_stream again with the same "
            f"checkpoint and reopen (checkpoint {writer.path})"
        )


async def _finished_earlier(
    job: _StreamUpload, checkpoint: Checkpoint, part_size: int
) -> UploadResult | None:
    """The upload of a run killed after Complete, whose checkpoint was flushed with every
    part before Complete: OSS holds exactly those parts' bytes (HEAD: size and CRC-64).

    Only when the checkpoint records the whole stream (``recorded_object``): a stream's
    bytes cannot be read again just to compare them, as a file's are.
    """
    whole = recorded_object(checkpoint.parts, part_size, job.size)
    if whole is None:
        return None
    size, crc = whole
    head = await job.client._head(job.bucket, job.key, job.headers.other)
    if head is None or not _head_matches(head, size, crc):
        return None
    assert job.cp_path is not None
    await job.io.run(remove_quietly, job.cp_path)
    job.upload_id, job.progress.total = checkpoint.upload_id, size
    for part in checkpoint.parts:
        job.progress.resume(part.number, part.size)
    count = len(checkpoint.parts)
    await job.progress.emit(
        UploadStarted(
            key=job.key, total_bytes=size, part_count=count, part_size=part_size,
            upload_id=job.upload_id, resumed=True, resumed_bytes=size, resumed_parts=count,
        )
    )  # fmt: skip
    result = UploadResult(
        bucket=job.bucket, key=job.key, etag=head.header("etag"), crc64=crc, size=size,
        upload_id=job.upload_id, part_size=part_size, parts_uploaded=0, parts_resumed=count,
        bytes_resumed=size, request_id=head.header("x-oss-request-id"),
    )  # fmt: skip
    await job._emit_completed(result)
    return result
