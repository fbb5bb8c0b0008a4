"""The parts of a stream upload: reading the source, cutting it, sending parts as they come.

``_stream`` drives an upload from these pieces (see its theory of operation):
``_PartReader`` cuts whatever chunks the source yields into parts and checks their type
and the stream's length, ``_PartBody`` is a held part's request body (the parts are run
by the shared ``_transfer.run_parts`` as they are read), and ``resume_offset`` /
``kept_parts`` decide what a resumed upload keeps and where the stream is reopened.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
)
from typing import Any, NamedTuple, Protocol, TypeAlias, TypeGuard, cast

from ._checkpoint import Checkpoint, CheckpointPart
from ._crc64 import crc64, crc64_fold
from ._errors import IntegrityError, StreamLengthError
from ._fileio import CHUNK_SIZE, IoRunner
from ._http import HttpResponse
from ._models import PartInfo
from ._transfer import (
    _Progress,
    _response_crc,
    _same_etag,
)

__all__ = [
    "Reopen",
    "StreamSource",
    "check_source",
    "chunks_of",
    "kept_parts",
    "no_chunks",
    "recorded_object",
    "resume_offset",
]


class _Readable(Protocol):
    def read(self, n: int, /) -> Awaitable[bytes]: ...


class _BlockingReadable(Protocol):
    def read(self, n: int, /) -> bytes: ...


StreamSource: TypeAlias = (
    "AsyncIterable[bytes | bytearray | memoryview] | _Readable | _BlockingReadable"
)
"""An async iterable of bytes-like chunks, or an object with ``async read(n) -> bytes``, or
a binary file-like object whose blocking ``read(n)`` is then called in a worker thread."""
Reopen: TypeAlias = Callable[[int], "StreamSource | Awaitable[StreamSource]"]
"""``reopen(offset)`` for ``upload_stream``: the same stream from byte ``offset`` on, or an
awaitable of it (``offset`` is where the first part not kept on OSS starts)."""


def _readable(source: object) -> TypeGuard[_Readable]:
    return inspect.iscoroutinefunction(getattr(source, "read", None))


def check_source(source: object) -> None:
    if isinstance(source, (bytes, bytearray, memoryview, str)):
        raise TypeError(
            "source must be an async iterable of bytes or have a read(n) method, not "
            f"{type(source).__name__} (wrap a bytes object in io.BytesIO)"
        )
    if not (callable(getattr(source, "read", None)) or isinstance(source, AsyncIterable)):
        raise TypeError(
            "source must be an async iterable of bytes or have a read(n) method, not "
            f"{type(source).__name__}"
        )


def chunks_of(source: StreamSource, io: IoRunner) -> AsyncIterator[Any]:
    """The source's chunks, taken by (in this order of preference) an async ``read(n)``,
    async iteration, or a blocking ``read(n)`` run by the ``IoRunner``, never on the loop."""
    if _readable(source):
        return _read_chunks(source)
    if isinstance(source, AsyncIterable):
        return aiter(source)
    return _read_chunks_in_threads(cast(_BlockingReadable, source), io)  # read() is not async


def _end_of_read(chunk: object) -> bool:
    """Whether ``read(n)`` returned the end of the stream: an empty bytes-like, only that.

    ``None`` is what a non-blocking file returns when no data is ready yet (not the end):
    refused rather than taken for the end, which would store the stream truncated. Any
    other non-bytes value is passed on, for ``_PartReader`` to refuse by its type.
    """
    if chunk is None:
        raise TypeError(
            "the stream's read(n) returned None (a non-blocking file does, when no data is "
            "ready): only b'' ends a stream; pass a blocking file or an async source"
        )
    return isinstance(chunk, (bytes, bytearray, memoryview)) and not memoryview(chunk).nbytes


async def _read_chunks(source: _Readable) -> AsyncIterator[Any]:
    while not _end_of_read(chunk := await source.read(CHUNK_SIZE)):
        yield chunk


async def _read_chunks_in_threads(source: _BlockingReadable, io: IoRunner) -> AsyncIterator[Any]:
    # A pipe or a socket may block for as long as its writer likes: a cancelled upload stops
    # waiting at once, and the read ends in its thread whenever the writer writes or closes.
    while True:
        chunk: object = await io.run(source.read, CHUNK_SIZE, abandon_on_cancel=True)
        if inspect.isawaitable(chunk):
            # A plain ``def read`` that returns an awaitable (a wrapper delegating to an
            # async reader): awaited, and from now on called on the loop, as an async one.
            chunk = await chunk
            if _end_of_read(chunk):
                return
            yield chunk
            async for chunk in _read_chunks(cast(_Readable, source)):
                yield chunk
            return
        if _end_of_read(chunk):
            return
        yield chunk


async def no_chunks() -> AsyncIterator[Any]:
    return
    yield  # an async generator that yields nothing


KEEP_CHUNKS = True
"""Hold the source's own immutable chunks (pieces of at least ``KEEP_MIN`` bytes) by
reference instead of copying them into fresh blocks; a knob only so that the benchmark
can measure it against copying (``benchmarks/bench_stream.py``)."""
YIELD_PER_MIB = True
"""Yield to the loop after every MiB the reader cuts (``_PartReader.next_part``); a knob
only so that the benchmark can measure it against not doing so."""
KEEP_MIN = 32 * 1024
"""Pieces shorter than this are joined into blocks of up to ``CHUNK_SIZE`` bytes (a copy):
held one by one, their per-object overhead would rival their bytes, and each would be
one socket write."""


class _Part(NamedTuple):
    """A part as it is held: its blocks (each at most 1 MiB), its size and CRC-64."""

    blocks: list[bytes | memoryview]
    size: int
    crc: int


def _join_into(blocks: list[bytes | memoryview], pieces: list[memoryview], crc: int) -> int:
    """Append ``pieces`` joined as one block to ``blocks``; clear them; the CRC continued."""
    blocks.append(block := b"".join(pieces))
    pieces.clear()
    return crc64(block, crc)


class _PartReader:
    """Cuts the source's chunks into parts of ``part_size`` bytes; checks types and length.

    A part is a list of blocks of at most ``CHUNK_SIZE`` bytes: read-only views of the
    source's own chunks, held by reference (no copy), when they are ``bytes`` (immutable:
    nothing can change them while the part waits for OSS) and at least ``KEEP_MIN`` long;
    runs of shorter pieces joined into one block (a copy). A chunk in any other buffer
    (bytearray, a memoryview of one, even read-only, mmap) is copied when it is taken: its
    owner may refill it once asked for the next chunk. The part's CRC-64 is continued
    block by block on the loop (at most 1 MiB a call, ~70 µs), and the reader yields to the
    loop after every MiB it cuts, whether or not the source suspends. ``received`` counts the
    stream's bytes from offset 0 (a reopened stream starts at its offset).
    """

    def __init__(
        self, chunks: AsyncIterator[Any], part_size: int, offset: int, size: int | None
    ) -> None:
        self.chunks = chunks
        self.part_size = part_size
        self.offset = offset  # where the stream (as opened) starts
        self.received = offset
        self.size = size
        self._pending: memoryview | None = None
        self._put_back: _Part | None = None
        self.ended = False

    def put_back(self, part: _Part) -> None:
        """Make ``part`` (read to look past it) the next one ``next_part`` returns."""
        self._put_back = part

    async def _pull(self) -> bool:
        """Hold the source's next non-empty chunk in ``_pending``; False at its end."""
        while not self.ended:
            try:
                chunk = await anext(self.chunks)
            except StopAsyncIteration:
                self.ended = True
                break
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise TypeError(
                    f"the stream yielded a {type(chunk).__name__}, not bytes: encode text "
                    "before uploading it"
                )
            view = memoryview(chunk).cast("B")
            if not view.nbytes:
                continue
            if not isinstance(view.obj, bytes):
                # A buffer the source may refill once asked for its next chunk: copied, as
                # its pieces are held until OSS acknowledged their part.
                view = memoryview(bytes(view))
            if self.size is not None and self.received + view.nbytes > self.size:
                raise StreamLengthError(
                    f"the stream yielded more than the {self.size} bytes size= announced "
                    f"(at least {self.received + view.nbytes})",
                    expected=self.size,
                    actual=self.received + view.nbytes,
                )
            self.received += view.nbytes
            self._pending = view
            return True
        if self.size is not None and self.received != self.size:
            raise StreamLengthError(
                f"the stream ended after {self.received} bytes, but size={self.size} was given",
                expected=self.size,
                actual=self.received,
            )
        return False

    async def next_part(self) -> _Part:
        """The next part (shorter only at the end of the stream; size 0: nothing left)."""
        if self._put_back is not None:
            part, self._put_back = self._put_back, None
            return part
        blocks: list[bytes | memoryview] = []
        pieces: list[memoryview] = []  # short ones, to be joined into one block
        size = joined = crc = 0
        keep = KEEP_MIN if KEEP_CHUNKS else CHUNK_SIZE + 1
        mark = 0  # size at the last yield to the loop
        while size < self.part_size:
            if size - mark >= CHUNK_SIZE and YIELD_PER_MIB:
                # A source that never suspends (a generator, a reader with data buffered)
                # would otherwise hold the loop for a whole part: 100+ ms measured at 64 MiB.
                mark = size
                await asyncio.sleep(0)
            if self._pending is None and not await self._pull():
                break
            assert self._pending is not None
            take = min(self.part_size - size, CHUNK_SIZE - joined, self._pending.nbytes)
            piece = self._pending[:take]
            self._pending = self._pending[take:] if take < self._pending.nbytes else None
            size += take
            if take >= keep:
                if pieces:
                    crc = _join_into(blocks, pieces, crc)
                    joined = 0
                blocks.append(piece)  # the source's own bytes, by reference
                crc = crc64(piece, crc)
                continue
            pieces.append(piece)
            joined += take
            if joined == CHUNK_SIZE:
                crc = _join_into(blocks, pieces, crc)
                joined = 0
        if pieces:
            crc = _join_into(blocks, pieces, crc)
        return _Part(blocks, size, crc)

    async def at_end(self) -> bool:
        return self._pending is None and not await self._pull()


