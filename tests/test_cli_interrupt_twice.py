"""Issue 10 (noticed last session): an upload stopped by KeyboardInterrupt instead of the
orderly cancel (a second Ctrl-C while the first one's cleanup runs) still exits with the
documented codes: 4 when not resumable, 5 with the resume command when resumable.

A real subprocess against the emulator: the first Initiate's answer is lost, so the upload
lists the key's uploads (stalled here) to clean up after the retry (issue 10.3); the first
SIGINT lands there, the engine then aborts the upload nothing records (stalled too), and
the second SIGINT lands during that Abort.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from aiooss_resume._cli import EXIT_ABORTED, EXIT_INTERRUPTED
from aiooss_resume.testing import Fault, ThreadedOssServer

from .test_cli import CLI, KiB, cli_env, make_file, server

__all__ = ["server"]  # the fixture, re-exported so pytest finds it here


def wait_in_flight(server: ThreadedOssServer, operation: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while server.stats.in_flight[operation] == 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{operation} never arrived"
        time.sleep(0.005)


@pytest.mark.parametrize("resumable", [True, False], ids=["checkpoint", "no-checkpoint"])
def test_a_second_ctrl_c_keeps_the_documented_exit_code(
    server: ThreadedOssServer, tmp_path: Path, resumable: bool
) -> None:
    make_file(tmp_path / "big.bin", 300 * KiB)
    server.faults.add(Fault(operation="InitiateMultipartUpload", times=1, drop_response=True))
    server.faults.add(Fault(operation="ListMultipartUploads", stall=30.0))
    server.faults.add(Fault(operation="AbortMultipartUpload", stall=30.0))
    args = ["upload", "big.bin", "oss://bkt/big.bin", "--part-size", "100KiB"]
    args += ["--progress-interval", "0"]
    if not resumable:
        args.append("--no-checkpoint")
    proc = subprocess.Popen(
        [*CLI, *args],
        env=cli_env(server),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_in_flight(server, "ListMultipartUploads", proc)
        proc.send_signal(signal.SIGINT)  # the orderly cancel: abort what nothing records
        wait_in_flight(server, "AbortMultipartUpload", proc)
        proc.send_signal(signal.SIGINT)  # Python's default handler now: KeyboardInterrupt
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in err
    assert "interrupted again" in err, err  # the KeyboardInterrupt path, not the orderly one
    if resumable:
        assert proc.returncode == EXIT_INTERRUPTED == 5, err
        assert "resume with:" in err and " upload " in err.split("resume with:")[1]
    else:
        assert proc.returncode == EXIT_ABORTED == 4, err
        assert "resume with" not in err
        assert "aiooss-resume uploads oss://bkt/big.bin" in err
