"""An engine bug found while building the CLI demo: a cancelled checkpoint write lands late.

``_CheckpointWriter.stop()`` cancels the writer task with ``Task.cancel()`` while it awaits
``IoRunner.run`` (``anyio.to_thread.run_sync``). A native asyncio cancel does not wait for the
worker thread: ``stop()`` returns while the thread is still inside ``write_atomic`` with an
older snapshot. The next write (the flush) then races it, and whichever ``os.replace`` comes
last wins, so the checkpoint on disk can go *backwards*; after a successful upload the stale
write can even re-create the checkpoint the engine just deleted.

Seen for real: ``aiooss-resume demo`` on a fresh clone (cold disk, slow fsync) reported that
the checkpoint "kept 1 parts" although 4 parts had been acknowledged and flushed.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

import aiooss_resume as oss
from aiooss_resume import _uploader
from aiooss_resume._checkpoint import decode_checkpoint
from aiooss_resume.testing import OssServer

KiB = 1024


@pytest.mark.anyio
async def test_no_checkpoint_write_lands_after_upload_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = _uploader.write_atomic
    parts_total = 8

    def slow_stale_write(path: str, data: bytes) -> None:
        # A snapshot that lacks some parts is slow (like an fsync on a busy disk); the
        # complete one is fast, so a stale write still in flight lands after it.
        recorded = len(decode_checkpoint(data).parts)
        if 0 < recorded < parts_total:
            time.sleep(0.5)
        real_write(path, data)

    monkeypatch.setattr(_uploader, "write_atomic", slow_stale_write)
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(parts_total * 100 * KiB))
    async with OssServer(root=tmp_path / "oss") as server:
        creds = server.credentials
        async with oss.Client(
            server.endpoint,
            credentials=oss.Credentials(creds.access_key_id, creds.access_key_secret),
            region=server.region,
        ) as client:
            result = await client.bucket("bkt").upload_file(
                "k", src, 100 * KiB, routines=1, checkpoint=True
            )
        assert result.size == parts_total * 100 * KiB
        await asyncio.sleep(1.0)  # give any orphaned write thread time to finish
    assert not Path(f"{src}.cp").exists(), "a stale checkpoint re-appeared after success"
