"""The typed object-option flags of the command line (issues 10.15, 11), through a subprocess.

``upload``, ``upload -r`` and ``download`` (``--traffic-limit`` only) against the emulator
over 127.0.0.1: the stored objects carry what the flags say (read back by the emulator and
by oss2), each header rides on the requests OSS reads it from, a bad value or a flag that
a ``--header`` repeats is a usage error before any request, and the resume command printed
after Ctrl-C carries the flags, so that resuming sends the same options.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import oss2
import pytest
from aiohttp import web

from aiooss_resume._cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_SERVICE, EXIT_USAGE, main
from aiooss_resume.testing import Fault, FaultContext, ThreadedOssServer

from .test_cli import CLI, assert_no_traceback, cli_env, make_file, run
from .test_cli_download import put

KiB = 1024
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

FLAGS = [
    "--content-type", "text/csv",
    "--cache-control", "max-age=60",
    "--content-disposition", 'attachment; filename="a.csv"',
    "--content-encoding", "gzip",
    "--storage-class", "IA",
    "--acl", "public-read",
    "--meta", "owner=ops",
    "--meta", "build-id=42",
    "--tagging", "team=a b",
    "--tagging", "env=prod",
    "--sse", "KMS",
    "--sse-kms-key-id", "key-1",
    "--traffic-limit", "819200",
]  # fmt: skip
STORED = {
    "content-type": "text/csv",
    "cache-control": "max-age=60",
    "content-disposition": 'attachment; filename="a.csv"',
    "content-encoding": "gzip",
    "x-oss-storage-class": "IA",
    "x-oss-object-acl": "public-read",
    "x-oss-meta-owner": "ops",
    "x-oss-meta-build-id": "42",
    "x-oss-server-side-encryption": "KMS",
    "x-oss-server-side-encryption-key-id": "key-1",
}


@pytest.fixture
def oss(tmp_path: Path) -> Iterator[ThreadedOssServer]:
    with ThreadedOssServer(root=tmp_path / "oss") as srv:
        yield srv


class Captured:
    """Every request's headers, by operation, through the emulator's fault-hook seam."""

    def __init__(self, server: ThreadedOssServer) -> None:
        self.headers: list[tuple[str, dict[str, str]]] = []
        server.faults.add(Fault(hook=self._hook, times=None))

    async def _hook(self, ctx: FaultContext) -> web.StreamResponse | None:
        self.headers.append((ctx.operation, {k.lower(): v for k, v in ctx.request.headers.items()}))
        return None

    def of(self, operation: str) -> list[dict[str, str]]:
        return [h for op, h in self.headers if op == operation]


def assert_stored(server: ThreadedOssServer, key: str) -> None:
    info = server.object_info("bkt", key)
    assert info is not None, key
    assert {k: info.headers.get(k) for k in STORED} == STORED
    ak, sk, _ = server.credentials
    bucket = oss2.Bucket(oss2.AuthV4(ak, sk), server.endpoint, "bkt", region=server.region)
    head = bucket.head_object(key)  # an independent client reads the same back
    assert head.headers["Content-Type"] == "text/csv"
    assert head.headers["x-oss-meta-owner"] == "ops"
    assert head.headers["x-oss-storage-class"] == "IA"
    assert head.headers["x-oss-tagging-count"] == "2"


@pytest.mark.parametrize("size", [50 * KiB, 250 * KiB], ids=["PutObject", "multipart"])
def test_upload_flags_land_on_the_object(oss: ThreadedOssServer, tmp_path: Path, size: int) -> None:
    src = tmp_path / "a.csv"
    data = make_file(src, size)
    captured = Captured(oss)
    proc = run(
        "upload", str(src), "oss://bkt/a.csv", "--part-size", "100KiB", *FLAGS,
        "--header", "Content-Language:en", "-q", env=cli_env(oss),
    )  # fmt: skip
    assert proc.returncode == EXIT_OK, proc.stderr
    assert oss.read_object("bkt", "a.csv") == data
    assert_stored(oss, "a.csv")
    info = oss.object_info("bkt", "a.csv")
    assert info is not None and info.headers.get("content-language") == "en"
    if size > 100 * KiB:
        parts = captured.of("UploadPart")
        assert len(parts) == 3 and all(p["x-oss-traffic-limit"] == "819200" for p in parts)
        (complete,) = captured.of("CompleteMultipartUpload")
        assert complete["x-oss-object-acl"] == "public-read"
    else:
        (put,) = captured.of("PutObject")
        assert put["x-oss-traffic-limit"] == "819200"


def test_upload_recursive_flags_land_on_every_object(
    oss: ThreadedOssServer, tmp_path: Path
) -> None:
    root = tmp_path / "dir"
    (root / "sub").mkdir(parents=True)
    files = {"x.txt": make_file(root / "x.txt", 3 * KiB), "sub/y.bin": b""}
    (root / "sub" / "y.bin").write_bytes(b"")
    files["big.bin"] = make_file(root / "big.bin", 250 * KiB)
    proc = run(
        "upload", "-r", str(root), "oss://bkt/p/", "--part-size", "100KiB", *FLAGS, "-q",
        env=cli_env(oss),
    )  # fmt: skip
    assert proc.returncode == EXIT_OK, proc.stderr
    for rel, data in files.items():
        assert oss.read_object("bkt", "p/" + rel) == data
        assert_stored(oss, "p/" + rel)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--storage-class", "standard"], "--storage-class: storage_class must be one of"),
        (["--acl", "everyone"], "--acl: acl must be one of"),
        (["--sse", "DES"], "--sse: server_side_encryption must be one of"),
        (["--sse-kms-key-id", "k"], "--sse-kms-key-id: kms_key_id needs server_side_encryption"),
        (["--content-type", "text"], "--content-type: content_type must be a MIME type"),
        (["--traffic-limit", "100"], "--traffic-limit: traffic_limit must be 819200 to"),
        (["--traffic-limit", "fast"], "--traffic-limit: not a whole number of bit/s"),
        (["--meta", "owner"], "--meta expects KEY=VALUE, got 'owner'"),
        (["--meta", "a_b=1"], "--meta: metadata name 'a_b' must be letters, digits"),
        (["--meta", "a=1", "--meta", "a=2"], "--meta 'a' is given twice"),
        (["--tagging", "=v"], "--tagging: tag key '' must be 1 to 128"),
        (
            ["--content-type", "text/csv", "--header", "content-type:text/plain"],
            "--header content-type conflicts with --content-type",
        ),
        (
            ["--meta", "owner=a", "--header", "X-Oss-Meta-Owner:b"],
            "--header X-Oss-Meta-Owner conflicts with --meta",
        ),
    ],
)
def test_bad_flags_are_usage_errors_before_any_request(
    oss: ThreadedOssServer,
    tmp_path: Path,
    flags: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # In-process (main(), the same code path; a subprocess per case would cost seconds),
    # against the live emulator: a check that let a bad value through would send requests.
    for name, value in cli_env(oss).items():
        monkeypatch.setenv(name, value)
    src = tmp_path / "f.bin"
    make_file(src, 10 * KiB)
    for source in ([str(src)], ["-r", str(tmp_path)]):
        assert main(["upload", *source, "oss://bkt/k", *flags]) == EXIT_USAGE
        err = capsys.readouterr().err
        assert err.startswith("usage: ") and " upload " in err.splitlines()[0], err
        (error,) = [line for line in err.splitlines() if ": error: " in line]
        assert message in error, error
        assert "Traceback" not in err
    assert oss.requests == []
    assert not (tmp_path / "f.bin.cp").exists()


def test_a_usage_error_in_a_real_process(oss: ThreadedOssServer, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    make_file(src, 10 * KiB)
    proc = run(
        "upload", str(src), "oss://bkt/k", "--cache-control", "no-cache",
        "--header", "Cache-Control:max-age=1", env=cli_env(oss),
    )  # fmt: skip
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert_no_traceback(proc)
    assert proc.stderr.startswith("usage: python -m aiooss_resume upload ")
    assert "error: --header Cache-Control conflicts with --cache-control" in proc.stderr
    assert oss.requests == []


def test_forbid_overwrite_refuses_an_existing_object(
    oss: ThreadedOssServer, tmp_path: Path
) -> None:
    src = tmp_path / "f.bin"
    first = make_file(src, 10 * KiB)
    assert run("upload", str(src), "oss://bkt/k", "-q", env=cli_env(oss)).returncode == EXIT_OK
    make_file(src, 10 * KiB)
    proc = run("upload", str(src), "oss://bkt/k", "--forbid-overwrite", "-q", env=cli_env(oss))
    assert proc.returncode == EXIT_SERVICE, proc.stderr
    assert "FileAlreadyExists" in proc.stderr
    assert_no_traceback(proc)
    assert oss.read_object("bkt", "k") == first


def test_download_traffic_limit_and_upload_only_flags(
    oss: ThreadedOssServer, tmp_path: Path
) -> None:
    data = put(oss, tmp_path, "k", 300 * KiB)
    captured = Captured(oss)
    out = tmp_path / "out.bin"
    proc = run(
        "download", "oss://bkt/k", str(out), "--part-size", "100KiB", "--traffic-limit",
        "1000000", "-q", env=cli_env(oss),
    )  # fmt: skip
    assert proc.returncode == EXIT_OK, proc.stderr
    assert out.read_bytes() == data
    gets = captured.of("GetObject")
    assert len(gets) >= 3 and all(g["x-oss-traffic-limit"] == "1000000" for g in gets)
    # The same through cp; then the flags a download cannot use.
    out2 = tmp_path / "out2.bin"
    proc = run("cp", "oss://bkt/k", str(out2), "--traffic-limit", "900000", env=cli_env(oss))
    assert proc.returncode == EXIT_OK, proc.stderr
    assert out2.read_bytes() == data
    before = len(oss.requests)
    for flags, message in (
        (["--traffic-limit", "5"], "--traffic-limit: traffic_limit must be 819200 to"),
        (["--content-type", "text/csv"], "unrecognized arguments: --content-type"),
    ):
        proc = run("download", "oss://bkt/k", str(tmp_path / "o3"), *flags, env=cli_env(oss))
        assert proc.returncode == EXIT_USAGE, proc.stderr
        assert message in proc.stderr
    proc = run("cp", "oss://bkt/k", str(tmp_path / "o3"), "--acl", "private", env=cli_env(oss))
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "--acl apply to uploads only" in proc.stderr
    assert len(oss.requests) == before
    assert not (tmp_path / "o3").exists()


def test_help_documents_the_flags() -> None:
    up = subprocess.run([*CLI, "upload", "--help"], capture_output=True, text=True, timeout=30)
    assert up.returncode == 0
    for flag in (
        "--acl", "--storage-class", "--content-type", "--content-disposition",
        "--cache-control", "--content-encoding", "--meta KEY=VALUE", "--tagging KEY=VALUE",
        "--forbid-overwrite", "--traffic-limit BITS_PER_S", "--sse", "--sse-kms-key-id",
    ):  # fmt: skip
        assert flag in up.stdout, flag
    assert "Standard|IA|Archive" in up.stdout
    dl = subprocess.run([*CLI, "download", "--help"], capture_output=True, text=True, timeout=30)
    assert "--traffic-limit BITS_PER_S" in dl.stdout and "--acl" not in dl.stdout


def _acked(server: ThreadedOssServer, operation: str) -> int:
    return sum(1 for r in list(server.requests) if r.operation == operation and r.status < 300)


def _interrupt(
    cmd: list[str], cwd: Path, env: dict[str, str], server: ThreadedOssServer, operation: str
) -> str:
    """Run ``cmd``, Ctrl-C it once the emulator answered two ``operation`` requests (the
    third is stalled by the test); return the printed resume command (exit 5)."""
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while _acked(server, operation) < 2 and time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"ended early ({proc.returncode}): {err}")
        time.sleep(0.05)
    assert _acked(server, operation) >= 2
    time.sleep(0.3)  # let the checkpoint writer catch up (the flush on cancel covers it too)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err
    return err.split("resume with:\n", 1)[1].strip().splitlines()[0]


@pytest.mark.parametrize("recursive", [False, True], ids=["file", "dir"])
def test_resume_command_carries_the_flags(
    oss: ThreadedOssServer, tmp_path: Path, recursive: bool
) -> None:
    if recursive:
        (tmp_path / "d").mkdir()
        data = make_file(tmp_path / "d" / "big.bin", 500 * KiB)
        source, target, key = "d", "oss://bkt/p/", "p/big.bin"
    else:
        data = make_file(tmp_path / "big.bin", 500 * KiB)
        source, target, key = "big.bin", "oss://bkt/big.bin", "big.bin"
    oss.faults.add(Fault(operation="UploadPart", part_number=3, stall=30.0))
    env = cli_env(oss)
    flags = [*FLAGS, "--content-disposition=-x"]  # a value starting with '-'
    flags.remove('attachment; filename="a.csv"')
    flags.remove("--content-disposition")
    cmd = [*CLI, "upload", *(["-r"] if recursive else []), source, target]
    cmd += ["--part-size", "100KiB", "--routines", "1", "--progress-interval", "0", *flags]
    resume = _interrupt(cmd, tmp_path, env, oss, "UploadPart")
    command = shlex.split(resume)
    assert command[:3] == CLI
    for expected in (
        "--content-type=text/csv", "--storage-class=IA", "--acl=public-read", "--sse=KMS",
        "--sse-kms-key-id=key-1", "--meta=owner=ops", "--meta=build-id=42",
        "--tagging=team=a b", "--tagging=env=prod", "--content-disposition=-x",
    ):  # fmt: skip
        assert expected in command, (expected, command)
    assert command[command.index("--traffic-limit") + 1] == "819200"
    oss.faults.clear()
    captured = Captured(oss)
    again = subprocess.run(command, env=env, cwd="/", capture_output=True, text=True, timeout=30)
    assert again.returncode == EXIT_OK, again.stderr
    assert oss.read_object("bkt", key) == data
    info = oss.object_info("bkt", key)
    assert info is not None and info.headers.get("content-disposition") == "-x"
    assert info.headers.get("x-oss-meta-owner") == "ops"
    assert info.headers.get("x-oss-storage-class") == "IA"
    parts = captured.of("UploadPart")
    assert parts and all(p["x-oss-traffic-limit"] == "819200" for p in parts)
    assert len(parts) < 5  # resumed: the acknowledged parts were not sent again


def test_download_resume_command_carries_traffic_limit(
    oss: ThreadedOssServer, tmp_path: Path
) -> None:
    data = put(oss, tmp_path, "k", 500 * KiB)
    oss.faults.add(Fault(operation="GetObject", range_start=200 * KiB, stall=30.0))
    cmd = [*CLI, "download", "oss://bkt/k", "out.bin", "--part-size", "100KiB"]
    cmd += ["--routines", "1", "--progress-interval", "0", "--traffic-limit", "819200"]
    resume = _interrupt(cmd, tmp_path, cli_env(oss), oss, "GetObject")
    command = shlex.split(resume)
    assert command[command.index("--traffic-limit") + 1] == "819200"
    oss.faults.clear()
    captured = Captured(oss)
    again = subprocess.run(
        command, env=cli_env(oss), cwd="/", capture_output=True, text=True, timeout=30
    )
    assert again.returncode == EXIT_OK, again.stderr
    assert (tmp_path / "out.bin").read_bytes() == data
    gets = captured.of("GetObject")
    assert gets and all(g["x-oss-traffic-limit"] == "819200" for g in gets)
