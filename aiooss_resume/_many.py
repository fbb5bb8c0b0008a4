"""Many files under one budget: the engine behind ``upload_many`` and ``upload_dir``.

Theory of operation
-------------------
1. **Listing** is lazy: the files come from the walker (``_walk``, in worker threads, 256
   at a time) or the caller's iterable, and at most ``files_in_flight`` of them are being
   handled at once (a semaphore taken before each file's task is created), so memory
   depends on ``files_in_flight``, not on the number of files; only the manifest index and
   one small ``FileOutcome`` per file grow with it.
2. **One budget**: every PutObject, UploadPart and HEAD of every file holds a slot of one
   ``asyncio.Semaphore(routines)`` for the duration of its request (the ``budget`` passed
   down to ``upload_file``; FIFO, so parts of different files interleave). Each file may
   use the whole budget when it is alone.
3. **Per file**: a file the manifest records with the same key, size, mtime_ns and inode
   is ``unchanged`` without a request. Otherwise, in sync mode, or on any run that found a
   manifest (a rerun) and has no checkpoint for that file, HEAD decides: an object with the
   file's size and CRC-64 is ``unchanged`` and recorded. This closes the window in which a
   run is killed after OSS acknowledged a file but before the manifest recorded it: the
   rerun finds the object and sends nothing. Otherwise ``upload_file`` runs, with its
   checkpoint at ``<checkpoint_dir>/files/<digest>.cp`` when the file needs a multipart
   upload (or such a checkpoint exists), so a large file resumes part by part.
4. **Manifest**: acknowledged files are handed to the checkpoint writer of ``_transfer``
   (one task, atomic rewrites, coalescing), so a kill loses at most the records of the
   last write's gap, which step 3 recovers by HEAD.
5. **Outcomes**: a failing file never stops the others unless ``fail_fast``; then the files
   in flight are cancelled (their checkpoints flushed as on any cancel) and no new one is
   started. Manifest records of files that no longer exist are reported as ``missing``.
6. **End**: when no file failed, the checkpoint directory is removed: the manifest, the
   files directory (stale ``.lock`` files and temporaries of our own naming left by a
   killed run are removed first, holding the manifest's lock) and the directory itself.
   A removal that fails is logged as a warning naming the path, never silently ignored.
   On cancellation the manifest is flushed (shielded, bounded) and ``CancelledError``
   re-raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence, Sized
from datetime import UTC, datetime
from os import PathLike
from typing import Any, cast

from ._errors import CheckpointError, OssError
from ._fileio import IoRunner, read_optional
from ._headers import ObjectOptions, merge_headers
from ._manifest import (
    Manifest,
    ManifestEntry,
    ManifestSnapshot,
    decode_manifest,
)
from ._many_dir import (
    MANIFEST_NAME,
    file_checkpoint,
    kept_checkpoints,
    remove_checkpoint_dir,
    remove_empty_dir,
    save_manifest,
)
from ._many_types import (
    FileOutcome,
    ManyEvent,
    ManyProgressHook,
    ManyResult,
    Reporter,
    UploadOne,
    check_many_options,
    count_dir,
    matches_remote,
)
from ._planner import DEFAULT_PART_SIZE, effective_part_size
from ._session import Session, validate_key
from ._transfer import (
    _CheckpointWriter,
    clean_up_after_cancel,
    release_lock,
    take_lock,
)
from ._upload_plan import route_headers
from ._walk import (
    GlobFilter,
    Item,
    LocalFile,
    Normalization,
    WalkIssue,
    check_root,
    dir_items,
    pair_items,
)

__all__ = ["ManyJob", "ManyUploads", "upload_dir", "upload_many"]

logger = logging.getLogger("aiooss_resume")


class ManyJob(Reporter):
    """One call of ``upload_many``/``upload_dir``: its state and its phases."""

    def __init__(
        self,
        client: Session,
        bucket: str,
        upload_one: UploadOne,
        *,
        part_size: int,
        routines: int,
        files_in_flight: int,
        checkpoint_dir: str | None,
        sync: bool,
        fail_fast: bool,
        headers: Mapping[str, str] | None,
        on_progress: Callable[[ManyEvent], Any] | None,
        identity: str,
    ) -> None:
        plan = route_headers(headers, "probe")  # bad headers fail before any request
        self.client = client
        self.io: IoRunner = client._io
        self.bucket = bucket
        self.upload_one = upload_one
        self.part_size = part_size
        self.routines = routines
        self.files_in_flight = files_in_flight
        self.cp_dir = os.path.abspath(checkpoint_dir) if checkpoint_dir is not None else None
        self.sync = sync
        self.fail_fast = fail_fast
        self.headers = dict(headers) if headers else None
        self.head_headers = plan.other
        # What shapes the objects names the transfer; a throttle (x-oss-traffic-limit) or who
        # pays (x-oss-request-payer), which ride on every part, does not: as for upload_file's
        # checkpoint, a rerun may change them.
        shaping = sorted((k, v) for k, v in (headers or {}).items() if k not in plan.part)
        doc = f"{client.endpoint}\n{bucket}\n{identity}\n{shaping}"
        self.fingerprint = hashlib.sha256(doc.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        super().__init__(on_progress)
        self.budget = asyncio.Semaphore(routines)
        self.index: dict[str, ManifestEntry] = {}
        self.seen: set[int] = set()
        self.next_number = 0
        self.rerun = False
        self.writer: _CheckpointWriter[ManifestSnapshot, ManifestEntry] | None = None
        self.kept: set[str] = set()  # per-file checkpoints an earlier run left

    @property
    def manifest_path(self) -> str:
        assert self.cp_dir is not None
        return os.path.join(self.cp_dir, MANIFEST_NAME)

    # ------------------------------------------------------------------ run

    async def run(self, items: AsyncGenerator[Item, None]) -> ManyResult:
        lock = await take_lock(self.io, self.manifest_path) if self.cp_dir else None
        clean, problems = False, list[str]()
        try:
            if self.cp_dir is not None:
                await self._load_manifest()
            try:
                await self._drive(items)
            except asyncio.CancelledError:
                await clean_up_after_cancel(self._stop_writer(), "upload_many", "manifest flush")
                raise
            except BaseException:
                await self._stop_writer()
                raise
            await self._stop_writer()
            self._report_missing()
            if self.hook_error is not None:
                raise self.hook_error
            clean = self.cp_dir is not None and self._ok()
            if clean:
                problems = await self.io.run(remove_checkpoint_dir, self.cp_dir, self.manifest_path)
        finally:
            release_lock(lock, self.writer)
        if clean:  # the lock file is gone now: the directory itself can go
            problems += await self.io.run(remove_empty_dir, self.cp_dir)
            for problem in problems:
                logger.warning("checkpoint directory not removed: %s", problem)
        return self.result()

    async def _load_manifest(self) -> None:
        data = await self.io.run(read_optional, self.manifest_path)
        manifest: Manifest | None = None
        if data is not None:
            self.rerun = True
            try:
                manifest = decode_manifest(data)
            except CheckpointError as exc:
                logger.warning(
                    "manifest %s is damaged (%s): starting over", self.manifest_path, exc
                )
            if manifest is not None and manifest.options_fingerprint != self.fingerprint:
                raise CheckpointError(
                    f"checkpoint directory {self.cp_dir!r} holds the manifest of another "
                    "transfer (other source, target or headers); use another directory"
                )
        if manifest is None:
            manifest = Manifest(
                endpoint=self.client.endpoint,
                bucket=self.bucket,
                options_fingerprint=self.fingerprint,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
        self.index = {entry.key: entry for entry in manifest.files}
        self.kept = await self.io.run(kept_checkpoints, self.cp_dir)
        self.next_number = max((e.number for e in manifest.files), default=-1) + 1
        self.writer = _CheckpointWriter(
            self.manifest_path,
            ManifestSnapshot(),
            manifest.files,
            self.io,
            save_manifest(manifest),
        )
        await self.writer.flush(force=True)  # proves the directory writable, before any request
        self.writer.start()

    async def _stop_writer(self) -> None:
        if self.writer is not None:
            await self.writer.stop()
            await self.writer.flush()

    async def _drive(self, items: AsyncGenerator[Item, None]) -> None:
        slots = asyncio.Semaphore(self.files_in_flight)

        def release(task: asyncio.Task[None]) -> None:
            self.tasks.discard(task)
            slots.release()

        error: Exception | None = None
        async with asyncio.TaskGroup() as group, contextlib.aclosing(items) as listing:
            try:
                async for item in listing:
                    if self.stopping:
                        break
                    if isinstance(item, WalkIssue):
                        await self._issue(item)
                        continue
                    await slots.acquire()
                    if self._halted():  # fail_fast may have fired while we waited
                        slots.release()
                        break
                    task = group.create_task(self._guarded(item))
                    self.tasks.add(task)
                    task.add_done_callback(release)
            except Exception as exc:  # the listing failed: raised as is, not in a group
                error = exc
                self._stop()
        if error is not None:
            raise error

    # ------------------------------------------------------------------ one file

    async def _guarded(self, item: LocalFile) -> None:
        try:
            outcome = await self._one(item)
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            outcome = FileOutcome(item.key, item.path, "cancelled", item.size, "fail_fast")
        except FileNotFoundError as exc:
            reason = f"deleted before it could be sent ({exc.strerror or exc})"
            outcome = FileOutcome(item.key, item.path, "missing", item.size, reason)
        except (OssError, OSError, ValueError, TypeError) as exc:
            outcome = FileOutcome(item.key, item.path, "failed", item.size, str(exc), exc)
        except Exception as exc:  # the progress hook's, or a bug: reported, never lost
            outcome = FileOutcome(item.key, item.path, "failed", item.size, repr(exc), exc)
        self.in_flight_bytes.pop(item.key, None)
        await self._finish(outcome)

    async def _one(self, item: LocalFile) -> FileOutcome:
        entry = self.index.get(item.key)
        if entry is not None:
            self.seen.add(entry.number)
            if (entry.size, entry.mtime_ns, entry.inode) == (item.size, item.mtime_ns, item.inode):
                return FileOutcome(
                    item.key, item.path, "unchanged", item.size, "done by an earlier run"
                )
        cp_path = self._file_checkpoint(item.key)
        has_cp = cp_path is not None and os.path.basename(cp_path) in self.kept
        remote = None  # the CRC-64 of a file OSS already holds
        if (self.sync or self.rerun) and not has_cp:
            headers = self.head_headers
            remote = await matches_remote(self.client, self.budget, self.bucket, item, headers)
        if remote is not None:
            self._record(item, entry, remote)
            return FileOutcome(
                item.key, item.path, "unchanged", item.size, "OSS holds the same size and CRC-64"
            )
        multipart = item.size >= effective_part_size(item.size, self.part_size)
        result = await self.upload_one(
            self.client,
            self.bucket,
            item.key,
            item.path,
            self.part_size,
            routines=self.routines,
            checkpoint=cp_path if (has_cp or multipart) else None,
            checkpoint_dir=None,
            headers=self.headers,
            on_progress=self._file_hook,
            budget=self.budget,
        )
        self._record(item, entry, result.crc64)
        self.bytes_uploaded += result.size - result.bytes_resumed
        return FileOutcome(item.key, item.path, "uploaded", item.size, "", None, result)

    def _file_checkpoint(self, key: str) -> str | None:
        return None if self.cp_dir is None else file_checkpoint(self.cp_dir, key)

    def _record(self, item: LocalFile, entry: ManifestEntry | None, crc: int | None) -> None:
        if self.writer is None:
            return
        if entry is None:
            number, self.next_number = self.next_number, self.next_number + 1
            self.seen.add(number)
        else:
            number = entry.number
        self.writer.record(
            ManifestEntry(number, item.key, item.size, item.mtime_ns, item.inode, crc or 0)
        )

    def _report_missing(self) -> None:
        for key, entry in self.index.items():
            if entry.number not in self.seen:
                self._keep(
                    FileOutcome(
                        key,
                        "",
                        "missing",
                        entry.size,
                        "recorded by an earlier run, no longer listed locally (object kept)",
                    )
                )


# ---------------------------------------------------------------------- the Bucket methods


class ManyUploads:
    """``Bucket``'s many-file uploads (``Bucket`` mixes this in; see docs/many.md)."""

    client: Session
    name: str

    def _upload_one(self) -> UploadOne:
        raise NotImplementedError  # Bucket hands over _uploader.upload_file (a layer above)

    async def upload_many(
        self,
        files: Iterable[tuple[str, str | PathLike[str]]],
        part_size: int = DEFAULT_PART_SIZE,
        *,
        routines: int = 4,
        files_in_flight: int = 8,
        checkpoint_dir: str | PathLike[str] | None = None,
        sync: bool = False,
        fail_fast: bool = False,
        headers: Mapping[str, str] | None = None,
        on_progress: ManyProgressHook | None = None,
        keep_outcomes: bool = True,
        options: ObjectOptions | None = None,
    ) -> ManyResult:
        """Upload many files, given as ``(key, file_path)`` pairs, under one budget.

        At most ``routines`` requests (PutObject, UploadPart, HEAD) are in flight at once,
        across all files, and at most ``files_in_flight`` files are handled at once; the
        pairs are consumed lazily. A file failing does not stop the others unless
        ``fail_fast``. See docs/many.md.

        Args:
            files: ``(key, file_path)`` pairs (any iterable, consumed once).
            part_size: as for ``upload_file``; smaller files go up with one PutObject.
            routines: requests in flight across all files, 1 to 1000.
            files_in_flight: files handled at once, 1 to 10,000.
            checkpoint_dir: resumable: a manifest of the files done, and each large file's
                checkpoint, live there; a rerun sends only what is missing or changed.
                Removed once every file succeeded.
            sync: skip files whose object already has the same size and CRC-64 (HEAD).
            fail_fast: stop at the first failed file (the files in flight are cancelled).
            headers: as for ``upload_file``, applied to every object.
            on_progress: receives every file's ``ProgressEvent``s, a ``FileFinished`` per
                file and ``ManyProgress`` (aggregate bytes, files, ETA).
            keep_outcomes: False keeps only the outcomes that are not ``uploaded`` or
                ``unchanged`` (counts stay exact), so memory does not grow with the files.
            options: typed object options (``ObjectOptions``), applied to every object as
                for ``upload_file``; a header given both here and in ``headers`` is a
                ``ValueError``, raised before any request.

        Returns:
            A ``ManyResult`` with one ``FileOutcome`` per file.

        Raises:
            ValueError, TypeError: bad arguments, before any request.
            CheckpointError: ``checkpoint_dir`` is unusable, locked by another run, or holds
                another transfer's manifest.
        """
        return await upload_many(
            self.client,
            self.name,
            self._upload_one(),
            files,
            part_size,
            routines=routines,
            files_in_flight=files_in_flight,
            checkpoint_dir=checkpoint_dir,
            sync=sync,
            fail_fast=fail_fast,
            headers=merge_headers(options, headers),
            on_progress=on_progress,
            keep_outcomes=keep_outcomes,
        )

    async def upload_dir(
        self,
        prefix: str,
        directory: str | PathLike[str],
        part_size: int = DEFAULT_PART_SIZE,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        follow_symlinks: bool = False,
        normalize: Normalization = None,
        routines: int = 4,
        files_in_flight: int = 8,
        checkpoint_dir: str | PathLike[str] | None = None,
        sync: bool = False,
        fail_fast: bool = False,
        headers: Mapping[str, str] | None = None,
        on_progress: ManyProgressHook | None = None,
        keep_outcomes: bool = True,
        options: ObjectOptions | None = None,
    ) -> ManyResult:
        """Upload every file under ``directory`` to ``prefix`` + its relative path.

        Keys use ``/`` separators; ``prefix`` gets a trailing ``/`` if it has none; empty
        directories are ignored. ``include``/``exclude`` are globs (``*`` stays within a
        name, ``**`` crosses directories; a pattern without ``/`` matches a name at any
        depth). Symbolic links are skipped unless ``follow_symlinks`` (loops are reported,
        never walked). ``normalize`` (``"NFC"``/``"NFD"``) normalises names into keys. The
        other arguments, the result and the errors are those of ``upload_many``
        (``FileNotFoundError``/``NotADirectoryError`` for a bad ``directory``, before any
        request; ``options`` as for ``upload_many``). See docs/many.md.
        """
        return await upload_dir(
            self.client,
            self.name,
            self._upload_one(),
            prefix,
            directory,
            part_size,
            include=include,
            exclude=exclude,
            follow_symlinks=follow_symlinks,
            normalize=normalize,
            routines=routines,
            files_in_flight=files_in_flight,
            checkpoint_dir=checkpoint_dir,
            sync=sync,
            fail_fast=fail_fast,
            headers=merge_headers(options, headers),
            on_progress=on_progress,
            keep_outcomes=keep_outcomes,
        )


