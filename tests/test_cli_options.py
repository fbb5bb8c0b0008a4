"""``aiooss-resume upload`` options, each checked for what it promises, through a subprocess.

Where the checkpoint goes (``--checkpoint PATH``, ``--checkpoint-dir DIR``, not both), the
``--part-size`` range, ``--signature-version v1``, ``--header`` landing on the object, and
the progress output on a real terminal (a pseudo-terminal) and off one.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from aiooss_resume._cli import EXIT_OK, EXIT_SERVICE, EXIT_USAGE
from aiooss_resume.testing import Fault, ThreadedOssServer

from .emulator_helpers import oss_request
from .test_cli import CLI, assert_no_traceback, cli_env, make_file, run

KiB = 1024
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals and signals")


@pytest.fixture
def oss(tmp_path: Path) -> Iterator[ThreadedOssServer]:
    with ThreadedOssServer(root=tmp_path / "oss") as srv:
        yield srv


def fail_part_3(server: ThreadedOssServer) -> None:
    """Parts 1 and 2 are acknowledged (and checkpointed), part 3 is refused for good."""
    server.faults.add(
        Fault(operation="UploadPart", part_number=3, times=None, status=403, code="AccessDenied")
    )


UPLOAD_OPTS = ["--part-size", "100KiB", "--routines", "1"]


# ---------------------------------------------------------------------- where the checkpoint is


def test_checkpoint_path_and_checkpoint_dir_together_is_a_usage_error(
    oss: ThreadedOssServer, tmp_path: Path
) -> None:
    src = tmp_path / "f.bin"
    make_file(src, 300 * KiB)
    cp_dir = tmp_path / "cps"
    cp_dir.mkdir()
    for order in (
        [f"--checkpoint={tmp_path / 'x.cp'}", "--checkpoint-dir", str(cp_dir)],
        ["--checkpoint-dir", str(cp_dir), f"--checkpoint={tmp_path / 'x.cp'}"],
    ):
        proc = run("upload", str(src), "oss://bkt/k", *UPLOAD_OPTS, *order, env=cli_env(oss))
        assert proc.returncode == EXIT_USAGE, proc.stderr
        assert_no_traceback(proc)
        assert "--checkpoint PATH and --checkpoint-dir DIR" in proc.stderr
        # The subcommand's usage, then one error line (as argparse reports its own errors).
        assert proc.stderr.startswith("usage: python -m aiooss_resume upload ")
        error_lines = [line for line in proc.stderr.splitlines() if ": error: " in line]
        assert len(error_lines) == 1 and "--checkpoint PATH" in error_lines[0]
    assert oss.requests == []  # refused before any request
    assert not list(cp_dir.iterdir()) and not (tmp_path / "x.cp").exists()
    # A bare --checkpoint (the default, on) with --checkpoint-dir is not a conflict.
    proc = run(
        "upload", str(src), "oss://bkt/k", "--checkpoint", "--checkpoint-dir", str(cp_dir),
        "-q", env=cli_env(oss),
    )  # fmt: skip
    assert proc.returncode == EXIT_OK, proc.stderr


def test_checkpoint_path_is_where_the_checkpoint_is_kept(
    oss: ThreadedOssServer, tmp_path: Path
) -> None:
    src = tmp_path / "f.bin"
    data = make_file(src, 400 * KiB)
    cp = tmp_path / "elsewhere" / "my.cp"
    cp.parent.mkdir()
    args = ["upload", str(src), "oss://bkt/p", *UPLOAD_OPTS, f"--checkpoint={cp}"]
    fail_part_3(oss)
    proc = run(*args, env=cli_env(oss))
    assert proc.returncode == EXIT_SERVICE, proc.stderr
    assert str(cp) in proc.stderr  # the note says where the checkpoint is
    assert cp.exists()
    assert not Path(f"{src}.cp").exists()  # not at the default place
    status = run("status", str(cp), env=cli_env(oss))
    assert "parts done:  2 of 4" in status.stdout, status.stdout

    oss.faults.clear()
    again = run(*args, env=cli_env(oss))
    assert again.returncode == EXIT_OK, again.stderr
    assert "resumed 204800 bytes" in again.stdout  # it read the checkpoint at PATH
    assert oss.read_object("bkt", "p") == data
    assert not cp.exists()


def test_checkpoint_dir_is_where_the_checkpoint_is_kept(
    oss: ThreadedOssServer, tmp_path: Path
) -> None:
    src = tmp_path / "f.bin"
    data = make_file(src, 400 * KiB)
    cp_dir = tmp_path / "cps"
    cp_dir.mkdir()
    args = ["upload", str(src), "oss://bkt/d", *UPLOAD_OPTS, "--checkpoint-dir", str(cp_dir)]
    fail_part_3(oss)
    proc = run(*args, env=cli_env(oss))
    assert proc.returncode == EXIT_SERVICE, proc.stderr
    kept = list(cp_dir.iterdir())
    assert len(kept) == 1 and kept[0].suffix == ".cp", kept
    assert kept[0].name.startswith("f.bin.")  # named after the file (and the target)
    assert str(kept[0]) in proc.stderr
    assert not Path(f"{src}.cp").exists()
    status = run("status", str(kept[0]), env=cli_env(oss))
    assert "target:      oss://bkt/d" in status.stdout, status.stdout
    assert "parts done:  2 of 4" in status.stdout

    oss.faults.clear()
    again = run(*args, env=cli_env(oss))
    assert again.returncode == EXIT_OK, again.stderr
    assert "resumed 204800 bytes" in again.stdout
    assert oss.read_object("bkt", "d") == data
    assert not list(cp_dir.iterdir())


# ---------------------------------------------------------------------- part size range


@pytest.mark.parametrize("size", ["50KiB", "102399", "6GiB", "0"])
def test_part_size_out_of_range_is_a_usage_error(
    oss: ThreadedOssServer, tmp_path: Path, size: str
) -> None:
    src = tmp_path / "f.bin"
    make_file(src, 10 * KiB)
    proc = run("upload", str(src), "oss://bkt/k", "--part-size", size, env=cli_env(oss))
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert_no_traceback(proc)
    assert "usage:" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert f"--part-size {size}" in last and "out of range" in last
    assert "100KiB" in last and "5GiB" in last
    assert oss.requests == []


def test_part_size_bounds_are_accepted(oss: ThreadedOssServer, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    data = make_file(src, 250 * KiB)
    for size, key in (("100KiB", "lo"), ("5GiB", "hi")):
        proc = run("upload", str(src), f"oss://bkt/{key}", "--part-size", size, env=cli_env(oss))
        assert proc.returncode == EXIT_OK, proc.stderr
        assert oss.read_object("bkt", key) == data


# ---------------------------------------------------------------------- signing and headers


def test_signature_version_v1_upload(oss: ThreadedOssServer, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    data = make_file(src, 300 * KiB)
    # A region the emulator does not serve: V4 signs it into its scope and is refused, V1
    # does not sign a region at all. So only a real V1 upload can succeed here.
    env = cli_env(oss, OSS_REGION="cn-nowhere")
    v4 = run("upload", str(src), "oss://bkt/v4", "--part-size", "100KiB", env=env)
    assert v4.returncode == EXIT_SERVICE, v4.stderr
    v1 = run(
        "upload", str(src), "oss://bkt/v1", "--part-size", "100KiB",
        "--signature-version", "v1", env=env,
    )  # fmt: skip
    assert v1.returncode == EXIT_OK, v1.stderr
    assert "in 3 parts" in v1.stdout
    assert oss.read_object("bkt", "v1") == data


def test_headers_are_stored_on_the_object(oss: ThreadedOssServer, tmp_path: Path) -> None:
    src = tmp_path / "f.csv"
    make_file(src, 250 * KiB)
    proc = run(
        "upload", str(src), "oss://bkt/h.csv", "--part-size", "100KiB",
        "--header", "Content-Type:text/csv",
        "--header", "x-oss-meta-owner: data team",
        "--header", "Content-Disposition:attachment; filename=h.csv",
        env=cli_env(oss),
    )  # fmt: skip
    assert proc.returncode == EXIT_OK, proc.stderr

    async def head() -> tuple[int, dict[str, str]]:
        async with aiohttp.ClientSession() as session:
            reply = await oss_request(session, oss, "HEAD", "h.csv", bucket="bkt")
        return reply.status, {k.lower(): v for k, v in reply.headers.items()}

    status, headers = asyncio.run(head())
    assert status == 200
    assert headers["content-type"] == "text/csv"
    assert headers["x-oss-meta-owner"] == "data team"
    assert headers["content-disposition"] == "attachment; filename=h.csv"
    assert headers["content-length"] == str(250 * KiB)


# ---------------------------------------------------------------------- progress output


def run_on_a_pty(
    args: list[str], env: dict[str, str], *, timeout: float = 30
) -> tuple[int, bytes, str]:
    """Run the CLI with its stdout on a pseudo-terminal; (exit code, terminal bytes, stderr)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*CLI, *args], env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE
        )
    finally:
        os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:  # EIO: the child closed the terminal's last writer
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            out += chunk
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    return code, bytes(out), err


