"""``aiooss-resume upload -r DIR oss://BUCKET/PREFIX/``: a directory under one budget.

``_cli`` owns the parser and the process; it calls ``add_many_arguments`` on its ``upload``
parser and hands ``upload -r`` to ``upload_tree`` with what this module cannot import (it
sits below ``_cli``): the client, ``describe_error``, the interrupt guard and the resume
command. Output: one aggregate progress line (bytes, files, rate, ETA), redrawn in place on
a terminal, every few seconds otherwise, or every ``FileFinished``/``ManyProgress`` event as
one JSON object per line with ``--json``; then a summary line, and one line per failed or
missing file on stderr. The exit code is the worst outcome's: 0 when every file is uploaded,
unchanged or skipped; otherwise the code ``describe_error`` gives the worst failure (2 for an
OSS error, 3 for a local one); a missing file counts as a local problem (3).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shlex
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, TextIO

import msgspec

from ._client import Client
from ._headers import ObjectOptions
from ._many_types import FileFinished, ManyEvent, ManyProgress, ManyResult
from ._walk import compile_glob

__all__ = ["add_many_arguments", "default_checkpoint_dir", "upload_tree"]

EXIT_LOCAL = 3  # as in _cli: the codes are the command line's contract (docs/cli.md)


class _Guard(Protocol):
    signal: int | None

    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: object) -> None: ...


def _files_in_flight(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"must be within 1..10000, got {value}")
    return value


def _glob(text: str) -> str:
    try:
        compile_glob(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_many_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``upload`` options for directories (``-r``)."""
    group = parser.add_argument_group("directories (upload -r DIR oss://BUCKET/PREFIX/)")
    group.add_argument(
        "-r", "--recursive", action="store_true", help="upload the directory LOCAL_FILE"
    )
    group.add_argument(
        "--include",
        action="append",
        default=[],
        type=_glob,
        metavar="GLOB",
        help="only matching files (repeatable)",
    )
    group.add_argument(
        "--exclude",
        action="append",
        default=[],
        type=_glob,
        metavar="GLOB",
        help="leave matching files and directories out (repeatable)",
    )
    group.add_argument(
        "--sync",
        "--skip-existing",
        dest="sync",
        action="store_true",
        help="skip files whose object has the same size and CRC-64 (HEAD)",
    )
    group.add_argument(
        "--follow-symlinks", action="store_true", help="follow symbolic links (loops skipped)"
    )
    group.add_argument(
        "--normalize", choices=["NFC", "NFD"], default=None, help="Unicode form of the keys"
    )
    group.add_argument(
        "--files-in-flight",
        type=_files_in_flight,
        default=8,
        metavar="N",
        help="files handled at once, 1..10000 (default 8); --routines is shared by all",
    )
    group.add_argument("--fail-fast", action="store_true", help="stop at the first file that fails")


def default_checkpoint_dir(
    root: str, checkpoint_dir: str | None, endpoint: str, bucket: str, prefix: str
) -> str:
    """``<DIR>.cp``, or ``<checkpoint_dir>/<name>.<digest>.cp`` named after the transfer."""
    root = os.path.abspath(root)
    if checkpoint_dir is None:
        return root.rstrip(os.sep) + ".cp"
    doc = f"{root}\n{endpoint}\n{bucket}\n{prefix}".encode("utf-8", "surrogatepass")
    name = os.path.basename(root.rstrip(os.sep)) or "root"
    return os.path.join(checkpoint_dir, f"{name}.{hashlib.sha256(doc).hexdigest()[:12]}.cp")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


class _Printer:
    """The aggregate progress line (see the module docstring)."""

    def __init__(self, stream: TextIO, mode: str, interval: float | None) -> None:
        self.stream = stream
        self.mode = mode
        self.interval = interval if interval is not None else (0.1 if mode == "live" else 3.0)
        self.last = 0.0
        self.drawn = False
        self.started = time.monotonic()

    def __call__(self, event: ManyEvent) -> None:
        if self.mode == "json":
            if isinstance(event, (FileFinished, ManyProgress)):
                self.stream.write(msgspec.json.encode(event).decode() + "\n")
        elif self.mode in ("live", "plain") and isinstance(event, ManyProgress):
            now = time.monotonic()
            if now - self.last >= self.interval:
                self.last = now
                self._draw(event)

    def _draw(self, p: ManyProgress) -> None:
        total = f"/{_size(p.bytes_total)}" if p.bytes_total is not None else ""
        pct = f"{100 * p.bytes_done / p.bytes_total:5.1f}% " if p.bytes_total else ""
        files = f"files {p.files_done}" + (f"/{p.files_total}" if p.files_total else "")
        rate = p.bytes_sent / p.elapsed if p.elapsed > 0 else 0.0
        eta = f" ETA {p.eta:.0f}s" if p.eta is not None else ""
        failed = f" ({p.files_failed} failed)" if p.files_failed else ""
        line = f"{pct}{_size(p.bytes_done)}{total} {_size(rate)}/s{eta} {files}{failed}"
        if self.mode == "live":
            self.stream.write("\r" + line + "\x1b[K")
            self.drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def _summary(result: ManyResult, target: str) -> str:
    sent = result.bytes_uploaded
    rate = sent / result.seconds if result.seconds > 0 else 0.0
    parts = [
        f"uploaded {result.count('uploaded')} files ({_size(sent)}) to {target}",
        f"{result.count('unchanged')} unchanged",
        f"{result.count('skipped')} skipped",
        f"{result.count('missing')} missing",
        f"{result.count('failed')} failed",
    ]
    if result.stopped:
        parts.append(f"stopped by --fail-fast ({result.count('cancelled')} cancelled)")
    return ", ".join(parts) + f", {result.seconds:.2f}s, {_size(rate)}/s"


