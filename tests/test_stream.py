"""Bucket.upload_stream against the emulator over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import os
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import oss2
import pytest
from yarl import URL

import aiooss_resume as oss
from aiooss_resume._checkpoint import decode_checkpoint
from aiooss_resume._crc64 import crc64
from aiooss_resume._signing import request_path, sign_request
from aiooss_resume.testing import Fault, OssServer

pytestmark = pytest.mark.anyio

KIB = 1024
PART = 100 * KIB
BUCKET = "bkt"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "srv") as srv:
        yield srv


def client_for(server: OssServer, **kwargs: object) -> oss.Client:
    creds = server.credentials
    options: dict[str, object] = {
        "credentials": oss.Credentials(creds.access_key_id, creds.access_key_secret),
        "region": server.region,
        "retry": oss.RetryPolicy(max_attempts=3, base_delay=0.0),
    }
    options.update(kwargs)
    return oss.Client(server.endpoint, **options)  # type: ignore[arg-type]


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def reopener(data: bytes, size: int, calls: list[int]) -> Any:
    def reopen(offset: int) -> AsyncIterator[bytes]:
        calls.append(offset)
        return chunks(data[offset:], size)

    return reopen


def parts_sent(server: OssServer) -> list[int]:
    return sorted(
        r.part_number
        for r in server.requests
        if r.operation == "UploadPart" and r.status == 200 and r.part_number is not None
    )


def operations(server: OssServer) -> list[str]:
    return [r.operation for r in server.requests]


# ---------------------------------------------------------------------- shapes of streams


@pytest.mark.parametrize(
    ("size", "chunk"),
    [
        (0, 1000),  # empty stream
        (1, 1),
        (PART - 1, 7 * KIB),
        (PART, PART),  # exactly one part
        (PART + 1, 1),  # one-byte chunks across a part boundary
        (3 * PART, PART),  # chunks on the part boundaries
        (3 * PART, 3 * PART),  # one chunk bigger than a part
        (350 * KIB + 7, 33_333),  # odd chunks straddling boundaries
    ],
)
async def test_round_trip(server: OssServer, size: int, chunk: int) -> None:
    data = os.urandom(size)
    async with client_for(server) as client:
        result = await client.bucket(BUCKET).upload_stream(
            "s/k", chunks(data, chunk), PART, routines=3
        )
    assert server.read_object(BUCKET, "s/k") == data
    assert result.size == size
    single = size <= PART
    assert (result.upload_id is None) == single
    if single:
        assert operations(server) == ["PutObject"]
    else:
        assert parts_sent(server) == list(range(1, -(-size // PART) + 1))
    assert server.list_uploads(BUCKET) == []


async def test_a_reader_with_async_read_is_read_not_iterated(server: OssServer) -> None:
    data = os.urandom(250 * KIB)

    class Reader:
        """Like aiohttp's StreamReader: async read(n), and iteration by lines."""

        def __init__(self) -> None:
            self.position = 0
            self.asked: list[int] = []

        async def read(self, n: int = -1) -> bytes:
            self.asked.append(n)
            piece = data[self.position : self.position + n]
            self.position += len(piece)
            return piece

        def __aiter__(self) -> AsyncIterator[bytes]:
            raise AssertionError("iterated: lines, not bytes")

    reader = Reader()
    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_stream("k", reader, PART)
    assert server.read_object(BUCKET, "k") == data
    assert reader.asked and all(n > 0 for n in reader.asked)


async def test_bytes_like_chunks_of_any_kind(server: OssServer) -> None:
    data = os.urandom(150 * KIB)

    async def mixed() -> AsyncIterator[Any]:
        yield bytearray(data[:1000])
        yield memoryview(data)[1000:50_000]
        yield b""
        yield data[50_000:]

    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_stream("k", mixed(), PART)
    assert server.read_object(BUCKET, "k") == data


