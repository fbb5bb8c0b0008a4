"""upload_stream when its upload id vanishes mid-upload (NoSuchUpload on UploadPart).

Another client aborts the upload when the n-th UploadPart reaches the emulator (a fault
hook), over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import aiooss_resume as oss
from aiooss_resume.testing import Fault, FaultContext, OssServer

from .test_stream import BUCKET, PART, chunks, client_for, reopener

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "srv") as srv:
        yield srv


def abort_on_part(server: OssServer, part_number: int, aborted: list[str], times: int) -> None:
    """When UploadPart ``part_number`` arrives, another client aborts its upload first."""

    async def hook(ctx: FaultContext) -> web.StreamResponse | None:
        assert ctx.upload_id is not None and ctx.key is not None
        async with client_for(server) as other:
            await other.bucket(BUCKET).abort_upload(ctx.key, ctx.upload_id)
        aborted.append(ctx.upload_id)
        return None  # the part then meets NoSuchUpload

    server.faults.add(
        Fault(operation="UploadPart", part_number=part_number, hook=hook, times=times)
    )


@pytest.mark.parametrize("routines", [1, 3])
async def test_with_reopen_it_starts_over_once_with_a_new_upload(
    server: OssServer, tmp_path: Path, routines: int
) -> None:
    data = os.urandom(5 * PART + 123)
    cp = tmp_path / "stream.cp"
    aborted: list[str] = []
    calls: list[int] = []
    abort_on_part(server, 3, aborted, times=1)
    async with client_for(server) as client:
        result = await client.bucket(BUCKET).upload_stream(
            "k", chunks(data, 40 * 1024), PART, routines=routines, checkpoint=cp,
            reopen=reopener(data, 40 * 1024, calls),
        )  # fmt: skip
    assert len(aborted) == 1 and result.upload_id not in (None, aborted[0])
    assert calls == [0]  # the stream was read again from its start
    assert result.parts_resumed == 0 and result.size == len(data)
    assert server.read_object(BUCKET, "k") == data
    assert server.list_uploads(BUCKET) == []
    assert not cp.exists()


async def test_without_reopen_it_is_no_such_upload_and_leaves_nothing(server: OssServer) -> None:
    data = os.urandom(5 * PART)
    aborted: list[str] = []
    abort_on_part(server, 3, aborted, times=1)
    async with client_for(server) as client:
        with pytest.raises(oss.NoSuchUploadError) as info:
            await client.bucket(BUCKET).upload_stream("k", chunks(data, PART), PART, routines=1)
    assert len(aborted) == 1
    assert f"upload {aborted[0]} vanished" in "".join(info.value.__notes__)
    assert server.list_uploads(BUCKET) == []
    assert server.object_info(BUCKET, "k") is None


async def test_vanishing_twice_fails_and_says_a_new_call_starts_over(
    server: OssServer, tmp_path: Path
) -> None:
    data = os.urandom(4 * PART)
    cp = tmp_path / "stream.cp"
    aborted: list[str] = []
    calls: list[int] = []
    abort_on_part(server, 2, aborted, times=2)
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(oss.NoSuchUploadError) as info:
            await bucket.upload_stream(
                "k", chunks(data, PART), PART, routines=1, checkpoint=cp,
                reopen=reopener(data, PART, calls),
            )  # fmt: skip
        assert len(aborted) == 2 and calls == [0]
        assert "starts a new upload from reopen(0)" in "".join(info.value.__notes__)
        assert server.list_uploads(BUCKET) == []
        assert server.object_info(BUCKET, "k") is None
        # And so it does: the checkpoint names a gone upload, the next call starts anew.
        result: Any = await bucket.upload_stream(
            "k", None, PART, checkpoint=cp, reopen=reopener(data, PART, calls)
        )
    assert calls == [0, 0] and result.parts_resumed == 0
    assert server.read_object(BUCKET, "k") == data