# ---------------------------------------------------------------------- entry points


async def upload_many(
    client: Session,
    bucket: str,
    upload_one: UploadOne,
    pairs: Iterable[tuple[str, str | PathLike[str]]],
    part_size: int,
    *,
    routines: int,
    files_in_flight: int,
    checkpoint_dir: str | PathLike[str] | None,
    sync: bool,
    fail_fast: bool,
    headers: Mapping[str, str] | None,
    on_progress: ManyProgressHook | None,
    keep_outcomes: bool = True,
) -> ManyResult:
    """See ``Bucket.upload_many``."""
    check_many_options(routines, files_in_flight, part_size)
    if isinstance(cast(object, pairs), (str, bytes)) or not isinstance(pairs, Iterable):
        raise TypeError("upload_many wants an iterable of (key, file_path) pairs")
    job = ManyJob(
        client,
        bucket,
        upload_one,
        part_size=part_size,
        routines=routines,
        files_in_flight=files_in_flight,
        checkpoint_dir=None if checkpoint_dir is None else os.fspath(checkpoint_dir),
        sync=sync,
        fail_fast=fail_fast,
        headers=headers,
        on_progress=on_progress,
        identity="many",
    )
    job.keep_all = keep_outcomes
    if isinstance(pairs, Sized):
        job.files_total = len(pairs)
    return await job.run(pair_items(client._io, pairs))