def test_live_progress_line_on_a_terminal(oss: ThreadedOssServer, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    data = make_file(src, 500 * KiB)
    # Every part held a little, so the line is redrawn several times while it runs.
    oss.faults.add(Fault(operation="UploadPart", times=None, delay=0.05))
    args = ["upload", str(src), "oss://bkt/tty", *UPLOAD_OPTS, "--progress-interval", "0"]
    code, out, err = run_on_a_pty(args, cli_env(oss))
    assert code == EXIT_OK, err
    text = out.decode()
    assert "Traceback" not in text + err
    lines = text.split("\r\n")  # the terminal turns each "\n" into "\r\n"
    assert lines[0].startswith("uploading 500.0 KiB in 5 parts of 100.0 KiB, upload id ")
    live = lines[1]
    draws = [d.removesuffix("\x1b[K") for d in live.split("\r") if d]
    assert all(d.endswith("\x1b[K") for d in live.split("\r") if d), live
    assert len(draws) >= 5, draws  # redrawn in place: one terminal line, many states
    assert draws[0].startswith("  0.0% 0 B/500.0 KiB")
    for n in range(1, 6):
        assert any(f"parts {n}/5" in d for d in draws), (n, draws)
    # The final state is drawn once, not repeated by the completion event.
    final = [d for d in draws if d.startswith("100.0%") and "parts 5/5" in d]
    assert len(final) == 1, draws
    assert draws[-1] == final[0] and "done" in final[0]
    assert lines[2].startswith("uploaded oss://bkt/tty: 500.0 KiB (512000 bytes) in 5 parts")
    assert oss.read_object("bkt", "tty") == data


def test_plain_progress_lines_off_a_terminal(oss: ThreadedOssServer, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    make_file(src, 500 * KiB)
    proc = run(
        "upload", str(src), "oss://bkt/plain", *UPLOAD_OPTS, "--progress-interval", "0",
        env=cli_env(oss),
    )  # fmt: skip
    assert proc.returncode == EXIT_OK, proc.stderr
    assert "\r" not in proc.stdout and "\x1b" not in proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("uploading 500.0 KiB in 5 parts")
    assert lines[-1].startswith("uploaded oss://bkt/plain")
    progress = lines[1:-1]
    assert len(progress) >= 5
    percents = [float(line.split("%", 1)[0]) for line in progress]
    assert percents == sorted(percents) and percents[0] == 0.0 and percents[-1] == 100.0
    assert sum("parts 5/5" in line and "done" in line for line in progress) == 1
