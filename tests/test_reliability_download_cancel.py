"""Cancelling a download at each of its waits (issue 12.3).

Each phase of a download is stalled in turn (a fault hook holds the request on the server
until the test ends) and the download is cancelled while it waits, by ``task.cancel()``, by
an anyio ``CancelScope`` and by ``asyncio.timeout``. The stall lasts far longer than the
bound, so the download ending within it proves it did not wait for the stall. Asserted:

* it stops while the stall is still held, and re-raises ``CancelledError`` (the enclosing
  scope then reports its own outcome). The stall is released only after the call returned,
  so ending at all proves it did not wait for the stalled request; ``CANCEL_LIMIT`` is a
  generous bound for a loaded CI, not the promise. The promise (a cleanup bounded by
  ``FLUSH_TIMEOUT``, 1 s) is the engine's, tested in tests/test_engine_cancel.py without a
  wall-clock margin (issue 13.5: no margins a loaded 2-core CI can miss);
* no task outlives the call (``asyncio.all_tasks()`` before and after);
* nothing at the destination path;
* with a checkpoint: it is flushed (it decodes and lists every range finished before the
  stall, each holding the object's bytes in the temp file), and the next run completes
  byte-identical without fetching a recorded range again;
* without a checkpoint: nothing is left (no temp file).

The server runs in its own thread (``ThreadedOssServer``) so that the test loop's tasks are
the client's only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import aiooss_resume as oss
from aiooss_resume._checkpoint import decode_download_checkpoint
from aiooss_resume._crc64 import crc64
from aiooss_resume._transfer import FLUSH_TIMEOUT
from aiooss_resume.testing import Fault, FaultContext, ThreadedOssServer

from .reliability_helpers import BUCKET, KIB, make_client, make_file, stall_hook, wait_until

pytestmark = pytest.mark.anyio

PART = 100 * KIB
SIZE = 10 * PART + 50 * KIB  # 11 ranges
ROUTINES = 1  # ranges in order: those before the stalled one are all done
CANCEL_LIMIT = 10 * FLUSH_TIMEOUT  # a hang bound, not the promise (see the docstring)
PHASES = {
    # phase: (operation, range start, ranges certainly finished before it)
    "head": ("HeadObject", None, 0),
    "range-first": ("GetObject", 0, 0),
    "range-middle": ("GetObject", 6 * PART, 6),
    "range-last": ("GetObject", 10 * PART, 10),
    "repair": ("GetObject", 4 * PART, 11),  # the repair's second fetch of a corrupted range
}
MECHANISMS = ("task", "anyio", "timeout")


class Gate:
    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.released = threading.Event()

    def arrive(self, ctx: FaultContext | None = None) -> None:
        self.arrived.set()


@pytest.fixture
def server(tmp_path: Path) -> AsyncIterator[ThreadedOssServer]:
    with ThreadedOssServer(root=tmp_path / "oss") as srv:
        yield srv  # type: ignore[misc]


async def _put(server: ThreadedOssServer, tmp_path: Path) -> bytes:
    src = tmp_path / "src.bin"
    data = make_file(src, SIZE, 1212)
    async with make_client(server) as client:
        await client.bucket(BUCKET).upload_file("obj", src, PART, routines=4)
    src.unlink()
    return data


def _install_stall(server: ThreadedOssServer, phase: str, gate: Gate) -> None:
    operation, start, _ = PHASES[phase]
    hook = stall_hook(gate.arrive, gate.released.is_set)
    if phase == "repair":
        # Range 5 is corrupted on its first fetch; the repair's second fetch of it stalls.
        server.faults.add(Fault(operation="GetObject", range_start=start, corrupt_body=True))
        server.faults.add(Fault(operation="GetObject", range_start=start, nth=2, hook=hook))
    else:
        server.faults.add(Fault(operation=operation, range_start=start, hook=hook))


async def _cancel_while_stalled(
    download: asyncio.Future[oss.DownloadResult] | None,
    make: object,
    gate: Gate,
    mechanism: str,
) -> float:
    handle: dict[str, object] = {}
    saw_cancel = False

    async def inner() -> None:
        nonlocal saw_cancel
        try:
            await make()  # type: ignore[operator]
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
    ok = await wait_until(lambda: gate.arrived.is_set() or task.done(), limit=20)
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
    assert saw_cancel, "download_file did not re-raise CancelledError"
    if mechanism == "task":
        assert task.cancelled(), outcome
    else:
        assert outcome == ("cancelled_caught" if mechanism == "anyio" else "timed out"), outcome
    return elapsed


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("phase", list(PHASES))
async def test_cancel_download_at_phase_with_checkpoint(
    server: ThreadedOssServer, tmp_path: Path, phase: str, mechanism: str
) -> None:
    data = await _put(server, tmp_path)
    dest = tmp_path / "out.bin"
    gate = Gate()
    _install_stall(server, phase, gate)
    before = asyncio.all_tasks()
    try:
        async with make_client(server) as client:
            bucket = client.bucket(BUCKET)
            elapsed = await _cancel_while_stalled(
                None,
                lambda: bucket.download_file("obj", dest, PART, routines=ROUTINES, checkpoint=True),
                gate,
                mechanism,
            )
        assert asyncio.all_tasks() == before, "a task outlived the cancelled download"
    finally:
        gate.released.set()
    assert elapsed < CANCEL_LIMIT, f"cancellation took {elapsed:.2f}s"
    assert not dest.exists()
    dcp = Path(f"{dest}.dcp")
    _, _, finished = PHASES[phase]
    if phase == "head":
        assert not dcp.exists()  # cancelled before anything was planned
        recorded: set[int] = set()
    else:
        cp = decode_download_checkpoint(dcp.read_bytes())  # flushed, and whole
        tmp = Path(f"{dest}.tmp").read_bytes()
        recorded = {p.number for p in cp.parts}
        assert len(recorded) >= finished - (1 if phase == "repair" else 0), recorded
        for p in cp.parts:
            start = (p.number - 1) * PART
            assert crc64(tmp[start : start + p.size]) == p.crc64
            assert tmp[start : start + p.size] == data[start : start + p.size] or (
                phase == "repair" and p.number == 5
            )
    server.faults.clear()
    async with make_client(server) as client:
        result = await client.bucket(BUCKET).download_file(
            "obj", dest, PART, routines=4, checkpoint=True
        )
    assert dest.read_bytes() == data
    assert result.parts_resumed == len(recorded)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == ["out.bin"]


@pytest.mark.parametrize("phase", ["range-first", "range-middle", "repair"])
async def test_cancel_download_without_checkpoint_leaves_nothing(
    server: ThreadedOssServer, tmp_path: Path, phase: str
) -> None:
    await _put(server, tmp_path)
    dest = tmp_path / "out.bin"
    gate = Gate()
    _install_stall(server, phase, gate)
    before = asyncio.all_tasks()
    try:
        async with make_client(server) as client:
            bucket = client.bucket(BUCKET)
            elapsed = await _cancel_while_stalled(
                None,
                lambda: bucket.download_file("obj", dest, PART, routines=ROUTINES),
                gate,
                "task",
            )
        assert asyncio.all_tasks() == before
    finally:
        gate.released.set()
    assert elapsed < CANCEL_LIMIT, f"cancellation took {elapsed:.2f}s"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("out")]
