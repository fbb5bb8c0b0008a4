"""``aiooss-resume upload - oss://BUCKET/KEY``: standard input through ``upload_stream``.

Like ``aws s3 cp - s3://...``: the bytes piped in are uploaded as they arrive, in parts of
``--part-size`` (at most ``--routines + 1`` parts held in memory); a stream that ends within
its first part goes up with one PutObject, so an empty stdin makes an empty object.
``--size N`` states the length when known (the part size then grows to fit 10,000 parts,
and a stream of another length fails with ``StreamLengthError``, nothing stored).

Standard input cannot be read again, so the upload is not resumable: there is no checkpoint
(``--checkpoint PATH`` and ``--checkpoint-dir`` are usage errors with ``-``), and Ctrl-C or
SIGTERM aborts the multipart upload (no parts left on OSS) and exits 4, printing no resume
command. The progress line goes to stderr (stdout keeps the summary). ``_cli`` owns the
parser and the process and hands over what this module cannot import (it sits below
``_cli``): the client, the interrupt guard, the logging context and the summary renderers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import select
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, BinaryIO, Protocol, TextIO

import msgspec

from ._client import Client
from ._events import BytesSent, PartDone, ProgressEvent, UploadCompleted
from ._headers import ObjectOptions
from ._upload_plan import UploadResult

__all__ = ["STDIN", "StdinPrinter", "add_stdin_arguments", "check_stdin_args", "upload_stdin"]

STDIN = "-"
"""The ``LOCAL_FILE`` that means standard input."""

_POLL = 0.1  # seconds: how soon a stopped upload's reading thread notices


class _Guard(Protocol):
    signal: int | None

    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: object) -> None: ...


def add_stdin_arguments(parser: argparse.ArgumentParser, size_type: Callable[[str], int]) -> None:
    """The ``upload`` option that only standard input takes (``--size``)."""
    group = parser.add_argument_group("standard input (upload - oss://BUCKET/KEY)")
    group.add_argument(
        "--size",
        dest="stdin_size",
        type=size_type,
        default=None,
        metavar="SIZE",
        help="the exact length of stdin, if known: the part size grows to fit 10,000 parts "
        "and another length fails (nothing stored); only with '-'",
    )


def check_stdin_args(args: argparse.Namespace) -> str | None:
    """The usage error these arguments make (None if none): ``--size`` needs ``-``; a
    checkpoint and ``-r`` cannot apply to standard input."""
    if args.file != STDIN:
        return (
            "--size applies to standard input only (upload - oss://BUCKET/KEY)"
            if (args.stdin_size is not None)
            else None
        )
    if getattr(args, "recursive", False):
        return "-r uploads a directory; '-' is standard input"
    if isinstance(args.checkpoint, str) or args.checkpoint_dir:
        return (
            "standard input cannot be read again, so its upload cannot resume: "
            "--checkpoint PATH and --checkpoint-dir do not apply to '-' (an interrupted "
            "upload is aborted)"
        )
    return None


class _StdinReader:
    """Standard input read as the bytes arrive, and a read that can be given up.

    ``read(n)`` returns what the pipe holds (at least one byte; ``b""`` at the end), not
    ``n`` bytes, so a slow producer's parts go up as they fill. It runs in the library's
    worker threads (``upload_stream``), never on the event loop. A cancelled upload stops
    waiting for it at once, but a blocked ``read`` would keep the process from exiting
    until the producer writes or closes the pipe; so on POSIX the thread waits with
    ``select`` in short slices and gives up once ``stop()`` is called.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._stop = threading.Event()
        self._fd: int | None = None
        if os.name == "posix":
            with contextlib.suppress(AttributeError, OSError, ValueError):
                self._fd = raw.fileno()

    def stop(self) -> None:
        """Make a ``read`` waiting in its thread give up (within ``_POLL`` seconds)."""
        self._stop.set()

    def read(self, n: int, /) -> bytes:
        if self._fd is None:  # not a real descriptor (or not POSIX): a plain blocking read
            read1 = getattr(self._raw, "read1", None)
            return bytes(read1(n) if read1 is not None else self._raw.read(n))
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], _POLL)
            if ready:
                return os.read(self._fd, n)
        raise InterruptedError("standard input is no longer read: the upload stopped")


