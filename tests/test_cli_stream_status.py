"""``aiooss-resume status`` on a checkpoint written by ``Bucket.upload_stream``.

The checkpoint is produced by a real upload_stream with reopen=, interrupted by an emulator
fault; the CLI is run as a subprocess against the same emulator.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import aiooss_resume as oss
from aiooss_resume._checkpoint import STREAM_SOURCE, decode_checkpoint
from aiooss_resume.testing import Fault, ThreadedOssServer

from .test_cli import assert_no_traceback, cli_env, run, server

__all__ = ["server"]

PART = 100 * 1024


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 40 * 1024):
        yield data[start : start + 40 * 1024]


def _interrupted_stream(server: ThreadedOssServer, cp: Path, data: bytes, size: int | None) -> None:
    """upload_stream with reopen= whose part 3 always fails: parts 1-2 are checkpointed."""
    server.faults.add(Fault(operation="UploadPart", part_number=3, status=500, times=None))
    creds = server.credentials

    async def go() -> None:
        async with oss.Client(
            server.endpoint,
            credentials=oss.Credentials(creds.access_key_id, creds.access_key_secret),
            region=server.region,
            retry=oss.RetryPolicy(max_attempts=1),
        ) as client:
            with pytest.raises(oss.ServiceError):
                await client.bucket("bkt").upload_stream(
                    "k", _chunks(data), PART, size=size, checkpoint=cp,
                    reopen=lambda offset: _chunks(data[offset:]),
                )  # fmt: skip

    asyncio.run(go())
    server.faults.clear()
    recorded = decode_checkpoint(cp.read_bytes())
    assert recorded.source.path == STREAM_SOURCE
    assert [p.number for p in recorded.parts] == [1, 2]


@pytest.mark.parametrize("known_size", [False, True])
def test_status_of_a_stream_checkpoint(
    server: ThreadedOssServer, tmp_path: Path, known_size: bool
) -> None:
    data = os.urandom(5 * PART + 11)
    cp = tmp_path / "stream.cp"
    _interrupted_stream(server, cp, data, len(data) if known_size else None)
    env = cli_env(server)

    text = run("status", str(cp), env=env)
    assert text.returncode == 0, text.stderr
    assert_no_traceback(text)
    out = text.stdout
    assert "missing" not in out
    assert "a stream (Bucket.upload_stream)" in out
    assert "reopen=" in out and "cannot resume it" in out
    assert "resumes upload" in out and f"reopen({2 * PART})" in out
    assert "the upload exists, 2 parts" in out
    if known_size:
        assert "parts done:  2 of 6" in out
        assert f"{2 * PART} of {len(data)} (" in out
    else:
        assert "parts done:  2 of an unknown number" in out
        assert f"{2 * PART} of an unknown size" in out

    doc = json.loads(run("status", str(cp), "--json", env=env).stdout)
    assert doc["stream"] is True and doc["source"] == STREAM_SOURCE
    assert doc["source_matches"] is None
    assert doc["parts_done"] == 2 and doc["bytes_done"] == 2 * PART
    assert doc["total_bytes"] == (len(data) if known_size else None)
    assert doc["part_count"] == (6 if known_size else None)
    assert doc["upload_on_oss"]["state"] == "exists"
    assert "reopen=" in doc["next_run"] and "missing" not in doc["next_run"]

    # The upload aborted by someone else: the next stream call starts over from reopen(0).
    asyncio.run(_abort(server, doc["upload_id"]))
    gone = run("status", str(cp), env=env)
    assert gone.returncode == 0, gone.stderr
    assert "no such upload" in gone.stdout
    assert "starts a new upload from reopen(0)" in gone.stdout


async def _abort(server: ThreadedOssServer, upload_id: str) -> None:
    creds = server.credentials
    async with oss.Client(
        server.endpoint,
        credentials=oss.Credentials(creds.access_key_id, creds.access_key_secret),
        region=server.region,
    ) as client:
        await client.bucket("bkt").abort_upload("k", upload_id)
