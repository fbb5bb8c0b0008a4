"""Cancellation at every await of the engine (issue 6, reliability suite; issue 4 semantics).

Each phase of an upload is stalled in turn (a fault hook holds the request on the server, or
a slowed checkpoint write holds the writer thread) and the upload is cancelled while it
waits, by ``task.cancel()``, by an anyio ``CancelScope`` and by ``asyncio.timeout``. Asserted:

* the cancellation completes through its own cleanup and ``upload_file`` re-raises
  ``CancelledError`` (the enclosing scope then reports its own outcome). Deterministic on a
  loaded machine (issue 13.5): no wall-clock limit is asserted here. "Stops within about a
  second" is two facts tested apart: the engine's cleanup bound (``FLUSH_TIMEOUT``, 1 s)
  cuts a cleanup that hangs (tests/test_engine_cancel.py, where the cleanup never ends), and
  here, where every cleanup is healthy, the bound is raised far above anything a loaded CI
  can delay (``HEALTHY_BOUND``) and the cleanup must end by itself ("cut short" is never
  logged) while the stalled request is still held (it is released only afterwards);
* no task outlives the call (``asyncio.all_tasks()`` before and after);
* with a checkpoint: it decodes, records only parts the server holds (same ETag, size,
  CRC), its upload was not aborted, and the next run finishes byte-identical without
  re-sending a recorded part;
* without a checkpoint: the multipart upload is aborted (nothing unfinished is left).

The server runs in its own thread (``ThreadedOssServer``) so that the test loop's tasks are
the client's only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiooss_resume as oss
from aiooss_resume import _transfer, _uploader
from aiooss_resume._checkpoint import Checkpoint
from aiooss_resume.testing import Fault, FaultContext, ThreadedOssServer

from .reliability_helpers import (
    BUCKET,
    KIB,
    WriteTracker,
    assert_checkpoint_consistent,
    assert_checkpoint_gone,
    assert_object,
    make_client,
    make_file,
    open_upload_ids,
    part_records,
    read_checkpoint,
    stall_hook,
    wait_until,
)

pytestmark = pytest.mark.anyio

SIZE = 1024 * KIB + 50 * KIB  # 11 parts of 100 KiB
PART = 100 * KIB
ROUTINES = 4
# The engine bounds its shielded cleanup (checkpoint flush, or the Abort of a non-resumable
# upload) by FLUSH_TIMEOUT (1 s). With the real bound, a healthy cleanup that a loaded
# 2-core CI slows past 1 s is cut short and the test fails for the machine's sake (it did,
# once: "cancellation took 1.01 s"). Here the bound is HEALTHY_BOUND instead: far above any
# scheduling delay, below the stall hook's 30 s, so a cleanup that waited for the stalled
# request would still be cut short, logged, and fail the test.
HEALTHY_BOUND = 20.0
WAIT = 30.0  # generous limits for conditions polled on the loop (they return when true)
CUT_SHORT = "cut short"

PHASES = {
    # phase: (operation stalled, part number or None, needs a resumable first run)
    "initiate": ("InitiateMultipartUpload", None, False),
    "part-first": ("UploadPart", 1, False),
    "part-middle": ("UploadPart", 6, False),
    "part-last": ("UploadPart", 11, False),
    "listparts": ("ListParts", None, True),
    "abort-stale": ("AbortMultipartUpload", None, True),
    "complete": ("CompleteMultipartUpload", None, False),
    "head": ("HeadObject", None, False),
    "putobject": ("PutObject", None, False),
    "checkpoint-write": ("", None, False),
}
MECHANISMS = ("task", "anyio", "timeout")


class Gate:
    """Set when the stalled phase is reached; released to let the server answer."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.released = threading.Event()
        self.where = ""

    def arrive(self, ctx: FaultContext | None = None) -> None:
        if ctx is not None:
            self.where = f"{ctx.operation} part={ctx.part_number}"
        self.arrived.set()


