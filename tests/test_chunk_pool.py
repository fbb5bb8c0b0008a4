"""Reused read buffers (``_fileio.ChunkPool``) and the copy-free hand-off to aiohttp (issue 13.2).

A part's chunks are read into buffers that are reused once nothing refers to them, and
``AiohttpTransport`` passes them to aiohttp without a copy. What must hold:

* a buffer is reused only when no one else holds it, directly or through a view, so a
  transport (or a test) that keeps chunks sees them unchanged, whatever happens later;
* the bytes OSS stores and the CRC checked are those of the file, over the mock transport,
  over a transport that keeps every chunk of every request, and over real sockets (HTTP
  and HTTPS) to the emulator;
* a whole upload reads into a bounded set of buffers (not one new buffer per chunk);
* ``AiohttpTransport`` sends the request head on its own and hands every buffer to aiohttp
  as a ``memoryview`` (aiohttp copies a ``bytearray`` when it cuts it to Content-Length).
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import aiooss_resume as oss
from aiooss_resume import _buffers, _fileio, _http
from aiooss_resume._fileio import CHUNK_SIZE, ChunkPool
from aiooss_resume._http import AiohttpTransport, HttpRequest, HttpResponse
from aiooss_resume.testing import ThreadedOssServer, self_signed_tls

from .fake_oss import FakeOss, PullingTransport

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


def test_a_given_buffer_is_taken_again() -> None:
    pool = ChunkPool(keep=4)
    buf = bytearray(CHUNK_SIZE)
    ident = id(buf)
    pool.give(buf)
    del buf  # the pool's reference is now the only one
    taken = pool.take(CHUNK_SIZE)
    assert taken is not None and id(taken) == ident
    assert pool.take(CHUNK_SIZE) is None  # taken: not handed out twice


def test_a_buffer_someone_still_refers_to_is_not_reused() -> None:
    pool = ChunkPool(keep=4)
    buf = bytearray(CHUNK_SIZE)
    kept_view = memoryview(buf)[:10]  # e.g. a TLS transport's write backlog
    pool.give(buf)
    del buf
    assert pool.take(CHUNK_SIZE) is None
    kept_view.release()
    assert pool.take(CHUNK_SIZE) is not None  # no one holds it any more

    other = bytearray(CHUNK_SIZE)
    ident = id(other)
    holder = [other]  # a plain reference, e.g. a transport's list of chunks
    pool.give(other)
    del other
    assert pool.take(CHUNK_SIZE) is None
    holder.clear()
    taken = pool.take(CHUNK_SIZE)
    assert taken is not None and id(taken) == ident


def test_a_view_given_back_returns_its_buffer_and_small_buffers_are_not_taken() -> None:
    pool = ChunkPool(keep=4)
    buf = bytearray(CHUNK_SIZE)
    ident = id(buf)
    view = memoryview(buf)[:100]
    del buf
    pool.give(view)
    view.release()
    del view
    assert pool.take(CHUNK_SIZE + 1) is None  # too small for this read
    taken = pool.take(100)
    assert taken is not None and id(taken) == ident
    pool.give(b"immutable bytes are never pooled")
    assert pool.take(1) is None


def test_the_pool_keeps_at_most_keep_buffers() -> None:
    pool = ChunkPool(keep=2)
    for _ in range(5):
        pool.give(bytearray(16))
    assert pool.take(16) is not None
    assert pool.take(16) is not None
    assert pool.take(16) is None


class _Buf(bytearray):
    """A pooled buffer that can be watched with a weak reference (a bytearray cannot)."""


def _pool_of_watched(n: int) -> tuple[ChunkPool, list[weakref.ref[_Buf]]]:
    """A pool holding ``n`` buffers that nothing else refers to, and weak references to them."""
    pool = ChunkPool(keep=n)
    refs = []
    for _ in range(n):
        buf = _Buf(16)
        refs.append(weakref.ref(buf))
        pool.give(buf)
        del buf
    return pool, refs


async def test_release_frees_the_buffers_a_few_per_loop_step() -> None:
    pool, refs = _pool_of_watched(40)
    seen: list[int] = []  # buffers alive at each loop step while release() runs

    async def watch() -> None:
        while True:
            seen.append(sum(ref() is not None for ref in refs))
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await anyio.lowlevel.checkpoint()
        await pool.release()
        tg.cancel_scope.cancel()
    assert all(ref() is None for ref in refs)
    assert pool.take(16) is None
    # Other tasks ran between the batches, and saw some buffers freed and some not yet.
    assert any(0 < alive < 40 for alive in seen), seen


async def test_release_frees_everything_in_a_cancelled_scope() -> None:
    pool, refs = _pool_of_watched(40)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await pool.release()  # the upload was cancelled: its buffers are freed all the same
    assert all(ref() is None for ref in refs)


class KeepingTransport:
    """Keeps a reference to every chunk of every request until the end of the test: a
    transport that holds chunks must find them unchanged, however many reads follow."""

    def __init__(self, fake: FakeOss) -> None:
        self.fake = fake
        self.kept: list[tuple[str, list[bytes | bytearray | memoryview], bytes]] = []

    async def send(self, request: HttpRequest) -> HttpResponse:
        body = request.body
        if callable(body):
            chunks = [chunk async for chunk in body()]
            data = b"".join(chunks)  # what was sent, copied when it was sent
            self.kept.append((request.url, chunks, data))
            request = HttpRequest(
                request.method, request.url, dict(request.headers), data, len(data)
            )
        return await self.fake.handle(request)

    async def aclose(self) -> None:
        return None


def _client(transport: object) -> oss.Client:
    return oss.Client(
        "http://127.0.0.1:1",
        credentials=oss.Credentials("ak", "sk"),
        region="cn-hangzhou",
        transport=transport,  # type: ignore[arg-type]
    )


async def test_chunks_a_transport_keeps_are_never_overwritten(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(12 * MIB + 12345))
    fake = FakeOss()
    transport = KeepingTransport(fake)
    async with _client(transport) as client:
        await client.bucket("bkt").upload_file("k", src, 2 * MIB, routines=3)
    assert fake.objects["k"][0] == src.read_bytes()
    assert len(transport.kept) == 7
    for _url, chunks, sent in transport.kept:
        assert b"".join(chunks) == sent  # every kept chunk still holds what was sent


async def test_an_upload_reads_into_a_bounded_set_of_buffers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    allocated: list[int] = []
    real = _fileio.read_into

    def read_into(
        fd: int, buf: _buffers.Buffer | None, offset: int, size: int, crc: int
    ) -> tuple[_buffers.Buffer, int]:
        if buf is None:
            allocated.append(offset)
        return real(fd, buf, offset, size, crc)

    monkeypatch.setattr(_fileio, "read_into", read_into)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(64 * MIB))
    fake = FakeOss()
    async with _client(PullingTransport(fake)) as client:  # copies each chunk as it comes
        await client.bucket("bkt").upload_file("k", src, 4 * MIB, routines=2)
    assert fake.objects["k"][0] == src.read_bytes()
    # 64 chunks in 16 parts, two in flight with one read ahead each: the pool's buffers
    # (keep = 2 x routines + 2) are allocated once and then reused.
    assert 1 <= len(allocated) <= 2 * 2 + 2, allocated


@pytest.mark.parametrize("tls", [False, True])
async def test_real_sockets_store_the_file_exactly(tmp_path: Path, tls: bool) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(9 * MIB + 777))
    pair = self_signed_tls() if tls else None
    with ThreadedOssServer(
        root=tmp_path / "server",
        buckets=["bkt"],
        ssl_context=pair.server_context if pair else None,
    ) as server:
        creds = server.credentials
        async with oss.Client(
            server.endpoint,
            credentials=oss.Credentials(creds.access_key_id, creds.access_key_secret),
            region=server.region,
            ssl=pair.client_context() if pair else None,
        ) as client:
            result = await client.bucket("bkt").upload_file("k", src, 1 * MIB, routines=4)
            assert result.size == src.stat().st_size
        assert server.read_object("bkt", "k") == src.read_bytes()


async def test_the_transport_sends_the_head_alone_and_buffers_as_views() -> None:
    transport = AiohttpTransport()

    async def chunks() -> AsyncIterator[bytes | bytearray | memoryview]:
        yield bytearray(b"abc")
        yield b"def"
        yield memoryview(bytearray(b"ghi"))[:2]

    loop = asyncio.get_running_loop()
    async with asyncio.timeout(None) as deadline:
        out = [piece async for piece in transport._watch(chunks(), deadline, loop)]
    assert out[0] == b""  # the head goes out alone, not joined with 1 MiB of body
    assert [type(piece) for piece in out[1:]] == [memoryview, bytes, memoryview]
    assert b"".join(out) == b"abcdefgh"
    await transport.aclose()


async def test_tls_write_slices_are_views_of_every_kind_of_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_http, "WRITE_SLICE", 2)
    transport = AiohttpTransport()

    async def chunks() -> AsyncIterator[bytes | bytearray | memoryview]:
        yield bytearray(b"abc")
        yield b"defg"  # slicing bytes would copy each slice
        yield b"h"  # not longer than a slice: passed on whole

    loop = asyncio.get_running_loop()
    async with asyncio.timeout(None) as deadline:
        out = [piece async for piece in transport._watch(chunks(), deadline, loop, True)]
    assert out[0] == b""
    assert [bytes(piece) for piece in out[1:]] == [b"ab", b"c", b"de", b"fg", b"h"]
    assert [type(piece) for piece in out[1:]] == [memoryview] * 4 + [bytes]
    await transport.aclose()
