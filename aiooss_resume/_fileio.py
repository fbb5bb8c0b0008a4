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
* Part data is read with ``os.preadv`` (no shared file position, so concurrent parts need no
  lock and a retry needs no seek) in chunks of ``CHUNK_SIZE``; the CRC-64 of the chunk is
  computed in the same thread job, so the event loop only hands bytes to the socket. The
  buffers are ``_buffers``: anonymous mappings, reused while nothing else holds them.
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

from ._buffers import CHUNK_SIZE, ChunkPool, new_buffer, read_into
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


def _crc_range(fd: int, offset: int, size: int, crc: int = 0) -> int:
    end = offset + size
    buf = new_buffer(min(CHUNK_SIZE * 8, size))  # one buffer for the whole job
    while offset < end:
        n = min(len(buf), end - offset)
        _, crc = read_into(fd, buf, offset, n, crc)
        offset += n
    return crc


class SourceFile:
    """An open source file read by ``preadv`` off the event loop, into reused buffers."""

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
        buf, crc = await self._io.run(read_into, self._fd, self.pool.take(size), offset, size, crc)
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