async def _cancel_while_stalled(
    make_upload: Callable[[], Awaitable[oss.UploadResult]], gate: Gate, mechanism: str
) -> tuple[float, bool]:
    """Run the upload, cancel it once ``gate`` arrived; return (seconds to stop, saw cancel)."""
    saw_cancel = False
    handle: dict[str, object] = {}

    async def inner() -> None:
        nonlocal saw_cancel
        try:
            await make_upload()
        except asyncio.CancelledError:
            saw_cancel = True
            raise

    async def runner() -> str:
        if mechanism == "task":
            await inner()
            return "finished"
        if mechanism == "anyio":
            with anyio.CancelScope() as scope:
                handle["scope"] = scope
                await inner()
            return "cancelled_caught" if scope.cancelled_caught else "finished"
        try:
            async with asyncio.timeout(None) as deadline:
                handle["deadline"] = deadline
                await inner()
        except TimeoutError:
            return "timed out"
        return "finished"

    task = asyncio.create_task(runner())
    ok = await wait_until(lambda: gate.arrived.is_set() or task.done(), limit=WAIT)
    assert ok and not task.done(), f"the stalled phase was never reached ({task})"
    started = time.monotonic()
    if mechanism == "task":
        task.cancel()
    elif mechanism == "anyio":
        handle["scope"].cancel()  # type: ignore[attr-defined]
    else:
        handle["deadline"].reschedule(asyncio.get_running_loop().time())  # type: ignore[attr-defined]
    outcome: str | None = None
    with contextlib.suppress(asyncio.CancelledError):
        outcome = await task
    elapsed = time.monotonic() - started
    if mechanism == "task":
        assert task.cancelled(), f"the task was not cancelled (outcome {outcome})"
    elif mechanism == "anyio":
        assert outcome == "cancelled_caught", outcome
    else:
        assert outcome == "timed out", outcome
    return elapsed, saw_cancel


def _install_stall(server: ThreadedOssServer, phase: str, gate: Gate) -> None:
    operation, part, _ = PHASES[phase]
    if phase == "head":
        # Complete takes effect but its answer is lost: the retry gets NoSuchUpload and the
        # engine asks HeadObject whether the object is there (spec 10.3).
        server.faults.add(Fault(operation="CompleteMultipartUpload", drop_response=True))
    if operation:
        server.faults.add(
            Fault(
                operation=operation,
                part_number=part,
                hook=stall_hook(gate.arrive, gate.released.is_set),
            )
        )


async def _prepare_resumable(server: ThreadedOssServer, src: Path, key: str) -> Checkpoint:
    """A first run that fails for good on part 7 and leaves a checkpoint behind."""
    fault = server.faults.add(Fault(operation="UploadPart", part_number=7, status=403))
    async with make_client(server) as client:
        with pytest.raises(oss.ServiceError) as info:
            await client.bucket(BUCKET).upload_file(
                key, src, PART, routines=ROUTINES, checkpoint=True
            )
    assert info.value.code == "AccessDenied"
    fault.remove()
    tracker = _uploader._encode_and_write
    assert isinstance(tracker, WriteTracker)
    await tracker.settle()  # see test_reliability_writer.py
    cp = read_checkpoint(Path(str(src) + ".cp"))
    assert cp is not None and cp.parts, "the failed run left no checkpoint"
    return cp


