"""The ``aiooss-resume`` command line (also ``python -m aiooss_resume``), over the public API.

Theory of operation
-------------------
``main(argv)`` parses the arguments (a usage error exits 1, never 2 as argparse would), runs
the chosen command in ``asyncio.run`` and turns every failure into one line on stderr and an
exit code, never a traceback:

====  =====================================================================================
0     success
1     usage: bad arguments (the subcommand's usage line, then the error), a malformed
      ``oss://`` URL, size or endpoint, ``--routines`` outside 1..1000, no endpoint or
      region configured
2     OSS answered with an error (``ServiceError``: the line names code, message, request id)
3     a local or client-side failure: network, credentials, checkpoint, file changed,
      CRC mismatch, missing file...
4     interrupted (Ctrl-C or SIGTERM) and not resumable (``--no-checkpoint``, or standard
      input with ``upload -``): the upload was aborted, nothing is kept
5     interrupted (Ctrl-C or SIGTERM) and resumable: the checkpoint is kept and the exact
      command that resumes is printed
====  =====================================================================================

An upload runs as its own task; SIGINT/SIGTERM cancel that task, the engine flushes every
acknowledged part to the checkpoint while it unwinds (shielded, bounded), and the command
exits 5 (4 without a checkpoint: the engine aborts the upload instead). A second Ctrl-C
falls back to Python's default handler; its ``KeyboardInterrupt`` ends an upload with the
same codes (``_upload_interrupted_hard``). ``AIOOSS_RESUME_TRACEBACK=1`` adds the traceback of
a failure to its one-line report; it never changes the exit code.

Progress goes to stdout through ``ProgressPrinter``: one live ``\\r`` line on a terminal, a
plain line every few seconds otherwise, or one JSON object per event with ``--json``.

Sizes accept ``B``, ``K``/``KB``/``KiB``, ``M``/``MB``/``MiB``, ``G``/``GB``/``GiB`` and
``T``/``TB``/``TiB``; every multiple is binary (``KB`` = ``KiB`` = 1024), as in ossutil.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import logging
import math
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, TextIO

import msgspec

from . import (
    BytesSent,
    CheckpointError,
    Client,
    Credentials,
    CredentialsError,
    FileChangedError,
    IntegrityError,
    NoSuchUploadError,
    ObjectOptions,
    OssError,
    PartDone,
    PartRetried,
    ProgressEvent,
    ProtocolError,
    ServiceError,
    TransportError,
    UploadCompleted,
    UploadResult,
    UploadStarted,
    __version__,
)
from ._checkpoint import (
    DOWNLOAD_CHECKPOINT_FORMAT,
    STREAM_SOURCE,
    Checkpoint,
    DownloadCheckpoint,
    decode_checkpoint,
    decode_download_checkpoint,
)
from ._cli_many import add_many_arguments, upload_tree
from ._cli_options import add_option_arguments, object_options, option_flags, upload_only_flags
from ._cli_stdin import STDIN, StdinPrinter, add_stdin_arguments, check_stdin_args, upload_stdin
from ._client import validate_bucket_name, validate_key
from ._downloader import DownloadResult, download_checkpoint_path
from ._planner import MAX_PART_SIZE, MIN_PART_SIZE
from ._uploader import MAX_ROUTINES, checkpoint_path_for

__all__ = [
    "EXIT_ABORTED",
    "EXIT_INTERRUPTED",
    "EXIT_LOCAL",
    "EXIT_OK",
    "EXIT_SERVICE",
    "EXIT_USAGE",
    "ProgressPrinter",
    "format_size",
    "main",
    "parse_oss_url",
    "parse_size",
]

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_SERVICE = 2
EXIT_LOCAL = 3
EXIT_ABORTED = 4
EXIT_INTERRUPTED = 5

ENV_ENDPOINT = "OSS_ENDPOINT"
DEFAULT_PART_SIZE = "8MiB"
DEFAULT_ROUTINES = 4

KiB = 1024
MiB = 1024 * KiB

_UNITS = {
    "": 1,
    "b": 1,
    **{f"{p}{s}": 1024 ** (i + 1) for i, p in enumerate("kmgt") for s in ("", "b", "ib")},
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")

_EPILOG = f"""\
exit codes:
  0  success
  1  usage error (bad arguments, malformed oss:// URL, size or endpoint, --routines
     outside 1..{MAX_ROUTINES}, no endpoint, no region)
  2  OSS answered with an error; the line names its code, message and request id
  3  local or client error (network, credentials, checkpoint, file changed, CRC, missing file)
  4  interrupted (Ctrl-C/SIGTERM) and not resumable (--no-checkpoint): the upload was aborted
     (standard input, upload -, is never resumable)
  5  interrupted (Ctrl-C/SIGTERM) and resumable: run the printed command to resume

environment:
  {ENV_ENDPOINT}                          endpoint when --endpoint is not given
  OSS_ACCESS_KEY_ID, OSS_ACCESS_KEY_SECRET, OSS_SESSION_TOKEN   credentials
  ALIBABA_CLOUD_ACCESS_KEY_ID, ..._SECRET, ALIBABA_CLOUD_SECURITY_TOKEN   (second choice)
  OSS_REGION, ALIBABA_CLOUD_REGION_ID           region when --region is not given

sizes: 1048576, 512K, 8MiB, 8MB, 1.5GiB... every multiple is binary (KB = KiB = 1024, as in
ossutil).

try it without a cloud account:  aiooss-resume demo
"""

_UPLOAD_DESCRIPTION = """\
Upload LOCAL_FILE to oss://BUCKET/KEY by multipart upload, resumably.

Resumable by default: a checkpoint is kept beside the file (LOCAL_FILE.cp) while the upload
runs and deleted when it completes. If the upload is interrupted (Ctrl-C, a network failure,
a crash), run the same command again: parts already on OSS, verified by their CRC-64, are not
sent again. --no-checkpoint disables this (an interrupted upload is then aborted).