async def upload_dir(
    client: Session,
    bucket: str,
    upload_one: UploadOne,
    prefix: str,
    directory: str | PathLike[str],
    part_size: int,
    *,
    include: Sequence[str],
    exclude: Sequence[str],
    follow_symlinks: bool,
    normalize: Normalization,
    routines: int,
    files_in_flight: int,
    checkpoint_dir: str | PathLike[str] | None,
    sync: bool,
    fail_fast: bool,
    headers: Mapping[str, str] | None,
    on_progress: ManyProgressHook | None,
    keep_outcomes: bool = True,
) -> ManyResult:
    """See ``Bucket.upload_dir``."""
    check_many_options(routines, files_in_flight, part_size)
    if not isinstance(prefix, str):
        raise TypeError("prefix must be a str")
    if prefix and not prefix.endswith("/"):
        prefix += "/"  # a prefix names a "directory", as in ossutil cp -r and aws s3 sync
    if prefix:
        validate_key(prefix)
    if normalize not in (None, "NFC", "NFD"):
        raise ValueError(f"normalize must be None, 'NFC' or 'NFD', got {normalize!r}")
    filters = GlobFilter(include, exclude)
    root = await client._io.run(check_root, directory)
    cp_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
    identity = repr(("dir", root, prefix, list(include), list(exclude), follow_symlinks, normalize))
    job = ManyJob(
        client,
        bucket,
        upload_one,
        part_size=part_size,
        routines=routines,
        files_in_flight=files_in_flight,
        checkpoint_dir=cp_dir,
        sync=sync,
        fail_fast=fail_fast,
        headers=headers,
        on_progress=on_progress,
        identity=identity,
    )
    job.key_prefix = prefix
    job.keep_all = keep_outcomes
    skip = [job.cp_dir] if job.cp_dir is not None else []

    def listing() -> AsyncGenerator[Item, None]:
        return dir_items(
            client._io,
            root,
            prefix,
            filters=filters,
            follow_symlinks=follow_symlinks,
            normalize=normalize,
            skip=skip,
        )

    counter = asyncio.ensure_future(count_dir(job, listing()))
    try:
        return await job.run(listing())
    finally:
        counter.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await counter
