"""Shared helpers of the reliability suite (tests/test_reliability_*.py)."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import pytest
from aiohttp import web

import aiooss_resume as oss
from aiooss_resume._checkpoint import Checkpoint, decode_checkpoint
from aiooss_resume._crc64 import crc64
from aiooss_resume.testing import FaultContext, OssServer, RequestRecord, ThreadedOssServer

KIB = 1024
MIB = 1024 * 1024
BUCKET = "reliability"

AnyServer = OssServer | ThreadedOssServer


def make_file(path: Path, size: int, seed: int) -> bytes:
    """Write ``size`` seeded-random bytes to ``path`` and return them."""
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def make_client(
    server: AnyServer,
    *,
    read_timeout: float = 5.0,
    max_attempts: int = 5,
    signature_version: str = "v4",
) -> oss.Client:
    creds = server.credentials
    return oss.Client(
        server.endpoint,
        credentials=oss.Credentials(creds.access_key_id, creds.access_key_secret),
        region=server.region,
        signature_version=signature_version,  # type: ignore[arg-type]
        retry=oss.RetryPolicy(max_attempts=max_attempts, base_delay=0.0),
        read_timeout=read_timeout,
        connect_timeout=5.0,
    )


def assert_object(server: AnyServer, key: str, expected: bytes, *, bucket: str = BUCKET) -> None:
    """The stored object is byte-identical to ``expected`` (CRC-64 and a full compare)."""
    info = server.object_info(bucket, key)
    assert info is not None, f"oss://{bucket}/{key} does not exist"
    assert info.size == len(expected), (info.size, len(expected))
    assert info.crc64 == crc64(expected), "stored CRC-64 differs from the source's"
    stored = server.read_object(bucket, key)
    assert stored == expected, "stored bytes differ from the source's"


def read_checkpoint(path: Path) -> Checkpoint | None:
    """Decode the checkpoint at ``path`` (None if absent); a damaged one fails the test."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return decode_checkpoint(data)


def assert_checkpoint_consistent(server: AnyServer, cp: Checkpoint) -> None:
    """Every part a checkpoint records is on the server with the same ETag and size.

    (The engine promises that no unacknowledged part is ever recorded.)
    """
    on_server = {p.part_number: p for p in server.list_parts(cp.bucket, cp.upload_id)}
    for part in cp.parts:
        listed = on_server.get(part.number)
        assert listed is not None, f"checkpoint records part {part.number}, absent on the server"
        assert listed.etag.strip('"').upper() == part.etag.strip('"').upper(), part
        assert listed.size == part.size, part
        assert listed.crc64 == part.crc64, part


def open_upload_ids(server: AnyServer, key: str | None = None) -> set[str]:
    return {u.upload_id for u in server.list_uploads(BUCKET) if key is None or u.key == key}


def part_records(server: AnyServer, key: str) -> list[RequestRecord]:
    return [r for r in list(server.requests) if r.operation == "UploadPart" and r.key == key]


async def wait_until(
    predicate: Callable[[], bool], limit: float = 5.0, interval: float = 0.005
) -> bool:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


def stall_hook(
    arrived: Callable[[FaultContext], None],
    release: Callable[[], bool],
    *,
    limit: float = 30.0,
    status: int = 503,
) -> Callable[[FaultContext], Awaitable[web.StreamResponse | None]]:
    """A fault hook holding the request until ``release()`` is true, then answering an error.

    It answers with an error rather than processing the request, so a cancelled client
    never has an operation take effect behind its back (the test stays deterministic).
    """

    async def hook(ctx: FaultContext) -> web.StreamResponse | None:
        arrived(ctx)
        deadline = time.monotonic() + limit
        while not release() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        body = (
            b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
            b"<Message>released stall</Message><RequestId>" + ctx.request_id.encode()
            + b"</RequestId></Error>"
        )  # fmt: skip
        return web.Response(
            status=status,
            body=body,
            headers={"x-oss-request-id": ctx.request_id, "Content-Type": "application/xml"},
        )

    return hook


def count_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def leftover_tmp_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.tmp"))


def first(items: Iterable[RequestRecord], operation: str) -> RequestRecord | None:
    return next((r for r in items if r.operation == operation), None)


class WriteTracker:
    """Wraps ``_uploader._encode_and_write`` to know when no checkpoint write is running.

    The engine promises that no write outlives ``upload_file`` (test_reliability_writer.py
    checks it); tests that inspect or replace the checkpoint between runs still
    ``await tracker.settle()`` first, as a guard that costs ~30 ms.
    """

    def __init__(self) -> None:
        from aiooss_resume import _uploader

        self.real = _uploader._encode_and_write
        self.active = 0
        self.lock = threading.Lock()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> WriteTracker:
        from aiooss_resume import _uploader

        monkeypatch.setattr(_uploader, "_encode_and_write", self)
        return self

    def __call__(self, path: str, checkpoint: Checkpoint) -> None:
        with self.lock:
            self.active += 1
        try:
            self.real(path, checkpoint)
        finally:
            with self.lock:
                self.active -= 1

    async def settle(self) -> None:
        """Wait until no write has run for 30 ms (a queued job may start a moment late)."""
        quiet = 0
        deadline = time.monotonic() + 10
        while quiet < 3:
            assert time.monotonic() < deadline, "a checkpoint write never finished"
            await asyncio.sleep(0.01)
            quiet = quiet + 1 if self.active == 0 else 0


def assert_checkpoint_gone(cp_path: Path, upload_id: str | None) -> None:
    """No checkpoint after success: the engine deletes it, and no write outlives the call
    (test_reliability_writer.py pins the race that once broke this)."""
    assert not cp_path.exists(), (
        f"a checkpoint was left after the success of upload {upload_id}: {read_checkpoint(cp_path)}"
    )