class _PartBody:
    """A held part's request body: its blocks, afresh for every attempt; progress is
    reported once per MiB sent and at the part's end."""

    def __init__(self, progress: _Progress, number: int, part: _Part) -> None:
        self.progress = progress
        self.number = number
        self.part = part
        self.crc = part.crc
        self.failure: Exception | None = None

    def __call__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    def fatal(self) -> Exception | None:
        return self.failure

    async def _chunks(self) -> AsyncIterator[bytes]:
        end = reported = 0
        for block in self.part.blocks:
            # A read-only view of the source's bytes or a joined block: aiohttp writes any
            # bytes-like object (``_http`` hands it memoryview slices over HTTPS too).
            yield cast(bytes, block)
            end += len(block)
            if end - reported < CHUNK_SIZE and end < self.part.size:
                continue  # progress per MiB, not per 64 KiB piece
            reported = end
            try:
                await self.progress.sent(self.number, end)
            except Exception as exc:  # the hook's: stop sending, the upload has failed
                if self.failure is None:
                    self.failure = exc
                if end < self.part.size:
                    raise self.failure from None

    def check(self, resp: HttpResponse) -> None:
        reported = _response_crc(resp)
        if reported is not None and reported != self.crc:
            raise IntegrityError(
                f"part {self.number}: CRC-64 mismatch (sent {self.crc}, OSS stored {reported})",
                expected=self.crc,
                actual=reported,
            )


