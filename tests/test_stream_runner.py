"""The shared part runner (``_transfer.run_parts``) fed by an async iterator, as
``upload_stream`` feeds it: parts pulled as they come, a slot waited for after each, no
reference kept to a part once its task holds it, and the runner's error rules unchanged.
(The same runner with a list of parts is covered by tests/test_engine_*.py.)"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator

import pytest

from aiooss_resume._transfer import run_parts

pytestmark = pytest.mark.anyio


class Part:
    def __init__(self, number: int) -> None:
        self.number = number


async def test_a_part_is_not_held_once_its_task_is_done() -> None:
    """When the next part is pulled, a part whose task finished is held by no one: the
    runner's frame does not keep the last part it handed out (the stream's memory bound)."""
    live: weakref.WeakSet[Part] = weakref.WeakSet()
    alive_at_pull: list[int] = []
    sent: list[int] = []

    async def parts() -> AsyncIterator[Part]:
        for number in range(1, 6):
            await asyncio.sleep(0.01)  # the part's task runs to its end meanwhile
            gc.collect()
            alive_at_pull.append(len(live))
            part = Part(number)
            live.add(part)
            yield part
            del part

    async def send(part: Part) -> None:
        sent.append(part.number)

    iterator = parts()
    await run_parts(iterator, 1, send, None)
    assert sent == [1, 2, 3, 4, 5]
    assert alive_at_pull == [0, 0, 0, 0, 0]


async def test_the_next_part_is_pulled_before_a_slot_is_free() -> None:
    """``routines`` parts in tasks plus one pulled and waiting for a slot, never more."""
    routines = 3
    in_tasks = 0
    pulled = 0
    gate = asyncio.Event()

    async def parts() -> AsyncIterator[Part]:
        nonlocal pulled
        for number in range(1, 11):
            pulled += 1
            yield Part(number)

    finished = 0

    async def send(part: Part) -> None:
        nonlocal in_tasks, finished
        in_tasks += 1
        await gate.wait()
        in_tasks -= 1
        finished += 1

    runner = asyncio.create_task(run_parts(parts(), routines, send, None))
    for _ in range(50):
        await asyncio.sleep(0)
    # Every slot taken, and exactly one more part pulled, waiting for a slot.
    assert in_tasks == routines
    assert pulled == routines + 1
    gate.set()
    await runner
    assert finished == 10


async def test_a_failing_part_stops_a_stalled_stream_and_its_error_is_raised() -> None:
    stalled = asyncio.Event()

    async def parts() -> AsyncIterator[Part]:
        yield Part(1)
        stalled.set()
        await asyncio.Event().wait()  # a source that never sends its next chunk
        yield Part(2)  # pragma: no cover

    async def send(part: Part) -> None:
        await stalled.wait()
        raise OSError("part 1 failed for good")

    iterator = parts()
    with pytest.raises(OSError, match="part 1 failed for good"):
        await asyncio.wait_for(run_parts(iterator, 2, send, None), 30)
    await iterator.aclose()


async def test_a_cancel_while_a_part_fails_is_not_lost() -> None:
    """The caller cancelled while a part fails: ``CancelledError`` wins."""
    started = asyncio.Event()

    async def parts() -> AsyncIterator[Part]:
        yield Part(1)
        await asyncio.Event().wait()
        yield Part(2)  # pragma: no cover

    async def send(part: Part) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise OSError("failed while being cancelled") from None

    iterator = parts()
    runner = asyncio.create_task(run_parts(iterator, 2, send, None))
    await started.wait()
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    await iterator.aclose()


async def test_the_stream_error_is_raised_and_running_parts_are_cancelled() -> None:
    cancelled: list[int] = []

    async def parts() -> AsyncIterator[Part]:
        yield Part(1)
        await asyncio.sleep(0.01)
        raise ValueError("the source broke")

    async def send(part: Part) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(part.number)
            raise

    with pytest.raises(ValueError, match="the source broke"):
        await asyncio.wait_for(run_parts(parts(), 2, send, None), 30)
    assert cancelled == [1]
