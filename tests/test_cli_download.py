"""``aiooss-resume download`` and ``cp`` both ways, as real subprocesses against the emulator."""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from aiooss_resume import Client, Credentials
from aiooss_resume._cli import EXIT_ABORTED, EXIT_INTERRUPTED, EXIT_SERVICE, EXIT_USAGE, main
from aiooss_resume.testing import Fault, ThreadedOssServer

from .test_cli import CLI, KiB, assert_no_traceback, cli_env, make_file, run, server

__all__ = ["server"]  # the fixture, imported


def put(server: ThreadedOssServer, tmp_path: Path, key: str, size: int) -> bytes:
    """Store an object (in-process: the commands under test are the subprocesses)."""
    src = tmp_path / "src.bin"
    data = make_file(src, size)
    creds = server.credentials

    async def upload() -> None:
        async with Client(
            server.endpoint,
            credentials=Credentials(creds.access_key_id, creds.access_key_secret),
            region=server.region,
        ) as client:
            await client.bucket("bkt").upload_file(key, src, 100 * KiB, routines=4)

    asyncio.run(upload())
    src.unlink()
    return data


def test_download_writes_the_object_and_a_summary(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    data = put(server, tmp_path, "dir/obj.bin", 500 * KiB + 3)
    dest = tmp_path / "out.bin"
    proc = run(
        "download",
        "oss://bkt/dir/obj.bin",
        str(dest),
        "--part-size",
        "100KiB",
        "--routines",
        "3",
        env=cli_env(server),
    )
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc)
    assert dest.read_bytes() == data
    assert "downloading 500.0 KiB in 6 ranges of 100.0 KiB" in proc.stdout
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"downloaded oss://bkt/dir/obj.bin to {dest}: ")
    assert f"({len(data)} bytes) in 6 ranges" in summary
    assert not (tmp_path / "out.bin.dcp").exists()
    assert not (tmp_path / "out.bin.tmp").exists()