async def test_a_source_refilling_one_buffer_is_copied_in_time(server: OssServer) -> None:
    """A source that yields views of one buffer it refills (a ``readinto`` loop): each chunk
    must be taken before the next one overwrites it."""
    data = os.urandom(250 * KIB + 3)

    async def refilled() -> AsyncIterator[memoryview]:
        buffer = bytearray(10_000)
        for start in range(0, len(data), 10_000):
            piece = data[start : start + 10_000]
            buffer[: len(piece)] = piece
            yield memoryview(buffer)[: len(piece)]

    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_stream("k", refilled(), PART, routines=2)
    assert server.read_object(BUCKET, "k") == data


async def test_progress_events_with_unknown_and_known_size(server: OssServer) -> None:
    data = os.urandom(250 * KIB)
    for size in (None, len(data)):
        events: list[oss.ProgressEvent] = []
        async with client_for(server) as client:
            await client.bucket(BUCKET).upload_stream(
                "k", chunks(data, 10 * KIB), PART, size=size, on_progress=events.append
            )
        started, completed = events[0], events[-1]
        assert isinstance(started, oss.UploadStarted)
        assert isinstance(completed, oss.UploadCompleted)
        expected_total = -1 if size is None else len(data)
        assert started.total_bytes == expected_total
        assert started.part_count == (-1 if size is None else 3)
        assert completed.total_bytes == len(data)
        sent = [e.bytes_done for e in events if isinstance(e, oss.BytesSent)]
        assert sent == sorted(sent) and sent[-1] == len(data)
        done = [e for e in events if isinstance(e, oss.PartDone)]
        assert sorted(e.part_number for e in done) == [1, 2, 3]


async def test_oss2_reads_the_object_byte_exact(server: OssServer) -> None:
    data = os.urandom(450 * KIB + 3)
    async with client_for(server) as client:
        result = await client.bucket(BUCKET).upload_stream(
            "interop/stream.bin", chunks(data, 64 * KIB), PART, routines=2
        )
    creds = server.credentials
    bucket = oss2.Bucket(
        oss2.AuthV4(creds.access_key_id, creds.access_key_secret),
        server.endpoint,
        BUCKET,
        region=server.region,
    )

    def get() -> tuple[bytes, str]:
        obj = bucket.get_object("interop/stream.bin")
        return obj.read(), obj.headers["x-oss-hash-crc64ecma"]

    body, crc = await asyncio.to_thread(get)
    assert body == data
    assert int(crc) == result.crc64


# ---------------------------------------------------------------------- bad input