class _HeldPart(NamedTuple):
    number: int
    part: _Part


def recorded_object(
    parts: list[CheckpointPart], part_size: int, size: int | None
) -> tuple[int, int] | None:
    """``(size, CRC-64)`` of the whole stream if ``parts`` record all of it, else None.

    All of it: parts 1 to n, every one but the last a whole part, and the end known:
    ``size`` equals their sum, or, the size unknown, the last part is short (a stream whose
    last recorded part is whole may have gone on)."""
    if not parts or [p.number for p in parts] != list(range(1, len(parts) + 1)):
        return None
    if any(p.size != part_size for p in parts[:-1]):
        return None
    total = sum(p.size for p in parts)
    if (total != size) if size is not None else parts[-1].size >= part_size:
        return None
    return total, crc64_fold((p.crc64, p.size) for p in parts)


def resume_offset(
    done: Mapping[int, CheckpointPart], part_size: int, size: int | None
) -> tuple[int, bool]:
    """Where to reopen the stream (the first part not kept), and whether nothing is left
    to read there: its end is known (``size``, or a kept part shorter than a part) and
    every part before the end is kept."""
    start = 1
    while start in done:
        start += 1
    last = max(done, default=0)
    end = size
    if end is None and last and done[last].size < part_size:
        end = (last - 1) * part_size + done[last].size
    if end is not None and (start - 1) * part_size >= end:
        return end, True
    return (start - 1) * part_size, False


def kept_parts(checkpoint: Checkpoint, listed: list[PartInfo]) -> dict[int, CheckpointPart]:
    """The checkpoint's parts that OSS still has as recorded (size, CRC-64, else ETag)."""
    server = {p.part_number: p for p in listed}
    kept: dict[int, CheckpointPart] = {}
    for part in checkpoint.parts:
        on_oss = server.get(part.number)
        if on_oss is None or on_oss.size != part.size:
            continue
        if on_oss.crc64 is not None:
            ok = on_oss.crc64 == part.crc64
        else:
            ok = _same_etag(on_oss.etag, part.etag)
        if ok:
            kept[part.number] = part
    return kept