LOCAL_FILE '-' uploads standard input as it arrives (upload - oss://BUCKET/KEY): it cannot
be read again, so it is not resumable (Ctrl-C aborts the upload, exit 4) and its progress
goes to stderr. -r uploads a directory.
"""


class UsageError(Exception):
    """A usage error found after parsing (exit 1)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 1 (2 means 'OSS refused' here)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# ---------------------------------------------------------------------- small parsers


def parse_size(text: str) -> int:
    """Parse ``8MiB``, ``512K``, ``1.5GB``, ``100000``... into bytes (multiples of 1024)."""
    match = _SIZE_RE.match(text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise ValueError(f"invalid size {text!r}: use a number with B, KiB, MiB, GiB (or KB...)")
    value = float(match.group(1)) * _UNITS[unit]
    if value != int(value):
        raise ValueError(f"invalid size {text!r}: not a whole number of bytes")
    return int(value)


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _routines(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_ROUTINES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_ROUTINES}: {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def parse_oss_url(text: str, *, key_required: bool = True) -> tuple[str, str]:
    """``oss://bucket/key`` -> ``(bucket, key)``; ``key`` may be ``""`` if not required.

    The bucket name and the key are checked as OSS names them (``ValueError`` otherwise),
    so a typo is a usage error before any request, not an OSS error after one.
    """
    if not text.startswith("oss://"):
        raise ValueError(f"expected oss://bucket/key, got {text!r}")
    bucket, _, key = text[len("oss://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {text!r}")
    if key_required and not key:
        raise ValueError(f"no object key in {text!r}: expected oss://{bucket}/KEY")
    try:
        validate_bucket_name(bucket)
        if key:
            validate_key(key)
    except ValueError as exc:
        raise ValueError(f"invalid {text!r}: {exc}") from None
    return bucket, key


def _target(text: str, *, key_required: bool = True) -> tuple[str, str]:
    try:
        return parse_oss_url(text, key_required=key_required)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _parse_headers(items: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header expects NAME:VALUE, got {item!r}")
        headers[name.strip()] = value.strip()
    return headers


def _object_options(
    args: argparse.Namespace, headers: dict[str, str] | None = None
) -> ObjectOptions | None:
    """The typed option flags as ``ObjectOptions``; a bad value is a usage error."""
    try:
        return object_options(args, headers)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _count(n: int, noun: str) -> str:
    """``1 byte``, ``2 bytes``, ``0 parts``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def format_size(n: float) -> str:
    """``67108864`` -> ``64.0 MiB`` (binary multiples, one decimal)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# ---------------------------------------------------------------------- progress

Mode = Literal["live", "plain", "json", "quiet"]


class ProgressPrinter:
    """Renders progress events on ``stream``; pass the instance as ``on_progress``.

    ``live``: one line redrawn with ``\\r`` at most every ``interval`` seconds (a terminal).
    ``plain``: a line every ``interval`` seconds (logs, pipes). ``json``: every event as one
    JSON object per line. ``quiet``: nothing.

    What the numbers mean: ``done`` is the bytes of the parts OSS acknowledged (resumed
    parts included), so it always agrees with the part count next to it; ``in_flight`` is
    what was handed to the network beyond that (``BytesSent`` minus ``done``). The rate is
    this run's acknowledged bytes per second since the printer was created (just before the
    upload starts), the same definition as the final summary's (``summary_line``), which
    takes its seconds from ``elapsed()``.
    """

    def __init__(
        self,
        stream: TextIO,
        mode: Mode,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.mode = mode
        self.interval = interval if interval is not None else (0.1 if mode == "live" else 3.0)
        self.clock = clock
        self.total = 0
        self.done = 0
        self.sent = 0
        self.resumed = 0
        self.parts_done = 0
        self.part_count = 0
        self.completed = False
        self.started_at = clock()
        self.finished_at: float | None = None
        self._acked: set[int] = set()  # part numbers acknowledged in this run
        self._last_draw = -math.inf
        self._line_open = False
        self._last_line: str | None = None  # the status line last written, if still current

    # -- output helpers

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def message(self, text: str) -> None:
        """Print a line of its own, without garbling the live line (redrawn next event)."""
        if self.mode in ("quiet", "json"):
            return
        self._clear()
        self._write(text + "\n")
        self._last_line = None

    def _clear(self) -> None:
        if self._line_open:
            self._write("\r\x1b[K")
            self._line_open = False
            self._last_draw = -math.inf

    def close(self) -> None:
        """End the live line (call when the upload stops, however it stops)."""
        if self._line_open:
            self._write("\n")
            self._line_open = False

    # -- numbers

    @property
    def in_flight(self) -> int:
        """Bytes handed to the network whose part OSS has not acknowledged yet."""
        return 0 if self.completed else max(0, self.sent - self.done)

    def elapsed(self) -> float:
        """Seconds since the printer was created, until ``UploadCompleted`` if it came."""
        end = self.finished_at if self.finished_at is not None else self.clock()
        return max(0.0, end - self.started_at)

    def speed(self) -> float:
        """This run's acknowledged bytes (resumed ones excluded) per second of ``elapsed()``."""
        seconds = self.elapsed()
        return (self.done - self.resumed) / seconds if seconds > 0 else 0.0

    def status_line(self) -> str:
        """``50.0% 32.0 MiB/64.0 MiB 8.0 MiB/s ETA 4.0s parts 4/8, 8.0 MiB in flight``."""
        # An empty file has nothing to count but its one request.
        pct = 100.0 * self.done / self.total if self.total else 100.0 * self.completed
        speed = self.speed()
        if self.completed or (self.total and self.done >= self.total):
            eta = "done"
        elif speed > 0:
            eta = "ETA " + _format_duration((self.total - self.done) / speed)
        else:
            eta = "ETA --"
        line = (
            f"{pct:5.1f}% {format_size(self.done)}/{format_size(self.total)} "
            f"{format_size(speed)}/s {eta} parts {self.parts_done}/{self.part_count}"
        )
        if self.in_flight:
            line += f", {format_size(self.in_flight)} in flight"
        if self.resumed:
            line += f" (resumed {format_size(self.resumed)})"
        return line

    def _draw(self, *, force: bool = False) -> None:
        if self.mode not in ("live", "plain"):
            return
        if not self.completed and (not self.total or self.done >= self.total):
            # Every byte acknowledged but not yet completed (or an empty file): the 100%
            # line is drawn once, by UploadCompleted, with the summary's numbers.
            return
        now = self.clock()
        if not force and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        line = self.status_line()
        if line == self._last_line:
            return  # e.g. the last part's PartDone, then UploadCompleted: draw 100% once
        self._last_line = line
        if self.mode == "live":
            self._write("\r" + line + "\x1b[K")
            self._line_open = True
        else:
            self._write(line + "\n")

    # -- the hook

    def __call__(self, event: ProgressEvent) -> None:
        if self.mode == "json":
            self._write(msgspec.json.encode(event).decode() + "\n")
        if isinstance(event, UploadStarted):
            self._started(event)
        elif isinstance(event, BytesSent):
            self.sent = max(self.sent, event.bytes_done)
            self._draw()
        elif isinstance(event, PartDone):
            self.parts_done = max(self.parts_done, event.parts_done)  # resumed parts included
            if event.part_number not in self._acked:
                # A part sent again (its upload id vanished) is not counted twice.
                self._acked.add(event.part_number)
                self.done = min(self.total, self.done + event.size)
            self._draw()
        elif isinstance(event, PartRetried):
            what = f"part {event.part_number}" if event.part_number else "request"
            self.message(
                f"retrying {what} in {event.delay:.1f}s (attempt {event.attempt + 1}): "
                f"{event.error.splitlines()[0]}"
            )
        elif isinstance(event, UploadCompleted):
            self.completed = True
            self.finished_at = self.clock()
            self.done = self.sent = event.total_bytes
            self.parts_done = self.part_count
            self._draw(force=True)
            self.close()

    def _started(self, event: UploadStarted) -> None:
        self.total = event.total_bytes
        self.part_count = event.part_count
        self.resumed = event.resumed_bytes
        self.done = self.sent = event.resumed_bytes
        self.parts_done = event.resumed_parts
        self._acked.clear()
        if event.resumed:
            self.message(
                f"resumed {_count(event.resumed_bytes, 'byte')} "
                f"({format_size(event.resumed_bytes)}, {event.resumed_parts} of "
                f"{_count(event.part_count, 'part')}) already on OSS, "
                f"upload id {event.upload_id}"
            )
        elif event.upload_id:
            self.message(
                f"uploading {format_size(event.total_bytes)} in "
                f"{_count(event.part_count, 'part')} of {format_size(event.part_size)}, "
                f"upload id {event.upload_id}"
            )
        else:
            self.message(f"uploading {format_size(event.total_bytes)} in one request")
        self._draw(force=True)


def summary_line(result: UploadResult, seconds: float) -> str:
    """The final line: size, parts, seconds, rate, crc64, etag.

    The rate is the bytes sent in this run (resumed ones excluded) per second, as on the
    progress line; pass ``ProgressPrinter.elapsed()`` as ``seconds`` for the same clock.
    """
    head = f"uploaded oss://{result.bucket}/{result.key}: "
    done = result.parts_uploaded + result.parts_resumed
    return _transfer_line(head, result, done, "part", "not sent again", seconds)


def _transfer_line(
    head: str,
    result: UploadResult | DownloadResult,
    parts: int,
    noun: str,
    resumed_note: str,
    seconds: float,
) -> str:
    """A transfer's final line after ``head``: size, parts (or ranges), how many were
    resumed, seconds, the rate of the bytes moved in this run, crc64, etag."""
    moved = result.size - result.bytes_resumed
    speed = moved / seconds if seconds > 0 else 0.0
    line = f"{head}{format_size(result.size)} ({_count(result.size, 'byte')}) in "
    line += _count(parts, noun)
    if result.parts_resumed:
        line += (
            f" ({result.parts_resumed} resumed, {_count(result.bytes_resumed, 'byte')} "
            f"{resumed_note})"
        )
    line += f", {seconds:.2f}s, {format_size(speed)}/s, crc64 {result.crc64}, etag {result.etag}"
    return line


def _summary_json(result: UploadResult | DownloadResult, seconds: float) -> str:
    """The final JSON object: the result, its type's name, seconds and the rate."""
    doc: dict[str, Any] = {"type": type(result).__name__, **msgspec.structs.asdict(result)}
    doc["seconds"] = round(seconds, 3)
    moved = result.size - result.bytes_resumed
    doc["bytes_per_second"] = round(moved / seconds) if seconds > 0 else 0
    return msgspec.json.encode(doc).decode()


class _LogToPrinter(logging.Handler):
    """Library warnings as ``warning: ...`` lines that do not garble the live line."""

    def __init__(self, printer: ProgressPrinter | None, stream: TextIO) -> None:
        super().__init__(logging.WARNING)
        self.printer = printer
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if self.printer is not None:
            self.printer._clear()
        self.stream.write(text + "\n")
        self.stream.flush()


@contextlib.contextmanager
def _library_logging(
    printer: ProgressPrinter | None, stream: TextIO, quiet: bool
) -> Iterator[None]:
    logger = logging.getLogger("aiooss_resume")
    handler = _LogToPrinter(printer, stream)
    if quiet:
        handler.setLevel(logging.ERROR)
    previous = (logger.level, logger.propagate)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.WARNING:
        logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous[0])
        logger.propagate = previous[1]


# ---------------------------------------------------------------------- errors


def describe_error(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one-line message for a failure."""
    if isinstance(exc, ServiceError):
        line = f"OSS error {exc.code or '(no code)'} (HTTP {exc.status})"
        line += f": {exc.message}" if exc.message else ""
        line += f" [request id {exc.request_id or 'none'}"
        line += f", ec {exc.ec}]" if exc.ec else "]"
        return EXIT_SERVICE, line
    kinds: list[tuple[type[BaseException], str]] = [
        (TransportError, "network error"),
        (CredentialsError, "credentials error"),
        (CheckpointError, "checkpoint error"),
        (FileChangedError, "file changed"),
        (IntegrityError, "integrity error"),
        (ProtocolError, "protocol error"),
        (OssError, "error"),
    ]
    for kind, label in kinds:
        if isinstance(exc, kind):
            return EXIT_LOCAL, f"{label}: {exc}"
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        if exc.filename is not None:
            text += f": {exc.filename}"
        return EXIT_LOCAL, f"local error: {text}"
    if isinstance(exc, (ValueError, TypeError)):
        return EXIT_LOCAL, f"invalid value: {exc}"
    return EXIT_LOCAL, f"unexpected {type(exc).__name__}: {exc}"


def _report(exc: BaseException, stderr: TextIO, prog: str) -> int:
    code, line = describe_error(exc)
    stderr.write(f"{prog}: {line}\n")
    for note in getattr(exc, "__notes__", ()):
        stderr.write(f"  {note}\n")
    stderr.flush()
    return code


# ---------------------------------------------------------------------- commands


def _endpoint(args: argparse.Namespace) -> str:
    endpoint: str | None = args.endpoint or os.environ.get(ENV_ENDPOINT) or None
    if not endpoint:
        raise UsageError(f"no endpoint: pass --endpoint URL or set {ENV_ENDPOINT}")
    return endpoint


def _in_cli_terms(problem: str) -> str:
    """A ``Client`` error as the CLI's user should read it: credentials come from the
    environment, not from a ``credentials=`` argument."""
    return problem.replace(
        "pass credentials= instead",
        "set OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET (or ALIBABA_CLOUD_ACCESS_KEY_ID and "
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET) instead",
    )


def _client(args: argparse.Namespace) -> Client:
    """The command's ``Client``; a bad endpoint or a missing region is a usage error."""
    endpoint = _endpoint(args)
    try:
        return Client(
            endpoint, region=args.region or None, signature_version=args.signature_version
        )
    except ValueError as exc:
        problem = _in_cli_terms(str(exc))
    try:
        # Without V4 no region is needed: if that works, the region was the problem.
        Client(endpoint, signature_version="v1")
    except ValueError:
        source = "--endpoint" if args.endpoint else ENV_ENDPOINT
        raise UsageError(f"{source}: {problem}") from None
    if args.region:
        raise UsageError(f"--region {args.region!r}: {problem}")
    raise UsageError(
        "signature version v4 needs a region: pass --region REGION (e.g. --region "
        "cn-hangzhou) or set OSS_REGION"
    )


def _progress_mode(args: argparse.Namespace, stream: TextIO) -> Mode:
    if args.quiet:
        return "quiet"
    if args.json:
        return "json"
    return "live" if stream.isatty() else "plain"


def _resume_command(prog: Sequence[str], args: argparse.Namespace) -> str:
    """The command that resumes, with local paths made absolute so any directory works."""
    cmd = [*prog, "upload", os.path.abspath(args.file), args.target]
    if args.endpoint:
        cmd += ["--endpoint", args.endpoint]
    if args.region:
        cmd += ["--region", args.region]
    cmd += ["--part-size", args.part_size_text, "--routines", str(args.routines)]
    if isinstance(args.checkpoint, str):
        cmd.append(f"--checkpoint={os.path.abspath(args.checkpoint)}")
    if args.checkpoint_dir:
        cmd += ["--checkpoint-dir", os.path.abspath(args.checkpoint_dir)]
    if args.signature_version != "v4":
        cmd += ["--signature-version", args.signature_version]
    for header in args.header:
        cmd += ["--header", header]
    cmd += option_flags(args)  # typed option flags (issues 10.15, 11)
    if args.json:
        cmd.append("--json")
    if args.quiet:
        cmd.append("--quiet")
    return shlex.join(cmd)


class _Interrupt:
    """Cancels a task on the first SIGINT/SIGTERM; a second Ctrl-C is Python's default."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.signal: int | None = None
        self._installed: list[int] = []

    def __enter__(self) -> _Interrupt:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._fire, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # Windows or not the main thread: KeyboardInterrupt still works
            self._installed.append(sig)
        return self

    def _fire(self, sig: int) -> None:
        if self.signal is None:
            self.signal = sig
            self.task.cancel()
        self._uninstall()

    def _uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed.clear()

    def __exit__(self, *exc: object) -> None:
        self._uninstall()


async def _cmd_upload(args: argparse.Namespace, io: _Io) -> int:
    problem = check_stdin_args(args)
    if problem is not None:
        raise UsageError(problem)
    if args.file == STDIN:  # upload - oss://BUCKET/KEY (issue 11 item 3): see _cli_stdin
        return await _upload_stdin(args, io)
    if args.recursive:  # upload -r DIR oss://BUCKET/PREFIX/ (issue 11.2): see _cli_many
        if isinstance(args.checkpoint, str):
            raise UsageError("-r keeps a checkpoint directory: use --checkpoint-dir DIR")
        bucket_name, prefix = _target(args.target, key_required=False)
        return await upload_tree(
            args,
            io.stdout,
            io.stderr,
            _client(args),
            bucket=bucket_name,
            prefix=prefix,
            mode=_progress_mode(args, io.stdout),
            describe=describe_error,
            guard=_Interrupt,
            logging_to=lambda: _library_logging(None, io.stderr, args.quiet),
            resume_command=_resume_command(io.prog, args),
            headers=_parse_headers(args.header),
            options=_object_options(args, _parse_headers(args.header)),
            exit_interrupted=EXIT_INTERRUPTED,
            exit_aborted=EXIT_ABORTED,
        )
    bucket_name, key = _target(args.target)
    headers = _parse_headers(args.header)
    options = _object_options(args, headers)
    if args.checkpoint_dir and args.checkpoint is False:
        raise UsageError("--checkpoint-dir and --no-checkpoint contradict each other")
    if args.checkpoint_dir and isinstance(args.checkpoint, str):
        raise UsageError(
            "--checkpoint PATH and --checkpoint-dir DIR contradict each other: "
            "give the checkpoint's path or its directory, not both"
        )
    checkpoint: bool | str = True if args.checkpoint_dir else args.checkpoint
    mode = _progress_mode(args, io.stdout)
    printer = ProgressPrinter(io.stdout, mode, interval=args.progress_interval)
    client = _client(args)
    async with client:
        bucket = client.bucket(bucket_name)
        task = asyncio.ensure_future(
            bucket.upload_file(
                key,
                args.file,
                args.part_size,
                routines=args.routines,
                checkpoint=checkpoint,
                checkpoint_dir=args.checkpoint_dir,
                headers=headers,
                on_progress=printer,
                options=options,
            )
        )
        with _library_logging(printer, io.stderr, args.quiet), _Interrupt(task) as interrupt:
            try:
                result = await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if interrupt.signal is None or (current is not None and current.cancelling()):
                    raise
                printer.close()
                return _interrupted(args, io, client.endpoint, bucket_name, key, checkpoint)
            finally:
                printer.close()
        seconds = printer.elapsed()  # the clock of the progress line's rate
        if mode == "json":
            io.stdout.write(_summary_json(result, seconds) + "\n")
        elif mode != "quiet":
            io.stdout.write(summary_line(result, seconds) + "\n")
        io.stdout.flush()
    return EXIT_OK


async def _upload_stdin(args: argparse.Namespace, io: _Io) -> int:
    bucket_name, key = _target(args.target)
    headers = _parse_headers(args.header)
    options = _object_options(args, headers)
    printer = StdinPrinter(
        io.stderr, _progress_mode(args, io.stderr), args.progress_interval, format_size
    )
    return await upload_stdin(
        args,
        sys.stdin.buffer,
        io.stdout,
        io.stderr,
        _client(args),
        bucket=bucket_name,
        key=key,
        headers=headers,
        options=options,
        printer=printer,
        guard=_Interrupt,
        logging_to=lambda: _library_logging(None, io.stderr, args.quiet),
        summary=summary_line,
        summary_json=_summary_json,
        exit_aborted=EXIT_ABORTED,
    )


def _interrupted(
    args: argparse.Namespace,
    io: _Io,
    endpoint: str,
    bucket: str,
    key: str,
    checkpoint: bool | str,
) -> int:
    if checkpoint is False:
        # Nothing to resume from: the engine aborted the upload, so rerunning the command
        # starts over; printing it as a "resume" command would promise what it cannot do.
        io.stderr.write(
            "interrupted: not resumable (--no-checkpoint): the upload was aborted and its "
            "parts discarded; running the command again uploads everything\n"
        )
        io.stderr.flush()
        return EXIT_ABORTED
    command = _resume_command(io.prog, args)
    cp_path: str | None
    try:
        cp_path = checkpoint_path_for(
            os.path.abspath(args.file),
            checkpoint,
            args.checkpoint_dir,
            endpoint=endpoint,
            bucket=bucket,
            key=key,
        )
    except (ValueError, CheckpointError):
        cp_path = None
    if cp_path is not None and os.path.exists(cp_path):
        held = ""
        with contextlib.suppress(OSError, CheckpointError):
            cp = decode_checkpoint(Path(cp_path).read_bytes())
            acked = sum(p.size for p in cp.parts)
            held = f" ({_count(len(cp.parts), 'part')}, {_count(acked, 'byte')} acknowledged)"
        io.stderr.write(f"interrupted: the checkpoint is kept at {cp_path}{held}\n")
    else:
        io.stderr.write("interrupted before any part was recorded\n")
    io.stderr.write(f"resume with:\n  {command}\n")
    io.stderr.flush()
    return EXIT_INTERRUPTED


def _upload_interrupted_hard(args: argparse.Namespace, io: _Io) -> int:
    """An upload stopped by ``KeyboardInterrupt`` rather than by the orderly cancel: a second
    Ctrl-C during the cleanup, or a process where the signal handlers could not be installed.
    The documented exit codes hold: 4 when not resumable, 5 and the resume command when
    resumable (issue 10)."""
    try:
        bucket, key = _target(args.target)
        endpoint = _endpoint(args)
    except UsageError:  # cannot happen once the upload ran; be safe all the same
        io.stderr.write("interrupted\n")
        return EXIT_ABORTED if args.checkpoint is False else EXIT_INTERRUPTED
    if args.checkpoint is False or args.file == STDIN:
        why = "standard input" if args.file == STDIN else "--no-checkpoint"
        io.stderr.write(
            f"interrupted: not resumable ({why}); interrupted again while it was "
            "being aborted, the upload may still exist on OSS: list it with "
            f"`aiooss-resume uploads oss://{bucket}/{key}` and abort it with "
            f"`aiooss-resume abort oss://{bucket}/{key} --upload-id ID`\n"
        )
        io.stderr.flush()
        return EXIT_ABORTED
    io.stderr.write("interrupted again while the upload was being stopped\n")
    checkpoint: bool | str = True if args.checkpoint_dir else args.checkpoint
    return _interrupted(args, io, endpoint, bucket, key, checkpoint)


async def _cmd_abort(args: argparse.Namespace, io: _Io) -> int:
    bucket_name, key = _target(args.target)
    async with _client(args) as client:
        await client.bucket(bucket_name).abort_upload(key, args.upload_id)
    if not args.quiet:
        io.stdout.write(f"aborted upload {args.upload_id} of oss://{bucket_name}/{key}\n")
    return EXIT_OK


async def _cmd_uploads(args: argparse.Namespace, io: _Io) -> int:
    bucket_name, prefix = _target(args.target, key_required=False)
    async with _client(args) as client:
        uploads = await client.bucket(bucket_name).list_uploads(prefix)
    if args.json:
        for upload in uploads:
            io.stdout.write(msgspec.json.encode(upload).decode() + "\n")
    elif not uploads:
        io.stdout.write(f"no unfinished multipart uploads under {args.target}\n")
    else:
        io.stdout.write("KEY\tUPLOAD_ID\tINITIATED\n")
        for upload in uploads:
            io.stdout.write(f"{upload.key}\t{upload.upload_id}\t{upload.initiated}\n")
    return EXIT_OK


def _source_state(cp: Checkpoint) -> tuple[bool, str]:
    """Whether the checkpoint's source file is still the one it describes, and how not."""
    try:
        st = os.stat(cp.source.path)
    except FileNotFoundError:
        return False, "missing"
    changes = [
        f"{name} {old} -> {new}"
        for name, old, new in (
            ("size", cp.source.size, st.st_size),
            ("mtime_ns", cp.source.mtime_ns, st.st_mtime_ns),
            ("inode", cp.source.inode, st.st_ino),
            ("device", cp.source.device, st.st_dev),
        )
        if old != new and not (name == "device" and old == 0)
    ]
    if changes:
        return False, "changed (" + ", ".join(changes) + ")"
    return True, "matches (size, mtime, inode)"


class _UploadCheck(msgspec.Struct, kw_only=True):
    """What ListParts said about a checkpoint's upload id."""

    state: Literal["exists", "missing", "unknown"]
    parts: int = 0
    bytes: int = 0
    reason: str = ""  # why it is unknown, or the NoSuchUpload line


async def _check_upload(args: argparse.Namespace, cp: Checkpoint) -> _UploadCheck:
    """Ask OSS (ListParts) whether the checkpoint's upload still exists, and what it holds.

    The request goes to the configured endpoint (``--endpoint``/``OSS_ENDPOINT``, as for
    ``upload``), and only if it is the checkpoint's: a checkpoint is data from disk, and the
    endpoint it names must not receive the environment's credentials on its say-so.
    """
    if args.offline:
        return _UploadCheck(state="unknown", reason="not checked (--offline)")
    endpoint: str | None = args.endpoint or os.environ.get(ENV_ENDPOINT) or None
    if not endpoint:
        return _UploadCheck(
            state="unknown",
            reason=f"could not be checked: no endpoint (pass --endpoint URL or set {ENV_ENDPOINT})",
        )
    try:
        client = Client(
            endpoint,
            region=args.region or None,
            signature_version=args.signature_version,
            connect_timeout=5.0,
        )
    except ValueError as exc:
        reason = _in_cli_terms(str(exc))
        if "region" in reason and not args.region:
            reason = "no region: pass --region REGION or set OSS_REGION"
        return _UploadCheck(state="unknown", reason=f"could not be checked: {reason}")
    if client.endpoint != cp.endpoint:
        return _UploadCheck(
            state="unknown",
            reason=f"not checked: the checkpoint is for {cp.endpoint}, the configured endpoint "
            f"is {client.endpoint}",
        )
    try:
        async with client:
            parts = await client._list_parts(cp.bucket, cp.key, cp.upload_id)
    except NoSuchUploadError as exc:
        return _UploadCheck(state="missing", reason=describe_error(exc)[1])
    except (OssError, OSError) as exc:
        return _UploadCheck(
            state="unknown", reason=f"could not be checked: {describe_error(exc)[1]}"
        )
    return _UploadCheck(state="exists", parts=len(parts), bytes=sum(p.size for p in parts))


def _next_run(cp: Checkpoint, matches: bool, source: str, check: _UploadCheck, count: int) -> str:
    """What the next ``upload`` of this checkpoint's file will really do."""
    if source == "missing":
        return "fails: the source file is missing"
    if not matches:
        return f"starts a new upload and sends all {_count(count, 'part')}: the source changed"
    if check.state == "exists":
        rest = max(0, count - check.parts)
        return (
            f"resumes upload {cp.upload_id}: the {_count(check.parts, 'part')} on OSS are kept "
            f"once their CRC-64 matches the local bytes, the other {rest} sent"
        )
    if check.state == "missing":
        return (
            f"starts a new upload and sends all {_count(count, 'part')}, replacing this "
            f"checkpoint: upload {cp.upload_id} is gone (aborted, completed or expired)"
        )
    return f"resumes if upload {cp.upload_id} still exists on OSS, else starts a new upload"


_STREAM_STATE = (
    "the checkpoint of a stream upload (Bucket.upload_stream): there is no source file to "
    "check, and only a call with the same checkpoint and a reopen= giving the same bytes "
    "resumes it"
)


def _stream_next_run(cp: Checkpoint, check: _UploadCheck) -> str:
    """What the next ``upload_stream(..., checkpoint=, reopen=)`` of this checkpoint does."""
    numbers = {p.number for p in cp.parts}
    first_missing = next(n for n in range(1, len(numbers) + 2) if n not in numbers)
    at = (first_missing - 1) * cp.part_size  # every part but the last is part_size long
    how = "the `upload` command cannot resume it (it has no reopen=)"
    if check.state == "missing":
        return (
            f"upload_stream with reopen= starts a new upload from reopen(0), replacing this "
            f"checkpoint: upload {cp.upload_id} is gone; {how}"
        )
    return (
        f"upload_stream with the same reopen= resumes upload {cp.upload_id} from reopen({at}) "
        f"(if it still exists on OSS, else from reopen(0)); {how}"
    )


def _cmd_status(args: argparse.Namespace, io: _Io) -> int:
    data = Path(args.checkpoint_file).read_bytes()
    if (download := _maybe_download_status(args, io, data)) is not None:
        return download
    try:
        cp = decode_checkpoint(data)
    except CheckpointError as exc:
        raise CheckpointError(
            f"{args.checkpoint_file} is damaged ({exc}); the next run uploads every part again"
        ) from None
    total = cp.source.size
    part_count: int | None = max(1, math.ceil(total / cp.part_size))
    done = sum(p.size for p in cp.parts)
    stream = cp.source.path == STREAM_SOURCE
    matches: bool | None
    if stream:  # upload_stream's: no file to stat, and only its reopen= can resume it
        matches, state = None, _STREAM_STATE
        if total < 0:
            part_count = None
    else:
        matches, state = _source_state(cp)
    check = asyncio.run(_check_upload(args, cp))  # the local part is read before any request
    if stream:
        next_run = _stream_next_run(cp, check)
    else:
        next_run = _next_run(cp, bool(matches), state, check, part_count or 1)
    if args.json:
        doc = {
            "checkpoint": os.path.abspath(args.checkpoint_file),
            "endpoint": cp.endpoint,
            "bucket": cp.bucket,
            "key": cp.key,
            "upload_id": cp.upload_id,
            "created_at": cp.created_at,
            "part_size": cp.part_size,
            "parts_done": len(cp.parts),
            "part_count": part_count,
            "bytes_done": done,
            "total_bytes": total if total >= 0 else None,
            "source": cp.source.path,
            "stream": stream,
            "source_matches": matches,
            "upload_on_oss": msgspec.structs.asdict(check),
            "next_run": next_run,
        }
        io.stdout.write(msgspec.json.encode(doc).decode() + "\n")
        return EXIT_OK
    pct = 100.0 * done / total if total > 0 else 0.0
    of_total = f"{done} of {total} ({pct:.1f}%, {format_size(done)})"
    if total < 0:
        of_total = f"{done} of an unknown size ({format_size(done)})"
    if check.state == "exists":
        on_oss = f"the upload exists, {_count(check.parts, 'part')} ({_count(check.bytes, 'byte')})"
    elif check.state == "missing":
        on_oss = f"no such upload ({check.reason})"
    else:
        on_oss = check.reason
    rows = [
        ("checkpoint", os.path.abspath(args.checkpoint_file)),
        ("target", f"oss://{cp.bucket}/{cp.key} at {cp.endpoint}"),
        ("upload id", cp.upload_id),
        ("created", cp.created_at or "unknown"),
        ("part size", f"{format_size(cp.part_size)} ({_count(cp.part_size, 'byte')})"),
        ("parts done", f"{len(cp.parts)} of {part_count or 'an unknown number'}"),
        ("bytes done", of_total),
        ("source", "a stream (Bucket.upload_stream)" if stream else cp.source.path),
        ("stream" if stream else "source file", state),
        ("on OSS", on_oss),
        ("next run", next_run),
    ]
    for label, value in rows:
        io.stdout.write(f"{label + ':':<12} {value}\n")
    return EXIT_OK


async def _cmd_demo(args: argparse.Namespace, io: _Io) -> int:
    # Imported here: the emulator (aiohttp.web) is only needed by the demo and tests.
    from .testing import Fault, OssServer

    size: int = args.size
    if size < 1 * MiB:
        raise UsageError("--size must be at least 1MiB, so the upload has several parts")
    part_size = max(100 * KiB, min(8 * MiB, (size // 8) // KiB * KiB))
    routines = 4
    out = io.stdout
    mode: Mode = "quiet" if args.quiet else ("live" if out.isatty() else "plain")

    def say(text: str = "") -> None:
        if mode != "quiet":
            out.write(text + "\n")
            out.flush()

    work = Path(tempfile.mkdtemp(prefix="aiooss-resume-demo-"))
    try:
        sample = work / "sample.bin"
        digest = await asyncio.to_thread(_write_random_file, sample, size)
        async with OssServer(root=work / "oss") as server:
            if args.seconds > 0:
                # Slow the emulator down (per part request) so the upload can be watched.
                rate = max(64 * KiB, int(size / routines / args.seconds))
                server.faults.add(
                    Fault(operation="UploadPart", times=None, throttle_bytes_per_sec=rate)
                )
            creds = server.credentials
            say("aiooss-resume demo: a resumable upload against the bundled OSS emulator")
            say(f"  emulator  {server.endpoint} (no cloud account needed; data in {work})")
            say(f"  file      {sample} ({format_size(size)} of random bytes)")
            say(f"  target    oss://demo-bucket/demo/sample.bin, {routines} routines, "
                f"{format_size(part_size)} parts")  # fmt: skip
            client = Client(
                server.endpoint,
                credentials=Credentials(creds.access_key_id, creds.access_key_secret),
                region=server.region,
            )
            async with client:
                bucket = client.bucket("demo-bucket")
                key = "demo/sample.bin"
                say()
                say("1/3 upload, interrupted partway (as if you pressed Ctrl-C)")
                printer = ProgressPrinter(out, mode, interval=None if mode == "live" else 1.0)
                acknowledged = 0

                def first_run(event: ProgressEvent) -> None:
                    nonlocal acknowledged
                    printer(event)
                    if isinstance(event, PartDone):
                        acknowledged += event.size
                        if acknowledged >= 0.4 * size:
                            task.cancel()

                upload_kwargs: dict[str, Any] = {"routines": routines, "checkpoint": True}
                task = asyncio.ensure_future(
                    bucket.upload_file(
                        key, sample, part_size, on_progress=first_run, **upload_kwargs
                    )
                )
                try:
                    await task
                    printer.close()
                    say("    (the upload finished before the interruption: nothing to resume)")
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise
                    printer.close()
                    cp = decode_checkpoint(await asyncio.to_thread(Path(f"{sample}.cp").read_bytes))
                    kept = sum(p.size for p in cp.parts)
                    say(f"    interrupted. The checkpoint {sample}.cp kept {len(cp.parts)} parts "
                        f"({format_size(kept)}) of upload {cp.upload_id};")  # fmt: skip
                    open_uploads = server.list_uploads("demo-bucket")
                    say(f"    OSS still holds the upload ({len(open_uploads)} unfinished). "
                        f"Inspect it with: aiooss-resume status {sample}.cp")  # fmt: skip
                say()
                say("2/3 the same upload again: it resumes from the checkpoint")
                printer = ProgressPrinter(out, mode, interval=None if mode == "live" else 1.0)
                result = await bucket.upload_file(
                    key, sample, part_size, on_progress=printer, **upload_kwargs
                )
                printer.close()
                say("    " + summary_line(result, printer.elapsed()))
                say()
                say("3/3 verify the stored object")
                stored = await asyncio.to_thread(server.read_object, "demo-bucket", key)
                stored_digest = hashlib.sha256(stored).hexdigest()
                if stored_digest != digest:
                    raise IntegrityError(
                        "the stored object differs from the file", expected=0, actual=None
                    )
                say(f"    sha256 {stored_digest} equals the local file's: OK")
        say()
        say(
            "What happened: the first run uploaded parts "
            f"{routines} at a time and wrote each acknowledged part\n"
            "to the checkpoint; cancelling it kept the checkpoint and the upload on OSS. The\n"
            "second run re-checked every recorded part against OSS (ListParts plus the CRC-64\n"
            "of the local bytes), sent only the missing ones, completed the upload and checked\n"
            "the whole object's CRC-64. The same works from the command line:\n"
            "  aiooss-resume upload FILE oss://BUCKET/KEY   (Ctrl-C, then run it again)"
        )
        return EXIT_OK
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)


def _write_random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 4 * MiB))
            digest.update(block)
            f.write(block)
            remaining -= len(block)
    return digest.hexdigest()


def _serve_module() -> Any:
    """The emulator's command line (``aiooss_resume.testing._cli``), or None if absent."""
    try:
        return importlib.import_module("aiooss_resume.testing._cli")
    except ImportError:
        return None


# ---------------------------------------------------------------------- download (issue 12)

_DOWNLOAD_DESCRIPTION = """\
Download oss://BUCKET/KEY to LOCAL_FILE in Range GETs, resumably.

The bytes go to LOCAL_FILE.tmp, renamed over LOCAL_FILE once the whole object's CRC-64
matched: LOCAL_FILE is never a half file. Resumable by default: a checkpoint is kept beside
the file (LOCAL_FILE.dcp) while the download runs and deleted when it completes. If the
download is interrupted (Ctrl-C, a network failure, a crash), run the same command again:
the ranges already written are not fetched again, if the object did not change. LOCAL_FILE
may be a directory (or end with /): the file is then named after the key.
--no-checkpoint disables this (an interrupted download is then discarded).
"""


class _DownloadPrinter(ProgressPrinter):
    """The progress printer with a download's words (the events are the upload's types)."""

    def _started(self, event: UploadStarted) -> None:
        self.total = event.total_bytes
        self.part_count = event.part_count
        self.resumed = event.resumed_bytes
        self.done = self.sent = event.resumed_bytes
        self.parts_done = event.resumed_parts
        self._acked.clear()
        if event.resumed:
            self.message(
                f"resumed {_count(event.resumed_bytes, 'byte')} "
                f"({format_size(event.resumed_bytes)}, {event.resumed_parts} of "
                f"{_count(event.part_count, 'range')}) already downloaded"
            )
        else:
            self.message(
                f"downloading {format_size(event.total_bytes)} in "
                f"{_count(event.part_count, 'range')} of {format_size(event.part_size)}"
            )
        self._draw(force=True)


def download_summary_line(result: DownloadResult, seconds: float) -> str:
    """The final line of a download: size, ranges, seconds, rate, crc64, etag."""
    head = f"downloaded oss://{result.bucket}/{result.key} to {result.file_path}: "
    ranges = result.parts_downloaded + result.parts_resumed
    return _transfer_line(head, result, ranges, "range", "not fetched again", seconds)


def _download_dest(file: str, key: str) -> str:
    """LOCAL_FILE, or ``LOCAL_FILE/<last part of the key>`` if it is (or names) a directory."""
    if file.endswith(("/", os.sep)) or os.path.isdir(file):
        name = key.rsplit("/", 1)[-1]
        if not name:
            raise UsageError(f"the key {key!r} ends with '/': give the local file name")
        return os.path.join(file, name)
    return file


def _download_resume_command(prog: Sequence[str], args: argparse.Namespace) -> str:
    """The command that resumes the download, with absolute local paths."""
    cmd = [*prog, "download", args.source, os.path.abspath(args.file)]
    if args.endpoint:
        cmd += ["--endpoint", args.endpoint]
    if args.region:
        cmd += ["--region", args.region]
    cmd += ["--part-size", args.part_size_text, "--routines", str(args.routines)]
    if isinstance(args.checkpoint, str):
        cmd.append(f"--checkpoint={os.path.abspath(args.checkpoint)}")
    if args.checkpoint_dir:
        cmd += ["--checkpoint-dir", os.path.abspath(args.checkpoint_dir)]
    if args.signature_version != "v4":
        cmd += ["--signature-version", args.signature_version]
    cmd += option_flags(args)  # --traffic-limit (issues 10.15, 11)
    if getattr(args, "direct_io", False):
        cmd.append("--direct-io")
    if args.json:
        cmd.append("--json")
    if args.quiet:
        cmd.append("--quiet")
    return shlex.join(cmd)


def _download_interrupted(args: argparse.Namespace, io: _Io, cp_path: str | None) -> int:
    if cp_path is None:
        io.stderr.write(
            "interrupted: not resumable (--no-checkpoint): the partial download was "
            "discarded; running the command again downloads everything\n"
        )
        io.stderr.flush()
        return EXIT_ABORTED
    if os.path.exists(cp_path):
        held = ""
        with contextlib.suppress(OSError, CheckpointError):
            cp = decode_download_checkpoint(Path(cp_path).read_bytes())
            written = sum(p.size for p in cp.parts)
            held = f" ({_count(len(cp.parts), 'range')}, {_count(written, 'byte')} written)"
        io.stderr.write(f"interrupted: the checkpoint is kept at {cp_path}{held}\n")
    else:
        io.stderr.write("interrupted before any range was recorded\n")
    io.stderr.write(f"resume with:\n  {_download_resume_command(io.prog, args)}\n")
    io.stderr.flush()
    return EXIT_INTERRUPTED


def _cmd_download(args: argparse.Namespace, io: _Io) -> Coroutine[Any, Any, int]:
    """Check the arguments (file system included) before the loop runs, then download."""
    bucket_name, key = _target(args.source)
    if args.checkpoint_dir and args.checkpoint is False:
        raise UsageError("--checkpoint-dir and --no-checkpoint contradict each other")
    if args.checkpoint_dir and isinstance(args.checkpoint, str):
        raise UsageError(
            "--checkpoint PATH and --checkpoint-dir DIR contradict each other: "
            "give the checkpoint's path or its directory, not both"
        )
    args.file = _download_dest(args.file, key)
    args.options = _object_options(args)  # --traffic-limit only
    checkpoint: bool | str = True if args.checkpoint_dir else args.checkpoint
    try:
        cp_path = download_checkpoint_path(
            os.path.abspath(args.file), checkpoint, args.checkpoint_dir
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return _download(args, io, bucket_name, key, checkpoint, cp_path)


async def _download(
    args: argparse.Namespace,
    io: _Io,
    bucket_name: str,
    key: str,
    checkpoint: bool | str,
    cp_path: str | None,
) -> int:
    mode = _progress_mode(args, io.stdout)
    printer = _DownloadPrinter(io.stdout, mode, interval=args.progress_interval)
    async with _client(args) as client:
        task = asyncio.ensure_future(
            client.bucket(bucket_name).download_file(
                key,
                args.file,
                args.part_size,
                routines=args.routines,
                checkpoint=checkpoint,
                checkpoint_dir=args.checkpoint_dir,
                on_progress=printer,
                options=args.options,
                direct_io=getattr(args, "direct_io", False),  # not on `cp` (the upload parser)
            )
        )
        with _library_logging(printer, io.stderr, args.quiet), _Interrupt(task) as interrupt:
            try:
                result = await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if interrupt.signal is None or (current is not None and current.cancelling()):
                    raise
                printer.close()
                return _download_interrupted(args, io, cp_path)
            finally:
                printer.close()
    seconds = printer.elapsed()
    if mode == "json":
        io.stdout.write(_summary_json(result, seconds) + "\n")
    elif mode != "quiet":
        io.stdout.write(download_summary_line(result, seconds) + "\n")
    io.stdout.flush()
    return EXIT_OK


def _cp_handler(upload: Callable[[argparse.Namespace, _Io], Any]) -> Callable[..., Any]:
    """``cp SOURCE DEST``: a download if SOURCE is an ``oss://`` URL, else ``upload``."""

    def handler(args: argparse.Namespace, io: _Io) -> Any:
        if args.command != "cp" or not args.file.startswith("oss://"):
            if args.command == "cp" and not args.target.startswith("oss://"):
                raise UsageError("cp: SOURCE or DEST must be an oss://BUCKET/KEY URL")
            return upload(args, io)
        if args.target.startswith("oss://"):
            raise UsageError("cp: copying from OSS to OSS is not supported; DEST must be local")
        if args.header:
            raise UsageError("--header applies to uploads only")
        if upload_only_flags(args):
            raise UsageError(f"{', '.join(upload_only_flags(args))} apply to uploads only")
        if getattr(args, "recursive", False):
            raise UsageError("-r applies to uploads only")
        args.source, args.file = args.file, args.target
        return _cmd_download(args, io)

    return handler


def _download_status(args: argparse.Namespace, io: _Io, cp: DownloadCheckpoint) -> int:
    """``status`` of a download checkpoint (``.dcp``): what it holds, read locally."""
    done = sum(p.size for p in cp.parts)
    part_count = max(1, math.ceil(cp.size / cp.part_size)) if cp.size else 0
    checkpoint = os.path.abspath(args.checkpoint_file)
    temp = checkpoint[: -len(".dcp")] + ".tmp" if checkpoint.endswith(".dcp") else None
    temp_size = os.path.getsize(temp) if temp is not None and os.path.isfile(temp) else None
    if temp is None:
        temp_state = "unknown (the checkpoint is not named FILE.dcp)"
    elif temp_size is None and part_count and len(cp.parts) == part_count:
        temp_state = (
            f"{temp} is missing and every range is done (killed after the rename?): the next "
            f"run finishes if {temp[: -len('.tmp')]}'s CRC-64 is the object's"
        )
    elif temp_size is None:
        temp_state = f"{temp} is missing: the next run downloads every range again"
    else:
        temp_state = f"{temp} ({_count(temp_size, 'byte')})"
    if args.json:
        doc = {
            "checkpoint": checkpoint,
            "kind": "download",
            "endpoint": cp.endpoint,
            "bucket": cp.bucket,
            "key": cp.key,
            "etag": cp.etag,
            "crc64": cp.crc64,
            "part_size": cp.part_size,
            "parts_done": len(cp.parts),
            "part_count": part_count,
            "bytes_done": done,
            "total_bytes": cp.size,
            "temp_file": temp,
            "temp_file_size": temp_size,
        }
        io.stdout.write(msgspec.json.encode(doc).decode() + "\n")
        return EXIT_OK
    pct = 100.0 * done / cp.size if cp.size else 0.0
    rows = [
        ("checkpoint", checkpoint + " (a download)"),
        ("source", f"oss://{cp.bucket}/{cp.key} at {cp.endpoint}"),
        ("object", f"etag {cp.etag}, crc64 {cp.crc64}, last modified {cp.last_modified}"),
        ("part size", f"{format_size(cp.part_size)} ({_count(cp.part_size, 'byte')})"),
        ("ranges done", f"{len(cp.parts)} of {part_count}"),
        ("bytes done", f"{done} of {cp.size} ({pct:.1f}%, {format_size(done)})"),
        ("temp file", temp_state),
        (
            "next run",
            "fetches the other ranges if the object is unchanged (same ETag, size, "
            "CRC-64), else downloads it all again",
        ),
    ]
    for label, value in rows:
        io.stdout.write(f"{label + ':':<12} {value}\n")
    return EXIT_OK


def _maybe_download_status(args: argparse.Namespace, io: _Io, data: bytes) -> int | None:
    """The status of a download checkpoint, or None if ``data`` is not one."""
    try:
        cp = decode_download_checkpoint(data)
    except CheckpointError as exc:
        if not _is_download_checkpoint(args.checkpoint_file, data):
            return None
        raise CheckpointError(
            f"{args.checkpoint_file} is a damaged download checkpoint ({exc}); "
            "the next download fetches every range again"
        ) from None
    return _download_status(args, io, cp)


def _is_download_checkpoint(path: str, data: bytes) -> bool:
    """Whether a checkpoint that does not decode is a download's: its envelope names the
    download format, or its name ends in ``.dcp`` and it is no valid upload checkpoint."""
    if f'"format":"{DOWNLOAD_CHECKPOINT_FORMAT}"'.encode() in data[:256]:
        return True
    if not path.endswith(".dcp"):
        return False
    try:
        decode_checkpoint(data)
    except CheckpointError:
        return True
    return False


def _add_download_commands(
    sub: Any, upload: argparse.ArgumentParser, fmt: type[argparse.HelpFormatter]
) -> None:
    """The ``download`` command, and ``cp`` choosing its direction from its arguments."""
    dl = sub.add_parser(
        "download",
        help="download an object, resumably",
        description=_DOWNLOAD_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    dl.add_argument("source", metavar="oss://BUCKET/KEY")
    dl.add_argument("file", metavar="LOCAL_FILE")
    _add_connection_args(dl)
    dl.add_argument(
        "--part-size",
        dest="part_size_text",
        default=DEFAULT_PART_SIZE,
        metavar="SIZE",
        help=f"range size, 100KiB..5GiB (default {DEFAULT_PART_SIZE})",
    )
    dl.add_argument(
        "--routines",
        type=_routines,
        default=DEFAULT_ROUTINES,
        metavar="N",
        help=f"ranges fetched concurrently, 1..{MAX_ROUTINES} (default {DEFAULT_ROUTINES})",
    )
    cp = dl.add_mutually_exclusive_group()
    cp.add_argument(
        "--checkpoint",
        nargs="?",
        const=True,
        default=True,
        metavar="PATH",
        help="keep the checkpoint at PATH (default: on, at LOCAL_FILE.dcp); "
        "write --checkpoint=PATH or put it after the positional arguments",
    )
    cp.add_argument(
        "--no-checkpoint",
        dest="checkpoint",
        action="store_false",
        help="not resumable: an interrupted download is discarded",
    )
    dl.add_argument("--checkpoint-dir", metavar="DIR", help="keep the checkpoint in DIR (FILE.dcp)")
    out = dl.add_mutually_exclusive_group()
    out.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    out.add_argument("--json", action="store_true", help="one JSON object per event per line")
    dl.add_argument(
        "--progress-interval",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="seconds between progress lines (default 0.1 on a terminal, else 3)",
    )
    add_option_arguments(dl, download=True)  # --traffic-limit (issues 10.15, 11)
    dl.add_argument(
        "--direct-io",
        action="store_true",
        help="write the file around the page cache (O_DIRECT, Linux, where the file system "
        "takes it); off by default: see docs/downloading.md",
    )
    dl.set_defaults(handler=_cmd_download, parser=dl)
    # cp stays the upload parser's alias (its options, and any an upload hook adds); only
    # the handler looks at the direction.
    upload.set_defaults(handler=_cp_handler(upload.get_default("handler")))


# ---------------------------------------------------------------------- parser


def _add_connection_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--endpoint", help=f"OSS endpoint URL (default: ${ENV_ENDPOINT})")
    group.add_argument("--region", help="region id for V4 signing (default: $OSS_REGION...)")
    group.add_argument(
        "--signature-version", choices=("v1", "v4"), default="v4", help="default: v4"
    )


def build_parser(prog: str = "aiooss-resume") -> argparse.ArgumentParser:
    """The argument parser of every command."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=prog,
        description="Resumable multipart uploads to Alibaba Cloud OSS.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = sub.add_parser(
        "upload",
        aliases=["cp"],
        help="upload a file, resumably (cp SOURCE DEST: upload, or download from oss://)",
        description=_UPLOAD_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    up.add_argument("file", metavar="LOCAL_FILE")
    up.add_argument("target", metavar="oss://BUCKET/KEY")
    _add_connection_args(up)
    up.add_argument(
        "--part-size",
        dest="part_size_text",
        default=DEFAULT_PART_SIZE,
        metavar="SIZE",
        help=f"part size, 100KiB..5GiB (default {DEFAULT_PART_SIZE}; grown to fit 10,000 parts)",
    )
    up.add_argument(
        "--routines",
        type=_routines,
        default=DEFAULT_ROUTINES,
        metavar="N",
        help=f"parts uploaded concurrently, 1..{MAX_ROUTINES} (default {DEFAULT_ROUTINES})",
    )
    cp = up.add_mutually_exclusive_group()
    cp.add_argument(
        "--checkpoint",
        nargs="?",
        const=True,
        default=True,
        metavar="PATH",
        help="keep the checkpoint at PATH (default: on, at LOCAL_FILE.cp); "
        "write --checkpoint=PATH or put it after the positional arguments",
    )
    cp.add_argument(
        "--no-checkpoint",
        dest="checkpoint",
        action="store_false",
        help="not resumable: an interrupted upload is aborted",
    )
    up.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="keep the checkpoint in DIR, named after the file and the target",
    )
    up.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="object metadata or option, e.g. Content-Type:text/plain (repeatable)",
    )
    out = up.add_mutually_exclusive_group()
    out.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    out.add_argument("--json", action="store_true", help="one JSON object per event per line")
    up.add_argument(
        "--progress-interval",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="seconds between progress lines (default 0.1 on a terminal, else 3)",
    )
    add_option_arguments(up)  # typed object options (issues 10.15, 11, _cli_options)
    add_many_arguments(up)  # upload -r DIR (issue 11.2, _cli_many)
    add_stdin_arguments(up, _size_arg)  # upload - oss://BUCKET/KEY (issue 11 item 3)
    up.set_defaults(handler=_cmd_upload, parser=up)

    ab = sub.add_parser(
        "abort",
        help="abort an unfinished multipart upload, discarding its parts",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    ab.add_argument("target", metavar="oss://BUCKET/KEY")
    ab.add_argument("--upload-id", required=True, metavar="ID")
    _add_connection_args(ab)
    ab.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    ab.set_defaults(handler=_cmd_abort, parser=ab)

    ls = sub.add_parser(
        "uploads",
        help="list unfinished multipart uploads (key, upload id, initiated)",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    ls.add_argument("target", metavar="oss://BUCKET[/PREFIX]")
    _add_connection_args(ls)
    ls.add_argument("--json", action="store_true", help="one JSON object per upload per line")
    ls.set_defaults(handler=_cmd_uploads, parser=ls)

    st = sub.add_parser(
        "status",
        help="show what a checkpoint holds, whether its source file still matches and "
        "whether its upload still exists on OSS (ListParts)",
        description="Show what CHECKPOINT holds and what the next run of its upload will "
        "do. The upload id is checked with ListParts, with the endpoint, credentials and "
        "region of the environment (as for upload), if that endpoint is the checkpoint's; "
        "otherwise, or with --offline, the status says it could not be checked.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    st.add_argument("checkpoint_file", metavar="CHECKPOINT")
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.add_argument(
        "--offline", action="store_true", help="do not ask OSS whether the upload still exists"
    )
    _add_connection_args(st)
    st.set_defaults(handler=_cmd_status, parser=st)

    demo = sub.add_parser(
        "demo",
        help="a real interrupted-and-resumed upload against the bundled emulator",
        description="Start the bundled OSS emulator, upload a random file with 4 routines, "
        "interrupt the upload partway, show the checkpoint, resume it to completion and "
        "verify the stored bytes. Needs no cloud account and no network.",
        formatter_class=fmt,
    )
    demo.add_argument(
        "--size", type=_size_arg, default=64 * MiB, metavar="SIZE", help="default 64MiB"
    )
    demo.add_argument(
        "--seconds",
        type=_seconds,
        default=4.0,
        metavar="S",
        help="throttle the emulator so a whole upload takes about S seconds (0: full speed)",
    )
    demo.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    demo.set_defaults(handler=_cmd_demo, parser=demo)

    _add_download_commands(sub, up, fmt)

    serve_cli = _serve_module()
    serve = sub.add_parser(
        "serve",
        help="run the bundled OSS emulator (for tests and trying things out)",
        add_help=serve_cli is not None,
    )
    if serve_cli is not None:
        serve_cli.add_serve_arguments(serve)
    else:
        serve.add_argument("rest", nargs=argparse.REMAINDER)
    serve.set_defaults(handler=None)
    return parser


# ---------------------------------------------------------------------- entry point


class _Io:
    def __init__(self, stdout: TextIO, stderr: TextIO, prog: Sequence[str]) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.prog = list(prog)


def _invocation() -> list[str]:
    """How this process was started, for the printed resume command."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "aiooss-resume"
    if os.path.basename(argv0) in ("__main__.py", "-m", "-c"):
        return [sys.executable, "-m", "aiooss_resume"]
    name = os.path.basename(argv0)
    found = shutil.which(name)
    if found and os.path.abspath(found) == os.path.abspath(argv0):
        return [name]
    return [argv0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    prog = _invocation()
    display = "python -m aiooss_resume" if prog[-1] == "aiooss_resume" else "aiooss-resume"
    parser = build_parser(display)
    try:
        args = parser.parse_args(args_list)
        if args.command == "serve":
            serve_cli = _serve_module()
            if serve_cli is None:
                sys.stderr.write("aiooss-resume: the emulator's command line is not installed\n")
                return EXIT_LOCAL
            index = args_list.index("serve")
            return int(serve_cli.serve_main(args_list[index + 1 :]) or 0)
        command_parser: argparse.ArgumentParser = args.parser
        if getattr(args, "part_size_text", None) is not None:
            try:
                args.part_size = parse_size(args.part_size_text)
            except ValueError as exc:
                command_parser.error(f"--part-size: {exc}")
            if not MIN_PART_SIZE <= args.part_size <= MAX_PART_SIZE:
                command_parser.error(
                    f"--part-size {args.part_size_text} ({args.part_size} bytes) is out of "
                    f"range: OSS accepts parts of 100KiB ({MIN_PART_SIZE} bytes) to 5GiB "
                    f"({MAX_PART_SIZE} bytes)"
                )
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    io = _Io(sys.stdout, sys.stderr, prog)
    name = parser.prog
    try:
        handler = args.handler
        outcome = handler(args, io)
        code: int = asyncio.run(outcome) if asyncio.iscoroutine(outcome) else outcome
        return code
    except UsageError as exc:
        # As argparse reports its own errors: the subcommand's usage line, then the error.
        command_parser.print_usage(sys.stderr)
        sys.stderr.write(f"{command_parser.prog}: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        if getattr(args, "command", None) == "upload":
            return _upload_interrupted_hard(args, io)
        sys.stderr.write(f"{name}: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get("AIOOSS_RESUME_TRACEBACK"):
            # For a bug report: the traceback too, but the same exit code and line as without.
            traceback.print_exception(exc, file=sys.stderr)
        return _report(exc, sys.stderr, name)
