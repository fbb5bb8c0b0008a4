"""The resumable download engine behind ``Bucket.download_file``, on the shared core.

Theory of operation
-------------------
1. **Validate** the arguments before any request; lock the checkpoint (``_transfer``).
2. **HEAD** the object: its ETag, size, Last-Modified and CRC-64 are its identity.
3. **Load the checkpoint** ``<file_path>.dcp`` (or the given path): it counts only if it
   decodes (checksummed envelope, as the upload's) and records the same object (ETag,
   size, CRC-64) and part size; otherwise everything is downloaded again. Ranges it lists
   that end beyond the temp file's current size are downloaded again too. A checkpoint
   listing every range with no temp file left is a run killed after its final rename: if
   the destination's CRC-64 is the object's, the download is finished as it is
   (``_download_resume.finished_file``).
   Progress: the upload's event types (``UploadStarted``, ``BytesSent`` counting bytes
   written, ``PartDone``, ``UploadCompleted`` with ``upload_id=None``), monotone across
   a resume.
4. **Download** the missing ranges, at most ``routines`` at a time (``run_parts``), each by
   ``_download_range.fetch_range``: a Range GET with ``If-Match: <etag>``, its body streamed
   in 1 MiB chunks to ``<file_path>.tmp`` with ``pwrite`` in the library's ``IoRunner``
   (never a whole part in memory), the CRC-64 computed in the writing thread, a body longer
   or shorter than the range refused and retried. A range is handed to the checkpoint
   writer, with its CRC-64, once its bytes are written. An object changed mid-download
   answers 412, which is raised as ``FileChangedError`` (the checkpoint and the temp file
   are deleted, so the next run starts from scratch): the file is never a mix of two
   versions.
5. **Check** the combined CRC-64 of the ranges against the object's. On a mismatch,
   ``_download_range.repair`` fetches the ranges again, rewrites those whose bytes differ
   (removed from the checkpoint first) and checks again; only if that fails is it an
   ``IntegrityError`` (the checkpoint and the temp file are deleted, the destination is
   untouched).
6. **Finish**: write the checkpoint with every range, fsync, rename the temp file over
   ``file_path``, delete the checkpoint.
   On failure or cancellation the checkpoint is flushed (bounded, shielded) and the temp
   file kept for the next run; without a checkpoint the temp file is removed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from os import PathLike

import msgspec

from ._checkpoint import DownloadCheckpoint, DownloadPart, encode_download_checkpoint
from ._direct_io import close_quietly, open_temp
from ._download_range import fetch_range, repair
from ._download_resume import finished_file, listed_ranges, read_checkpoint
from ._errors import CheckpointError, FileChangedError, IntegrityError
from ._events import ProgressHook, UploadCompleted, UploadStarted
from ._fileio import (
    finish_destination,
    refuse_symlink,
    remove_quietly,
    write_atomic,
)
from ._headers import ObjectOptions
from ._planner import PartPlan, plan_parts, validate_part_size
from ._session import Session, validate_key
from ._transfer import (
    _CheckpointWriter,
    _fold_crcs,
    _Progress,
    _response_crc,
    _shielded,
    check_routines,
    clean_up_after_cancel,
    release_lock,
    run_parts,
    take_lock,
)

__all__ = ["DownloadResult", "download_checkpoint_path", "download_file"]

logger = logging.getLogger("aiooss_resume")


class DownloadResult(msgspec.Struct, frozen=True, kw_only=True):
    """What ``download_file`` wrote.

    Attributes:
        bucket, key: the object.
        file_path: the local file (absolute).
        etag: the object's ETag. crc64: its CRC-64, verified (None if OSS reported none).
        size: bytes. part_size: the range size used.
        parts_downloaded: ranges fetched by this call. parts_resumed: ranges kept from an
            earlier run. bytes_resumed: their bytes.
    """

    bucket: str
    key: str
    file_path: str
    etag: str
    crc64: int | None
    size: int
    part_size: int
    parts_downloaded: int
    parts_resumed: int
    bytes_resumed: int


def download_checkpoint_path(
    dest: str,
    checkpoint: bool | str | PathLike[str] | None,
    checkpoint_dir: str | PathLike[str] | None,
) -> str | None:
    """``<file>.dcp`` for ``checkpoint=True``, the path given, or one in ``checkpoint_dir``."""
    if checkpoint_dir is not None:
        if checkpoint not in (None, True):
            raise ValueError("pass checkpoint=True (or nothing) together with checkpoint_dir")
        directory = os.path.abspath(os.fspath(checkpoint_dir))
        return os.path.join(directory, os.path.basename(dest) + ".dcp")
    if checkpoint is None or checkpoint is False:
        return None
    if checkpoint is True:
        return dest + ".dcp"
    if isinstance(checkpoint, (str, PathLike)):
        path = os.path.abspath(os.fspath(checkpoint))
        if path in (dest, dest + ".tmp"):
            raise ValueError("the checkpoint path must not be the file being downloaded")
        return path
    raise TypeError("checkpoint must be None, a bool, or a path")


def _resolve(
    file_path: str | PathLike[str],
    checkpoint: bool | str | PathLike[str] | None,
    checkpoint_dir: str | PathLike[str] | None,
) -> tuple[str, str | None]:
    dest = os.path.abspath(os.fspath(file_path))
    if os.path.isdir(dest):
        raise IsADirectoryError(f"{dest!r} is a directory")
    cp_path = download_checkpoint_path(dest, checkpoint, checkpoint_dir)
    if cp_path is not None:
        refuse_symlink(cp_path)
        refuse_symlink(cp_path + ".lock")
    return dest, cp_path


def _save(path: str, checkpoint: DownloadCheckpoint) -> None:
    write_atomic(path, encode_download_checkpoint(checkpoint))


async def download_file(
    session: Session,
    bucket: str,
    key: str,
    file_path: str | PathLike[str],
    part_size: int,
    *,
    routines: int,
    checkpoint: bool | str | PathLike[str] | None,
    checkpoint_dir: str | PathLike[str] | None,
    on_progress: ProgressHook | None,
    options: ObjectOptions | None = None,
    direct_io: bool = False,
) -> DownloadResult:
    """See ``Bucket.download_file``."""
    validate_key(key)
    validate_part_size(part_size)
    check_routines(routines)
    if on_progress is not None and not callable(on_progress):
        raise TypeError("on_progress must be callable")
    if not isinstance(file_path, (str, PathLike)):
        raise TypeError("file_path must be a str or os.PathLike")
    get_headers: dict[str, str] = {}
    if options is not None:
        if not isinstance(options, ObjectOptions):
            raise TypeError(f"options must be an ObjectOptions, not {type(options).__name__}")
        options.only("traffic_limit")  # nothing else means anything to a GET
        get_headers = options.to_headers()
    # Path resolution touches the file system: off the event loop (slow mounts).
    dest, cp_path = await session._io.run(_resolve, file_path, checkpoint, checkpoint_dir)
    job = _Download(session, bucket, key, dest, part_size, routines, cp_path, on_progress)
    job.get_headers = get_headers
    job.direct_io = bool(direct_io)
    return await job.run()


class _Download:
    """One call of ``download_file``."""

    get_headers: Mapping[str, str] = {}  # on every ranged GET (a traffic limit)
    direct_io = False  # asked for: write the temp file with O_DIRECT where it can
    direct = -1  # an O_DIRECT descriptor of the temp file, or -1 (``_direct_io``)

    def __init__(
        self,
        session: Session,
        bucket: str,
        key: str,
        dest: str,
        part_size: int,
        routines: int,
        cp_path: str | None,
        hook: ProgressHook | None,
    ) -> None:
        self.session = session
        self.io = session._io
        self.bucket, self.key, self.dest = bucket, key, dest
        self.tmp = dest + ".tmp"
        self.part_size = part_size
        self.routines = routines
        self.cp_path = cp_path
        self.hook = hook
        self.writer: _CheckpointWriter[DownloadCheckpoint, DownloadPart] | None = None
        self.done: dict[int, DownloadPart] = {}
        self.etag = ""
        self.ident: DownloadCheckpoint | None = None
        # Remove the temp file on failure: without a checkpoint nothing can resume from it.
        self.discard = cp_path is None

    async def run(self) -> DownloadResult:
        lock = await take_lock(self.io, self.cp_path)
        try:
            return await self._run()
        finally:
            release_lock(lock, self.writer)

    async def _run(self) -> DownloadResult:
        head = await self.session._request("HEAD", self.bucket, self.key)
        size = int(head.header("content-length", "0"))
        ident = DownloadCheckpoint(
            endpoint=self.session.endpoint,
            bucket=self.bucket,
            key=self.key,
            etag=head.header("etag"),
            size=size,
            last_modified=head.header("last-modified"),
            crc64=_response_crc(head),
            part_size=self.part_size,
        )
        self.etag, self.ident = ident.etag, ident
        plan = plan_parts(size, self.part_size) if size else []
        cp = await read_checkpoint(self.io, self.cp_path, ident)
        # Killed between the final rename and the checkpoint's deletion: the file is there.
        if (crc := await finished_file(self.io, cp, plan, self.tmp, self.dest)) is not None:
            return await _already_done(self, plan, size, crc)
        fd, self.direct, tmp_size = await self.io.run(open_temp, self.tmp, self.direct_io)
        try:
            resumed = listed_ranges(cp, plan, tmp_size)
            progress = _Progress(self.hook, self.key, size)
            for part in resumed.values():
                progress.resume(part.number, part.size)
            self.done = dict(resumed)
            # The upload's event types, so one progress hook (the CLI's) serves both ways.
            await progress.emit(
                UploadStarted(
                    key=self.key,
                    total_bytes=size,
                    part_count=len(plan),
                    part_size=self.part_size,
                    upload_id=None,
                    resumed=bool(resumed),
                    resumed_bytes=progress.resumed,
                    resumed_parts=len(resumed),
                )
            )
            if self.cp_path is not None:
                self.writer = _CheckpointWriter(
                    self.cp_path, ident, resumed.values(), self.io, _save
                )
                await self.writer.flush(force=True)
                self.writer.start()
            try:
                await self._fetch(plan, fd, progress)
                if self.writer is not None:
                    await self.writer.stop()
                crc = await self._verify(plan, fd, ident, progress)
                if self.writer is not None:  # every range: so a kill after the rename is
                    await self.writer.flush()  # recognised (``finished_file``)
            except asyncio.CancelledError:
                await clean_up_after_cancel(self._keep(None), f"download of {self.key}", "flush")
                raise
            except (FileChangedError, IntegrityError):
                await self._forget()
                raise
            except Exception as exc:
                await self._keep(exc)
                raise
            await progress.finish()
            await progress.emit(
                UploadCompleted(
                    key=self.key,
                    total_bytes=size,
                    etag=ident.etag,
                    crc64=crc,
                    upload_id=None,
                    parts_uploaded=len(plan) - len(resumed),
                    parts_resumed=len(resumed),
                )
            )
        except BaseException:
            # To the end even if cancelled again (anyio re-delivers): no task outlives us.
            tmp = self.tmp if self.discard else None
            await _shielded(self.io.run(_discard, fd, self.direct, tmp))
            raise
        await self.io.run(close_quietly, self.direct)
        await self.io.run(finish_destination, fd, self.tmp, self.dest, size)
        if self.cp_path is not None:
            await self.io.run(remove_quietly, self.cp_path)
        return DownloadResult(
            bucket=self.bucket,
            key=self.key,
            file_path=self.dest,
            etag=ident.etag,
            crc64=crc if ident.crc64 is not None else None,
            size=size,
            part_size=self.part_size,
            parts_downloaded=len(plan) - len(resumed),
            parts_resumed=len(resumed),
            bytes_resumed=sum(p.size for p in resumed.values()),
        )

    async def _fetch(self, plan: list[PartPlan], fd: int, progress: _Progress) -> None:
        async def send(planned: PartPlan) -> None:
            async def sent(n: int) -> None:
                await progress.sent(planned.number, n)

            crc, _ = await fetch_range(
                self.session,
                self.bucket,
                self.key,
                self.etag,
                planned,
                fd,
                on_bytes=sent,
                direct=self.direct,
                fatal=lambda: progress.error,
                headers=self.get_headers,
            )
            part = DownloadPart(planned.number, planned.size, crc)
            self.done[planned.number] = part
            if self.writer is not None:
                self.writer.record(part)
            await progress.part_done(planned.number, planned.size, len(plan))

        missing = [p for p in plan if p.number not in self.done]
        await run_parts(missing, self.routines, send, self.writer)

    async def _verify(
        self, plan: list[PartPlan], fd: int, ident: DownloadCheckpoint, progress: _Progress
    ) -> int:
        """The file's CRC-64, repaired to match the object's if it did not (``repair``)."""
        crc = await _fold_crcs([self.done[p.number] for p in plan])
        if ident.crc64 is None or crc == ident.crc64:
            return crc
        logger.warning(
            "oss://%s/%s: CRC-64 of the downloaded bytes differs from the object's: "
            "fetching every range again to find the bad ones",
            self.bucket,
            self.key,
        )
        return await repair(
            self.session,
            self.bucket,
            self.key,
            ident.etag,
            ident.crc64,
            plan,
            fd,
            self.done,
            routines=self.routines,
            forget=self._forget_range,
            record=self._record_range,
            fatal=lambda: progress.error,
            headers=self.get_headers,
        )

    async def _forget_range(self, number: int) -> None:
        """Drop a range from the checkpoint, on disk, before its bytes are overwritten."""
        if self.writer is None or self.ident is None:
            return
        parts = [p for n, p in self.done.items() if n != number]
        self.writer = _CheckpointWriter(
            self.writer.path, self.ident, parts, self.io, _save, previous=self.writer
        )
        await self.writer.flush(force=True)

    async def _record_range(self, part: DownloadPart) -> None:
        if self.writer is not None:
            self.writer.record(part)
            await self.writer.flush()

    async def _keep(self, error: Exception | None) -> None:
        if self.writer is None:
            return
        await self.writer.stop()
        try:
            await self.writer.flush()
        except CheckpointError as exc:
            if error is not None:
                error.add_note(f"and the checkpoint could not be saved: {exc}")
            return
        if error is not None:
            error.add_note(f"the download can be resumed (checkpoint {self.writer.path})")

    async def _forget(self) -> None:
        """Nothing of this run can be resumed: the checkpoint goes, and the temp file."""
        self.discard = True
        if self.writer is not None:
            await self.writer.stop()
        if self.cp_path is not None:
            await self.io.run(remove_quietly, self.cp_path)


def _discard(fd: int, direct: int, tmp: str | None) -> None:
    """Close the temp file after a failure; remove it too if nothing can resume from it."""
    close_quietly(direct)
    os.close(fd)
    if tmp is not None:
        remove_quietly(tmp)


async def _already_done(
    job: _Download, plan: list[PartPlan], size: int, crc: int
) -> DownloadResult:
    """Finish a download whose file an earlier run renamed into place (``finished_file``)."""
    progress = _Progress(job.hook, job.key, size)
    for part in plan:
        progress.resume(part.number, part.size)
    await progress.emit(
        UploadStarted(
            key=job.key,
            total_bytes=size,
            part_count=len(plan),
            part_size=job.part_size,
            upload_id=None,
            resumed=True,
            resumed_bytes=size,
            resumed_parts=len(plan),
        )
    )
    await progress.finish()
    await progress.emit(
        UploadCompleted(
            key=job.key,
            total_bytes=size,
            etag=job.etag,
            crc64=crc,
            upload_id=None,
            parts_uploaded=0,
            parts_resumed=len(plan),
        )
    )
    if job.cp_path is not None:
        await job.io.run(remove_quietly, job.cp_path)
    return DownloadResult(
        bucket=job.bucket,
        key=job.key,
        file_path=job.dest,
        etag=job.etag,
        crc64=crc,
        size=size,
        part_size=job.part_size,
        parts_downloaded=0,
        parts_resumed=len(plan),
        bytes_resumed=size,
    )
