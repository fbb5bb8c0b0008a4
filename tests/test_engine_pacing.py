"""The engine's pacing for the event loop and the socket (issue 13.1, 13.2), without clocks.

* **Read-ahead** (``_Body``): a part's next chunk is read while the current one is sent,
  never more than one ahead; a read left pending by a cancel or an error is dropped cleanly
  (no task left, no "exception was never retrieved"); a file that shrinks under a pending
  read still fails with ``FileChangedError``.
* **Staggered starts** (``run_parts``): many routines do not all take their first step
  (sign, connect) in one event-loop iteration.
* **TLS write slices** (``_http.WRITE_SLICE``): over HTTPS bodies go to aiohttp in pieces,
  byte-exact whatever the slice size.

Reads are observed by wrapping ``_fileio.read_into`` (it runs in the worker thread), the
way the reliability suite wraps the checkpoint write; requests through the Transport seam.
Every wait is on an event, with generous limits that only a hang reaches.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import aiooss_resume as oss
from aiooss_resume import _fileio, _http
from aiooss_resume._fileio import CHUNK_SIZE
from aiooss_resume._http import HttpRequest, HttpResponse
from aiooss_resume.testing import ThreadedOssServer, self_signed_tls

from .fake_oss import FakeOss, PullingTransport
from .reliability_helpers import wait_until

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024
LIMIT = 30.0  # seconds; reached only if something hangs


class Reads:
    """Records every chunk read (offset) and can hold the read at one offset."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offsets: list[int] = []
        self.hold_at: int | None = None
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.before_release: Callable[[], None] = lambda: None
        real = _fileio.read_into
        guard = threading.Lock()

        def read_into(
            fd: int, buf: bytearray | None, offset: int, size: int, crc: int
        ) -> tuple[bytearray, int]:
            with guard:
                self.offsets.append(offset)
            if offset == self.hold_at:
                self.arrived.set()
                self.release.wait(LIMIT)
            return real(fd, buf, offset, size, crc)

        monkeypatch.setattr(_fileio, "read_into", read_into)

    def started(self, offset: int) -> bool:
        return offset in self.offsets


def _client(transport: object) -> oss.Client:
    return oss.Client(
        "http://127.0.0.1:1",
        credentials=oss.Credentials("ak", "sk"),
        region="cn-hangzhou",
        transport=transport,  # type: ignore[arg-type]
        retry=oss.RetryPolicy(max_attempts=1, base_delay=0.0),
    )


def _file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "src.bin"
    path.write_bytes(os.urandom(size))
    return path


async def test_next_chunk_is_read_while_the_current_one_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = Reads(monkeypatch)
    fake = FakeOss()
    transport = PullingTransport(fake)
    src = _file(tmp_path, 4 * CHUNK_SIZE)  # one part of four chunks (PutObject)
    seen: list[tuple[int, int]] = []

    async def on_chunk(index: int) -> None:
        # Chunk ``index`` is in the transport's hands and the next one not asked for yet:
        # its read has started anyway (read-ahead), and no read further than that.
        following = (index + 1) * CHUNK_SIZE
        if following < src.stat().st_size:
            assert await wait_until(lambda: reads.started(following), LIMIT), (
                f"chunk {index + 1} was not read ahead while chunk {index} was sent"
            )
        seen.append((index, max(reads.offsets)))
        assert max(reads.offsets) <= following, "read more than one chunk ahead"

    transport.on_chunk = on_chunk
    async with _client(transport) as client:
        await client.bucket("bkt").upload_file("k", src, 8 * CHUNK_SIZE)
    assert fake.objects["k"][0] == src.read_bytes()
    assert [i for i, _ in seen] == [0, 1, 2, 3]
    assert sorted(reads.offsets) == [n * CHUNK_SIZE for n in range(4)]  # each read once


