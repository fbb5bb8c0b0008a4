"""The transfer core shared by upload and download: what both directions do alike.

Theory of operation
-------------------
A transfer (``_uploader``, ``_downloader``) is a set of numbered parts of one object, some
of them already done by an earlier run (its checkpoint says which), the rest run here:

* **The lock**: a checkpoint path is locked for the whole call (``take_lock``), so two runs
  never resume the same transfer at once; it is released only once no checkpoint write is
  in a worker thread any more (``release_lock``).
* **The part runner** (``run_parts``): one task per part in flight, at most ``routines`` at
  a time (an ``asyncio.Semaphore``). The first part to fail for good cancels the others,
  the first real error is raised (never an ``ExceptionGroup``), and a cancellation of the
  caller always wins over a part that failed at the same moment.
* **The checkpoint writer** (``_CheckpointWriter``): the one task that writes the checkpoint.
  Finished parts are handed to it with ``record`` before anything else is awaited; it
  rewrites the file atomically (through the direction's own ``save``), coalescing parts that
  finish while a write is in flight and spacing writes by a multiple of their own duration.
* **Progress accounting** (``_Progress``): monotone ``BytesSent``/``PartDone`` events, high-
  water marks per part, so neither a retry nor a resume makes a count go back.
* **Cancellation**: cleanup after a cancel is shielded and bounded (``FLUSH_TIMEOUT``,
  ``_shielded``) and the ``CancelledError`` is always re-raised.
* **Identity checks**: CRC-64 from OSS's ``x-oss-hash-crc64ecma`` header (``_response_crc``),
  folded over parts (``_fold_crcs``), ETag comparison, how a source identity changed.

Nothing here knows which way the bytes flow; each direction supplies the request per part.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from ._checkpoint import SourceIdentity
from ._crc64 import crc64_fold
from ._errors import CheckpointError, ProtocolError
from ._events import BytesSent, PartDone, ProgressEvent, ProgressHook
from ._fileio import CheckpointLock, IoRunner, ThreadJob
from ._http import HttpResponse

__all__ = [
    "COMPLETE_SLICE",
    "FLUSH_TIMEOUT",
    "MAX_ROUTINES",
    "check_routines",
    "clean_up_after_cancel",
    "release_lock",
    "run_parts",
    "take_lock",
]

logger = logging.getLogger("aiooss_resume")

_T = TypeVar("_T")
_P = TypeVar("_P")

MAX_ROUTINES = 1000
FLUSH_TIMEOUT = 1.0
"""Upper bound, in seconds, on the shielded cleanup after a cancellation: the checkpoint
flush, or the Abort of an upload nobody could resume. The issue promises that a cancelled
transfer stops within about a second; a healthy flush or Abort takes milliseconds, and a
checkpoint write cut off by the bound still lands (see ``_CheckpointWriter``)."""
STAGGER_STARTS = True
"""Yield to the loop after starting each part (see ``run_parts``): event-loop lateness at
many routines; a knob only so that the benchmarks can measure it against not doing so."""
COMPLETE_SLICE = 500
"""Part CRCs folded per event-loop step (~0.5 ms), so 10,000 parts never hold the loop for
long; a worker thread would hold the GIL for up to the interpreter's 5 ms switch interval at
a time, which is what the loop then waits. (Complete's XML body is encoded in slices
likewise, by ``Session._complete``.)"""


class _Numbered(Protocol):
    @property
    def number(self) -> int: ...


class _Summed(Protocol):
    @property
    def size(self) -> int: ...
    @property
    def crc64(self) -> int: ...


_Part = TypeVar("_Part", bound=_Numbered)
_Checkpoint = TypeVar("_Checkpoint", bound=msgspec.Struct)


def check_routines(routines: object) -> int:
    if isinstance(routines, bool) or not isinstance(routines, int):
        raise TypeError(f"routines must be an int, not {type(routines).__name__}")
    if not 1 <= routines <= MAX_ROUTINES:
        raise ValueError(f"routines must be between 1 and {MAX_ROUTINES}, got {routines}")
    return routines


async def take_lock(io: IoRunner, cp_path: str | None) -> CheckpointLock | None:
    """Lock the checkpoint path against a second run resuming the same transfer (or None)."""
    if not cp_path:
        return None
    lock = CheckpointLock(cp_path)
    # A cancel while the lock is taken in its thread releases it there.
    await io.run_owned(lock.acquire, lambda _: lock.release())
    return lock


def release_lock(lock: CheckpointLock | None, writer: _CheckpointWriter[Any, Any] | None) -> None:
    """Release ``lock``, but not while a write cut off by a cancellation may still land."""
    if lock is None:
        return
    if writer is not None:
        writer.call_when_idle(lock.release)
    else:
        lock.release()


async def run_parts(
    plan: Iterable[_P] | AsyncIterable[_P],
    routines: int,
    send: Callable[[_P], Coroutine[Any, Any, None]],
    writer: _CheckpointWriter[Any, Any] | None,
) -> None:
    """``send`` every part of ``plan``, at most ``routines`` at a time.

    ``plan`` is a list of parts known in advance (files, downloads) or an async iterator
    producing them as they come (a stream: ``_stream``); the next part is taken from it,
    then a slot waited for, so a producer reading parts in memory holds at most
    ``routines`` parts in tasks plus the one it is filling. No reference to a part is kept
    here once its task holds it. An async iterator is not closed here: its owner does.

    The first part to fail for good cancels the others and its error is raised (with a note
    counting the others that failed too); a checkpoint writer that failed stops the start of
    further parts with its ``CheckpointError``. If the caller is cancelled while a part
    fails, the ``CancelledError`` is raised, never the part's error.
    """
    semaphore = asyncio.Semaphore(routines)

    def release(_: asyncio.Task[None]) -> None:
        semaphore.release()

    pulled = aiter(plan) if isinstance(plan, AsyncIterable) else _ListedParts(plan)
    task = asyncio.current_task()
    assert task is not None
    cancelling = task.cancelling()
    try:
        async with asyncio.TaskGroup() as group:
            while True:
                try:
                    part = await anext(pulled)
                except StopAsyncIteration:
                    break
                await semaphore.acquire()
                if writer is not None and writer.error is not None:
                    semaphore.release()
                    raise writer.error
                part_task = group.create_task(send(part))
                del part  # its task holds it; this frame must not while the next one is made
                # A done callback, so it runs after the TaskGroup's own (callbacks run in
                # order): see the drain below.
                part_task.add_done_callback(release)
                if STAGGER_STARTS:
                    # Let the new part take its first step (sign, connect) before the next
                    # one is created: 64 routines would otherwise all start in one loop
                    # iteration (~0.4 ms each, 26 ms measured), holding up everything else.
                    await asyncio.sleep(0)
            # Wait for the last parts here, in the body, not in the TaskGroup's exit: a
            # part failing must cancel us at this await, which the TaskGroup then undoes.
            # (Python 3.11 does not undo a cancel that lands in its exit, and an outside
            # cancel could no longer be told apart from it.)
            for _ in range(routines):
                await semaphore.acquire()
    except BaseExceptionGroup as group_error:
        if task.cancelling() > cancelling:
            # We were cancelled while a part failed for good: the TaskGroup reports the
            # failure (Python 3.11), but the cancellation must win, or it is lost.
            raise _cancellation_of(group_error) from None
        raise _first_error(group_error) from None


class _ListedParts(Generic[_P]):
    """A list of parts as an async iterator (no task switch per part, nothing to close)."""

    def __init__(self, plan: Iterable[_P]) -> None:
        self._parts = iter(plan)

    def __aiter__(self) -> _ListedParts[_P]:
        return self

    async def __anext__(self) -> _P:
        try:
            return next(self._parts)
        except StopIteration:
            raise StopAsyncIteration from None


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


class _CheckpointWriter(Generic[_Checkpoint, _Part]):
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
        checkpoint: _Checkpoint,
        parts: Iterable[_Part],
        io: IoRunner,
        save: Callable[[str, _Checkpoint], None],
        previous: _CheckpointWriter[Any, Any] | None = None,
    ) -> None:
        self.path = path
        self._checkpoint = checkpoint
        self._parts: dict[int, _Part] = {p.number: p for p in parts}
        self._save = save
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

    def record(self, part: _Part) -> None:
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
            except Exception as exc:  # a save that failed otherwise: not a silent stop
                self.error = CheckpointError(f"cannot write checkpoint {self.path!r}: {exc!r}")
                self.error.__cause__ = exc
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
                await self._io.run(job.run, self._save, self.path, snapshot, abandon_on_cancel=True)
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


async def clean_up_after_cancel(cleanup: Awaitable[None], what: str, detail: str) -> None:
    """Run a cancelled transfer's ``cleanup`` (flush, or abort), shielded and bounded by
    ``FLUSH_TIMEOUT``; never replaces the ``CancelledError``, which the caller re-raises."""

    async def bounded() -> None:
        try:
            async with asyncio.timeout(FLUSH_TIMEOUT):
                await cleanup
        except TimeoutError:
            logger.warning(
                "%s cancelled: its cleanup (%s) did not finish within %g s and was cut short",
                what,
                detail,
                FLUSH_TIMEOUT,
            )
        except Exception:
            logger.exception("%s cancelled: its cleanup failed", what)

    await _shielded(bounded())


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


async def _fold_crcs(parts: Sequence[_Summed]) -> int:
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
