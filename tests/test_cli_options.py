"""``aiooss-resume upload`` options, each checked for what it promises, through a subprocess.

Where the checkpoint goes (``--checkpoint PATH``, ``--checkpoint-dir DIR``, not both) and the
``--part-size`` range.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiooss_resume._cli import EXIT_OK, EXIT_SERVICE, EXIT_USAGE
from aiooss_resume.testing import Fault, ThreadedOssServer

from .test_cli import assert_no_traceback, cli_env, make_file, run

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
        assert len(proc.stderr.strip().splitlines()) == 1
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
