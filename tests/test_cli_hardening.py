"""Issue 10 items 9-12: what the command line says and exits with when things go sideways.

Real subprocesses against the emulator (the exit status and the text a shell user sees), and
the progress printer fed typed events with a fake clock.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from aiooss_resume import BytesSent, PartDone, UploadCompleted, UploadResult, UploadStarted
from aiooss_resume._cli import (
    EXIT_ABORTED,
    EXIT_LOCAL,
    EXIT_SERVICE,
    EXIT_USAGE,
    ProgressPrinter,
    summary_line,
)
from aiooss_resume.testing import Fault, ThreadedOssServer

from .test_cli import CLI, KiB, MiB, assert_no_traceback, cli_env, make_file, run, server

__all__ = ["server"]  # the fixture, re-exported so pytest finds it here


def start_and_interrupt(
    server: ThreadedOssServer, cwd: Path, args: list[str], wait_for: str
) -> subprocess.Popen[str]:
    """Run the CLI until a progress line contains ``wait_for``, then send SIGINT."""
    proc = subprocess.Popen(
        [*CLI, *args],
        env=cli_env(server),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 20
    for line in proc.stdout:
        seen.append(line)
        if wait_for in line or time.monotonic() > deadline:
            break
    assert any(wait_for in line for line in seen), seen
    proc.send_signal(signal.SIGINT)
    return proc


# ---------------------------------------------------------------------- item 9


def test_ctrl_c_with_no_checkpoint_is_not_resumable(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    make_file(tmp_path / "big.bin", 500 * KiB)
    server.faults.add(Fault(operation="UploadPart", part_number=3, stall=30.0))
    args = ["upload", "big.bin", "oss://bkt/big.bin", "--part-size", "100KiB"]
    args += ["--routines", "1", "--progress-interval", "0", "--no-checkpoint"]
    proc = start_and_interrupt(server, tmp_path, args, "parts 2/5")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == EXIT_ABORTED == 4, err
    assert "Traceback" not in err
    assert "not resumable (--no-checkpoint)" in err
    assert "resume with" not in err and "aiooss_resume upload" not in err  # no command
    # What it says is true: the upload was aborted, nothing is left on OSS or on disk.
    assert server.list_uploads("bkt") == []
    assert not (tmp_path / "big.bin.cp").exists()


def test_help_documents_the_not_resumable_exit_code() -> None:
    proc = run("upload", "--help", env=cli_env(None))
    assert proc.returncode == 0
    assert "4  interrupted (Ctrl-C/SIGTERM) and not resumable (--no-checkpoint)" in proc.stdout


# ---------------------------------------------------------------------- item 10


def failed_upload(server: ThreadedOssServer, tmp_path: Path) -> tuple[Path, str]:
    """A 4-part upload that failed after 2 parts: its checkpoint and upload id."""
    src = tmp_path / "data.bin"
    make_file(src, 400 * KiB)
    server.faults.add(
        Fault(operation="UploadPart", part_number=3, times=1, status=403, code="AccessDenied")
    )
    proc = run(
        "upload", str(src), "oss://bkt/f.bin", "--part-size", "100KiB", "--routines", "1",
        env=cli_env(server),
    )  # fmt: skip
    assert proc.returncode == EXIT_SERVICE, proc.stderr
    cp = Path(f"{src}.cp")
    upload_id = json.loads(run("status", str(cp), "--json", "--offline", env=cli_env(None)).stdout)[
        "upload_id"
    ]
    return cp, upload_id


def test_status_after_abort_says_the_next_run_starts_over(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    cp, upload_id = failed_upload(server, tmp_path)
    env = cli_env(server)

    status = run("status", str(cp), env=env)
    assert status.returncode == 0, status.stderr
    assert "on OSS:      the upload exists, 2 parts (204800 bytes)" in status.stdout
    assert f"next run:    resumes upload {upload_id}" in status.stdout

    assert run("abort", "oss://bkt/f.bin", "--upload-id", upload_id, env=env).returncode == 0
    status = run("status", str(cp), env=env)
    assert status.returncode == 0, status.stderr
    assert "resumes" not in status.stdout
    assert "on OSS:      no such upload" in status.stdout and "NoSuchUpload" in status.stdout
    assert "starts a new upload and sends all 4 parts, replacing this checkpoint" in status.stdout
    doc = json.loads(run("status", str(cp), "--json", env=env).stdout)
    assert doc["upload_on_oss"]["state"] == "missing"
    assert doc["next_run"].startswith("starts a new upload")

    # And it is what really happens.
    again = run("upload", str(tmp_path / "data.bin"), "oss://bkt/f.bin", "--part-size", "100KiB",
                env=env)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "resumed" not in again.stdout and "in 4 parts" in again.stdout


def test_status_without_credentials_says_it_could_not_check(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    cp, upload_id = failed_upload(server, tmp_path)
    no_creds = cli_env(None, OSS_ENDPOINT=server.endpoint, OSS_REGION=server.region)
    status = run("status", str(cp), env=no_creds)
    assert status.returncode == 0, status.stderr
    assert_no_traceback(status)
    assert "on OSS:      could not be checked: credentials error" in status.stdout
    assert f"resumes if upload {upload_id} still exists on OSS, else starts a new" in status.stdout
    doc = json.loads(run("status", str(cp), "--json", env=no_creds).stdout)
    assert doc["upload_on_oss"]["state"] == "unknown"
    offline = run("status", str(cp), "--offline", env=cli_env(server))
    assert "not checked (--offline)" in offline.stdout
    nowhere = run("status", str(cp), env=cli_env(None))
    assert "could not be checked: no endpoint" in nowhere.stdout


def test_status_asks_only_the_configured_endpoint(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    # A checkpoint is data from disk: the endpoint it names does not get the credentials.
    cp, _ = failed_upload(server, tmp_path)
    with ThreadedOssServer(root=tmp_path / "other") as other:
        before = len(server.requests)
        status = run("status", str(cp), env=cli_env(other))
        assert status.returncode == 0, status.stderr
        assert f"not checked: the checkpoint is for {server.endpoint}" in status.stdout
        assert other.requests == []
        assert len(server.requests) == before
        status = run("status", str(cp), "--endpoint", server.endpoint, env=cli_env(other))
        assert "not checked" not in status.stdout
        assert len(server.requests) == before + 1  # the one ListParts, where it was asked


# ---------------------------------------------------------------------- item 11


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["oss://bkt/k", "--routines", "10000"], "--routines: must be at most 1000: 10000"),
        (["oss://Bad_Bucket/k"], "invalid 'oss://Bad_Bucket/k'"),
        (["oss://bkt/k", "--endpoint", "ftp://127.0.0.1:1"], "--endpoint: "),
    ],
)
def test_bad_arguments_are_exit_1_with_the_subcommands_usage(
    tmp_path: Path, extra: list[str], needle: str
) -> None:
    make_file(tmp_path / "f.bin", 10)
    env = cli_env(None, OSS_ENDPOINT="http://127.0.0.1:1", OSS_REGION="cn-hangzhou")
    proc = run("upload", str(tmp_path / "f.bin"), *extra, env=env)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert_no_traceback(proc)
    assert proc.stderr.startswith("usage: python -m aiooss_resume upload ")
    assert needle in proc.stderr
    # The same with the traceback switch on: an expected error keeps its exit code.
    traced = run(
        "upload", str(tmp_path / "f.bin"), *extra, env=env | {"AIOOSS_RESUME_TRACEBACK": "1"}
    )
    assert traced.returncode == EXIT_USAGE


def test_missing_region_names_the_option_and_the_variable(tmp_path: Path) -> None:
    make_file(tmp_path / "f.bin", 10)
    env = cli_env(None, OSS_ENDPOINT="http://127.0.0.1:1")
    proc = run("upload", str(tmp_path / "f.bin"), "oss://bkt/k", env=env)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert proc.stderr.startswith("usage: python -m aiooss_resume upload ")
    assert "--region REGION" in proc.stderr and "OSS_REGION" in proc.stderr
    assert "region=" not in proc.stderr  # not Python keyword syntax
    for sub in (["uploads", "oss://bkt"], ["abort", "oss://bkt/k", "--upload-id", "U"]):
        proc = run(*sub, env=env)
        assert proc.returncode == EXIT_USAGE, proc.stderr
        assert proc.stderr.startswith(f"usage: python -m aiooss_resume {sub[0]} ")
        assert "OSS_REGION" in proc.stderr


def test_traceback_switch_keeps_exit_codes(server: ThreadedOssServer, tmp_path: Path) -> None:
    env = cli_env(server, AIOOSS_RESUME_TRACEBACK="1")
    proc = run("upload", str(tmp_path / "missing.bin"), "oss://bkt/k", env=env)
    assert proc.returncode == EXIT_LOCAL
    assert "Traceback" in proc.stderr  # what the switch is for
    assert proc.stderr.rstrip().splitlines()[-1].endswith("missing.bin")
    make_file(tmp_path / "f.bin", 10 * KiB)
    bad = env | {"OSS_ACCESS_KEY_SECRET": "wrong"}
    proc = run("upload", str(tmp_path / "f.bin"), "oss://bkt/k", env=bad)
    assert proc.returncode == EXIT_SERVICE
    assert "SignatureDoesNotMatch" in proc.stderr.rstrip().splitlines()[-1]


def test_help_documents_the_routines_range() -> None:
    proc = run("upload", "--help", env=cli_env(None))
    assert proc.returncode == 0
    assert "1..1000" in " ".join(proc.stdout.split())


# ---------------------------------------------------------------------- item 12


def started(total: int, count: int, part_size: int, **resumed: int) -> UploadStarted:
    return UploadStarted(
        key="k",
        total_bytes=total,
        part_count=count,
        part_size=part_size,
        upload_id="U",
        resumed=bool(resumed),
        resumed_bytes=resumed.get("bytes", 0),
        resumed_parts=resumed.get("parts", 0),
    )


def completed(total: int, parts: int, resumed: int = 0) -> UploadCompleted:
    return UploadCompleted(
        key="k",
        total_bytes=total,
        etag='"E"',
        crc64=1,
        upload_id="U",
        parts_uploaded=parts - resumed,
        parts_resumed=resumed,
    )


def test_progress_bytes_and_parts_agree() -> None:
    now = [0.0]
    out = io.StringIO()
    printer = ProgressPrinter(out, "plain", interval=0.0, clock=lambda: now[0])
    printer(started(400, 4, 100))
    # Two parts are in flight, 150 bytes sent, none acknowledged yet.
    now[0] = 1.0
    printer(BytesSent(key="k", bytes_done=150, total_bytes=400))
    line = printer.status_line()
    assert line.startswith("  0.0% 0 B/400 B 0 B/s") and "parts 0/4, 150 B in flight" in line
    printer(PartDone(key="k", part_number=2, size=100, parts_done=1, part_count=4))
    line = printer.status_line()
    assert line.startswith(" 25.0% 100 B/400 B 100 B/s") and "parts 1/4, 50 B in flight" in line
    # A part sent again after its upload vanished is not counted twice.
    printer(PartDone(key="k", part_number=2, size=100, parts_done=1, part_count=4))
    assert printer.status_line().startswith(" 25.0% 100 B/400 B")
    for line in out.getvalue().splitlines()[1:]:
        pct, done, parts = line.split()[0], line.split()[1], line.split("parts ")[1]
        acked = int(parts.split("/")[0])
        assert float(pct.rstrip("%")) == 25.0 * acked and done == f"{100 * acked}"


def test_progress_rate_and_summary_use_one_definition() -> None:
    now = [10.0]
    out = io.StringIO()
    printer = ProgressPrinter(out, "plain", interval=0.0, clock=lambda: now[0])
    printer(started(4 * MiB, 4, MiB, bytes=2 * MiB, parts=2))
    now[0] = 11.0
    printer(PartDone(key="k", part_number=3, size=MiB, parts_done=3, part_count=4))
    assert " 1.0 MiB/s " in printer.status_line()  # 1 MiB of this run in 1 s
    now[0] = 12.0
    printer(PartDone(key="k", part_number=4, size=MiB, parts_done=4, part_count=4))
    printer(completed(4 * MiB, 4, resumed=2))
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("100.0% 4.0 MiB/4.0 MiB 1.0 MiB/s done parts 4/4")
    result = UploadResult(
        bucket="b",
        key="k",
        etag='"E"',
        crc64=1,
        size=4 * MiB,
        upload_id="U",
        part_size=MiB,
        request_id="R",
        parts_uploaded=2,
        parts_resumed=2,
        bytes_resumed=2 * MiB,
    )
    summary = summary_line(result, printer.elapsed())
    assert ", 2.00s, 1.0 MiB/s," in summary
    now[0] = 50.0  # the summary printed later still has the upload's own seconds
    assert printer.elapsed() == 2.0


def test_progress_empty_file_is_one_100_percent_line() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(out, "plain", interval=0.0, clock=lambda: 0.0)
    printer(UploadStarted(key="k", total_bytes=0, part_count=1, part_size=0, upload_id=""))
    printer(BytesSent(key="k", bytes_done=0, total_bytes=0))
    printer(PartDone(key="k", part_number=1, size=0, parts_done=1, part_count=1))
    printer(completed(0, 1))
    lines = out.getvalue().splitlines()
    assert [line for line in lines if "%" in line] == [lines[-1]]
    assert lines[-1].startswith("100.0% 0 B/0 B")


def test_singular_byte_and_part(server: ThreadedOssServer, tmp_path: Path) -> None:
    make_file(tmp_path / "one.bin", 1)
    proc = run("upload", str(tmp_path / "one.bin"), "oss://bkt/one", env=cli_env(server))
    assert proc.returncode == 0, proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert "(1 byte) in 1 part," in summary
    assert "bytes" not in summary and "1 parts" not in summary
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    proc = run("upload", str(empty), "oss://bkt/empty", env=cli_env(server))
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stdout.splitlines() if "%" in line] == [
        "100.0% 0 B/0 B 0 B/s done parts 1/1"
    ]