@pytest.mark.parametrize("checkpoint", [False, True])
async def test_cancel_with_a_read_ahead_pending_leaves_nothing_behind(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    checkpoint: bool,
) -> None:
    reads = Reads(monkeypatch)
    reads.hold_at = CHUNK_SIZE  # the read-ahead of a part's second chunk hangs
    fake = FakeOss()
    transport = PullingTransport(fake)
    src = _file(tmp_path, 4 * CHUNK_SIZE)
    pulled = asyncio.Event()
    never = asyncio.Event()

    async def on_chunk(index: int) -> None:
        pulled.set()
        await never.wait()  # the "socket" takes chunk 0 and then stalls

    transport.on_chunk = on_chunk
    async with _client(transport) as client:
        before = asyncio.all_tasks()
        task = asyncio.ensure_future(
            client.bucket("bkt").upload_file(
                "k", src, 2 * CHUNK_SIZE, routines=1, checkpoint=True if checkpoint else None
            )
        )
        await asyncio.wait_for(pulled.wait(), LIMIT)
        assert await asyncio.to_thread(reads.arrived.wait, LIMIT), "the read-ahead never ran"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert asyncio.all_tasks() - before == set(), "a task outlived the cancelled upload"
    reads.release.set()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text
    assert "was destroyed but it is pending" not in caplog.text


async def test_file_shrinking_under_a_pending_read_ahead_is_a_file_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = Reads(monkeypatch)
    reads.hold_at = 2 * CHUNK_SIZE  # the read-ahead of the third chunk waits for the cut
    fake = FakeOss()
    transport = PullingTransport(fake)
    src = _file(tmp_path, 4 * CHUNK_SIZE)

    async def on_chunk(index: int) -> None:
        if index == 1:
            assert await asyncio.to_thread(reads.arrived.wait, LIMIT)
            with open(src, "r+b") as f:
                f.truncate(2 * CHUNK_SIZE + 100)
            reads.release.set()

    transport.on_chunk = on_chunk
    async with _client(transport) as client:
        with pytest.raises(oss.FileChangedError, match="became shorter"):
            await client.bucket("bkt").upload_file("k", src, 8 * CHUNK_SIZE)
    assert "k" not in fake.objects


class IterationCounter:
    """Counts event-loop iterations: a callback that re-schedules itself runs once each."""

    def __init__(self) -> None:
        self.value = 0
        self._stopped = False
        self._loop = asyncio.get_running_loop()
        self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        if not self._stopped:
            self.value += 1
            self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._stopped = True


async def test_many_routines_do_not_all_start_in_one_loop_iteration(tmp_path: Path) -> None:
    fake = FakeOss()
    starts: dict[int, int] = {}
    counter = IterationCounter()

    class Recording:
        async def send(self, request: HttpRequest) -> HttpResponse:
            if request.method == "PUT" and "partNumber=" in request.url:
                starts[len(starts)] = counter.value  # the part's first step reaches here
            return await fake.transport.send(request)

        async def aclose(self) -> None:
            return None

    routines = 32
    src = _file(tmp_path, routines * 100 * 1024)
    try:
        async with _client(Recording()) as client:
            await client.bucket("bkt").upload_file("k", src, 100 * 1024, routines=routines)
    finally:
        counter.stop()
    assert len(starts) == routines
    per_iteration: dict[int, int] = {}
    for value in starts.values():
        per_iteration[value] = per_iteration.get(value, 0) + 1
    assert max(per_iteration.values()) <= 2, (
        f"{max(per_iteration.values())} parts took their first step in one loop iteration"
    )
    assert fake.objects["k"][0] == src.read_bytes()


@pytest.mark.parametrize("write_slice", [_http.WRITE_SLICE, 100_003, 0])
async def test_https_bodies_are_handed_over_in_slices_byte_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_slice: int
) -> None:
    """Over HTTPS the transport hands aiohttp each 1 MiB chunk in ``WRITE_SLICE`` pieces
    (the TLS transport encrypts a piece per loop step): the object arrives byte-exact with
    its CRC checked, at the default, at an odd size whose cuts fall mid-chunk, and unsliced."""
    monkeypatch.setattr(_http, "WRITE_SLICE", write_slice)
    tls = self_signed_tls()
    data = os.urandom(3 * MIB + 5)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    with ThreadedOssServer(root=tmp_path / "server", ssl_context=tls.server_context) as server:
        assert server.endpoint.startswith("https://")
        creds = server.credentials
        async with oss.Client(
            server.endpoint,
            credentials=oss.Credentials(creds.access_key_id, creds.access_key_secret),
            region=server.region,
            ssl=tls.client_context(),
        ) as client:
            bucket = client.bucket("pacing")
            multipart = await bucket.upload_file("multi.bin", src, 2 * MIB, routines=2)
            whole = await bucket.upload_file("whole.bin", src, 8 * MIB)
        assert multipart.upload_id is not None and whole.upload_id is None
        for key in ("multi.bin", "whole.bin"):
            assert server.read_object("pacing", key) == data
