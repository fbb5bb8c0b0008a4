"""A download's CRC-64 check and repair, against the emulator's GetObject faults (issue 12.2).

OSS reports only the whole object's CRC-64, so a corrupted range is found by reading the
ranges again (``_download_range.repair``): the tests plant a one-off corruption (every
range read once more, only the bad one rewritten), a persistent one (``IntegrityError``, the
destination untouched, nothing left behind), one repeated identically (a second read pass),
a wrong CRC header on the first HEAD (alone, and with a corrupted range), and bodies longer
or shorter than the range asked for (refused and retried, never written outside it), and a
crash in the middle of a rewrite.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

import aiooss_resume as oss
from aiooss_resume._checkpoint import decode_download_checkpoint
from aiooss_resume.testing import Fault, FaultContext, OssServer

pytestmark = pytest.mark.anyio

KIB = 1024
BUCKET = "bkt"
PART = 100 * KIB
SIZE = 6 * PART + 123  # 7 ranges, the last one short


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "srv") as srv:
        yield srv


def client_for(server: OssServer) -> oss.Client:
    creds = server.credentials
    return oss.Client(
        server.endpoint,
        credentials=oss.Credentials(creds.access_key_id, creds.access_key_secret),
        region=server.region,
        retry=oss.RetryPolicy(max_attempts=4, base_delay=0.0),
    )


async def put(client: oss.Client, tmp_path: Path, data: bytes) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    await client.bucket(BUCKET).upload_file("obj", src, PART, routines=4)


def count_gets(server: OssServer) -> Counter[int | None]:
    """Counts GetObject requests by the first byte of their Range (a hook that answers
    nothing itself: the request is then processed normally, with any other fault)."""
    seen: Counter[int | None] = Counter()

    async def hook(ctx: FaultContext) -> web.StreamResponse | None:
        value = ctx.request.headers.get("Range", "")
        start = value.removeprefix("bytes=").split("-")[0]
        seen[int(start) if start.isdigit() else None] += 1
        return None

    server.faults.add(Fault(operation="GetObject", times=None, hook=hook))
    return seen


async def test_a_corrupted_range_is_fetched_again_and_the_file_is_exact(
    server: OssServer, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    dest = tmp_path / "out.bin"
    async with client_for(server) as client:
        await put(client, tmp_path, data)
        gets = count_gets(server)
        server.faults.add(Fault(operation="GetObject", range_start=3 * PART, corrupt_body=True))
        result = await client.bucket(BUCKET).download_file(
            "obj", dest, PART, routines=3, checkpoint=True
        )
    assert dest.read_bytes() == data
    assert result.crc64 is not None
    assert any("corrupt_body" in f.fault for f in server.faults.fired)
    # The bad range: fetched, read again (the read pass), then rewritten: 3 GETs.
    assert gets[3 * PART] == 3
    assert sum(gets.values()) == 2 * 7 + 1  # every range read once more, one rewritten
    assert not (tmp_path / "out.bin.tmp").exists()
    assert not (tmp_path / "out.bin.dcp").exists()


async def test_persistent_corruption_is_an_integrity_error_and_the_destination_is_untouched(
    server: OssServer, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"the previous version")
    async with client_for(server) as client:
        await put(client, tmp_path, data)
        gets = count_gets(server)
        server.faults.add(
            Fault(operation="GetObject", range_start=PART, corrupt_body=True, times=None)
        )
        with pytest.raises(oss.IntegrityError, match="also after reading every range again"):
            await client.bucket(BUCKET).download_file("obj", dest, PART, checkpoint=True)
    assert dest.read_bytes() == b"the previous version"
    # The same wrong bytes on every read: two read passes that read nothing new, no more.
    assert gets[PART] == 3
    assert not (tmp_path / "out.bin.tmp").exists()
    assert not (tmp_path / "out.bin.dcp").exists()


async def test_a_corruption_repeated_identically_is_caught_by_a_second_look(
    server: OssServer, tmp_path: Path
) -> None:
    """The emulator flips the same byte every time: a range corrupted on its first two reads
    offers no other CRC to choose; a second read pass reads it clean, and it is rewritten
    (found by the 5% chaos soak, seed 13)."""
    data = os.urandom(SIZE)
    dest = tmp_path / "out.bin"
    async with client_for(server) as client:
        await put(client, tmp_path, data)
        gets = count_gets(server)
        server.faults.add(
            Fault(operation="GetObject", range_start=5 * PART, corrupt_body=True, times=2)
        )
        await client.bucket(BUCKET).download_file("obj", dest, PART, checkpoint=True)
    assert dest.read_bytes() == data
    assert gets[5 * PART] == 4  # fetched, read twice, rewritten
    assert sum(gets.values()) == 3 * 7 + 1  # the download, two read passes, one rewrite


async def test_a_wrong_crc_header_on_the_head_is_caught_by_a_second_head(
    server: OssServer, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    dest = tmp_path / "out.bin"
    async with client_for(server) as client:
        await put(client, tmp_path, data)
        gets = count_gets(server)
        server.faults.add(Fault(operation="HeadObject", wrong_crc=True))
        await client.bucket(BUCKET).download_file("obj", dest, PART, checkpoint=True)
    assert dest.read_bytes() == data
    assert sum(gets.values()) == 7  # the bytes agreed with the second HEAD: no re-fetch
    assert [f.operation for f in server.faults.fired if "wrong_crc" in f.fault] == ["HeadObject"]


async def test_a_wrong_head_crc_and_a_corrupted_range_together_are_repaired(
    server: OssServer, tmp_path: Path
) -> None:
    """The first HEAD's CRC is wrong *and* a range is corrupted: the second HEAD's CRC does
    not match the bytes yet, the repair fixes the range, and the bytes then match the second
    HEAD's CRC (found by the 5% chaos soak: it used to end in IntegrityError)."""
    data = os.urandom(SIZE)
    dest = tmp_path / "out.bin"
    async with client_for(server) as client:
        await put(client, tmp_path, data)
        gets = count_gets(server)
        server.faults.add(Fault(operation="HeadObject", wrong_crc=True))
        server.faults.add(Fault(operation="GetObject", range_start=2 * PART, corrupt_body=True))
        result = await client.bucket(BUCKET).download_file("obj", dest, PART, checkpoint=True)
    assert dest.read_bytes() == data
    assert gets[2 * PART] == 3
    assert result.crc64 == server.object_info(BUCKET, "obj").crc64  # type: ignore[union-attr]


