"""The checkpoint writer must not outlive ``upload_file`` (found by the corruption fuzz).

``_CheckpointWriter.stop()`` cancels its task with ``task.cancel()`` while the task may be
awaiting ``anyio.to_thread.run_sync(_encode_and_write, ...)``. A native asyncio cancel
stops the *wait* at once, but the thread goes on and its ``os.replace`` lands later: after
the final flush (an older snapshot replaces a newer one), after the checkpoint was deleted
on success (a checkpoint comes back from the dead), or after the next run took over.

The tests slow one periodic checkpoint write (in the worker thread) so that the window is
hit deterministically.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from aiooss_resume import _uploader
from aiooss_resume._checkpoint import Checkpoint
from aiooss_resume.testing import Fault, OssServer

from .reliability_helpers import (
    BUCKET,
    KIB,
    assert_object,
    make_client,
    make_file,
    read_checkpoint,
)

pytestmark = pytest.mark.anyio

SIZE = 1024 * KIB + 50 * KIB
PART = 100 * KIB


class SlowSecondWrite:
    """Wraps ``_encode_and_write``: the 2nd write (the writer task's first) takes 0.6 s."""

    def __init__(self) -> None:
        self.real = _uploader._encode_and_write
        self.calls = 0
        self.lock = threading.Lock()
        self.slow_finished = threading.Event()

    def __call__(self, path: str, checkpoint: Checkpoint) -> None:
        with self.lock:
            self.calls += 1
            slow = self.calls == 2
        if slow:
            time.sleep(0.6)
        self.real(path, checkpoint)
        if slow:
            self.slow_finished.set()


async def test_no_checkpoint_write_lands_after_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowSecondWrite()
    monkeypatch.setattr(_uploader, "_encode_and_write", slow)
    async with OssServer(root=tmp_path / "server") as server:
        src = tmp_path / "src.bin"
        data = make_file(src, SIZE, 1)
        cp_path = tmp_path / "src.bin.cp"
        async with make_client(server) as client:
            await client.bucket(BUCKET).upload_file("w.bin", src, PART, routines=4, checkpoint=True)
        assert_object(server, "w.bin", data)
        assert not cp_path.exists()
        # Nothing of the finished call may still be running: give a stray thread its time.
        await asyncio.sleep(0.8)
        assert slow.calls >= 2
        assert not cp_path.exists(), "a checkpoint reappeared after the upload succeeded"


async def test_final_flush_is_not_overwritten_by_a_stale_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowSecondWrite()
    monkeypatch.setattr(_uploader, "_encode_and_write", slow)
    async with OssServer(root=tmp_path / "server") as server:
        src = tmp_path / "src.bin"
        make_file(src, SIZE, 2)
        cp_path = tmp_path / "src.bin.cp"
        # Part 9 fails for good once parts 1-8 are acknowledged (routines=1 keeps the order).
        server.faults.add(Fault(operation="UploadPart", part_number=9, status=403))
        async with make_client(server) as client:
            with pytest.raises(Exception, match="AccessDenied"):
                await client.bucket(BUCKET).upload_file(
                    "w.bin", src, PART, routines=1, checkpoint=True
                )
        flushed = read_checkpoint(cp_path)
        assert flushed is not None
        assert len(flushed.parts) == 8  # the final flush records every acknowledged part
        await asyncio.to_thread(slow.slow_finished.wait, 2.0)
        later = read_checkpoint(cp_path)
        assert later is not None
        assert len(later.parts) == 8, (
            f"the checkpoint went from 8 parts to {len(later.parts)} after upload_file returned"
        )