async def upload_tree(
    args: argparse.Namespace,
    stdout: TextIO,
    stderr: TextIO,
    client: Client,
    *,
    bucket: str,
    prefix: str,
    mode: str,
    describe: Callable[[BaseException], tuple[int, str]],
    guard: Callable[[asyncio.Task[Any]], _Guard],
    logging_to: Callable[[], AbstractContextManager[Any]],
    resume_command: str,
    headers: dict[str, str] | None,
    exit_interrupted: int,
    exit_aborted: int,
    options: ObjectOptions | None = None,
) -> int:
    """Run ``upload -r``; returns the exit code (see the module docstring)."""
    if prefix and not prefix.endswith("/"):
        prefix += "/"  # as upload_dir does: the prefix names a "directory"
    cp_dir = None
    if args.checkpoint is not False:
        cp_dir = default_checkpoint_dir(
            args.file, args.checkpoint_dir, client.endpoint, bucket, prefix
        )
    printer = _Printer(stdout, mode, args.progress_interval)
    target = f"oss://{bucket}/{prefix}"
    async with client:
        task = asyncio.ensure_future(
            client.bucket(bucket).upload_dir(
                prefix,
                args.file,
                args.part_size,
                include=args.include,
                exclude=args.exclude,
                follow_symlinks=args.follow_symlinks,
                normalize=args.normalize,
                routines=args.routines,
                files_in_flight=args.files_in_flight,
                checkpoint_dir=cp_dir,
                sync=args.sync,
                fail_fast=args.fail_fast,
                headers=headers,
                on_progress=printer,
                keep_outcomes=False,  # the summary needs the counts and the problems only
                options=options,
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
                if cp_dir is None:
                    stderr.write("interrupted: not resumable (--no-checkpoint)\n")
                    return exit_aborted
                stderr.write(f"interrupted: the checkpoint directory is kept at {cp_dir}\n")
                stderr.write(f"resume with:\n  {resume_command} {_extra_args(args)}\n")
                return exit_interrupted
            finally:
                printer.close()
    if mode != "quiet":
        stdout.write(_summary(result, target) + "\n")
        stdout.flush()
    return _report_outcomes(result, stderr, describe, cp_dir)


def _report_outcomes(
    result: ManyResult,
    stderr: TextIO,
    describe: Callable[[BaseException], tuple[int, str]],
    cp_dir: str | None,
) -> int:
    code = 0
    for outcome in result.outcomes:
        where = f"{outcome.path or '(gone)'} -> {outcome.key}"
        if outcome.status == "failed":
            error = outcome.error or RuntimeError(outcome.reason)
            worst, line = describe(error)
            code = max(code, worst)
            stderr.write(f"failed: {where}: {line}\n".encode(errors="replace").decode())
        elif outcome.status == "missing":
            code = max(code, EXIT_LOCAL)
            stderr.write(f"missing: {where}: {outcome.reason}\n".encode(errors="replace").decode())
    if code and cp_dir is not None and os.path.isdir(cp_dir):
        stderr.write(f"run the same command again to retry; progress is kept in {cp_dir}\n")
    stderr.flush()
    return code


def _extra_args(args: argparse.Namespace) -> str:
    extra = ["-r"]
    for glob in args.include:
        extra += ["--include", glob]
    for glob in args.exclude:
        extra += ["--exclude", glob]
    for flag, on in (
        ("--sync", args.sync),
        ("--follow-symlinks", args.follow_symlinks),
        ("--fail-fast", args.fail_fast),
    ):
        if on:
            extra.append(flag)
    if args.normalize:
        extra += ["--normalize", args.normalize]
    extra += ["--files-in-flight", str(args.files_in_flight)]
    return shlex.join(extra)