async def test_a_body_longer_than_the_range_is_refused_and_retried(
    server: OssServer, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    dest = tmp_path / "out.bin"

    async def too_long(ctx: FaultContext) -> web.StreamResponse:
        return web.Response(
            status=206,
            body=b"\xee" * (2 * PART),
            headers={"Content-Range": f"bytes {2 * PART}-{3 * PART - 1}/{SIZE}"},
        )

    async with client_for(server) as client:
        await put(client, tmp_path, data)
        server.faults.add(Fault(operation="GetObject", range_start=2 * PART, hook=too_long))
        result = await client.bucket(BUCKET).download_file("obj", dest, PART, checkpoint=True)
    assert dest.read_bytes() == data
    assert result.parts_downloaded == 7


async def test_a_short_body_is_retried(server: OssServer, tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    dest = tmp_path / "out.bin"
    async with client_for(server) as client:
        await put(client, tmp_path, data)
        server.faults.add(
            Fault(operation="GetObject", range_start=4 * PART, truncate_after_bytes=1000)
        )
        await client.bucket(BUCKET).download_file("obj", dest, PART, checkpoint=True)
    assert dest.read_bytes() == data
    assert any("truncate" in f.fault for f in server.faults.fired)


async def test_a_body_too_long_every_time_fails_without_writing_outside_its_range(
    server: OssServer, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    dest = tmp_path / "out.bin"

    async def too_long(ctx: FaultContext) -> web.StreamResponse:
        return web.Response(status=206, body=b"\xee" * (3 * PART))

    async with client_for(server) as client:
        await put(client, tmp_path, data)
        server.faults.add(
            Fault(operation="GetObject", range_start=5 * PART, hook=too_long, times=None)
        )
        with pytest.raises(oss.ProtocolError, match="answered more than"):
            await client.bucket(BUCKET).download_file(
                "obj", dest, PART, routines=1, checkpoint=True
            )
    tmp = (tmp_path / "out.bin.tmp").read_bytes()
    cp = decode_download_checkpoint((tmp_path / "out.bin.dcp").read_bytes())
    assert sorted(p.number for p in cp.parts) == [1, 2, 3, 4, 5]
    assert tmp[: 5 * PART] == data[: 5 * PART]  # the recorded ranges hold the object's bytes
    assert len(tmp) <= 6 * PART  # nothing written beyond the range asked for
    assert not dest.exists()


async def test_a_crash_during_the_repair_never_leaves_a_recorded_crc_over_new_bytes(
    server: OssServer, tmp_path: Path
) -> None:
    """The repair drops a range from the checkpoint before it overwrites its bytes: a run
    that stops mid-rewrite (here: the rewrite's GET is cut short, for good) leaves a
    checkpoint whose every recorded range still holds the bytes its CRC-64 says, and the
    next run repairs."""
    big = 3 * 1024 * KIB  # three 1 MiB chunks a range: the rewrite starts with the second
    data = os.urandom(3 * big + 5)
    dest = tmp_path / "out.bin"
    async with client_for(server) as client:
        src = tmp_path / "src.bin"
        src.write_bytes(data)
        await client.bucket(BUCKET).upload_file("obj", src, big, routines=2)
        # Range 2's middle byte is flipped on its first fetch; its third (the rewrite,
        # after the read pass) is cut 64 KiB short of its end, for good.
        server.faults.add(Fault(operation="GetObject", range_start=big, corrupt_body=True))
        server.faults.add(
            Fault(
                operation="GetObject",
                range_start=big,
                nth=3,
                times=None,
                truncate_after_bytes=big - 64 * KIB,
                # slow enough that the client writes some chunks before the cut (the
                # bytes of a closed connection still unread are lost, so that is racy)
                throttle_bytes_per_sec=8 * 1024 * KIB,
            )
        )
        with pytest.raises(oss.TransportError):
            await client.bucket(BUCKET).download_file("obj", dest, big, routines=1, checkpoint=True)
        cp = decode_download_checkpoint((tmp_path / "out.bin.dcp").read_bytes())
        tmp = (tmp_path / "out.bin.tmp").read_bytes()
        recorded = {p.number for p in cp.parts}
        assert recorded == {1, 3, 4}  # range 2 forgotten before its bytes were overwritten
        for p in cp.parts:
            start = (p.number - 1) * big
            assert tmp[start : start + p.size] == data[start : start + p.size]
        server.faults.clear()
        result = await client.bucket(BUCKET).download_file("obj", dest, big, checkpoint=True)
    assert dest.read_bytes() == data
    assert result.parts_downloaded == 1
