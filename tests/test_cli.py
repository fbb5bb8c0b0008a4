"""The ``aiooss-resume`` command line, run as a real subprocess against the emulator."""

from __future__ import annotations

import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiooss_resume import (
    BytesSent,
    CheckpointError,
    PartDone,
    ServiceError,
    TransportError,
    UploadCompleted,
    UploadStarted,
)
from aiooss_resume._cli import (
    EXIT_INTERRUPTED,
    EXIT_LOCAL,
    EXIT_SERVICE,
    EXIT_USAGE,
    ProgressPrinter,
    describe_error,
    format_size,
    main,
    parse_oss_url,
    parse_size,
)
from aiooss_resume.testing import Fault, ThreadedOssServer

KiB = 1024
MiB = 1024 * KiB
CLI = [sys.executable, "-m", "aiooss_resume"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadedOssServer]:
    with ThreadedOssServer(root=tmp_path / "oss") as srv:
        yield srv


def cli_env(server: ThreadedOssServer | None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OSS_", "ALIBABA_CLOUD_", "AIOOSS_RESUME"))
    }
    if server is not None:
        creds = server.credentials
        env |= {
            "OSS_ENDPOINT": server.endpoint,
            "OSS_REGION": server.region,
            "OSS_ACCESS_KEY_ID": creds.access_key_id,
            "OSS_ACCESS_KEY_SECRET": creds.access_key_secret,
        }
    env["PYTHONWARNINGS"] = "error"
    return env | extra


