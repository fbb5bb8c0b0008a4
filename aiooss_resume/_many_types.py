"""The results and events of ``upload_many``/``upload_dir`` (what ``_many`` reports).

A ``ManyResult`` lists one ``FileOutcome`` per file met: uploaded, unchanged (not sent:
an earlier run finished it, or OSS already holds the same bytes), skipped (not a candidate:
a link not followed, a FIFO...), missing (deleted before it could be sent, or recorded by an
earlier run and gone since), failed, or cancelled (in flight when ``fail_fast`` stopped the
transfer). The events (``FileFinished``, ``ManyProgress``) are frozen, tagged msgspec
Structs like the single-file ones, and arrive with those (each carries its ``key``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Literal, Protocol, final

import msgspec

from ._errors import ServiceError
from ._events import BytesSent, ProgressEvent
from ._fileio import SourceFile
from ._planner import validate_part_size
from ._session import Session
from ._transfer import _head_matches, check_routines
from ._upload_plan import UploadResult
from ._walk import Item, LocalFile, WalkIssue

logger = logging.getLogger("aiooss_resume")

__all__ = [
    "FileFinished",
    "FileOutcome",
    "FileStatus",
    "ManyEvent",
    "ManyProgress",
    "ManyProgressHook",
    "ManyResult",
    "Reporter",
    "UploadOne",
    "check_many_options",
    "count_dir",
    "matches_remote",
]

_PROGRESS_GAP = 0.2

FileStatus = Literal["uploaded", "unchanged", "skipped", "missing", "failed", "cancelled"]
"""What became of one file of ``upload_many``/``upload_dir`` (see ``FileOutcome``)."""


@final
@dataclass(frozen=True, slots=True)
class FileOutcome:
    """What became of one file.

    Attributes:
        key: the object key (as mapped from the path).
        path: the local path.
        status: ``uploaded``; ``unchanged`` (not sent: done by an earlier run, or the
            object already has this size and CRC-64); ``skipped`` (left out on purpose:
            a symbolic link not followed, a loop, not a regular file); ``missing`` (the
            file was deleted before it could be sent, or since an earlier run recorded
            it: the object is left as it is); ``failed``; ``cancelled`` (stopped by
            ``fail_fast``).
        size: the file's size in bytes, as seen when it was listed (0 if unknown).
        reason: a one-line explanation (the error's message for ``failed``).
        error: the exception, for ``failed`` (a typed ``OssError``, ``OSError`` or
            ``ValueError``), else None.
        result: the ``UploadResult``, for ``uploaded``.
    """

    key: str
    path: str
    status: FileStatus
    size: int = 0
    reason: str = ""
    error: Exception | None = None
    result: UploadResult | None = None


@final
@dataclass(frozen=True, slots=True)
class ManyResult:
    """The outcome of ``upload_many``/``upload_dir``: one ``FileOutcome`` per file met.

    With ``keep_outcomes=False`` the outcomes of files uploaded or unchanged are not kept
    (each was reported by a ``FileFinished`` event), so memory does not grow with the
    number of files; ``count`` still counts every file. ``stopped`` is True when
    ``fail_fast`` ended the transfer early: files not yet started then have no outcome.
    ``ok`` is True when no file failed (nor was cancelled).
    """

    outcomes: list[FileOutcome] = field(default_factory=list)
    stopped: bool = False
    bytes_uploaded: int = 0
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, status: FileStatus) -> int:
        """How many files ended with ``status`` (kept in ``outcomes`` or not)."""
        return self.counts.get(status, 0)

    @property
    def failed(self) -> list[FileOutcome]:
        """The outcomes with status ``failed``, in the order they happened."""
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def ok(self) -> bool:
        """True if no file failed or was cancelled."""
        return not self.stopped and not self.count("failed") and not self.count("cancelled")


class FileFinished(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """One file of the transfer reached its outcome (``status`` as in ``FileOutcome``)."""

    key: str
    path: str
    status: str
    size: int
    reason: str = ""


class ManyProgress(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """The whole transfer's progress, after each file and at most every 0.2 s otherwise.

    ``files_total``/``bytes_total`` are None until the listing is complete (a directory
    is counted by a second, cheap walk that runs alongside the upload); ``eta`` (seconds)
    is None until then too. Bytes count files finished (uploaded, or unchanged: not
    sent) plus what was handed to the network for the files in flight.
    """

    files_done: int
    files_failed: int
    files_total: int | None
    bytes_done: int
    bytes_total: int | None
    bytes_sent: int
    elapsed: float
    eta: float | None


ManyEvent = FileFinished | ManyProgress | ProgressEvent
"""Any event of ``upload_many``/``upload_dir``: the two above and every file's own."""

ManyProgressHook = Callable[[ManyEvent], Awaitable[None] | None]
"""A sync or async callable receiving ``ManyEvent`` objects, in order, on the event loop."""


class Reporter:
    """The outcomes and events of a many-file upload, and how it stops (``_many.ManyJob``)."""

    fail_fast = False

    def __init__(self, on_progress: ManyProgressHook | None) -> None:
        if on_progress is not None and not callable(on_progress):
            raise TypeError("on_progress must be callable")
        self.hook = on_progress
        self.outcomes: list[FileOutcome] = []
        self.counts: dict[str, int] = {}
        self.keep_all = True  # keep_outcomes: also the uploaded and unchanged ones
        self.bytes_uploaded = 0
        self.stopping = False
        self.hook_error: Exception | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.started = time.monotonic()
        self.files_total: int | None = None
        self.bytes_total: int | None = None
        self.bytes_finished = 0
        self.files_failed = 0
        self.in_flight_bytes: dict[str, int] = {}
        self.last_progress = 0.0
        self.key_prefix = ""

    def result(self) -> ManyResult:
        return ManyResult(
            outcomes=self.outcomes,
            stopped=self.stopping,
            bytes_uploaded=self.bytes_uploaded,
            seconds=time.monotonic() - self.started,
            counts=dict(self.counts),
        )

    def _ok(self) -> bool:
        return (
            not self.stopping and not self.counts.get("failed") and not self.counts.get("cancelled")
        )

    def _keep(self, outcome: FileOutcome) -> None:
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        if self.keep_all or outcome.status not in ("uploaded", "unchanged"):
            self.outcomes.append(outcome)

    async def _issue(self, issue: WalkIssue) -> None:
        failed = issue.kind in ("name", "error")
        status = "failed" if failed else ("missing" if issue.kind == "missing" else "skipped")
        error = ValueError(issue.reason) if failed else None
        key = self.key_prefix + issue.relative
        outcome = FileOutcome(key, issue.path, status, 0, issue.reason, error)  # type: ignore[arg-type]
        await self._finish(outcome)

    async def _finish(self, outcome: FileOutcome) -> None:
        self._keep(outcome)
        if outcome.status in ("uploaded", "unchanged"):
            self.bytes_finished += outcome.size
        elif outcome.status == "failed":
            self.files_failed += 1
        if outcome.status == "failed" and self.fail_fast:
            self._stop()
        await self._emit(
            FileFinished(
                key=outcome.key,
                path=outcome.path,
                status=outcome.status,
                size=outcome.size,
                reason=outcome.reason,
            )
        )
        await self._emit_progress()

    def _halted(self) -> bool:
        return self.stopping

    def _stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()

    async def _file_hook(self, event: ProgressEvent) -> None:
        if isinstance(event, BytesSent):
            self.in_flight_bytes[event.key] = event.bytes_done
        await self._emit(event, reraise=True)  # the engine fails this file with it
        if time.monotonic() - self.last_progress >= _PROGRESS_GAP:
            await self._emit_progress()

    async def _emit(self, event: ManyEvent, *, reraise: bool = False) -> None:
        if self.hook is None or self.hook_error is not None:
            return
        try:
            result = self.hook(event)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                await result
        except Exception as exc:
            exc.add_note(f"(raised by the on_progress hook, given {type(event).__name__})")
            self.hook_error = exc
            self._stop()
            if reraise:
                raise

    async def _emit_progress(self) -> None:
        self.last_progress = now = time.monotonic()
        elapsed = now - self.started
        done = self.bytes_finished + sum(self.in_flight_bytes.values())
        eta: float | None = None
        if self.bytes_total is not None and done > 0 and elapsed > 0:
            eta = max(0.0, (self.bytes_total - done) / (done / elapsed))
        await self._emit(
            ManyProgress(
                files_done=sum(self.counts.values()),
                files_failed=self.files_failed,
                files_total=self.files_total,
                bytes_done=done,
                bytes_total=self.bytes_total,
                bytes_sent=self.bytes_uploaded,
                elapsed=elapsed,
                eta=eta,
            )
        )


# ---------------------------------------------------------------------- helpers of _many


class UploadOne(Protocol):
    """``_uploader.upload_file`` as ``_client`` hands it over (this layer is below it)."""

    async def __call__(
        self,
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
        on_progress: Any,
        budget: asyncio.Semaphore | None = None,
    ) -> UploadResult: ...


def check_many_options(routines: object, files_in_flight: object, part_size: int) -> None:
    """Validate the options common to ``upload_many`` and ``upload_dir`` (builtins raised)."""
    check_routines(routines)
    if isinstance(files_in_flight, bool) or not isinstance(files_in_flight, int):
        raise TypeError(f"files_in_flight must be an int, not {type(files_in_flight).__name__}")
    if not 1 <= files_in_flight <= 10_000:
        raise ValueError(f"files_in_flight must be between 1 and 10000, got {files_in_flight}")
    validate_part_size(part_size)


async def matches_remote(
    client: Session,
    budget: asyncio.Semaphore,
    bucket: str,
    item: LocalFile,
    headers: Mapping[str, str],
) -> int | None:
    """The file's CRC-64 if the object at ``item.key`` has its size and CRC-64 (HEAD, in
    the budget), else None."""
    try:
        async with budget:
            head = await client._head(bucket, item.key, headers)
    except ServiceError as exc:  # e.g. a key allowed to PUT but not to HEAD: send it
        logger.debug("HEAD %s failed (%s): uploading it", item.key, exc)
        return None
    if head is None or head.header("content-length") != str(item.size):
        return None
    src = await SourceFile.open(item.path, client._io)
    try:
        crc = await src.crc_range(0, item.size)
    finally:
        await src.aclose()
    return crc if _head_matches(head, item.size, crc) else None


async def count_dir(job: Reporter, listing: AsyncGenerator[Item, None]) -> None:
    """Count a second walk's files and bytes into ``job`` (for ``ManyProgress.eta``)."""
    files = size = 0
    async with contextlib.aclosing(listing) as items:
        async for item in items:
            files += 1  # an issue is an outcome too: files_done reaches files_total
            if isinstance(item, LocalFile):
                size += item.size
    job.files_total, job.bytes_total = files, size