async def test_bad_arguments_fail_before_any_request(server: OssServer, tmp_path: Path) -> None:
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(TypeError, match="async iterable"):
            await bucket.upload_stream("k", b"bytes", PART)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="async iterable"):
            await bucket.upload_stream("k", [b"a list"], PART)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="size"):
            await bucket.upload_stream("k", chunks(b"x", 1), PART, size="1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="size"):
            await bucket.upload_stream("k", chunks(b"x", 1), PART, size=-1)
        with pytest.raises(ValueError, match="go together"):
            await bucket.upload_stream("k", chunks(b"x", 1), PART, reopen=lambda o: chunks(b"", 1))
        with pytest.raises(ValueError, match="go together"):
            await bucket.upload_stream("k", chunks(b"x", 1), PART, checkpoint=tmp_path / "cp")
        with pytest.raises(TypeError, match="async iterable"):
            await bucket.upload_stream("k", None, PART)
        with pytest.raises(ValueError, match="part_size"):
            await bucket.upload_stream("k", chunks(b"x", 1), 1000)
    assert server.requests == []


async def test_a_blocking_file_like_source_is_read_in_worker_threads(
    server: OssServer, tmp_path: Path
) -> None:
    """What boto3's upload_fileobj takes: io.BytesIO, a pipe (``aws s3 cp -`` reads stdin),
    read off the event loop."""
    data = os.urandom(250 * KIB + 1)
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as pipe:
            for start in range(0, len(data), 7000):
                pipe.write(data[start : start + 7000])

    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        await bucket.upload_stream("bytesio", io.BytesIO(data), PART)
        loop_thread = threading.get_ident()
        readers: set[int] = set()

        class Pipe(io.FileIO):
            def read(self, n: int | None = -1, /) -> bytes:
                readers.add(threading.get_ident())
                return super().read(n) or b""

        writer = asyncio.create_task(asyncio.to_thread(feed))
        with Pipe(read_fd, "rb") as pipe:
            await bucket.upload_stream("pipe", pipe, PART, routines=2)
        await writer
    assert server.read_object(BUCKET, "bytesio") == data
    assert server.read_object(BUCKET, "pipe") == data
    assert readers and loop_thread not in readers


async def test_a_text_file_is_a_type_error(server: OssServer, tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("text, not bytes")
    async with client_for(server) as client:
        with (tmp_path / "t.txt").open() as text, pytest.raises(TypeError, match="str, not bytes"):
            await client.bucket(BUCKET).upload_stream("k", text, PART)  # type: ignore[arg-type]
    assert server.requests == []


async def test_a_text_chunk_is_a_type_error_and_the_upload_is_aborted(server: OssServer) -> None:
    async def text() -> AsyncIterator[Any]:
        yield os.urandom(250 * KIB)
        yield "not bytes"

    async with client_for(server) as client:
        with pytest.raises(TypeError, match="str, not bytes"):
            await client.bucket(BUCKET).upload_stream("k", text(), PART)
    assert "AbortMultipartUpload" in operations(server)
    assert server.list_uploads(BUCKET) == []
    assert server.object_info(BUCKET, "k") is None


# ---------------------------------------------------------------------- size=


@pytest.mark.parametrize("size", [0, 50 * KIB, PART, 250 * KIB])
async def test_size_given_right(server: OssServer, size: int) -> None:
    data = os.urandom(size)
    async with client_for(server) as client:
        result = await client.bucket(BUCKET).upload_stream(
            "k", chunks(data, 30 * KIB), PART, size=size, routines=2
        )
    assert server.read_object(BUCKET, "k") == data
    assert result.size == size


@pytest.mark.parametrize(
    ("actual", "announced"),
    [(50 * KIB, 60 * KIB), (250 * KIB, 260 * KIB), (60 * KIB, 50 * KIB), (350 * KIB, 250 * KIB)],
)
async def test_size_given_wrong_is_a_stream_length_error(
    server: OssServer, actual: int, announced: int
) -> None:
    data = os.urandom(actual)
    async with client_for(server) as client:
        with pytest.raises(oss.StreamLengthError) as info:
            await client.bucket(BUCKET).upload_stream(
                "k", chunks(data, 10 * KIB), PART, size=announced, routines=2
            )
    assert info.value.expected == announced
    if actual < announced:
        assert info.value.actual == actual
    else:  # found at the first chunk too many, whose bytes were never sent
        assert announced < info.value.actual <= announced + 10 * KIB
        assert sum(r.bytes_received for r in server.requests) <= announced
    assert server.object_info(BUCKET, "k") is None
    assert server.list_uploads(BUCKET) == []


# ---------------------------------------------------------------------- failures


async def test_interrupted_without_reopen_leaves_no_upload(server: OssServer) -> None:
    server.faults.add(Fault(operation="UploadPart", part_number=3, status=500, times=None))
    data = os.urandom(550 * KIB)
    async with client_for(server) as client:
        with pytest.raises(oss.ServiceError) as info:
            await client.bucket(BUCKET).upload_stream("k", chunks(data, 50 * KIB), PART)
    assert info.value.status == 500
    assert "AbortMultipartUpload" in operations(server)
    assert server.list_uploads(BUCKET) == []


async def test_a_failing_source_raises_as_is_and_leaves_no_upload(server: OssServer) -> None:
    class Disconnect(Exception):
        pass

    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(250 * KIB)
        raise Disconnect("the client went away")

    async with client_for(server) as client:
        with pytest.raises(Disconnect):
            await client.bucket(BUCKET).upload_stream("k", broken(), PART, routines=2)
    assert server.list_uploads(BUCKET) == []


async def test_wrong_part_crc_is_an_integrity_error(server: OssServer) -> None:
    server.faults.add(Fault(operation="UploadPart", part_number=2, wrong_crc=True, times=None))
    async with client_for(server) as client:
        with pytest.raises(oss.IntegrityError):
            await client.bucket(BUCKET).upload_stream(
                "k", chunks(os.urandom(250 * KIB), PART), PART
            )
    assert server.list_uploads(BUCKET) == []


async def test_wrong_object_crc_is_an_integrity_error(server: OssServer) -> None:
    server.faults.add(Fault(operation="CompleteMultipartUpload", wrong_crc=True))
    async with client_for(server) as client:
        with pytest.raises(oss.IntegrityError) as info:
            await client.bucket(BUCKET).upload_stream(
                "k", chunks(os.urandom(250 * KIB), PART), PART
            )
    assert info.value.actual is not None and info.value.actual != info.value.expected


async def test_wrong_crc_of_a_single_put_is_an_integrity_error(server: OssServer) -> None:
    server.faults.add(Fault(operation="PutObject", wrong_crc=True, times=None))
    async with client_for(server) as client:
        with pytest.raises(oss.IntegrityError):
            await client.bucket(BUCKET).upload_stream("k", chunks(b"small", 2), PART)


# ---------------------------------------------------------------------- resume with reopen


async def test_interrupted_with_reopen_resumes_with_only_the_missing_parts(
    server: OssServer, tmp_path: Path
) -> None:
    data = os.urandom(6 * PART + 77)
    cp = tmp_path / "stream.cp"
    calls: list[int] = []
    server.faults.add(Fault(operation="UploadPart", part_number=3, status=500, times=None))
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(oss.ServiceError) as info:
            await bucket.upload_stream(
                "k",
                chunks(data, 40 * KIB),
                PART,
                checkpoint=cp,
                reopen=reopener(data, 40 * KIB, calls),
            )
        assert "can be resumed" in "".join(info.value.__notes__)
        assert calls == []  # the first run reads the source it was given
        recorded = decode_checkpoint(cp.read_bytes())
        assert [p.number for p in recorded.parts] == [1, 2]
        assert len(server.list_uploads(BUCKET)) == 1  # kept for the resume

        server.faults.clear()
        server.requests.clear()
        events: list[oss.ProgressEvent] = []
        result = await bucket.upload_stream(
            "k",
            None,
            PART,
            checkpoint=cp,
            reopen=reopener(data, 40 * KIB, calls),
            on_progress=events.append,
        )
    assert calls == [2 * PART]  # reopened at the first part not acknowledged
    assert parts_sent(server) == [3, 4, 5, 6, 7]
    assert result.parts_resumed == 2 and result.bytes_resumed == 2 * PART
    assert server.read_object(BUCKET, "k") == data
    assert not cp.exists()
    started = events[0]
    assert isinstance(started, oss.UploadStarted) and started.resumed_parts == 2


async def test_resume_verifies_kept_parts_it_reads_again(server: OssServer, tmp_path: Path) -> None:
    """Part 2 fails slowly while parts 3.. are acknowledged: the resume reopens at part 2,
    reads parts 3.. again without sending them, and a stream that differs there fails."""
    data = os.urandom(5 * PART)
    cp = tmp_path / "stream.cp"
    server.faults.add(
        Fault(operation="UploadPart", part_number=2, delay=1.0, status=500, times=None)
    )
    async with client_for(server, retry=oss.RetryPolicy(max_attempts=1)) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(oss.ServiceError):
            await bucket.upload_stream(
                "k", chunks(data, PART), PART, routines=2, checkpoint=cp,
                reopen=reopener(data, PART, []),
            )  # fmt: skip
        kept = {p.number for p in decode_checkpoint(cp.read_bytes()).parts}
        assert 1 in kept and 2 not in kept
        if not kept - {1}:
            pytest.skip("the loaded machine acknowledged no part after part 2 within 1 s")
        server.faults.clear()
        server.requests.clear()
        changed = bytearray(data)
        changed[max(kept) * PART - 1] ^= 0xFF  # the last byte of the last kept part
        with pytest.raises(oss.FileChangedError, match="differ"):
            await bucket.upload_stream(
                "k", None, PART, checkpoint=cp, reopen=reopener(bytes(changed), PART, [])
            )
        assert not cp.exists()
        assert server.list_uploads(BUCKET) == []  # a stream that changed: aborted
        assert max(parts_sent(server), default=0) < max(kept)


async def test_resume_reads_again_but_does_not_resend_kept_parts(
    server: OssServer, tmp_path: Path
) -> None:
    data = os.urandom(5 * PART)
    cp = tmp_path / "stream.cp"
    server.faults.add(
        Fault(operation="UploadPart", part_number=2, delay=1.0, status=500, times=None)
    )
    async with client_for(server, retry=oss.RetryPolicy(max_attempts=1)) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(oss.ServiceError):
            await bucket.upload_stream(
                "k", chunks(data, PART), PART, routines=2, checkpoint=cp,
                reopen=reopener(data, PART, []),
            )  # fmt: skip
        kept = {p.number for p in decode_checkpoint(cp.read_bytes()).parts}
        server.faults.clear()
        server.requests.clear()
        calls: list[int] = []
        await bucket.upload_stream(
            "k", None, PART, checkpoint=cp, reopen=reopener(data, PART, calls)
        )
    first_missing = min(set(range(1, 6)) - kept)  # 2, unless part 1 was slower than 1 s
    assert calls == [(first_missing - 1) * PART]
    assert set(parts_sent(server)) == set(range(1, 6)) - kept
    assert server.read_object(BUCKET, "k") == data


async def test_a_checkpoint_whose_upload_vanished_starts_over(
    server: OssServer, tmp_path: Path
) -> None:
    data = os.urandom(3 * PART)
    cp = tmp_path / "stream.cp"
    server.faults.add(Fault(operation="UploadPart", part_number=2, status=500, times=None))
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(oss.ServiceError):
            await bucket.upload_stream(
                "k", chunks(data, PART), PART, checkpoint=cp, reopen=reopener(data, PART, [])
            )
        upload_id = decode_checkpoint(cp.read_bytes()).upload_id
        await bucket.abort_upload("k", upload_id)
        server.faults.clear()
        calls: list[int] = []
        result = await bucket.upload_stream(
            "k", None, PART, checkpoint=cp, reopen=reopener(data, PART, calls)
        )
    assert calls == [0] and result.parts_resumed == 0
    assert server.read_object(BUCKET, "k") == data


# ---------------------------------------------------------------------- cancellation


async def _cancel_after_first_part(
    server: OssServer, **kwargs: Any
) -> tuple[asyncio.Task[oss.UploadResult], asyncio.Event]:
    hang = asyncio.Event()
    acknowledged = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        yield os.urandom(PART)
        yield os.urandom(PART)
        await hang.wait()  # a stream that stalls: the cancel must not wait for it
        yield b"never"

    def progress(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.PartDone):
            acknowledged.set()

    client = client_for(server)
    task = asyncio.create_task(
        client.bucket(BUCKET).upload_stream("k", endless(), PART, on_progress=progress, **kwargs)
    )
    async with asyncio.timeout(20):
        await acknowledged.wait()
    task.cancel()
    async with asyncio.timeout(5):  # prompt: not bound by the stalled stream
        with pytest.raises(asyncio.CancelledError):
            await task
    await client.aclose()
    return task, hang


async def test_cancel_without_reopen_aborts_and_leaks_no_task(server: OssServer) -> None:
    before = asyncio.all_tasks()
    await _cancel_after_first_part(server)
    assert server.list_uploads(BUCKET) == []
    # The client's own tasks (parts, checkpoint writer), not the emulator's handlers,
    # which may still be noticing the closed connections.
    leaked = [
        t.get_coro()
        for t in asyncio.all_tasks() - before
        if not t.done() and _is_client_code(t.get_coro())
    ]
    assert leaked == []


def _is_client_code(coro: Any) -> bool:
    filename: str = getattr(getattr(coro, "cr_code", None), "co_filename", "")
    return "aiooss_resume" in filename and "testing" not in filename


async def test_cancel_with_reopen_keeps_the_checkpoint(server: OssServer, tmp_path: Path) -> None:
    cp = tmp_path / "stream.cp"
    await _cancel_after_first_part(server, checkpoint=cp, reopen=lambda offset: chunks(b"", 1))
    recorded = decode_checkpoint(cp.read_bytes())
    assert [p.number for p in recorded.parts] == [1]
    assert [u.upload_id for u in server.list_uploads(BUCKET)] == [recorded.upload_id]


# ---------------------------------------------------------------------- memory bound


async def test_the_reader_is_held_back_by_a_slow_oss(server: OssServer) -> None:
    """Bytes read from the stream minus bytes acknowledged never exceed routines + 1 parts
    (plus the one chunk being cut), while OSS takes parts slowly: nothing reads ahead."""
    routines, chunk = 2, 8 * KIB
    server.faults.add(
        Fault(operation="UploadPart", throttle_bytes_per_sec=2 * 1024 * 1024, times=None)
    )
    state = {"read": 0, "acknowledged": 0, "ahead": 0}

    async def counted() -> AsyncIterator[bytes]:
        piece = os.urandom(chunk)
        for _ in range(12 * PART // chunk):
            state["ahead"] = max(state["ahead"], state["read"] - state["acknowledged"])
            state["read"] += chunk
            yield piece

    def progress(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.PartDone):
            state["acknowledged"] += event.size

    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_stream(
            "k", counted(), PART, routines=routines, on_progress=progress
        )
    assert state["ahead"] <= (routines + 1) * PART + chunk
    # Not vacuous: the reader did get ahead by the parts in flight, then had to wait.
    assert state["ahead"] >= routines * PART
    assert server.stats.peak_in_flight["UploadPart"] <= routines


# ---------------------------------------------------------------------- relaying a download


async def _get(session: aiohttp.ClientSession, server: OssServer, key: str, offset: int) -> Any:
    """A streamed GetObject from ``offset`` on: the aiohttp response, body not read yet."""
    creds = server.credentials
    signed = sign_request(
        method="GET",
        bucket=BUCKET,
        key=key,
        query=[],
        headers={"Range": f"bytes={offset}-"},
        access_key_id=creds.access_key_id,
        access_key_secret=creds.access_key_secret,
        security_token=None,
        version="v4",
        region=server.region,
        now=datetime.now(UTC),
    )
    url = URL(server.endpoint + request_path(BUCKET, key, path_style=True), encoded=True)
    response = await session.get(url, headers=signed)
    assert response.status == 206, await response.text()
    return response


async def test_relaying_an_aiohttp_download_resumes_with_range_requests(
    server: OssServer, tmp_path: Path
) -> None:
    """The issue's relay case: an aiohttp response's ``content`` (a StreamReader, read with
    ``read(n)``) relayed to another key, resumed after a failure by a Range GET."""
    data = os.urandom(5 * PART + 999)
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        await bucket.upload_file("original", _write(tmp_path / "original", data), PART)
        cp = tmp_path / "relay.cp"
        offsets: list[int] = []
        opened: list[aiohttp.ClientResponse] = []
        async with aiohttp.ClientSession() as session:

            async def reopen(offset: int) -> aiohttp.StreamReader:
                offsets.append(offset)
                opened.append(await _get(session, server, "original", offset))
                return opened[-1].content

            server.faults.add(Fault(operation="UploadPart", part_number=4, status=500, times=None))
            with pytest.raises(oss.ServiceError):
                await bucket.upload_stream(
                    "copy", None, PART, size=len(data), checkpoint=cp, reopen=reopen
                )
            server.faults.clear()
            await bucket.upload_stream(
                "copy", None, PART, size=len(data), checkpoint=cp, reopen=reopen
            )
            for response in opened:
                response.release()
    assert offsets == [0, 3 * PART]
    assert server.read_object(BUCKET, "copy") == data


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("length", "size_given", "reopened_at"),
    [
        (3 * PART + 5, False, []),  # a short last part records the end: no reopen at all
        (3 * PART + 5, True, []),
        (3 * PART, True, []),  # size= records the end
        (3 * PART, False, [3 * PART]),  # the end is unknown: reopened there, yields nothing
    ],
)
async def test_a_resume_with_every_part_kept_only_completes(
    server: OssServer, tmp_path: Path, length: int, size_given: bool, reopened_at: list[int]
) -> None:
    data = os.urandom(length)
    cp = tmp_path / "stream.cp"
    size = length if size_given else None
    server.faults.add(Fault(operation="CompleteMultipartUpload", status=500, times=None))
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(oss.ServiceError):
            await bucket.upload_stream(
                "k", chunks(data, PART), PART, size=size, checkpoint=cp,
                reopen=reopener(data, PART, []),
            )  # fmt: skip
        assert len(decode_checkpoint(cp.read_bytes()).parts) == -(-length // PART)
        server.faults.clear()
        server.requests.clear()
        calls: list[int] = []
        result = await bucket.upload_stream(
            "k", None, PART, size=size, checkpoint=cp, reopen=reopener(data, PART, calls)
        )
    assert calls == reopened_at
    assert parts_sent(server) == []
    assert result.size == length and result.parts_uploaded == 0
    assert server.read_object(BUCKET, "k") == data


async def test_a_failing_progress_hook_fails_the_upload_and_aborts_it(server: OssServer) -> None:
    class HookError(Exception):
        pass

    def hook(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.PartDone):
            raise HookError("the hook's own bug")

    async with client_for(server) as client:
        with pytest.raises(HookError):
            await client.bucket(BUCKET).upload_stream(
                "k", chunks(os.urandom(350 * KIB), PART), PART, on_progress=hook
            )
    assert server.list_uploads(BUCKET) == []
    assert server.object_info(BUCKET, "k") is None


async def test_a_checkpoint_of_another_target_is_refused_and_kept(
    server: OssServer, tmp_path: Path
) -> None:
    data = os.urandom(3 * PART)
    cp = tmp_path / "stream.cp"
    server.faults.add(Fault(operation="UploadPart", part_number=2, status=500, times=None))
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(oss.ServiceError):
            await bucket.upload_stream(
                "one", chunks(data, PART), PART, checkpoint=cp, reopen=reopener(data, PART, [])
            )
        before = cp.read_bytes()
        with pytest.raises(oss.CheckpointError, match="oss://bkt/one"):
            await bucket.upload_stream(
                "two", chunks(data, PART), PART, checkpoint=cp, reopen=reopener(data, PART, [])
            )
    assert cp.read_bytes() == before
    assert len(server.list_uploads(BUCKET)) == 1


@pytest.mark.parametrize(
    ("length", "size_given", "recognised"),
    [
        (3 * PART, True, True),
        (3 * PART + 5, False, True),  # the short last part says where the stream ended
        (3 * PART, False, False),  # it may have gone on: uploaded again, from reopen(0)
    ],
)
async def test_a_run_killed_after_complete_is_recognised(
    server: OssServer, tmp_path: Path, length: int, size_given: bool, recognised: bool
) -> None:
    """Complete took effect but its answer was lost (and not retried): the checkpoint,
    flushed with every part before Complete, is kept; the next call finds the upload gone
    and the object holding exactly those parts (HEAD: size and CRC-64)."""
    data = os.urandom(length)
    cp = tmp_path / "stream.cp"
    size = length if size_given else None
    server.faults.add(Fault(operation="CompleteMultipartUpload", drop_response=True))
    async with client_for(server, retry=oss.RetryPolicy(max_attempts=1)) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(oss.TransportError):
            await bucket.upload_stream(
                "k", chunks(data, PART), PART, size=size, checkpoint=cp,
                reopen=reopener(data, PART, []),
            )  # fmt: skip
        assert server.read_object(BUCKET, "k") == data  # Complete did take effect
        server.requests.clear()
        calls: list[int] = []
        events: list[oss.ProgressEvent] = []
        result = await bucket.upload_stream(
            "k", None, PART, size=size, checkpoint=cp, reopen=reopener(data, PART, calls),
            on_progress=events.append,
        )  # fmt: skip
    assert result.size == length and result.crc64 == crc64(data)
    assert server.read_object(BUCKET, "k") == data
    assert not cp.exists()
    if recognised:
        assert calls == [] and parts_sent(server) == []
        assert result.parts_uploaded == 0 and result.parts_resumed == 3 + (length % PART > 0)
        assert isinstance(events[0], oss.UploadStarted) and events[0].resumed
        assert isinstance(events[-1], oss.UploadCompleted)
    else:
        assert calls == [0] and parts_sent(server) == [1, 2, 3]