class StdinPrinter:
    """The progress line of a stream of unknown length: bytes acknowledged, rate, parts.

    ``live`` redraws one line (``\\r``) at most every ``interval`` seconds, ``plain`` writes
    a line every ``interval`` seconds, ``json`` one JSON object per event, ``quiet`` nothing.
    """

    def __init__(
        self, stream: TextIO, mode: str, interval: float | None, size: Callable[[float], str]
    ) -> None:
        self.stream = stream
        self.mode = mode
        self.interval = interval if interval is not None else (0.1 if mode == "live" else 3.0)
        self.size = size
        self.started = time.monotonic()
        self.finished: float | None = None
        self.done = 0
        self.sent = 0
        self.parts = 0
        self._last = -math.inf
        self._open = False

    def elapsed(self) -> float:
        """Seconds since the printer was created, until the upload completed."""
        end = self.finished if self.finished is not None else time.monotonic()
        return max(0.0, end - self.started)

    def __call__(self, event: ProgressEvent) -> None:
        if self.mode == "json":
            self.stream.write(msgspec.json.encode(event).decode() + "\n")
            self.stream.flush()
            return
        if isinstance(event, BytesSent):
            self.sent = max(self.sent, event.bytes_done)
        elif isinstance(event, PartDone):
            self.parts = max(self.parts, event.parts_done)
            self.done += event.size
        elif isinstance(event, UploadCompleted):
            self.finished = time.monotonic()
            return
        else:
            return
        now = time.monotonic()
        if self.mode in ("live", "plain") and now - self._last >= self.interval:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        seconds = self.elapsed()
        rate = self.done / seconds if seconds > 0 else 0.0
        line = f"{self.size(self.done)} from stdin {self.size(rate)}/s parts {self.parts}"
        if self.sent > self.done:
            line += f", {self.size(self.sent - self.done)} in flight"
        if self.mode == "live":
            self.stream.write("\r" + line + "\x1b[K")
            self._open = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the live line."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


async def upload_stdin(
    args: argparse.Namespace,
    stdin: BinaryIO,
    stdout: TextIO,
    stderr: TextIO,
    client: Client,
    *,
    bucket: str,
    key: str,
    headers: dict[str, str] | None,
    options: ObjectOptions | None,
    printer: StdinPrinter,
    guard: Callable[[asyncio.Task[Any]], _Guard],
    logging_to: Callable[[], AbstractContextManager[Any]],
    summary: Callable[[UploadResult, float], str],
    summary_json: Callable[[UploadResult, float], str],
    exit_aborted: int,
) -> int:
    """Run ``upload -``; returns the exit code (0, or ``exit_aborted`` after Ctrl-C)."""
    if printer.mode != "quiet" and stdin.isatty():
        stderr.write("reading the object from the terminal: end it with Ctrl-D\n")
        stderr.flush()
    reader = _StdinReader(stdin)
    async with client:
        task = asyncio.ensure_future(
            client.bucket(bucket).upload_stream(
                key,
                reader,
                args.part_size,
                routines=args.routines,
                size=args.stdin_size,
                headers=headers,
                options=options,
                on_progress=printer,
            )
        )
        with logging_to(), guard(task) as interrupt:
            try:
                result = await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if interrupt.signal is None or (current is not None and current.cancelling()):
                    raise
                printer.close()
                stderr.write(
                    "interrupted: standard input cannot be read again, so this upload "
                    "cannot resume: it was aborted and nothing is stored under the key\n"
                )
                stderr.flush()
                return exit_aborted
            finally:
                reader.stop()  # a thread still waiting for stdin gives up: the process can end
                printer.close()
    if printer.mode == "json":
        stdout.write(summary_json(result, printer.elapsed()) + "\n")
    elif printer.mode != "quiet":
        stdout.write(summary(result, printer.elapsed()) + "\n")
    stdout.flush()
    return 0
