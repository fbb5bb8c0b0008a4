"""``Bucket.download_file`` against the project's OSS emulator over real sockets."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import aiooss_resume as oss
from aiooss_resume._checkpoint import decode_download_checkpoint
from aiooss_resume.testing import OssServer

pytestmark = pytest.mark.anyio

KIB = 1024
BUCKET = "bkt"
PART = 100 * KIB


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "srv") as srv:
        yield srv


def client_for(server: OssServer) -> oss.Client:
    creds = server.credentials
    return oss.Client(
        server.endpoint,
        credentials=oss.Credentials(
            creds.access_key_id, creds.access_key_secret, creds.security_token
        ),
        region=server.region,
        retry=oss.RetryPolicy(max_attempts=4, base_delay=0.0),
    )


async def put(client: oss.Client, tmp_path: Path, key: str, data: bytes) -> None:
    src = tmp_path / f"src-{len(data)}-{key.replace('/', '_')}"
    src.write_bytes(data)
    await client.bucket(BUCKET).upload_file(key, src, PART, routines=4)


class Stop(Exception):
    pass


@pytest.mark.parametrize("routines", [1, 8])
@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, 5 * PART + 7])
async def test_download_is_byte_exact(
    server: OssServer, tmp_path: Path, size: int, routines: int
) -> None:
    data = os.urandom(size)
    async with client_for(server) as client:
        await put(client, tmp_path, "obj", data)
        dest = tmp_path / "out.bin"
        result = await client.bucket(BUCKET).download_file(
            "obj", dest, PART, routines=routines, checkpoint=True
        )
    assert dest.read_bytes() == data
    assert result.size == size
    assert not (tmp_path / "out.bin.tmp").exists()
    assert not (tmp_path / "out.bin.dcp").exists()


async def test_resume_after_a_hook_error_fetches_only_the_missing_ranges(
    server: OssServer, tmp_path: Path
) -> None:
    data = os.urandom(6 * PART + 3)
    dest = tmp_path / "out.bin"
    parts_seen = 0

    def hook(event: oss.ProgressEvent) -> None:
        nonlocal parts_seen
        if isinstance(event, oss.PartDone):
            parts_seen += 1
            if parts_seen == 3:
                raise Stop

    async with client_for(server) as client:
        await put(client, tmp_path, "obj", data)
        bucket = client.bucket(BUCKET)
        with pytest.raises(Stop):
            await bucket.download_file("obj", dest, PART, checkpoint=True, on_progress=hook)
        assert not dest.exists()  # a reader never sees a half file
        cp = decode_download_checkpoint((tmp_path / "out.bin.dcp").read_bytes())
        assert len(cp.parts) == 3
        result = await bucket.download_file("obj", dest, PART, checkpoint=True)
    assert dest.read_bytes() == data
    assert (result.parts_resumed, result.parts_downloaded) == (3, 4)


async def test_cancellation_keeps_a_resumable_checkpoint(server: OssServer, tmp_path: Path) -> None:
    data = os.urandom(8 * PART)
    dest = tmp_path / "out.bin"
    gate = asyncio.Event()

    async def hook(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.PartDone) and event.parts_done >= 2:
            gate.set()
            await asyncio.sleep(3600)

    async with client_for(server) as client:
        await put(client, tmp_path, "obj", data)
        bucket = client.bucket(BUCKET)
        task = asyncio.create_task(
            bucket.download_file("obj", dest, PART, checkpoint=True, on_progress=hook)
        )
        await asyncio.wait_for(gate.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cp = decode_download_checkpoint((tmp_path / "out.bin.dcp").read_bytes())
        assert len(cp.parts) >= 2
        result = await bucket.download_file("obj", dest, PART, checkpoint=True)
    assert dest.read_bytes() == data
    assert result.parts_resumed >= 2


async def test_object_changed_between_runs_downloads_all_again(
    server: OssServer, tmp_path: Path
) -> None:
    dest = tmp_path / "out.bin"
    async with client_for(server) as client:
        await put(client, tmp_path, "obj", os.urandom(4 * PART))
        bucket = client.bucket(BUCKET)

        def stop(event: oss.ProgressEvent) -> None:
            if isinstance(event, oss.PartDone):
                raise Stop

        with pytest.raises(Stop):
            await bucket.download_file("obj", dest, PART, checkpoint=True, on_progress=stop)
        new = os.urandom(4 * PART)
        await put(client, tmp_path, "obj", new)
        result = await bucket.download_file("obj", dest, PART, checkpoint=True)
    assert dest.read_bytes() == new
    assert result.parts_resumed == 0


async def test_damaged_checkpoint_downloads_all_again(server: OssServer, tmp_path: Path) -> None:
    data = os.urandom(4 * PART)
    dest = tmp_path / "out.bin"
    async with client_for(server) as client:
        await put(client, tmp_path, "obj", data)
        bucket = client.bucket(BUCKET)

        def stop(event: oss.ProgressEvent) -> None:
            if isinstance(event, oss.PartDone):
                raise Stop

        with pytest.raises(Stop):
            await bucket.download_file("obj", dest, PART, checkpoint=True, on_progress=stop)
        dcp = tmp_path / "out.bin.dcp"
        raw = bytearray(dcp.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        dcp.write_bytes(bytes(raw))
        result = await bucket.download_file("obj", dest, PART, checkpoint=True)
    assert dest.read_bytes() == data
    assert result.parts_resumed == 0


async def test_temp_file_shorter_than_recorded_refetches_beyond_it(
    server: OssServer, tmp_path: Path
) -> None:
    data = os.urandom(4 * PART)
    dest = tmp_path / "out.bin"
    async with client_for(server) as client:
        await put(client, tmp_path, "obj", data)
        bucket = client.bucket(BUCKET)
        seen = 0

        def stop(event: oss.ProgressEvent) -> None:
            nonlocal seen
            if isinstance(event, oss.PartDone):
                seen += 1
                if seen == 3:
                    raise Stop

        with pytest.raises(Stop):
            await bucket.download_file("obj", dest, PART, checkpoint=True, on_progress=stop)
        tmp = tmp_path / "out.bin.tmp"
        os.truncate(tmp, PART + 10)  # only part 1 is still wholly there
        result = await bucket.download_file("obj", dest, PART, checkpoint=True)
    assert dest.read_bytes() == data
    assert result.parts_resumed == 1


async def test_missing_object_is_a_service_error(server: OssServer, tmp_path: Path) -> None:
    async with client_for(server) as client:
        with pytest.raises(oss.ServiceError) as info:
            await client.bucket(BUCKET).download_file("nope", tmp_path / "x", PART)
    assert info.value.status == 404


async def test_bad_arguments_are_typed_errors(server: OssServer, tmp_path: Path) -> None:
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(ValueError, match="routines"):
            await bucket.download_file("obj", tmp_path / "x", PART, routines=0)
        with pytest.raises(TypeError):
            await bucket.download_file("obj", 42, PART)  # type: ignore[arg-type]
        with pytest.raises(IsADirectoryError):
            await bucket.download_file("obj", tmp_path, PART)


async def test_an_object_larger_than_16_mib_downloads(server: OssServer, tmp_path: Path) -> None:
    """HEAD's Content-Length is the object's size, not a body to read (a 16 MiB cap on
    response bodies once refused every HEAD of a larger object)."""
    data = os.urandom(17 * 1024 * KIB)
    dest = tmp_path / "big.bin"
    async with client_for(server) as client:
        await put(client, tmp_path, "big", data)
        result = await client.bucket(BUCKET).download_file(
            "big", dest, 8 * 1024 * KIB, routines=4, checkpoint=True
        )
    assert result.size == len(data)
    assert dest.read_bytes() == data
