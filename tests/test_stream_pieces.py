"""How a stream's chunks become a part's body (issue 11 follow-up 2, speed): immutable
chunks are held by reference, short ones joined, mutable buffers copied; progress per MiB.
Checked through the reader (``_PartReader``) and end to end against the emulator."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import aiooss_resume as oss
from aiooss_resume._crc64 import crc64
from aiooss_resume._fileio import CHUNK_SIZE
from aiooss_resume._stream_parts import KEEP_MIN, _PartReader
from aiooss_resume.testing import OssServer

from .test_stream import BUCKET, chunks, client_for

pytestmark = pytest.mark.anyio

KIB = 1024
MIB = 1024 * KIB


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "srv") as srv:
        yield srv


async def _part_of(source: AsyncIterator[object], part_size: int) -> tuple[list[object], bytes]:
    reader = _PartReader(source, part_size, 0, None)  # type: ignore[arg-type]
    part = await reader.next_part()
    body = b"".join(bytes(block) for block in part.blocks)
    assert part.size == len(body) and part.crc == crc64(body)
    return list(part.blocks), body


async def test_bytes_chunks_are_held_by_reference() -> None:
    """64 KiB ``bytes`` chunks: the part's blocks are views of those very objects (no copy),
    and a chunk larger than 1 MiB is cut into views of 1 MiB; only its short tail is copied."""
    pieces = [os.urandom(64 * KIB) for _ in range(8)] + [os.urandom(3 * MIB + 5)]

    async def source() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    blocks, body = await _part_of(source(), 8 * MIB)
    assert body == b"".join(pieces)
    *kept, tail = blocks
    assert all(isinstance(b, memoryview) for b in kept)
    assert [b.obj for b in kept[:8]] == pieces[:8]  # type: ignore[attr-defined]
    assert all(b.obj is pieces[8] for b in kept[8:])  # type: ignore[attr-defined]
    assert [len(b) for b in kept[8:]] == [CHUNK_SIZE] * 3  # type: ignore[arg-type]
    assert tail == pieces[8][-5:]  # a 5-byte piece: joined (a copy), not held by reference


async def test_short_chunks_are_joined_into_blocks_of_at_most_1_mib() -> None:
    data = os.urandom(3 * MIB + 100)
    blocks, body = await _part_of(chunks(data, 1000), 4 * MIB)
    assert body == data
    assert all(isinstance(b, bytes) for b in blocks)  # joined: 1000-byte pieces are copied
    assert [len(b) for b in blocks[:-1]] == [CHUNK_SIZE] * 3  # type: ignore[arg-type]
    assert KEEP_MIN > 1000


async def test_a_read_only_view_of_a_refilled_buffer_is_copied(server: OssServer) -> None:
    """Read-only is not immutable: a view of a bytearray the source refills after each chunk
    (``.toreadonly()``) is copied when taken, or the parts held would change under us."""
    data = os.urandom(20 * 64 * KIB + 7)

    async def refilled() -> AsyncIterator[memoryview]:
        buffer = bytearray(64 * KIB)
        for start in range(0, len(data), 64 * KIB):
            piece = data[start : start + 64 * KIB]
            buffer[: len(piece)] = piece
            yield memoryview(buffer)[: len(piece)].toreadonly()

    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_stream("k", refilled(), 256 * KIB, routines=3)
    assert server.read_object(BUCKET, "k") == data


async def test_bytes_sent_is_reported_per_mib_not_per_chunk(server: OssServer) -> None:
    """Chunks of 64 KiB held as they are: ``BytesSent`` still comes about once per MiB."""
    data = os.urandom(6 * MIB + 1234)
    events: list[oss.ProgressEvent] = []
    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_stream(
            "k", chunks(data, 64 * KIB), 2 * MIB, routines=2, on_progress=events.append
        )
    assert server.read_object(BUCKET, "k") == data
    sent = [e.bytes_done for e in events if isinstance(e, oss.BytesSent)]
    assert sent == sorted(sent) and sent[-1] == len(data)
    assert 6 <= len(sent) <= 4 * 2 + 2  # 2 per 2 MiB part (+ the last, short part's)


async def test_the_reader_yields_to_the_loop_while_a_source_never_suspends() -> None:
    """A generator that never awaits would fill a whole part in one loop step: the reader
    yields to the loop after every MiB it cuts, so other tasks run meanwhile."""
    ticks = 0
    stop = False

    async def other_task() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0)

    data = os.urandom(64 * KIB)

    async def never_suspends() -> AsyncIterator[bytes]:
        for _ in range(4 * MIB // len(data)):
            yield data

    task = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    before = ticks
    _, body = await _part_of(never_suspends(), 4 * MIB)
    during = ticks - before
    stop = True
    await task
    assert len(body) == 4 * MIB
    assert during >= 3  # one yield per MiB cut (the 4th MiB ends the part)
