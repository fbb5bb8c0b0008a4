"""Every blocking file operation of the library, run off the event loop.

Theory of operation
-------------------
* All blocking calls go through ``IoRunner``: ``anyio.to_thread.run_sync`` with a *dedicated*
  ``CapacityLimiter``. anyio's default limiter (40 threads) is shared with the host
  application (FastAPI runs every sync endpoint on it), so an upload never competes with, or
  starves, the app's own thread work.
* A worker thread cannot be interrupted, but the task awaiting it can: a native
  ``task.cancel()`` stops the wait at once while the thread goes on (anyio shields the wait
  only from its own cancel scopes). So nothing acquired in a thread may be lost with the
  wait (``IoRunner.run_owned`` releases what an abandoned acquisition got), a job whose end
  matters after its awaiter left is tracked by a ``ThreadJob``, and long work is split into
  bounded jobs with cancellation points between them (``SourceFile.crc_range``).
* Part data is read with ``os.pread`` (no shared file position, so concurrent parts need no
  lock and a retry needs no seek) in chunks of ``CHUNK_SIZE``; the CRC-64 of the chunk is
  computed in the same thread job, so the event loop only hands bytes to the socket.
* Checkpoints are replaced atomically: write a temporary file in the same directory, fsync
  it, ``os.replace`` it over the old one, fsync the directory. A crash at any instant leaves
  either the old or the new checkpoint, never a torn one.
* A checkpoint is guarded by an advisory ``flock`` on ``<checkpoint>.lock``, so a second
  process (or a second task) resuming the same checkpoint gets ``CheckpointError`` instead
  of interleaving writes.
* No checkpoint path is ever followed through a symbolic link: an upload run as root must
  not be steered into creating or overwriting a file elsewhere by a link planted beside the
  source. The lock and the temporary file are opened with ``O_NOFOLLOW``, the checkpoint is
  read with ``O_NOFOLLOW``, and a link at the checkpoint path is refused (``CheckpointError``)
  rather than replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import mmap
import os
import secrets
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

# anyio imports its asyncio backend on first use, which would stall the event loop for
# ~20 ms inside the first upload: the first import below pays that at import time instead.
import anyio
import anyio._backends._asyncio
import anyio.lowlevel
import anyio.to_thread

from ._checkpoint import SourceIdentity
from ._crc64 import crc64
from ._errors import CheckpointError

if sys.platform != "win32":  # pragma: no branch
    import fcntl

__all__ = [
    "CHUNK_SIZE",
    "CRC_JOB_SIZE",
    "CheckpointLock",
    "ChunkPool",
    "IoRunner",
    "SourceFile",
    "ThreadJob",
    "read_optional",
    "refuse_symlink",
    "remove_quietly",
    "stat_identity",
    "write_atomic",
]

CHUNK_SIZE = 1024 * 1024
"""Read size per thread job: the main throughput lever (performance notes: 64 KiB -> 1 MiB
took aiohttp from ~630 to ~1,350 MiB/s) while keeping memory at routines x ~2 MiB (a part's
next chunk is read while the current one is sent: ``_upload_body.READ_AHEAD``)."""

CRC_JOB_SIZE = 64 * 1024 * 1024
"""Bytes CRC'd per thread job when verifying a resume. A job cannot be interrupted and anyio's
cancel scopes wait for it, so this bounds cancellation latency (64 MiB: ~10 ms from the page
cache, well under a second from a disk) while keeping the per-job overhead negligible."""

_T = TypeVar("_T")


class IoRunner:
    """Runs blocking callables in worker threads bounded by the library's own limiter."""

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError("io_threads must be >= 1")
        self._threads = threads
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        # Created lazily: a CapacityLimiter binds to the running event loop's backend.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._threads)
        return self._limiter

    async def run(
        self, func: Callable[..., _T], *args: object, abandon_on_cancel: bool = False
    ) -> _T:
        """Run ``func(*args)`` in a worker thread and return its result.

        anyio cancel scopes wait for the thread unless ``abandon_on_cancel``; a native
        ``task.cancel()`` always stops the wait at once (the thread goes on regardless).
        """
        return await anyio.to_thread.run_sync(
            func, *args, limiter=self.limiter, abandon_on_cancel=abandon_on_cancel
        )

    async def run_owned(self, acquire: Callable[[], _T], release: Callable[[_T], None]) -> _T:
        """Run ``acquire`` in a worker thread; what it acquired is never leaked.

        If the caller stops waiting (cancellation) before the result is handed over, the
        result is given to ``release``: in the worker thread if it is still running, here
        otherwise. Once this returns, the caller owns the result.
        """
        guard = threading.Lock()
        abandoned = False
        handed: list[_T] = []

        def job() -> _T:
            result = acquire()
            with guard:
                if not abandoned:
                    handed.append(result)
                    return result
            release(result)  # the caller went away while we were acquiring
            return result

        try:
            return await self.run(job)
        except BaseException:
            with guard:
                abandoned = True
                orphan = handed[:]
            for result in orphan:  # acquired and handed over, but never received
                release(result)
            raise


