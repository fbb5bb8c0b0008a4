"""A download killed between its final rename and the checkpoint's deletion is recognised.

The state is made by a real ``kill -9``: ``tests/reliability_download_worker.py --trap
renamed`` stops right after the temp file is renamed over the destination, before the
checkpoint is deleted, and the test SIGKILLs it there. The next run must finish without a
GetObject (the destination's CRC-64 is checked against the object's), and must download
again whenever the destination cannot be proved to be the object.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import aiooss_resume as oss
from aiooss_resume._checkpoint import decode_download_checkpoint
from aiooss_resume.testing import OssServer

from .reliability_helpers import make_client

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("reliability_download_worker.py")
BUCKET = "reliability"
KEY = "finished.bin"
PART = 100 * 1024
RANGES = 5


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "srv") as srv:
        yield srv


async def _put(server: OssServer, tmp_path: Path, data: bytes) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    async with make_client(server) as client:
        await client.bucket(BUCKET).upload_file(KEY, src, PART, routines=4)
    src.unlink()


async def _kill_after_rename(server: OssServer, dest: Path) -> None:
    """Run the worker with the ``renamed`` trap and SIGKILL it there."""
    creds = server.credentials
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        "--endpoint", server.endpoint,
        "--access-key-id", creds.access_key_id,
        "--access-key-secret", creds.access_key_secret,
        "--region", server.region,
        "--bucket", BUCKET,
        "--key", KEY,
        "--file", str(dest),
        "--part-size", str(PART),
        "--trap", "renamed",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            while raw := await proc.stdout.readline():
                lines.append(raw.decode().rstrip())
                if lines[-1] == "TRAP renamed":
                    proc.send_signal(signal.SIGKILL)
                    break
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL, lines


def _operations(server: OssServer, start: int) -> list[str]:
    return [r.operation for r in server.requests[start:] if r.key == KEY]


async def test_a_kill_after_the_rename_is_finished_without_downloading_again(
    server: OssServer, tmp_path: Path
) -> None:
    data = os.urandom(RANGES * PART - 123)
    await _put(server, tmp_path, data)
    dest = tmp_path / "out.bin"
    await _kill_after_rename(server, dest)
    dcp = Path(f"{dest}.dcp")
    # The state the fix is about: the whole file in place, its checkpoint still there.
    assert dest.read_bytes() == data
    assert not Path(f"{dest}.tmp").exists()
    assert len(decode_download_checkpoint(dcp.read_bytes()).parts) == RANGES

    events: list[oss.ProgressEvent] = []
    start = len(server.requests)
    async with make_client(server) as client:
        result = await client.bucket(BUCKET).download_file(
            KEY, dest, PART, checkpoint=True, on_progress=events.append
        )
    assert _operations(server, start) == ["HeadObject"]  # no GetObject at all
    assert (result.parts_downloaded, result.parts_resumed) == (0, RANGES)
    assert result.bytes_resumed == result.size == len(data)
    assert result.crc64 is not None
    assert dest.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "srv"]
    started = [e for e in events if isinstance(e, oss.UploadStarted)]
    assert len(started) == 1
    assert started[0].resumed
    assert started[0].resumed_bytes == len(data)
    assert any(isinstance(e, oss.UploadCompleted) for e in events)


async def test_a_destination_that_is_not_the_object_is_downloaded_again(
    server: OssServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = os.urandom(RANGES * PART)
    await _put(server, tmp_path, data)
    dest = tmp_path / "out.bin"
    await _kill_after_rename(server, dest)
    dcp = Path(f"{dest}.dcp")
    checkpoint = dcp.read_bytes()

    async def rerun() -> oss.DownloadResult:
        start = len(server.requests)
        async with make_client(server) as client:
            result = await client.bucket(BUCKET).download_file(KEY, dest, PART, checkpoint=True)
        assert _operations(server, start).count("GetObject") == RANGES
        assert dest.read_bytes() == data
        assert not dcp.exists()
        assert not Path(f"{dest}.tmp").exists()
        return result

    # Same size, one byte changed (someone edited the file meanwhile): its CRC-64 differs.
    changed = bytearray(data)
    changed[PART + 17] ^= 0x40
    dest.write_bytes(bytes(changed))
    dcp.write_bytes(checkpoint)
    with caplog.at_level(logging.WARNING, logger="aiooss_resume"):
        result = await rerun()
    assert result.parts_downloaded == RANGES
    assert "not its CRC-64" in caplog.text

    # Another size.
    dest.write_bytes(data[:-1])
    dcp.write_bytes(checkpoint)
    assert (await rerun()).parts_downloaded == RANGES

    # A temp file is there (the rename never happened): the ordinary resume, which keeps
    # only the ranges within the (here empty) temp file.
    dest.write_bytes(data)
    Path(f"{dest}.tmp").write_bytes(b"")
    dcp.write_bytes(checkpoint)
    assert (await rerun()).parts_downloaded == RANGES

    # The destination is a symlink to a copy of the object: not taken for the download.
    copy = tmp_path / "copy.bin"
    copy.write_bytes(data)
    dest.unlink()
    dest.symlink_to(copy)
    dcp.write_bytes(checkpoint)
    assert (await rerun()).parts_downloaded == RANGES
    assert not dest.is_symlink()
    assert copy.read_bytes() == data  # read, never written through


async def test_an_object_changed_since_the_kill_is_downloaded_again(
    server: OssServer, tmp_path: Path
) -> None:
    old = os.urandom(RANGES * PART)
    await _put(server, tmp_path, old)
    dest = tmp_path / "out.bin"
    await _kill_after_rename(server, dest)
    new = os.urandom(RANGES * PART)
    await _put(server, tmp_path, new)  # same size, another ETag and CRC-64
    start = len(server.requests)
    async with make_client(server) as client:
        result = await client.bucket(BUCKET).download_file(KEY, dest, PART, checkpoint=True)
    assert _operations(server, start).count("GetObject") == RANGES
    assert result.parts_downloaded == RANGES
    assert dest.read_bytes() == new
    assert not Path(f"{dest}.dcp").exists()
