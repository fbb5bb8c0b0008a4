"""The engine's I/O adapters under cancellation, and the cheap Complete step.

Worker threads cannot be interrupted; only waiting for them can. These tests pin what the
engine does about it: nothing acquired in a thread (the checkpoint lock, the source's file
descriptor) is leaked when the waiter is cancelled, long CRC verification is split into
bounded jobs with cancellation points, and a thread job's end stays observable after its
waiter left. They run through the ``IoRunner`` seam (a runner that gates or records jobs),
and one test takes the checkpoint lock from a second, real process.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiooss_resume as oss
from aiooss_resume import _session as _client
from aiooss_resume._crc64 import crc64, crc64_fold
from aiooss_resume._errors import CheckpointError
from aiooss_resume._fileio import CRC_JOB_SIZE, CheckpointLock, IoRunner, SourceFile, ThreadJob
from aiooss_resume._planner import PartPlan, plan_parts
from aiooss_resume._xml import encode_complete_request

from .fake_oss import FakeOss
from .reliability_helpers import wait_until
from .test_engine_mock import client_for, make_file

pytestmark = pytest.mark.anyio

KIB = 1024
MIB = 1024 * KIB


class GatedRunner(IoRunner):
    """Holds its ``gate``-th job (1-based) in its worker thread until ``go`` is set;
    ``entered`` says the job is there."""

    def __init__(self, gate: int = 1) -> None:
        super().__init__(4)
        self.gate = gate
        self.jobs = 0
        self.entered = threading.Event()
        self.go = threading.Event()

    async def run(
        self, func: Callable[..., Any], *args: object, abandon_on_cancel: bool = False
    ) -> Any:
        self.jobs += 1
        if self.jobs != self.gate:
            return await super().run(func, *args, abandon_on_cancel=abandon_on_cancel)

        def gated() -> Any:
            self.entered.set()
            assert self.go.wait(10), "the test never opened the gate"
            return func(*args)

        return await super().run(gated, abandon_on_cancel=abandon_on_cancel)


def open_descriptors_of(path: Path) -> list[int]:
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == str(path):
                found.append(int(name))
        except OSError:
            continue
    return found


class RecordingRunner(IoRunner):
    """Records the arguments of every job; ``after_job`` is called on the loop after each."""

    def __init__(self) -> None:
        super().__init__(4)
        self.jobs: list[tuple[object, ...]] = []
        self.after_job: Callable[[], None] = lambda: None

    async def run(
        self, func: Callable[..., Any], *args: object, abandon_on_cancel: bool = False
    ) -> Any:
        self.jobs.append(args)
        result = await super().run(func, *args, abandon_on_cancel=abandon_on_cancel)
        self.after_job()
        return result


def lock_is_free(cp_path: Path) -> bool:
    probe = CheckpointLock(str(cp_path))
    try:
        probe.acquire()
    except CheckpointError:
        return False
    probe.release()
    return True


# ---------------------------------------------------------------- acquisitions in threads


async def test_cancelled_lock_acquisition_releases_the_lock(tmp_path: Path) -> None:
    cp_path = tmp_path / "src.bin.cp"
    lock = CheckpointLock(str(cp_path))
    runner = GatedRunner()
    task = asyncio.ensure_future(runner.run_owned(lock.acquire, lambda _: lock.release()))
    assert await wait_until(runner.entered.is_set)
    task.cancel()  # native cancellation: the wait stops, the thread goes on
    with pytest.raises(asyncio.CancelledError):
        await task
    runner.go.set()  # the thread now takes the lock, finds its caller gone, releases it
    assert await wait_until(lambda: lock_is_free(cp_path)), "the lock leaked"
    assert not Path(lock.path).exists()


async def test_lock_taken_as_its_caller_is_cancelled_is_released(tmp_path: Path) -> None:
    """The thread ends just as its caller is cancelled: whichever side sees the other gone
    (the thread, or the caller holding a result it never received) releases the lock."""
    cp_path = tmp_path / "src.bin.cp"
    lock = CheckpointLock(str(cp_path))
    loop = asyncio.get_running_loop()
    runner = IoRunner(2)
    holder: dict[str, asyncio.Future[None]] = {}

    def acquire_then_cancel_the_caller() -> None:
        lock.acquire()
        # Scheduled before anyio reports the result: the caller is cancelled first.
        loop.call_soon_threadsafe(holder["task"].cancel)

    for _ in range(20):  # both interleavings happen
        holder["task"] = task = asyncio.ensure_future(
            runner.run_owned(acquire_then_cancel_the_caller, lambda _: lock.release())
        )
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await wait_until(lambda: lock_is_free(cp_path)), "the lock leaked"


async def test_cancelled_source_open_closes_the_descriptor(tmp_path: Path) -> None:
    src = make_file(tmp_path, 10)
    runner = GatedRunner()
    task = asyncio.ensure_future(SourceFile.open(str(src), runner))
    assert await wait_until(runner.entered.is_set)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    runner.go.set()  # os.open now runs, finds its caller gone, and closes what it opened
    assert await wait_until(lambda: not open_descriptors_of(src)), "the descriptor leaked"


async def test_upload_cancelled_while_taking_its_lock_leaves_it_free(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 300 * KIB)
    async with client_for(fake) as client:
        # The IoRunner seam: the client's 2nd thread job (after resolving the paths) is
        # CheckpointLock.acquire; it is held in its thread while the upload is cancelled.
        runner = GatedRunner(gate=2)
        client._io = runner
        task = asyncio.ensure_future(client.bucket("bkt").upload_file("k", src, checkpoint=True))
        assert await wait_until(runner.entered.is_set)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        runner.go.set()
        assert await wait_until(lambda: lock_is_free(tmp_path / "src.bin.cp"))
        client._io = IoRunner(4)
        result = await client.bucket("bkt").upload_file("k", src, checkpoint=True)
    assert result.size == 300 * KIB


async def test_checkpoint_lock_held_by_another_process(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 250 * KIB)
    script = (
        "import sys\n"
        "from aiooss_resume._fileio import CheckpointLock\n"
        "lock = CheckpointLock(sys.argv[1])\n"
        "lock.acquire()\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "lock.release()\n"
    )
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        str(src) + ".cp",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert await holder.stdout.readline() == b"locked\n"
        async with client_for(fake) as client:
            with pytest.raises(oss.CheckpointError, match="in use by another upload"):
                await client.bucket("bkt").upload_file("k", src, 100 * KIB, checkpoint=True)
            assert fake.calls == []  # refused before any request
            holder.stdin.write(b"\n")
            await holder.stdin.drain()
            assert await holder.wait() == 0
            result = await client.bucket("bkt").upload_file("k", src, 100 * KIB, checkpoint=True)
        assert result.parts_uploaded == 3
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


# ---------------------------------------------------------------- thread jobs


async def test_thread_job_end_is_known_after_its_waiter_left() -> None:
    runner = IoRunner(2)
    job = ThreadJob()
    go = threading.Event()
    ended: list[str] = []
    waiter = asyncio.ensure_future(runner.run(job.run, go.wait, 10, abandon_on_cancel=True))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    job.abandon()  # it had started: still running
    assert not job.done
    job.call_when_done(lambda: ended.append(threading.current_thread().name))
    go.set()
    await job.wait()
    assert job.done and len(ended) == 1
    job.call_when_done(lambda: ended.append("now"))  # already settled: called at once
    assert ended[-1] == "now"


async def test_thread_job_abandoned_before_it_started_never_runs() -> None:
    runner = IoRunner(1)
    job = ThreadJob()
    ran: list[int] = []
    waiter = asyncio.ensure_future(runner.run(job.run, ran.append, 1, abandon_on_cancel=True))
    waiter.cancel()  # before any thread picked it up
    with pytest.raises(asyncio.CancelledError):
        await waiter
    job.abandon()
    await job.wait()
    await runner.run(int)  # let the worker drain its queue
    assert job.done and ran == []


# ---------------------------------------------------------------- CRC verification jobs


async def test_crc_range_runs_in_bounded_jobs(tmp_path: Path) -> None:
    path = tmp_path / "sparse.bin"
    size = 2 * CRC_JOB_SIZE + 12345
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(CRC_JOB_SIZE + 7)
        f.write(b"not only zeros")
    runner = RecordingRunner()
    src = await SourceFile.open(str(path), runner)
    try:
        runner.jobs.clear()
        got = await src.crc_range(5, size - 5)
    finally:
        await src.aclose()
    expected = 0
    with open(path, "rb") as f:
        f.seek(5)
        while chunk := f.read(8 * MIB):
            expected = crc64(chunk, expected)
    assert got == expected
    sizes = [args[2] for args in runner.jobs]
    assert all(isinstance(n, int) and n <= CRC_JOB_SIZE for n in sizes), sizes
    assert len(sizes) == math.ceil((size - 5) / CRC_JOB_SIZE)


async def test_crc_range_stops_between_jobs_when_an_anyio_scope_is_cancelled(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sparse.bin"
    with open(path, "wb") as f:
        f.truncate(4 * CRC_JOB_SIZE)
    runner = RecordingRunner()
    src = await SourceFile.open(str(path), runner)
    try:
        runner.jobs.clear()
        with anyio.CancelScope() as scope:
            runner.after_job = scope.cancel  # cancelled while the first job runs
            await src.crc_range(0, 4 * CRC_JOB_SIZE)
        runner.after_job = lambda: None
    finally:
        await src.aclose()
    assert scope.cancelled_caught
    assert len(runner.jobs) == 1, "the verification went on after the cancellation"


# ---------------------------------------------------------------- Complete's CPU work


def test_part_plans_are_not_tracked_by_the_garbage_collector() -> None:
    # 10,000 tracked plans would trigger a full collection (a ~10 ms loop pause) mid-upload.
    plans = plan_parts(10_000 * 100 * KIB + 1, 100 * KIB + 1)
    assert len(plans) == 10_000
    assert not any(gc.is_tracked(p) for p in plans)
    assert not gc.is_tracked(PartPlan(1, 0, 1))


def test_crc64_fold_continues_from_a_crc() -> None:
    pieces = [os.urandom(n) for n in (1000, 1000, 1000, 17)]
    pairs = [(crc64(p), len(p)) for p in pieces]
    whole = crc64(b"".join(pieces))
    assert crc64_fold(pairs) == whole
    assert crc64_fold(pairs[2:], crc64_fold(pairs[:2])) == whole
    assert crc64_fold([], whole) == whole


@pytest.mark.parametrize("count", [0, 1, 499, 500, 501, 10_000])
async def test_complete_body_encoded_in_slices_is_the_same_document(count: int) -> None:
    parts = [(n, f'"{n:032X}"') for n in range(1, count + 1)]
    if count:
        parts[-1] = (count, '"a&b<c>"')  # one ETag that needs escaping
    assert await _client._encode_complete(parts) == encode_complete_request(parts)


async def test_list_parts_pages_are_decoded_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeOss(list_page=2)
    async with client_for(fake) as client:
        upload_id = (await client._initiate("bkt", "k", {}, None)).upload_id
        for n in (1, 2, 3):
            await client._upload_part(
                "bkt", "k", upload_id, n, lambda: _one(b"x" * 10), 10, {}, lambda r: None, None
            )
        threads: list[bool] = []
        real = _client.decode_list_parts_result

        def spy(body: bytes) -> Any:
            threads.append(threading.current_thread() is threading.main_thread())
            return real(body)

        monkeypatch.setattr(_client, "decode_list_parts_result", spy)
        parts = await client._list_parts("bkt", "k", upload_id)
    assert [p.part_number for p in parts] == [1, 2, 3]
    assert threads == [False, False], "a ListParts page was decoded on the event loop"


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_complete_body_is_encoded_from_a_lazy_iterable_in_slices() -> None:
    """10,000 (number, ETag) tuples alive at once are tracked survivors enough to set off a
    full garbage collection (measured: a 16-26 ms loop pause at Complete). The encoder must
    pull at most one slice of them at a time, yielding to the loop between slices."""
    pulled = 0

    def pairs() -> Iterator[tuple[int, str]]:
        nonlocal pulled
        for n in range(1, 10_001):
            pulled += 1
            yield n, f'"{n:032X}"'

    pulled_at_each_yield = []
    coro = _client._encode_complete(pairs())
    try:
        while True:
            coro.send(None)  # runs to the next asyncio.sleep(0)
            pulled_at_each_yield.append(pulled)
    except StopIteration as stop:
        body = stop.value
    steps = [b - a for a, b in itertools.pairwise([0, *pulled_at_each_yield])]
    assert len(steps) >= 10_000 // _client._ENCODE_SLICE
    assert max(steps) <= _client._ENCODE_SLICE
    assert body == encode_complete_request(list(pairs()))
