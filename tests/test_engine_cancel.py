"""Cancellation edge cases of the engine, through the in-memory OSS (tests/fake_oss.py).

The issue's contract: a cancelled upload stops within about a second, flushes its
checkpoint (shielded and bounded), leaves no task running, keeps a resumable upload, and
re-raises ``CancelledError``. Pinned here: the bound really bounds (a hung Abort, a hung
checkpoint write) without turning the cancellation into a ``TimeoutError``; a write cut off
by the bound cannot land in a later run's checkpoint (the lock is held until it ends); a
cancel that coincides with a part failing for good is not lost.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable
from pathlib import Path

import anyio
import pytest

import aiooss_resume as oss
from aiooss_resume import _uploader
from aiooss_resume._checkpoint import Checkpoint, decode_checkpoint

from .fake_oss import Call, FakeOss, error
from .reliability_helpers import wait_until
from .test_engine_io import lock_is_free
from .test_engine_mock import client_for, make_file

pytestmark = pytest.mark.anyio

KIB = 1024
MECHANISMS = ("task", "anyio", "timeout")


class Canceller:
    """Runs an upload under one cancellation mechanism; ``cancel()`` triggers it."""

    def __init__(self, mechanism: str) -> None:
        self.mechanism = mechanism
        self.scope: anyio.CancelScope | None = None
        self.deadline: asyncio.Timeout | None = None
        self.task: asyncio.Task[str] | None = None
        self.saw_cancelled_error = False

    def start(self, upload: Awaitable[oss.UploadResult]) -> asyncio.Task[str]:
        async def inner() -> None:
            try:
                await upload
            except asyncio.CancelledError:
                self.saw_cancelled_error = True
                raise

        async def runner() -> str:
            if self.mechanism == "anyio":
                with anyio.CancelScope() as self.scope:
                    await inner()
                return "cancelled" if self.scope.cancelled_caught else "finished"
            if self.mechanism == "timeout":
                try:
                    async with asyncio.timeout(None) as self.deadline:
                        await inner()
                except TimeoutError:
                    return "cancelled"
                return "finished"
            await inner()
            return "finished"

        self.task = asyncio.create_task(runner())
        return self.task

    def cancel(self) -> None:
        if self.mechanism == "task":
            assert self.task is not None
            self.task.cancel()
        elif self.mechanism == "anyio":
            assert self.scope is not None
            self.scope.cancel()
        else:
            assert self.deadline is not None
            self.deadline.reschedule(asyncio.get_running_loop().time())

    async def outcome(self) -> str:
        assert self.task is not None
        try:
            return await self.task
        except asyncio.CancelledError:
            assert self.mechanism == "task"
            assert self.task.cancelled()
            return "cancelled"


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_cancel_while_abort_hangs_is_bounded_and_still_a_cancellation(
    tmp_path: Path, mechanism: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 1000 * KIB)
    network_gone = asyncio.Event()  # never set: Abort hangs until it is cancelled

    async def abort_hangs(call: Call) -> oss.HttpResponse | None:
        # Parts 3 and later hang too, so the cancel lands mid-upload however slow the
        # machine (issue 13.5: no wall-clock race between the upload and the test).
        if call.op == "AbortMultipartUpload" or (call.op == "UploadPart" and call.part_number > 2):
            await network_gone.wait()
        return None

    fake.fault = abort_hangs
    async with client_for(fake) as client:
        before = asyncio.all_tasks()
        canceller = Canceller(mechanism)
        canceller.start(client.bucket("bkt").upload_file("k", src, 100 * KIB, routines=2))
        assert await wait_until(lambda: len(fake.ops("UploadPart")) >= 3, limit=30)
        canceller.cancel()
        cancelled_at = time.monotonic()
        assert await canceller.outcome() == "cancelled"  # not a TimeoutError
        waited = time.monotonic() - cancelled_at
        assert canceller.saw_cancelled_error
        assert asyncio.all_tasks() - before == set()
    assert len(fake.ops("AbortMultipartUpload")) == 1  # tried, bounded, given up
    assert "cut short" in caplog.text
    # The bound is what ended it: a lower bound, which no load can make fail (a timer never
    # fires early), where an upper one would race the machine.
    assert waited >= _uploader.FLUSH_TIMEOUT * 0.9, waited


async def test_cancel_while_a_checkpoint_write_hangs_is_bounded_and_keeps_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeOss()
    fake.part_delay = 0.02
    src = make_file(tmp_path, 1000 * KIB)
    cp_path = tmp_path / "src.bin.cp"
    hung, release, landed = threading.Event(), threading.Event(), threading.Event()
    real = _uploader._encode_and_write

    def write(path: str, checkpoint: Checkpoint) -> None:
        if checkpoint.parts and not hung.is_set():  # the first periodic write: a stuck disk
            hung.set()
            release.wait(30)
            real(path, checkpoint)
            landed.set()
            return
        real(path, checkpoint)

    monkeypatch.setattr(_uploader, "_encode_and_write", write)
    async with client_for(fake) as client:
        bucket = client.bucket("bkt")
        before = asyncio.all_tasks()
        task = asyncio.ensure_future(
            bucket.upload_file("k", src, 100 * KIB, routines=2, checkpoint=True)
        )
        assert await wait_until(hung.is_set, limit=30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert asyncio.all_tasks() - before == set()
        assert not landed.is_set()
        # The write goes on in its thread: until it ends, nobody else may use the checkpoint
        # (its snapshot would overwrite theirs).
        with pytest.raises(oss.CheckpointError, match="in use"):
            await bucket.upload_file("k", src, 100 * KIB, checkpoint=True)
        release.set()
        assert await wait_until(lambda: lock_is_free(cp_path), limit=30)
        assert landed.is_set()
        recorded = decode_checkpoint(cp_path.read_bytes())
        (upload,) = fake.uploads.values()  # kept for the resume, not aborted
        assert recorded.upload_id in {c.query.get("uploadId") for c in fake.ops("UploadPart")}
        for part in recorded.parts:
            assert upload.parts[part.number][1] == part.etag
        fake.part_delay = 0
        result = await bucket.upload_file("k", src, 100 * KIB, routines=2, checkpoint=True)
    assert result.upload_id == recorded.upload_id
    assert fake.objects["k"][0] == src.read_bytes()


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_cancel_as_a_part_fails_for_good_is_not_lost(tmp_path: Path, mechanism: str) -> None:
    """Python 3.11's TaskGroup reports the part's error, not the cancellation."""
    fake = FakeOss()
    src = make_file(tmp_path, 500 * KIB)
    canceller = Canceller(mechanism)
    slow_part = asyncio.Event()  # never set: part 1 is in flight until cancelled

    async def fail_as_cancelled(call: Call) -> oss.HttpResponse | None:
        if call.op == "UploadPart" and call.part_number == 1:
            await slow_part.wait()
        if call.op == "UploadPart" and call.part_number == 2:
            await asyncio.sleep(0.01)
            canceller.cancel()  # the app shuts down...
            return error(403, "AccessDenied")  # ...just as part 2 fails for good
        return None

    fake.fault = fail_as_cancelled
    async with client_for(fake) as client:
        before = asyncio.all_tasks()
        canceller.start(
            client.bucket("bkt").upload_file("k", src, 100 * KIB, routines=2, checkpoint=True)
        )
        assert await canceller.outcome() == "cancelled"
        assert canceller.saw_cancelled_error
        assert asyncio.all_tasks() - before == set()
    assert (tmp_path / "src.bin.cp").exists()  # resumable, as after any cancellation
    assert len(fake.uploads) == 1 and not fake.ops("AbortMultipartUpload")


async def test_part_failure_without_a_cancel_is_still_the_error(tmp_path: Path) -> None:
    """The other side of the check above: the TaskGroup's own cancellation of us (a part
    failed) is not mistaken for the caller's."""
    fake = FakeOss()
    src = make_file(tmp_path, 300 * KIB)

    async def last_part_fails(call: Call) -> oss.HttpResponse | None:
        if call.op == "UploadPart" and call.part_number == 3:
            return error(403, "AccessDenied")
        return None

    fake.fault = last_part_fails
    async with client_for(fake) as client:
        for routines in (1, 2, 3, 8):
            with pytest.raises(oss.ServiceError, match="AccessDenied"):
                await client.bucket("bkt").upload_file("k", src, 100 * KIB, routines=routines)
            task = asyncio.current_task()
            assert task is not None and task.cancelling() == 0
    assert fake.objects == {}
