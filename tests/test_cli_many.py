"""``aiooss-resume upload -r DIR oss://BUCKET/PREFIX/`` in a subprocess (issue 11.2)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiooss_resume._cli import main
from aiooss_resume.testing import Fault, ThreadedOssServer

from .test_cli import CLI, cli_env, run

KiB = 1024
BUCKET = "bkt"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadedOssServer]:
    with ThreadedOssServer(root=tmp_path / "oss", buckets=[BUCKET]) as srv:
        yield srv


def _tree(root: Path, n: int = 12) -> dict[str, bytes]:
    data: dict[str, bytes] = {}
    for i in range(n):
        rel = f"d{i % 3}/f{i:02}.txt"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        data[rel] = os.urandom(2 * KiB + i)
        (root / rel).write_bytes(data[rel])
    return data


def _puts(server: ThreadedOssServer, start: int = 0) -> Counter[str | None]:
    return Counter(
        r.key
        for r in list(server.requests)[start:]
        if r.operation == "PutObject" and r.status == 200
    )


def test_upload_r_with_globs_stores_the_tree(tmp_path: Path, server: ThreadedOssServer) -> None:
    src = tmp_path / "photos"
    data = _tree(src)
    (src / "d0" / "skip.tmp").write_bytes(b"x")
    (src / "empty").mkdir()
    proc = run(
        "upload", "-r", str(src), f"oss://{BUCKET}/backup", "--exclude", "*.tmp",
        "--routines", "3", "--files-in-flight", "4",
        env=cli_env(server),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for rel, blob in data.items():
        assert server.read_object(BUCKET, "backup/" + rel) == blob
    assert server.object_info(BUCKET, "backup/d0/skip.tmp") is None
    summary = proc.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"uploaded {len(data)} files")
    assert f"to oss://{BUCKET}/backup/" in summary
    assert not (tmp_path / "photos.cp").exists()  # the default checkpoint dir, removed


def test_failed_file_exit_code_summary_line_and_rerun(
    tmp_path: Path, server: ThreadedOssServer
) -> None:
    src = tmp_path / "src"
    data = _tree(src)
    server.faults.add(Fault(operation="PutObject", nth=3, status=403, code="AccessDenied"))
    cp_root = tmp_path / "cps"
    args = ["upload", "-r", str(src), f"oss://{BUCKET}/p/", "--checkpoint-dir", str(cp_root)]
    proc = run(*args, env=cli_env(server))
    assert proc.returncode == 2, proc.stderr  # an OSS error is the worst outcome
    failed = [line for line in proc.stderr.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1
    assert "AccessDenied" in failed[0] and " -> p/" in failed[0]
    assert "run the same command again" in proc.stderr
    assert len(list(cp_root.iterdir())) == 1  # <name>.<digest>.cp, kept for the rerun
    start = len(server.requests)
    again = run(*args, env=cli_env(server))
    assert again.returncode == 0, again.stderr
    assert sum(_puts(server, start).values()) == 1  # only the failed file
    for rel, blob in data.items():
        assert server.read_object(BUCKET, "p/" + rel) == blob
    assert list(cp_root.iterdir()) == []
    # --sync (alias --skip-existing): everything matches, nothing is sent.
    start = len(server.requests)
    synced = run(*args, "--skip-existing", "--json", env=cli_env(server))
    assert synced.returncode == 0, synced.stderr
    assert _puts(server, start) == Counter()
    events = [json.loads(line) for line in synced.stdout.splitlines() if line.startswith("{")]
    finished = [e for e in events if e["type"] == "FileFinished"]
    assert len(finished) == len(data) and {e["status"] for e in finished} == {"unchanged"}
    assert any(e["type"] == "ManyProgress" for e in events)


def test_usage_errors_and_bad_directory(
    tmp_path: Path,
    server: ThreadedOssServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in cli_env(server).items():
        monkeypatch.setenv(name, value)
    target = f"oss://{BUCKET}/p/"
    for extra in (
        ["--checkpoint=x.cp"],
        ["--include", "[ab"],
        ["--files-in-flight", "0"],
        ["--normalize", "NFKC"],
    ):
        assert main(["upload", "-r", str(tmp_path), target, *extra]) == 1, extra
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err
    assert main(["upload", "-r", str(tmp_path / "absent"), target]) == 3
    err = capsys.readouterr().err
    assert "absent" in err and "Traceback" not in err
    assert list(server.requests) == []


def test_ctrl_c_keeps_the_checkpoint_and_prints_the_resume_command(
    tmp_path: Path, server: ThreadedOssServer
) -> None:
    src = tmp_path / "src"
    data = _tree(src, n=40)
    server.faults.add(Fault(operation="PutObject", delay=0.1, times=None))
    proc = subprocess.Popen(
        [*CLI, "upload", "-r", str(src), f"oss://{BUCKET}/c/", "--routines", "2",
         "--progress-interval", "0.01"],
        env=cli_env(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while sum(_puts(server).values()) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 5, err
    assert f"checkpoint directory is kept at {src}.cp" in err
    command = err.split("resume with:\n", 1)[1].strip().splitlines()[0]
    assert " -r " in command
    server.faults.clear()
    resumed = subprocess.run(
        shlex.split(command), env=cli_env(server), capture_output=True, text=True, timeout=30
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "unchanged" in resumed.stdout
    for rel, blob in data.items():
        assert server.read_object(BUCKET, "c/" + rel) == blob
    assert not Path(f"{src}.cp").exists()
    assert out is not None


def test_fail_fast_and_no_checkpoint_in_process(
    tmp_path: Path,
    server: ThreadedOssServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in cli_env(server).items():
        monkeypatch.setenv(name, value)
    src = tmp_path / "src"
    _tree(src, n=30)
    server.faults.add(Fault(operation="PutObject", nth=2, status=403, code="AccessDenied"))
    server.faults.add(Fault(operation="PutObject", delay=0.02, times=None))
    target = f"oss://{BUCKET}/ff/"
    code = main(["upload", "-r", str(src), target, "--fail-fast", "--no-checkpoint", "-q"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""  # --quiet: only the failures, on stderr
    assert err.count("failed: ") == 1 and "AccessDenied" in err
    assert not Path(f"{src}.cp").exists()  # --no-checkpoint: nothing kept
    uploaded = sum(
        1 for r in list(server.requests) if r.operation == "PutObject" and r.status == 200
    )
    assert uploaded < 29  # --fail-fast stopped the transfer early
