"""A checkpoint save that fails with something other than an OSError must not stop the
writer silently: the error is kept as a CheckpointError and raised by the next flush (and
by the part runner), so the upload fails instead of running on without a checkpoint."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from aiooss_resume import CheckpointError
from aiooss_resume._fileio import IoRunner
from aiooss_resume._transfer import _CheckpointWriter

pytestmark = pytest.mark.anyio


class Part(msgspec.Struct, frozen=True):
    number: int


class Snapshot(msgspec.Struct, frozen=True):
    parts: list[Part] = []


@pytest.mark.parametrize("error", [TypeError("not encodable"), ValueError("bad value")])
async def test_a_save_that_raises_a_non_os_error_is_a_checkpoint_error(error: Exception) -> None:
    saved: list[Snapshot] = []

    def save(path: str, snapshot: Snapshot) -> None:
        if len(snapshot.parts) >= 2:
            raise error
        saved.append(snapshot)

    writer: _CheckpointWriter[Snapshot, Part] = _CheckpointWriter(
        "/nonexistent/x.cp", Snapshot(), [], IoRunner(1), save
    )
    writer.start()
    writer.record(Part(1))
    await writer.flush()  # the first save works
    assert [p.number for p in saved[-1].parts] == [1]
    writer.record(Part(2))
    for _ in range(500):  # the writer task takes it up after its gap
        if writer.error is not None:
            break
        await asyncio.sleep(0.01)
    assert isinstance(writer.error, CheckpointError)
    assert writer.error.__cause__ is error
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        await writer.flush()
    await writer.stop()
