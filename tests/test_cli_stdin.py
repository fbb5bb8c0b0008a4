"""``aiooss-resume upload - oss://BUCKET/KEY``: standard input through ``upload_stream``
(issue 11 item 3), by piping bytes into a real subprocess against the emulator.

Byte-exact objects (one PutObject, or a multipart upload), an empty stdin making an empty
object, ``--size`` mapped to ``size=``, the typed option flags, the usage errors (a
checkpoint cannot apply to stdin), and Ctrl-C aborting the upload: exit 4, no resume
command, no open upload left on OSS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiooss_resume._cli import EXIT_ABORTED, EXIT_LOCAL, EXIT_OK, EXIT_USAGE
from aiooss_resume.testing import Fault, ThreadedOssServer

from .test_cli import CLI, assert_no_traceback, cli_env

KiB = 1024
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes and signals")


@pytest.fixture
def oss(tmp_path: Path) -> Iterator[ThreadedOssServer]:
    with ThreadedOssServer(root=tmp_path / "oss") as srv:
        yield srv


def pipe(
    data: bytes, *args: str, env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CLI, "upload", "-", *args], input=data, env=env, capture_output=True, timeout=timeout
    )


def ops(server: ThreadedOssServer) -> list[str]:
    return [r.operation or "" for r in list(server.requests)]


@pytest.mark.parametrize(
    "size", [0, 1, 99 * KiB, 350 * KiB + 7], ids=["empty", "1B", "one-part", "multipart"]
)
def test_stdin_is_stored_byte_exact(oss: ThreadedOssServer, size: int) -> None:
    data = os.urandom(size)
    proc = pipe(data, "oss://bkt/s.txt", "--part-size", "100KiB", env=cli_env(oss))
    assert proc.returncode == EXIT_OK, proc.stderr
    assert oss.read_object("bkt", "s.txt") == data
    info = oss.object_info("bkt", "s.txt")
    assert info is not None and info.size == size
    assert info.headers.get("content-type") == "text/plain"  # guessed from the key
    assert b"uploaded oss://bkt/s.txt" in proc.stdout  # the summary on stdout
    if size > 100 * KiB:
        assert ops(oss).count("UploadPart") == 4 and "CompleteMultipartUpload" in ops(oss)
        assert b"from stdin" in proc.stderr  # the progress line goes to stderr
    else:
        assert "PutObject" in ops(oss) and "InitiateMultipartUpload" not in ops(oss)


def test_size_options_and_json(oss: ThreadedOssServer) -> None:
    data = os.urandom(250 * KiB)
    proc = pipe(
        data, "oss://bkt/k.csv", "--part-size", "100KiB", "--routines", "2",
        "--size", str(len(data)), "--content-type", "text/csv", "--meta", "owner=ops",
        "--header", "Content-Language:en", "--json", env=cli_env(oss),
    )  # fmt: skip
    assert proc.returncode == EXIT_OK, proc.stderr
    assert oss.read_object("bkt", "k.csv") == data
    info = oss.object_info("bkt", "k.csv")
    assert info is not None
    assert info.headers.get("content-type") == "text/csv"
    assert info.headers.get("x-oss-meta-owner") == "ops"
    assert info.headers.get("content-language") == "en"
    assert b'"type":"UploadResult"' in proc.stdout.splitlines()[-1]
    # --size that the stream does not match: an error, nothing stored.
    proc = pipe(data, "oss://bkt/short", "--size", "300KiB", "--part-size", "100KiB",
                env=cli_env(oss))  # fmt: skip
    assert proc.returncode == EXIT_LOCAL, proc.stderr
    assert b"Traceback" not in proc.stderr
    assert oss.object_info("bkt", "short") is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint=/tmp/x.cp"], b"standard input cannot be read again"),
        (["--checkpoint-dir", "/tmp"], b"standard input cannot be read again"),
        (["-r"], b"-r uploads a directory; '-' is standard input"),
        (["--storage-class", "nope"], b"--storage-class: storage_class must be one of"),
    ],
)
def test_usage_errors(oss: ThreadedOssServer, args: list[str], message: bytes) -> None:
    proc = pipe(b"abc", "oss://bkt/k", *args, env=cli_env(oss))
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert proc.stderr.startswith(b"usage: python -m aiooss_resume upload ")
    assert message in proc.stderr
    assert b"Traceback" not in proc.stderr
    assert oss.requests == []


def test_size_without_stdin_is_a_usage_error(oss: ThreadedOssServer, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    proc = subprocess.run(
        [*CLI, "upload", str(src), "oss://bkt/k", "--size", "1"],
        env=cli_env(oss), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == EXIT_USAGE
    assert_no_traceback(proc)
    assert "--size applies to standard input only" in proc.stderr


def test_ctrl_c_aborts_and_leaves_no_open_upload(oss: ThreadedOssServer) -> None:
    # Parts 1 and 2 are acknowledged, part 3 is held by the emulator; stdin stays open.
    oss.faults.add(Fault(operation="UploadPart", part_number=3, stall=30.0))
    proc = subprocess.Popen(
        [*CLI, "upload", "-", "oss://bkt/k", "--part-size", "100KiB", "--routines", "1"],
        env=cli_env(oss), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(os.urandom(350 * KiB))
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while ops(oss).count("UploadPart") < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    assert ops(oss).count("UploadPart") >= 2  # (the log has answered requests only)
    time.sleep(0.2)  # part 3 reaches the stalled handler
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=20)  # stdin is closed here, after the signal
    finally:
        proc.kill()
    assert proc.returncode == EXIT_ABORTED, err
    assert b"Traceback" not in err
    assert b"cannot resume: it was aborted" in err
    assert b"resume with" not in err
    assert "AbortMultipartUpload" in ops(oss)
    assert oss.object_info("bkt", "k") is None
    listing = subprocess.run(
        [*CLI, "uploads", "oss://bkt"], env=cli_env(oss), capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert listing.returncode == EXIT_OK, listing.stderr
    assert "no unfinished multipart uploads" in listing.stdout


def test_ctrl_c_while_stdin_is_still_open(oss: ThreadedOssServer) -> None:
    """The read of stdin blocks in a worker thread; Ctrl-C must still end the process."""
    proc = subprocess.Popen(
        [*CLI, "upload", "-", "oss://bkt/k", "--part-size", "100KiB"],
        env=cli_env(oss), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(os.urandom(250 * KiB))  # two parts, then the writer goes quiet
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while ops(oss).count("UploadPart") < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    try:
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        code = proc.poll()  # ended with stdin still open
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert code == EXIT_ABORTED, err
    assert oss.object_info("bkt", "k") is None
    assert "AbortMultipartUpload" in ops(oss)


def test_a_second_ctrl_c_during_the_abort_still_exits_4(oss: ThreadedOssServer) -> None:
    """The first Ctrl-C starts the abort (stalled here), the second lands during it: exit 4,
    no resume command, and the message says where to find what may be left."""
    oss.faults.add(Fault(operation="AbortMultipartUpload", stall=30.0))
    proc = subprocess.Popen(
        [*CLI, "upload", "-", "oss://bkt/k", "--part-size", "100KiB"],
        env=cli_env(oss), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(os.urandom(250 * KiB))  # stdin stays open
    proc.stdin.flush()
    try:
        deadline = time.monotonic() + 30
        while ops(oss).count("UploadPart") < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        while oss.stats.in_flight["AbortMultipartUpload"] == 0:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the abort never arrived"
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        code = proc.poll()  # ended with stdin still open
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert code == EXIT_ABORTED, err
    assert b"Traceback" not in err
    assert b"not resumable (standard input)" in err
    assert b"resume with" not in err