def test_download_into_a_directory_and_json(server: ThreadedOssServer, tmp_path: Path) -> None:
    data = put(server, tmp_path, "a/b/c.bin", 200 * KiB)
    target = tmp_path / "outdir"
    target.mkdir()
    proc = run("download", "oss://bkt/a/b/c.bin", str(target), "--json", env=cli_env(server))
    assert proc.returncode == 0, proc.stderr
    assert (target / "c.bin").read_bytes() == data
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[-1]["type"] == "DownloadResult"
    assert lines[-1]["size"] == len(data)
    assert lines[-1]["file_path"] == str(target / "c.bin")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["download", "bkt/key", "x"], "expected oss://bucket/key"),
        (["download", "oss://bkt/", "x"], "no object key"),
        (["download", "oss://bkt/k", "x", "--routines", "0"], "--routines"),
        (["download", "oss://bkt/k", "x", "--part-size", "1KiB"], "out of range"),
        (["download", "oss://bkt/k", "x", "--no-checkpoint", "--checkpoint-dir", "d"], "contra"),
        (["download", "oss://bkt/k"], "required"),
        (["cp", "a", "b"], "SOURCE or DEST must be an oss://"),
        (["cp", "oss://bkt/a", "oss://bkt/b"], "OSS to OSS is not supported"),
        (["cp", "oss://bkt/a", "x", "--header", "A:b"], "--header applies to uploads only"),
        (["download", "oss://bkt/dir/", "./somewhere/"], "ends with '/'"),
    ],
)
def test_usage_errors_exit_1(
    server: ThreadedOssServer,
    tmp_path: Path,
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In-process (``main`` is the command line's entry point): a usage error is found before
    # any request, and ten interpreters would cost the CI gate ~25 s. One real subprocess
    # below checks the exit status as the shell sees it.
    for name, value in cli_env(server).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert main(args) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert "usage:" in err
    assert "Traceback" not in err
    assert not any(r.operation in ("HeadObject", "GetObject") for r in server.requests)


def test_a_usage_error_exits_1_in_a_real_process(server: ThreadedOssServer, tmp_path: Path) -> None:
    proc = run("cp", "oss://bkt/a", "oss://bkt/b", env=cli_env(server), cwd=tmp_path)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "OSS to OSS is not supported" in proc.stderr
    assert_no_traceback(proc)


def test_missing_object_exits_2(server: ThreadedOssServer, tmp_path: Path) -> None:
    proc = run("download", "oss://bkt/nope", str(tmp_path / "x"), env=cli_env(server))
    assert proc.returncode == EXIT_SERVICE
    assert "HTTP 404" in proc.stderr
    assert not (tmp_path / "x").exists()
    assert not (tmp_path / "x.tmp").exists()


def test_cp_chooses_the_direction_from_its_arguments(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    src = tmp_path / "up.bin"
    data = make_file(src, 300 * KiB)
    env = cli_env(server)
    up = run("cp", str(src), "oss://bkt/cp.bin", "--part-size", "100KiB", env=env)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip().splitlines()[-1].startswith("uploaded oss://bkt/cp.bin")
    assert server.read_object("bkt", "cp.bin") == data
    dest = tmp_path / "down.bin"
    down = run("cp", "oss://bkt/cp.bin", str(dest), "--part-size", "100KiB", env=env)
    assert down.returncode == 0, down.stderr
    assert down.stdout.strip().splitlines()[-1].startswith("downloaded oss://bkt/cp.bin")
    assert dest.read_bytes() == data


def _interrupt_after_two_ranges(
    server: ThreadedOssServer, tmp_path: Path, *extra: str
) -> tuple[subprocess.Popen[str], str]:
    # Ranges 1 and 2 go through; range 3 is held by the server until we interrupt.
    server.faults.add(Fault(operation="GetObject", range_start=200 * KiB, stall=30.0))
    args = ["download", "oss://bkt/big.bin", "big.out", "--part-size", "100KiB"]
    args += ["--routines", "1", "--progress-interval", "0", *extra]
    proc = subprocess.Popen(
        [*CLI, *args],
        env=cli_env(server),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        seen.append(line)
        if "parts 2/5" in line or time.monotonic() > deadline:
            break
    assert any("parts 2/5" in line for line in seen), seen
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    return proc, err


def test_ctrl_c_exits_5_and_the_printed_command_resumes(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    data = put(server, tmp_path, "big.bin", 500 * KiB)
    proc, err = _interrupt_after_two_ranges(server, tmp_path)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err
    dcp = tmp_path / "big.out.dcp"
    assert f"the checkpoint is kept at {dcp} (2 ranges, 204800 bytes written)" in err
    assert not (tmp_path / "big.out").exists()  # never a half file at the destination
    resume = err.split("resume with:\n", 1)[1].strip().splitlines()[0]
    command = shlex.split(resume)
    assert command[:4] == [*CLI, "download"]
    assert str(tmp_path / "big.out") in command  # made absolute: works from any directory

    status = run("status", str(dcp), env=cli_env(server))
    assert status.returncode == 0, status.stderr
    assert "(a download)" in status.stdout
    assert "ranges done: 2 of 5" in status.stdout
    assert "bytes done:  204800 of 512000" in status.stdout
    status_json = json.loads(run("status", str(dcp), "--json", env=cli_env(server)).stdout)
    assert (status_json["kind"], status_json["parts_done"]) == ("download", 2)

    server.faults.clear()
    again = subprocess.run(
        command, env=cli_env(server), cwd="/", capture_output=True, text=True, timeout=30
    )
    assert again.returncode == 0, again.stderr
    assert "resumed 204800 bytes" in again.stdout
    assert "(2 resumed, 204800 bytes not fetched again)" in again.stdout
    assert (tmp_path / "big.out").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.out", "oss"]


def test_ctrl_c_without_checkpoint_exits_4_and_leaves_nothing(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    put(server, tmp_path, "big.bin", 500 * KiB)
    proc, err = _interrupt_after_two_ranges(server, tmp_path, "--no-checkpoint")
    assert proc.returncode == EXIT_ABORTED, err
    assert "not resumable (--no-checkpoint)" in err
    assert "resume with" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oss"]


def test_direct_io_is_passed_on_and_kept_in_the_resume_command(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    """``--direct-io`` (download_file(direct_io=True)): the download is exact, and the
    command printed after Ctrl-C keeps the flag, so the resumed run writes the same way."""
    data = put(server, tmp_path, "big.bin", 500 * KiB)
    proc, err = _interrupt_after_two_ranges(server, tmp_path, "--direct-io")
    assert proc.returncode == EXIT_INTERRUPTED, err
    resume = err.split("resume with:\n", 1)[1].strip().splitlines()[0]
    command = shlex.split(resume)
    assert "--direct-io" in command
    server.faults.clear()
    again = subprocess.run(
        command, env=cli_env(server), cwd="/", capture_output=True, text=True, timeout=30
    )
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "big.out").read_bytes() == data
    help_text = run("download", "--help", env=cli_env(server)).stdout
    assert "--direct-io" in help_text