@pytest.fixture(autouse=True)
def healthy_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cleanup bound, raised (see ``HEALTHY_BOUND``); the real one is tested in
    tests/test_engine_cancel.py."""
    assert _transfer.FLUSH_TIMEOUT == _uploader.FLUSH_TIMEOUT == 1.0
    monkeypatch.setattr(_transfer, "FLUSH_TIMEOUT", HEALTHY_BOUND)


def assert_not_cut_short(caplog: pytest.LogCaptureFixture, elapsed: float, where: str) -> None:
    """The cleanup after the cancel ended by itself, not by the bound (whatever the clock)."""
    cut = [r.getMessage() for r in caplog.records if CUT_SHORT in r.getMessage()]
    assert not cut, f"the cleanup was cut short after {elapsed:.2f} s at {where}: {cut}"


@pytest.fixture(autouse=True)
def tracker(monkeypatch: pytest.MonkeyPatch) -> WriteTracker:
    return WriteTracker().install(monkeypatch)


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("phase", list(PHASES))
async def test_cancel_at_phase_with_checkpoint(
    tmp_path: Path,
    phase: str,
    mechanism: str,
    monkeypatch: pytest.MonkeyPatch,
    tracker: WriteTracker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = f"cancel/{phase}/{mechanism}.bin"
    size = 60 * KIB if phase == "putobject" else SIZE
    src = tmp_path / "src.bin"
    data = make_file(src, size, seed=hash((phase, mechanism)) & 0xFFFF)
    cp_path = Path(str(src) + ".cp")
    gate = Gate()
    real_write = tracker.real
    with ThreadedOssServer(root=tmp_path / "server") as server:
        before_cp: Checkpoint | None = None
        if PHASES[phase][2]:
            before_cp = await _prepare_resumable(server, src, key)
            if phase == "abort-stale":
                # Damaged (checksum mismatch) but its upload id readable: the engine aborts it.
                envelope = json.loads(cp_path.read_bytes())
                envelope["sha256"] = "0" * 64
                cp_path.write_text(json.dumps(envelope))
        if phase == "checkpoint-write":
            real = real_write

            # A periodic write while parts are still in flight (slowed to be sure of it).
            server.faults.add(Fault(operation="UploadPart", nth=4, times=None, delay=0.1))

            def slow_write(path: str, checkpoint: Checkpoint) -> None:
                if 1 <= len(checkpoint.parts) < 11 and not gate.arrived.is_set():
                    gate.arrive()
                    time.sleep(0.3)
                real(path, checkpoint)

            tracker.real = slow_write  # inside the tracker: settle() waits for it
        _install_stall(server, phase, gate)
        tasks_before = asyncio.all_tasks()
        async with make_client(server) as client:

            def start() -> Awaitable[oss.UploadResult]:
                return client.bucket(BUCKET).upload_file(
                    key, src, PART, routines=ROUTINES, checkpoint=True
                )

            elapsed, saw_cancel = await _cancel_while_stalled(start, gate, mechanism)
            leftover = asyncio.all_tasks() - tasks_before
        gate.released.set()
        await tracker.settle()  # see test_reliability_writer.py
        tracker.real = real_write
        assert saw_cancel, "upload_file did not re-raise CancelledError"
        assert_not_cut_short(caplog, elapsed, gate.where)
        assert not leftover, f"tasks outlived upload_file: {leftover}"

        # It decodes (or is absent); abort-stale left the damaged file for the next run.
        cp = None if phase == "abort-stale" else read_checkpoint(cp_path)
        if phase in ("initiate", "putobject"):
            assert cp is None, "a checkpoint without an upload id"
        elif phase != "abort-stale":
            assert cp is not None, "no checkpoint after cancelling a resumable upload"
            if phase == "head":
                assert_object(server, key, data)  # Complete did take effect
            else:
                assert cp.upload_id in open_upload_ids(server, key), "resumable upload aborted"
                assert_checkpoint_consistent(server, cp)
            if before_cp is not None:
                assert cp.upload_id == before_cp.upload_id
                assert {p.number for p in before_cp.parts} <= {p.number for p in cp.parts}

        # The next run finishes, byte-identical, without re-sending a recorded part.
        assert await wait_until(lambda: sum(server.stats.in_flight.values()) == 0, WAIT)
        sent_before = len(part_records(server, key))
        async with make_client(server) as client:
            result = await client.bucket(BUCKET).upload_file(
                key, src, PART, routines=ROUTINES, checkpoint=True
            )
        await tracker.settle()
        assert_object(server, key, data)
        assert_checkpoint_gone(cp_path, result.upload_id)
        resent = len(part_records(server, key)) - sent_before
        if cp is not None and phase not in ("abort-stale",):
            assert result.parts_resumed >= len(cp.parts), (result, len(cp.parts))
            assert resent == result.parts_uploaded
        if phase != "head":
            assert not open_upload_ids(server, key), "unfinished upload left after success"


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("phase", ["initiate", "part-first", "part-middle", "complete"])
async def test_cancel_without_checkpoint_aborts(
    tmp_path: Path, phase: str, mechanism: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = f"cancel-nocp/{phase}/{mechanism}.bin"
    src = tmp_path / "src.bin"
    data = make_file(src, SIZE, seed=7)
    gate = Gate()
    with ThreadedOssServer(root=tmp_path / "server") as server:
        _install_stall(server, phase, gate)
        tasks_before = asyncio.all_tasks()
        async with make_client(server) as client:

            def start() -> Awaitable[oss.UploadResult]:
                return client.bucket(BUCKET).upload_file(key, src, PART, routines=ROUTINES)

            elapsed, saw_cancel = await _cancel_while_stalled(start, gate, mechanism)
            leftover = asyncio.all_tasks() - tasks_before
        gate.released.set()
        assert saw_cancel
        assert_not_cut_short(caplog, elapsed, gate.where)
        assert not leftover, f"tasks outlived upload_file: {leftover}"
        assert await wait_until(lambda: sum(server.stats.in_flight.values()) == 0, WAIT)
        assert not open_upload_ids(server, key), "a non-resumable upload was not aborted"
        assert server.object_info(BUCKET, key) is None
        assert not list(tmp_path.glob("*.cp"))
        # And a plain re-run works.
        async with make_client(server) as client:
            await client.bucket(BUCKET).upload_file(key, src, PART, routines=ROUTINES)
        assert_object(server, key, data)


async def test_cancel_storm_every_part_in_turn(tmp_path: Path, tracker: WriteTracker) -> None:
    """Cancel while each part in turn is stalled: the same checkpoint survives 11 cancels."""
    key = "cancel/storm.bin"
    src = tmp_path / "src.bin"
    data = make_file(src, SIZE, seed=11)
    cp_path = Path(str(src) + ".cp")
    with ThreadedOssServer(root=tmp_path / "server") as server:
        upload_ids: set[str] = set()
        for number in range(1, 12):
            gate = Gate()
            fault = server.faults.add(
                Fault(
                    operation="UploadPart",
                    part_number=number,
                    hook=stall_hook(gate.arrive, gate.released.is_set),
                )
            )
            async with make_client(server) as client:

                def start(c: oss.Client = client) -> Awaitable[oss.UploadResult]:
                    return c.bucket(BUCKET).upload_file(
                        key, src, PART, routines=ROUTINES, checkpoint=True
                    )

                task = asyncio.create_task(start())
                arrived = await wait_until(
                    lambda g=gate, t=task: g.arrived.is_set() or t.done(), WAIT
                )
                if task.done():  # the part was already stored: nothing to stall
                    fault.remove()
                    await task
                    break
                assert arrived
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            gate.released.set()
            fault.remove()
            await tracker.settle()
            # Parts cancelled mid-flight may still be landing on the server: let them.
            assert await wait_until(lambda: sum(server.stats.in_flight.values()) == 0, WAIT)
            cp = read_checkpoint(cp_path)
            assert cp is not None
            upload_ids.add(cp.upload_id)
            assert_checkpoint_consistent(server, cp)
            assert number not in {p.number for p in cp.parts}
        else:
            async with make_client(server) as client:
                await client.bucket(BUCKET).upload_file(
                    key, src, PART, routines=ROUTINES, checkpoint=True
                )
        assert_object(server, key, data)
        assert len(upload_ids) == 1, "a cancelled resumable upload was restarted"
        # Every part went up exactly once successfully.
        ok = [r.part_number for r in part_records(server, key) if r.status == 200]
        assert sorted(ok) == list(range(1, 12)), sorted(ok)


@pytest.mark.parametrize(
    "mechanism",
    [
        "task",
        "anyio",
        "timeout",
    ],
)
async def test_no_complete_after_cancel_during_final_flush(
    tmp_path: Path,
    mechanism: str,
    monkeypatch: pytest.MonkeyPatch,
    tracker: WriteTracker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Cancelled while the last checkpoint is written, the engine must not then Complete."""
    key = f"cancel/final-flush/{mechanism}.bin"
    src = tmp_path / "src.bin"
    data = make_file(src, SIZE, seed=12)
    gate = Gate()
    real = tracker.real

    def slow_final_write(path: str, checkpoint: Checkpoint) -> None:
        if len(checkpoint.parts) == 11:
            gate.arrive()
            time.sleep(0.3)
        real(path, checkpoint)

    tracker.real = slow_final_write  # inside the tracker: settle() waits for it
    with ThreadedOssServer(root=tmp_path / "server") as server:
        async with make_client(server) as client:
            started_complete: list[float] = []
            real_complete = client._complete

            async def complete(*args: Any, **kwargs: Any) -> Any:
                started_complete.append(time.monotonic())
                return await real_complete(*args, **kwargs)

            monkeypatch.setattr(client, "_complete", complete)

            def start() -> Awaitable[oss.UploadResult]:
                return client.bucket(BUCKET).upload_file(
                    key, src, PART, routines=ROUTINES, checkpoint=True
                )

            elapsed, saw_cancel = await _cancel_while_stalled(start, gate, mechanism)
        await tracker.settle()
        assert saw_cancel
        assert_not_cut_short(caplog, elapsed, "the final checkpoint write")
        assert not started_complete, "the engine started Complete after it was cancelled"
        completes = [r for r in server.requests if r.operation == "CompleteMultipartUpload"]
        assert not completes, "Complete was sent after the upload was cancelled"
        assert server.object_info(BUCKET, key) is None
        cp = read_checkpoint(Path(str(src) + ".cp"))
        assert cp is not None and len(cp.parts) == 11
        tracker.real = real
        async with make_client(server) as client:
            result = await client.bucket(BUCKET).upload_file(
                key, src, PART, routines=ROUTINES, checkpoint=True
            )
        assert result.parts_resumed == 11
        assert_object(server, key, data)