def run(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def make_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr
    assert "Traceback" not in proc.stdout


# ---------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100", 100),
        ("0", 0),
        ("1B", 1),
        ("512K", 512 * KiB),
        ("100KiB", 100 * KiB),
        ("100kb", 100 * KiB),
        ("8MiB", 8 * MiB),
        ("8MB", 8 * MiB),
        ("8m", 8 * MiB),
        ("1.5GiB", 3 * 512 * MiB),
        ("2GB", 2 * 1024 * MiB),
        ("1TiB", 1024**4),
        (" 3 MiB ", 3 * MiB),
    ],
)
def test_parse_size_binary_multiples(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "-1", "8XB", "1.5B", "0.1KiB", "1e3", "8 M i B"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_parse_oss_url() -> None:
    assert parse_oss_url("oss://bkt/a/b.txt") == ("bkt", "a/b.txt")
    assert parse_oss_url("oss://bkt", key_required=False) == ("bkt", "")
    assert parse_oss_url("oss://bkt/pre/", key_required=False) == ("bkt", "pre/")
    for bad in ("s3://bkt/k", "oss:///k", "bkt/k", "oss://bkt", "oss://bkt/"):
        with pytest.raises(ValueError, match=r"oss://|bucket|key"):
            parse_oss_url(bad)


def test_format_size() -> None:
    assert format_size(0) == "0 B"
    assert format_size(1023) == "1023 B"
    assert format_size(64 * MiB) == "64.0 MiB"
    assert format_size(3 * 1024 * MiB) == "3.0 GiB"


def test_describe_error_one_line_and_exit_code() -> None:
    exc = ServiceError(403, "AccessDenied", "You have no right.", "ABCDEF0123456789ABCDEF01")
    code, line = describe_error(exc)
    assert code == EXIT_SERVICE
    assert "AccessDenied" in line and "You have no right." in line
    assert "ABCDEF0123456789ABCDEF01" in line and "\n" not in line
    assert describe_error(TransportError("connection reset"))[0] == EXIT_LOCAL
    assert describe_error(CheckpointError("locked"))[0] == EXIT_LOCAL
    code, line = describe_error(FileNotFoundError(2, "No such file or directory", "/x/y"))
    assert code == EXIT_LOCAL and "/x/y" in line


def test_progress_printer_live_line() -> None:
    now = [100.0]
    out = io.StringIO()
    printer = ProgressPrinter(out, "live", interval=0.0, clock=lambda: now[0])
    printer(
        UploadStarted(
            key="k",
            total_bytes=64 * MiB,
            part_count=8,
            part_size=8 * MiB,
            upload_id="U",
            resumed=True,
            resumed_bytes=32 * MiB,
            resumed_parts=4,
        )
    )
    now[0] += 1.0
    printer(BytesSent(key="k", bytes_done=48 * MiB, total_bytes=64 * MiB, resumed_bytes=32 * MiB))
    printer(PartDone(key="k", part_number=5, size=8 * MiB, parts_done=5, part_count=8))
    line = printer.status_line()
    # Bytes count acknowledged parts (5 of 8: 40 MiB), what is sent beyond is in flight.
    assert line.startswith(" 62.5% 40.0 MiB/64.0 MiB 8.0 MiB/s ETA 3.0s parts 5/8")
    assert line.endswith(", 8.0 MiB in flight (resumed 32.0 MiB)")
    text = out.getvalue()
    assert f"resumed {32 * MiB} bytes" in text
    assert "\r" in text and "\x1b[K" in text
    printer(
        UploadCompleted(
            key="k",
            total_bytes=64 * MiB,
            etag='"E"',
            crc64=1,
            upload_id="U",
            parts_uploaded=4,
            parts_resumed=4,
        )
    )
    assert out.getvalue().endswith("\n")
    assert "100.0%" in out.getvalue().rsplit("\r", 1)[-1]


def test_progress_printer_plain_is_rate_limited() -> None:
    now = [0.0]
    out = io.StringIO()
    printer = ProgressPrinter(out, "plain", interval=3.0, clock=lambda: now[0])
    printer(UploadStarted(key="k", total_bytes=100, part_count=2, part_size=50, upload_id="U"))
    for done in range(1, 101):
        now[0] += 0.1
        printer(BytesSent(key="k", bytes_done=done, total_bytes=100))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert 3 <= len(lines) <= 6  # the start line, then one every 3 s of 10 s


# ---------------------------------------------------------------------- usage errors


def test_usage_errors_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith(("OSS_", "ALIBABA_CLOUD_")):
            monkeypatch.delenv(name)
    src = tmp_path / "f.bin"
    make_file(src, 10)
    endpoint = ["--endpoint", "http://127.0.0.1:1"]
    cases = [
        [],
        ["upload"],
        ["frobnicate"],
        ["upload", str(src), "s3://bkt/k", *endpoint],
        ["upload", str(src), "oss://bkt/k", *endpoint, "--part-size", "8XB"],
        ["upload", str(src), "oss://bkt/k", "--routines", "0"],
        ["upload", str(src), "oss://bkt/k", "--header", "no-colon", *endpoint],
        ["upload", str(src), "oss://bkt/k"],  # no endpoint anywhere
        ["uploads", "oss://bkt"],
        ["abort", "oss://bkt/k", *endpoint],  # no --upload-id
    ]
    for args in cases:
        assert main(args) == EXIT_USAGE, args
        err = capsys.readouterr().err
        assert err.strip(), args
        assert "Traceback" not in err
    main(["upload", str(src), "oss://bkt/k"])
    assert "OSS_ENDPOINT" in capsys.readouterr().err
    # One real subprocess: the exit status seen by the shell.
    proc = run("upload", env=cli_env(None))
    assert proc.returncode == EXIT_USAGE
    assert "usage:" in proc.stderr


def test_help_documents_exit_codes_and_default_checkpoint() -> None:
    proc = run("upload", "--help", env=cli_env(None))
    assert proc.returncode == 0
    for text in (
        "exit codes:",
        "5  interrupted",
        "OSS_ENDPOINT",
        "KB = KiB = 1024",
        "LOCAL_FILE.cp",
    ):
        assert text in proc.stdout


# ---------------------------------------------------------------------- uploads


def test_upload_and_cp_alias(server: ThreadedOssServer, tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    data = make_file(src, 700 * KiB)
    env = cli_env(server)
    proc = run("upload", str(src), "oss://bkt/dir/data.bin", "--part-size", "200KiB", env=env)
    assert proc.returncode == 0, proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith(
        "uploaded oss://bkt/dir/data.bin: 700.0 KiB (716800 bytes) in 4 parts"
    )
    assert "crc64 " in summary and "etag " in summary and "/s" in summary
    assert server.read_object("bkt", "dir/data.bin") == data
    assert not (tmp_path / "data.bin.cp").exists()

    proc = run("cp", str(src), "oss://bkt/small", "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert server.read_object("bkt", "small") == data


def test_json_lines_parse(server: ThreadedOssServer, tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    make_file(src, 300 * KiB)
    proc = run(
        "upload",
        str(src),
        "oss://bkt/j",
        "--json",
        "--part-size",
        "100KiB",
        "--header",
        "Content-Type:text/plain",
        env=cli_env(server),
    )
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    types = [d["type"] for d in docs]
    assert types[0] == "UploadStarted"
    assert {"BytesSent", "PartDone", "UploadCompleted"} <= set(types)
    assert types[-1] == "UploadResult"
    assert docs[-1]["size"] == 300 * KiB and docs[-1]["parts_uploaded"] == 3
    assert docs[-2]["type"] == "UploadCompleted"


def test_wrong_secret_is_exit_2_on_one_line(server: ThreadedOssServer, tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    make_file(src, 10 * KiB)
    env = cli_env(server, OSS_ACCESS_KEY_SECRET="not-the-secret")
    proc = run("upload", str(src), "oss://bkt/k", env=env)
    assert proc.returncode == EXIT_SERVICE
    assert_no_traceback(proc)
    lines = [line for line in proc.stderr.splitlines() if "SignatureDoesNotMatch" in line]
    assert len(lines) == 1
    assert "request id " in lines[0]
    request_id = lines[0].split("request id ")[1].split("]")[0].split(",")[0]
    assert len(request_id) == 24
    assert "not-the-secret" not in proc.stderr


def test_local_errors_exit_3(server: ThreadedOssServer, tmp_path: Path) -> None:
    env = cli_env(server)
    proc = run("upload", str(tmp_path / "missing.bin"), "oss://bkt/k", env=env)
    assert proc.returncode == EXIT_LOCAL
    assert_no_traceback(proc)
    assert "missing.bin" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

    src = tmp_path / "data.bin"
    make_file(src, 10 * KiB)
    no_creds = cli_env(None, OSS_ENDPOINT=server.endpoint, OSS_REGION=server.region)
    proc = run("upload", str(src), "oss://bkt/k", env=no_creds)
    assert proc.returncode == EXIT_LOCAL
    assert "credentials" in proc.stderr
    assert_no_traceback(proc)

    # Nothing listens on port 9 (discard) on a test machine: a network error.
    proc = run(
        "upload", str(src), "oss://bkt/k", "--endpoint", "http://127.0.0.1:9", env=env, timeout=40
    )
    assert proc.returncode == EXIT_LOCAL, proc.stderr
    assert "network error" in proc.stderr
    assert_no_traceback(proc)


def test_ctrl_c_keeps_checkpoint_and_rerun_resumes(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    src = tmp_path / "big.bin"
    data = make_file(src, 500 * KiB)
    # Parts 1 and 2 go through; part 3 is held by the server until we interrupt.
    server.faults.add(Fault(operation="UploadPart", part_number=3, stall=30.0))
    env = cli_env(server)
    args = [
        "upload",
        "big.bin",
        "oss://bkt/big.bin",
        "--part-size",
        "100KiB",
        "--routines",
        "1",
        "--progress-interval",
        "0",
    ]
    proc = subprocess.Popen(
        [*CLI, *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 20
    for line in proc.stdout:
        seen.append(line)
        if "parts 2/5" in line or time.monotonic() > deadline:
            break
    assert any("parts 2/5" in line for line in seen), seen
    time.sleep(0.3)  # let the checkpoint writer catch up (the flush on cancel covers it too)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err
    cp = tmp_path / "big.bin.cp"
    assert cp.exists()
    assert f"the checkpoint is kept at {cp}" in err
    assert "(2 parts, 204800 bytes acknowledged)" in err
    resume = err.split("resume with:\n", 1)[1].strip().splitlines()[0]
    command = shlex.split(resume)
    assert command[:3] == CLI
    assert str(src) in command  # made absolute: works from any directory

    status = run("status", str(cp), env=env)
    assert status.returncode == 0
    assert "parts done:  2 of 5" in status.stdout
    assert "bytes done:  204800 of 512000" in status.stdout
    assert "matches" in status.stdout

    again = subprocess.run(command, env=env, cwd="/", capture_output=True, text=True, timeout=30)
    assert again.returncode == 0, again.stderr
    assert "resumed 204800 bytes" in again.stdout
    assert "(2 resumed, 204800 bytes not sent again)" in again.stdout
    assert server.read_object("bkt", "big.bin") == data
    assert not cp.exists()


# ---------------------------------------------------------------------- status, uploads, abort


def test_failed_upload_status_uploads_and_abort(server: ThreadedOssServer, tmp_path: Path) -> None:
    src = tmp_path / "data.bin"
    make_file(src, 400 * KiB)
    env = cli_env(server)
    server.faults.add(
        Fault(operation="UploadPart", part_number=3, times=None, status=403, code="AccessDenied")
    )
    proc = run(
        "upload", str(src), "oss://bkt/f.bin", "--part-size", "100KiB", "--routines", "1", env=env
    )
    assert proc.returncode == EXIT_SERVICE
    assert_no_traceback(proc)
    first = proc.stderr.splitlines()[0]
    assert "AccessDenied" in first and "request id" in first
    assert "can be resumed" in proc.stderr

    cp = Path(f"{src}.cp")
    status = run("status", str(cp), env=env)
    assert status.returncode == 0, status.stderr
    assert "target:      oss://bkt/f.bin" in status.stdout
    assert "parts done:  2 of 4" in status.stdout
    assert "matches" in status.stdout
    doc = json.loads(run("status", str(cp), "--json", env=env).stdout)
    assert doc["parts_done"] == 2 and doc["bytes_done"] == 200 * KiB and doc["source_matches"]
    upload_id = doc["upload_id"]

    os.utime(src, ns=(1, 1))
    status = run("status", str(cp), env=env)
    assert "changed (mtime_ns" in status.stdout

    listed = run("uploads", "oss://bkt", env=env)
    assert listed.returncode == 0
    assert f"f.bin\t{upload_id}\t" in listed.stdout
    assert "f.bin" in run("uploads", "oss://bkt/f", env=env).stdout
    assert "no unfinished" in run("uploads", "oss://bkt/zzz", env=env).stdout

    aborted = run("abort", "oss://bkt/f.bin", "--upload-id", upload_id, env=env)
    assert aborted.returncode == 0, aborted.stderr
    assert "no unfinished" in run("uploads", "oss://bkt", env=env).stdout
    again = run("abort", "oss://bkt/f.bin", "--upload-id", upload_id, env=env)
    assert again.returncode == EXIT_SERVICE
    assert "NoSuchUpload" in again.stderr

    cp.write_bytes(cp.read_bytes()[:-20])
    damaged = run("status", str(cp), env=env)
    assert damaged.returncode == EXIT_LOCAL
    assert "damaged" in damaged.stderr
    assert_no_traceback(damaged)
    missing = run("status", str(tmp_path / "nope.cp"), env=env)
    assert missing.returncode == EXIT_LOCAL


# ---------------------------------------------------------------------- demo


def test_demo_runs_end_to_end() -> None:
    proc = run("demo", "--size", "1MiB", "--seconds", "0.5", env=cli_env(None), timeout=50)
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc)
    out = proc.stdout
    assert "1/3" in out and "2/3" in out and "3/3" in out
    assert "equals the local file's: OK" in out
    assert "resumed " in out and "interrupted" in out
