"""The resumable upload engine behind ``Bucket.upload_file``.

The phases below run in ``_Upload`` (this module: run, PutObject, multipart, parts,
failure); their state and the resume phases are in ``_upload_resume``, what is shared with
download (part runner, checkpoint writer, progress, lock, cancellation) in ``_transfer``.

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
   request raises them as they are instead (``Session._request(fatal=...)``).
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
import logging
from collections.abc import Mapping
from os import PathLike

from ._checkpoint import Checkpoint, CheckpointPart, encode_checkpoint
from ._errors import (
    CheckpointError,
    FileChangedError,
    IntegrityError,
    NoSuchUploadError,
    ProtocolError,
)
from ._events import ProgressHook, UploadStarted
from ._fileio import SourceFile, remove_quietly, stat_identity, write_atomic
from ._foreign import adopt_foreign
from ._headers import ObjectOptions, merge_headers
from ._planner import PartPlan, effective_part_size, plan_parts, validate_part_size
from ._put_once import put_object_once
from ._session import Session, validate_key
from ._transfer import (
    FLUSH_TIMEOUT,
    MAX_ROUTINES,
    _CheckpointWriter,
    _Progress,
    check_routines,
    clean_up_after_cancel,
    release_lock,
    run_parts,
    take_lock,
)
from ._upload_body import _Body
from ._upload_plan import (
    UploadResult,
    _resolve_paths,
    _target_digest,
    checkpoint_path_for,
    route_headers,
)
from ._upload_resume import _Resume

__all__ = [
    "FLUSH_TIMEOUT",
    "MAX_ROUTINES",
    "UploadResult",
    "checkpoint_path_for",
    "route_headers",
    "upload_file",
]

logger = logging.getLogger("aiooss_resume")


async def upload_file(
    client: Session,
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
    options: ObjectOptions | None = None,
    budget: asyncio.Semaphore | None = None,
) -> UploadResult:
    """See ``Bucket.upload_file``. ``budget``: a semaphore shared with other uploads
    (``upload_many``), held by each PutObject/UploadPart request on top of ``routines``."""
    validate_key(key)
    validate_part_size(part_size)
    check_routines(routines)
    if on_progress is not None and not callable(on_progress):
        raise TypeError("on_progress must be callable")
    if not isinstance(file_path, (str, PathLike)):
        raise TypeError("file_path must be a str or os.PathLike")
    plan_headers = route_headers(merge_headers(options, headers), key)
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
    job.budget = budget
    return await job.run()


def _write_snapshot(path: str, checkpoint: Checkpoint) -> None:
    _encode_and_write(path, checkpoint)  # looked up at call time: the tests wrap it


def _encode_and_write(path: str, checkpoint: Checkpoint) -> None:
    write_atomic(path, encode_checkpoint(checkpoint))


class _Upload(_Resume):
    """One call of ``upload_file``: its phases, in the order they run."""

    budget: asyncio.Semaphore | None = None  # routines shared by many uploads (_many)

    # ------------------------------------------------------------------ entry

    async def run(self) -> UploadResult:
        lock = await take_lock(self.io, self.cp_path)
        try:
            self.src = await SourceFile.open(self.path, self.io, keep=2 * self.routines + 2)
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
            release_lock(lock, self.writer)

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
        # A lost answer then a forbid-overwrite 409: ours if HEAD shows our bytes (_put_once).
        async with self.budget or contextlib.nullcontext():
            resp, verified = await put_object_once(
                self.client, self.bucket, self.key, body, size, self.headers.put, body.check,
                self._retry_hook(1), fatal=body.fatal, head_headers=self.headers.other,
                sent_crc=lambda: self.src.crc_range(0, size),
            )  # fmt: skip
        if body.failure is not None:  # the hook failed after the last byte was sent
            body.failure.add_note(f"(oss://{self.bucket}/{self.key} was stored nevertheless)")
            raise body.failure
        await self.progress.sent(1, size)
        result = UploadResult(
            bucket=self.bucket,
            key=self.key,
            etag=resp.header("etag"),
            crc64=body.crc if verified is None else verified,
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
                self.writer = _CheckpointWriter(
                    self.cp_path, checkpoint, checkpoint.parts, self.io, _write_snapshot
                )
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
        what = f"upload of {self.key}"
        cleanup = f"checkpoint flush or Abort of upload {self.upload_id}"
        await clean_up_after_cancel(self._after_failure(None), what, cleanup)

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
                        self.writer.path,
                        checkpoint,
                        checkpoint.parts,
                        self.io,
                        _write_snapshot,
                        previous=self.writer,
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
        parts_total = len(plan)

        async def send(planned: PartPlan) -> None:
            await self._send_part(planned, done, parts_total)

        missing = (planned for planned in plan if planned.number not in done)
        await run_parts(missing, self.routines, send, self.writer)

    async def _send_part(
        self, planned: PartPlan, done: dict[int, CheckpointPart], parts_total: int
    ) -> None:
        assert self.upload_id is not None
        body = _Body(self, planned.number, planned.offset, planned.size)
        async with self.budget or contextlib.nullcontext():
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
