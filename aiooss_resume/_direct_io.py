"""Writing a download's temp file around the page cache (``O_DIRECT``) where it can.

Theory of operation
-------------------
A download writes every byte of a new file once and does not read it back (the CRC-64 is
computed from the bytes received). Through the page cache that costs a page of memory per
4 KiB written, and on the virtual machines measured for this project (docs/benchmarks.md,
"Download") touching memory that has been free for a few seconds costs ~2 ms of system time
per MiB: a new 1 GiB file could not be written faster than ~200-250 MiB/s, by any client.
With ``O_DIRECT`` the same writes went at 1.6-2.4 GB/s with a tenth of the system time.

``open_temp`` opens the temp file twice: the ordinary descriptor (``open_destination``:
buffered writes, ``ftruncate``, ``fsync``, rename) and, on Linux, a second one with
``O_DIRECT``, or ``-1`` where the platform or the file system refuses it (tmpfs, some
network file systems): then everything is buffered, as before. ``write_chunk_direct``
writes a chunk through the direct descriptor when its offset and length are multiples of
``ALIGN`` (4 KiB: a 1 MiB chunk of a range whose size is a multiple of 4 KiB), copied into a
page-aligned buffer of the worker thread (``O_DIRECT`` needs an aligned buffer; at most one
``MAX_CHUNK`` buffer per IoRunner thread); any other chunk (a range or an object ending
mid-page), and any chunk the file system refuses direct (``EINVAL``), goes through the
buffered descriptor. Direct and buffered writes never share a page: a direct write covers
whole pages of one chunk only. The kernel keeps both views of the file coherent, and the
final ``fsync`` of the buffered descriptor covers the inode's data either way.

Only when asked (``download_file(direct_io=True)``); off by default. The page cache is what
users of a download tool expect: the finished file is then in memory for whoever reads it
next, and writes never wait for the device, which matters on network file systems and
disks where an ``O_DIRECT`` write is a synchronous round trip. The measured gain above is
real but is a property of the machine, so it is the caller's choice.
"""

from __future__ import annotations

import errno
import mmap
import os
import sys
import threading

from ._crc64 import crc64
from ._fileio import open_destination, write_chunk

__all__ = ["ALIGN", "MAX_CHUNK", "close_quietly", "open_temp", "write_chunk_direct"]

ALIGN = 4096
"""Offset and length alignment of a chunk written with ``O_DIRECT``."""

MAX_CHUNK = 1024 * 1024
"""The largest chunk copied to the aligned buffer; longer ones are written buffered."""

_O_DIRECT = getattr(os, "O_DIRECT", 0)
_buffers = threading.local()


def open_temp(path: str, direct_io: bool = True) -> tuple[int, int, int]:
    """Open (creating) a download's temp file; return its fd, an ``O_DIRECT`` fd of the same
    file or ``-1`` (always ``-1`` unless ``direct_io``), and the file's current size."""
    fd, size = open_destination(path)
    direct = -1
    if direct_io and _O_DIRECT and sys.platform.startswith("linux"):
        try:
            direct = os.open(path, os.O_WRONLY | _O_DIRECT | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            direct = -1  # the file system does not do O_DIRECT: buffered writes only
    return fd, direct, size


def close_quietly(fd: int) -> None:
    """Close ``fd`` if it is one (``-1``: nothing was opened)."""
    if fd >= 0:
        os.close(fd)


def _aligned_buffer() -> mmap.mmap:
    buffer: mmap.mmap | None = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = mmap.mmap(-1, MAX_CHUNK)  # page-aligned, this thread's
    return buffer


def write_chunk_direct(fd: int, direct: int, offset: int, data: bytes, crc: int) -> int:
    """Write ``data`` at ``offset`` (``O_DIRECT`` when aligned, see the module docstring);
    return the CRC-64 continued over it."""
    size = len(data)
    if direct < 0 or offset % ALIGN or size % ALIGN or not 0 < size <= MAX_CHUNK:
        return write_chunk(fd, offset, data, crc)
    buffer = _aligned_buffer()
    buffer[:size] = data
    view = memoryview(buffer)[:size]
    done = 0
    try:
        while done < size:
            try:
                written = os.pwrite(direct, view[done:], offset + done)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                break  # refused direct after all: the rest goes buffered
            if written <= 0 or written % ALIGN:
                done += max(written, 0)
                break  # a short, unaligned write: the rest goes buffered
            done += written
    finally:
        view.release()
    if done < size:
        write_chunk(fd, offset + done, data[done:], 0)
    return crc64(data, crc)
