"""Read buffers for part data: made without the GIL held, reused while nothing else holds them.

* ``new_buffer`` makes an anonymous private mapping: the kernel supplies its zero pages as
  the read into it (GIL released) touches them, where ``bytearray(n)`` would zero-fill with
  the GIL held.
* ``ChunkPool`` keeps an upload's buffers for reuse; a buffer is handed out again only when
  its reference count shows nothing but the pool refers to it (CPython only).
* ``read_into`` is the worker-thread job: ``preadv`` into a buffer and the CRC-64 of what
  was read, in one pass.
"""

from __future__ import annotations

import mmap
import os
import sys

import anyio.lowlevel

from ._crc64 import crc64

__all__ = ["CHUNK_SIZE", "Buffer", "ChunkPool", "new_buffer", "read_into"]

CHUNK_SIZE = 1024 * 1024
"""Read size per thread job: the main throughput lever (performance notes: 64 KiB -> 1 MiB
took aiohttp from ~630 to ~1,350 MiB/s) while keeping memory at routines x ~2 MiB (a part's
next chunk is read while the current one is sent: ``_upload_body.READ_AHEAD``)."""


Buffer = bytearray | mmap.mmap
"""A read buffer: an anonymous ``mmap`` made by ``new_buffer`` (or any ``bytearray``)."""


def new_buffer(size: int) -> mmap.mmap:
    """A ``size``-byte read buffer whose pages are first touched by the read into it.

    ``bytearray(size)`` zero-fills with the GIL held: ~0.4 ms per fresh MiB, which the 130
    buffers of 64 routines turned into ~50 ms of GIL held by the reading threads in the
    first tenth of a second of an upload, and late event-loop ticks. An anonymous private
    mapping costs one system call, the kernel supplies zero pages as ``preadv`` (GIL
    released) fills them, and freeing one unmaps it with the GIL released.
    """
    if sys.platform == "win32":  # pragma: no cover - no MAP_PRIVATE there
        return mmap.mmap(-1, size)
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def _refcounts(buffers: list[Buffer]) -> list[int]:
    return [sys.getrefcount(buf) for buf in buffers]


_UNSHARED = _refcounts([bytearray(0)])[0]
"""What ``_refcounts`` reports for a buffer that only its list refers to (calibrated here,
through the same code, so no interpreter's counting convention is assumed)."""

_REUSE = sys.implementation.name == "cpython"
"""Reference counts prove a buffer unshared only on CPython; elsewhere nothing is reused."""


class ChunkPool:
    """Read buffers reused across an upload's chunks, so reading a part touches no new memory.

    A fresh 1 MiB ``bytes`` per ``pread`` cost ~60,000 page faults per GiB: the allocator
    hands each worker thread's freed memory back to the kernel and faults it in again on the
    next read. Reusing buffers (with the copy-free hand-off to aiohttp) took 8 MiB x 4
    against the benchmark sink from ~2,100 to ~2,600 MiB/s and the client from 0.56 to
    0.44 CPU s/GiB (``benchmarks/results/ab-copy-free.json``).

    A chunk handed to the transport may still be referenced after the next one is asked for:
    a TLS transport's write backlog, the slices of ``AiohttpTransport._watch``, Python 3.12's
    socket transport, a test's list. A buffer is therefore reused only when its reference
    count shows that nothing but this pool refers to it, directly or through a
    ``memoryview``; one still referenced stays in the pool and is looked at again next time.
    At most ``keep`` buffers are kept; the rest are left to the garbage collector.
    """

    def __init__(self, keep: int) -> None:
        self._free: list[Buffer] = []
        self._keep = keep

    def take(self, size: int) -> Buffer | None:
        """A free buffer of at least ``size`` bytes, or ``None`` (the reader allocates one)."""
        if not _REUSE or not self._free:
            return None
        for i, count in enumerate(_refcounts(self._free)):
            if count == _UNSHARED and len(self._free[i]) >= size:
                return self._free.pop(i)
        return None

    def give(self, chunk: bytes | bytearray | memoryview) -> None:
        """Return a chunk's buffer once the transport has asked for the next chunk."""
        buf = chunk.obj if isinstance(chunk, memoryview) else chunk
        if isinstance(buf, (bytearray, mmap.mmap)) and len(self._free) < self._keep:
            self._free.append(buf)

    async def release(self) -> None:
        """Free the kept buffers a few at a time, yielding to the event loop in between.

        Freeing a touched 1 MiB buffer returns its pages to the kernel (~75 us); the 130
        buffers of 64 routines freed at once held the loop for ~10 ms at the end of an
        upload. The yields are shielded from cancellation, so a cancelled upload still
        frees them all.
        """
        while self._free:
            del self._free[-_RELEASE_BATCH:]
            if self._free:
                await anyio.lowlevel.cancel_shielded_checkpoint()


# Buffers freed per event-loop step by ``ChunkPool.release`` (~0.6 ms of munmap).
_RELEASE_BATCH = 8


def read_into(fd: int, buf: Buffer | None, offset: int, size: int, crc: int) -> tuple[Buffer, int]:
    """Read exactly ``size`` bytes at ``offset`` into ``buf`` (a ``new_buffer`` made here,
    in the worker thread, when ``None``); return the buffer and the CRC continued over
    those bytes."""
    if buf is None or len(buf) < size:
        buf = new_buffer(max(size, CHUNK_SIZE))
    with memoryview(buf) as whole, whole[:size] as view:
        got = _pread_into(fd, view, offset)
        if got != size:
            # The file shrank under us; the caller turns this into FileChangedError.
            raise EOFError(f"expected {size} bytes at offset {offset}, read {got}")
        return buf, crc64(view, crc)


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    if _HAS_PREADV:
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)  # pragma: no cover - every platform we run on has preadv
    view[: len(data)] = data  # pragma: no cover
    return len(data)  # pragma: no cover


_HAS_PREADV = hasattr(os, "preadv")