class ThreadJob:
    """One call in a worker thread whose end stays known after its awaiter gave up.

    Run the call as ``io.run(job.run, func, *args, abandon_on_cancel=True)`` and call
    ``job.abandon()`` once that returns or raises. The call then either ran to its end, or
    never starts (it was abandoned before a thread picked it up). ``wait()`` returns when
    that is settled (cancelling the waiter does not affect the job) and ``call_when_done``
    runs a callback then: in the worker thread, or at once if it is already settled.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._guard = threading.Lock()
        self._started = False
        self._settled = False
        self._callbacks: list[Callable[[], None]] = []
        self._finished: asyncio.Future[None] = self._loop.create_future()

    @property
    def done(self) -> bool:
        with self._guard:
            return self._settled

    def run(self, func: Callable[..., _T], *args: object) -> _T | None:
        """In the worker thread: run ``func(*args)`` unless the job was abandoned already."""
        with self._guard:
            if self._settled:
                return None
            self._started = True
        try:
            return func(*args)
        finally:
            self._settle(in_loop=False)

    def abandon(self) -> None:
        """On the loop, after the awaiter returned or gave up: settle a job never started."""
        with self._guard:
            if self._started:
                return
        self._settle(in_loop=True)

    def _settle(self, *, in_loop: bool) -> None:
        with self._guard:
            if self._settled:
                return
            self._settled = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
        if in_loop:
            self._mark_finished()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(self._mark_finished)

    def _mark_finished(self) -> None:
        if not self._finished.done():
            self._finished.set_result(None)

    def call_when_done(self, callback: Callable[[], None]) -> None:
        with self._guard:
            if not self._settled:
                self._callbacks.append(callback)
                return
        callback()

    async def wait(self) -> None:
        """Return once the call has ended or will never run."""
        if not self._finished.done():
            await asyncio.shield(self._finished)


def stat_identity(path: str) -> SourceIdentity:
    """The identity of a regular file (absolute path, size, mtime_ns, inode, device)."""
    absolute = os.path.abspath(path)
    st = os.stat(absolute)
    return SourceIdentity(
        path=absolute, size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino, device=st.st_dev
    )


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
    against the benchmark sink from ~2,100 to ~2,700 MiB/s and the client from 0.57 to
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

    def clear(self) -> None:
        self._free.clear()

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


def _read_into(fd: int, buf: Buffer | None, offset: int, size: int, crc: int) -> tuple[Buffer, int]:
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


def _crc_range(fd: int, offset: int, size: int, crc: int = 0) -> int:
    end = offset + size
    buf = new_buffer(min(CHUNK_SIZE * 8, size))  # one buffer for the whole job
    while offset < end:
        n = min(len(buf), end - offset)
        _, crc = _read_into(fd, buf, offset, n, crc)
        offset += n
    return crc


class SourceFile:
    """An open source file read by ``pread`` off the event loop, into reused buffers."""

    def __init__(self, fd: int, io: IoRunner, *, keep: int = 8) -> None:
        self._fd = fd
        self._io = io
        self.pool = ChunkPool(keep)

    @classmethod
    async def open(cls, path: str, io: IoRunner, *, keep: int = 8) -> SourceFile:
        """Open ``path`` for reading; a cancellation meanwhile closes what was opened.

        ``keep``: read buffers kept for reuse (about two per part in flight).
        """
        flags = os.O_RDONLY | getattr(os, "O_BINARY", 0)
        fd = await io.run_owned(functools.partial(os.open, path, flags), os.close)
        return cls(fd, io, keep=keep)

    async def read(self, offset: int, size: int, crc: int) -> tuple[memoryview, int]:
        """Read exactly ``size`` bytes at ``offset``; return them and the continued CRC.

        The chunk is a ``memoryview`` of a pooled buffer: hand it to ``pool.give`` once it
        has been passed on, and never change it.
        """
        buf, crc = await self._io.run(_read_into, self._fd, self.pool.take(size), offset, size, crc)
        return memoryview(buf)[:size], crc

    async def crc_range(self, offset: int, size: int) -> int:
        """CRC-64 of a byte range (for resume verification), in worker-thread jobs of at
        most ``CRC_JOB_SIZE`` bytes with a cancellation point between them."""
        crc = 0
        end = offset + size
        while offset < end:
            n = min(CRC_JOB_SIZE, end - offset)
            crc = await self._io.run(_crc_range, self._fd, offset, n, crc)
            offset += n
            if offset < end:
                await anyio.lowlevel.checkpoint_if_cancelled()
        return crc

    async def identity(self, path: str) -> SourceIdentity:
        return await self._io.run(stat_identity, path)

    async def aclose(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            # os.close of a regular file does not block meaningfully; closing inline also
            # works during cancellation, when awaiting a thread would be interrupted.
            os.close(fd)
        await self.pool.release()


def _fsync_dir(directory: str) -> None:
    if sys.platform == "win32":  # pragma: no cover - directories cannot be fsynced there
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def refuse_symlink(path: str) -> None:
    """Raise ``CheckpointError`` if ``path`` itself is a symbolic link (a missing path is fine)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CheckpointError(
            f"cannot use checkpoint path {path!r}: {exc.strerror or exc}"
        ) from exc
    if stat.S_ISLNK(st.st_mode):
        raise CheckpointError(
            f"{path!r} is a symbolic link; checkpoint and lock files are never followed "
            "through links (remove it, or pass the real path as checkpoint=)"
        )


