"""The engine through its seam: an in-memory OSS behind MockTransport (no sockets)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import aiooss_resume as oss

from .fake_oss import Call, FakeOss, error

pytestmark = pytest.mark.anyio

KIB = 1024


def make_file(tmp_path: Path, size: int, name: str = "src.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def client_for(fake: FakeOss, **kwargs: object) -> oss.Client:
    return oss.Client(
        "http://127.0.0.1:1",
        credentials=oss.Credentials("ak", "sk"),
        region="cn-hangzhou",
        transport=fake.transport,
        retry=oss.RetryPolicy(max_attempts=3, base_delay=0.0),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_multipart_round_trip(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 350 * KIB)
    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_file("a/b.bin", src, 100 * KIB, routines=2)
    assert fake.objects["a/b.bin"][0] == src.read_bytes()
    assert result.parts_uploaded == 4
    assert result.upload_id is not None
    assert result.size == 350 * KIB