def write_atomic(path: str, data: bytes | bytearray) -> None:
    """Replace ``path`` with ``data`` atomically and durably (tmp, fsync, rename, dir fsync).

    A symbolic link at ``path`` is refused (``CheckpointError``), never replaced or followed.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(
        directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    )
    refuse_symlink(path)
    # O_EXCL already refuses an existing link; O_NOFOLLOW says so explicitly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def read_optional(path: str) -> bytes | None:
    """A checkpoint's bytes, or None if it does not exist.

    Anything else that stops the read is a ``CheckpointError``: no permission, a symbolic
    link (never followed), something that is not a regular file (a FIFO would block).
    """
    flags = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_symlink(path)  # raises the clear message when it is a link
        raise CheckpointError(f"cannot read checkpoint {path!r}: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CheckpointError(f"checkpoint {path!r} is not a regular file")
        chunks: list[bytes] = []
        while chunk := os.read(fd, 1024 * 1024):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def remove_quietly(path: str) -> None:
    """Remove a file; a missing file is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class CheckpointLock:
    """An exclusive, non-blocking advisory lock on ``<checkpoint>.lock``.

    ``acquire`` also proves the checkpoint's directory is writable (creating it if needed),
    so an unusable location fails before anything is uploaded.
    """

    def __init__(self, checkpoint_path: str) -> None:
        self.path = checkpoint_path + ".lock"
        self._fd = -1

    def acquire(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(
                f"cannot create the checkpoint directory {directory!r}: {exc.strerror or exc}"
            ) from exc
        refuse_symlink(self.path[: -len(".lock")])
        while True:
            try:
                # O_NOFOLLOW: a link planted at <checkpoint>.lock must not make us create
                # (or truncate) a file wherever it points.
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    refuse_symlink(self.path)
                raise CheckpointError(
                    f"cannot write a checkpoint at {self.path[:-5]!r}: {exc.strerror or exc}"
                ) from exc
            if sys.platform == "win32":  # pragma: no cover - no flock; best effort only
                self._fd = fd
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise CheckpointError(
                        f"checkpoint {self.path[:-5]!r} is in use by another upload "
                        "(its lock is held); wait for it to finish or stop it first"
                    ) from None
                raise CheckpointError(f"cannot lock {self.path!r}: {exc}") from exc
            # The previous holder may have unlinked the lock file after we opened it: make
            # sure the locked inode is still the one at the path, else try again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                self._sweep_temporaries()
                return
            os.close(fd)

    def _sweep_temporaries(self) -> None:
        # A process killed inside write_atomic leaves its temporary file behind; holding the
        # lock, we are the only writer of this checkpoint, so any such file is garbage.
        checkpoint = self.path[: -len(".lock")]
        directory, name = os.path.split(checkpoint)
        prefix = f".{name}."
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory or "."):
                if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
                    try:
                        os.unlink(entry.path)
                    except FileNotFoundError:
                        pass
                    except OSError as exc:  # a cleanup that fails is said, never silent
                        logging.getLogger("aiooss_resume").warning(
                            "stale temporary file %s not removed: %s", entry.path, exc
                        )

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(fd)


# ---------------------------------------------------------------------- download destination


def open_destination(path: str) -> tuple[int, int]:
    """Open (creating) a download's temp file for writing; return its fd and current size."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
    return fd, os.fstat(fd).st_size


def write_chunk(fd: int, offset: int, data: bytes, crc: int) -> int:
    """``pwrite`` all of ``data`` at ``offset``; return the CRC-64 continued over it."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
    return crc64(data, crc)


def finish_destination(fd: int, tmp: str, path: str, size: int) -> None:
    """Trim to ``size``, fsync, close, rename over ``path`` and fsync the directory."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))
