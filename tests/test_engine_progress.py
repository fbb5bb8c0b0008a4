"""Progress events and the caller's hook, through the in-memory OSS (tests/fake_oss.py).

* Counts reach exactly the file size on every path (all parts resumed, a run killed after
  Complete, an empty file) and never go back, also across a restarted upload.
* An exception raised by the hook fails the upload as itself: it is not retried as a
  broken connection, and the checkpoint keeps every part OSS acknowledged.
* An acknowledged part is recorded before anything else is awaited, so a hook error or a
  cancellation right after the acknowledgement cannot lose it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import aiooss_resume as oss
from aiooss_resume._checkpoint import decode_checkpoint
from aiooss_resume._http import HttpRequest, HttpResponse

from .fake_oss import Call, FakeOss, error
from .test_engine_mock import (
    assert_progress_monotone,
    client_for,
    collect,
    complete_leaving_checkpoint,
    make_file,
)

pytestmark = pytest.mark.anyio

KIB = 1024


class ExactLengthTransport:
    """Reads a streamed body only up to its Content-Length and then closes the iterator, as
    a transport may: whatever the body would do after its last chunk never runs, so the
    engine's own bookkeeping after the acknowledgement is what reports the last bytes."""

    def __init__(self, fake: FakeOss) -> None:
        self.fake = fake

    async def send(self, request: HttpRequest) -> HttpResponse:
        body = request.body
        if callable(body):
            assert request.content_length is not None
            chunks = body()
            data = bytearray()
            try:
                while len(data) < request.content_length:
                    data += await anext(chunks)
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
            request = HttpRequest(
                request.method, request.url, dict(request.headers), bytes(data), len(data)
            )
        return await self.fake.handle(request)

    async def aclose(self) -> None:
        return None


def exact_client(fake: FakeOss) -> oss.Client:
    return oss.Client(
        "http://127.0.0.1:1",
        credentials=oss.Credentials("ak", "sk"),
        region="cn-hangzhou",
        transport=ExactLengthTransport(fake),
        retry=oss.RetryPolicy(max_attempts=3, base_delay=0.0),
    )


def recorded_parts(cp_path: Path) -> list[int]:
    return [p.number for p in decode_checkpoint(cp_path.read_bytes()).parts]


# ---------------------------------------------------------------- counts


async def test_progress_reaches_the_size_when_every_part_was_resumed(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 250 * KIB)

    async def refuse_complete(call: Call) -> oss.HttpResponse | None:
        return error(403, "AccessDenied") if call.op == "CompleteMultipartUpload" else None

    fake.fault = refuse_complete
    async with client_for(fake) as client:
        bucket = client.bucket("bkt")
        with pytest.raises(oss.ServiceError):
            await bucket.upload_file("k", src, 100 * KIB, checkpoint=True)
        fake.fault = None
        events, hook = collect()
        result = await bucket.upload_file("k", src, 100 * KIB, checkpoint=True, on_progress=hook)
    assert result.parts_resumed == 3 and result.parts_uploaded == 0
    assert_progress_monotone(events, 250 * KIB)
    assert [type(e).__name__ for e in events] == ["UploadStarted", "BytesSent", "UploadCompleted"]


async def test_progress_of_a_run_killed_after_complete(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 250 * KIB)
    async with client_for(fake) as client:
        await complete_leaving_checkpoint(fake, client, src)
        events, hook = collect()
        await client.bucket("bkt").upload_file(
            "k", src, 100 * KIB, checkpoint=True, on_progress=hook
        )
    assert_progress_monotone(events, 250 * KIB)
    started = events[0]
    assert isinstance(started, oss.UploadStarted)
    assert started.resumed and started.resumed_bytes == 250 * KIB and started.resumed_parts == 3


async def test_progress_of_an_empty_file(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 0)
    events, hook = collect()
    async with client_for(fake) as client:
        await client.bucket("bkt").upload_file("k", src, on_progress=hook)
    assert_progress_monotone(events, 0)
    assert [type(e).__name__ for e in events] == ["UploadStarted", "BytesSent", "UploadCompleted"]


async def test_counts_never_go_back_across_a_restarted_upload(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 450 * KIB)

    async def vanish_once(call: Call) -> oss.HttpResponse | None:
        fourth = [c for c in fake.ops("UploadPart") if c.part_number == 4]
        if call.op == "UploadPart" and call.part_number == 4 and len(fourth) == 1:
            fake.uploads.clear()  # expired: parts 1-3 must be sent again
        return None

    fake.fault = vanish_once
    events, hook = collect()
    async with client_for(fake) as client:
        await client.bucket("bkt").upload_file(
            "k", src, 100 * KIB, checkpoint=True, on_progress=hook
        )
    assert len(fake.ops("InitiateMultipartUpload")) == 2
    assert_progress_monotone(events, 450 * KIB)
    done = [e for e in events if isinstance(e, oss.PartDone)]
    counts = [e.parts_done for e in done]
    assert len(done) == 8  # 3 parts, then all 5 again
    assert counts == sorted(counts) and counts[-1] == 5 == done[-1].part_count


# ---------------------------------------------------------------- the hook's errors


async def test_hook_error_fails_the_upload_as_itself_and_keeps_the_checkpoint(
    tmp_path: Path,
) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 350 * KIB)

    def hook(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.PartDone) and event.part_number == 2:
            raise RuntimeError("bug in the hook")

    async with client_for(fake) as client:
        bucket = client.bucket("bkt")
        with pytest.raises(RuntimeError, match="bug in the hook") as info:
            await bucket.upload_file("k", src, 100 * KIB, checkpoint=True, on_progress=hook)
        notes = " ".join(info.value.__notes__)
        assert "on_progress hook" in notes and "can be resumed" in notes
        assert recorded_parts(tmp_path / "src.bin.cp") == [1, 2]
        assert [c.part_number for c in fake.ops("UploadPart")] == [1, 2]  # stopped, no retry
        fake.calls.clear()
        result = await bucket.upload_file("k", src, 100 * KIB, checkpoint=True)
    assert result.parts_resumed == 2 and result.parts_uploaded == 2
    assert fake.objects["k"][0] == src.read_bytes()


async def test_acknowledged_part_is_recorded_before_a_failing_hook_runs(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 300 * KIB)

    def hook(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.BytesSent) and event.bytes_done == 100 * KIB:
            raise RuntimeError("bug in the hook")  # after OSS acknowledged part 1

    async with exact_client(fake) as client:
        with pytest.raises(RuntimeError, match="bug in the hook"):
            await client.bucket("bkt").upload_file(
                "k", src, 100 * KIB, checkpoint=True, on_progress=hook
            )
    assert [c.part_number for c in fake.ops("UploadPart")] == [1]
    assert recorded_parts(tmp_path / "src.bin.cp") == [1]


async def test_acknowledged_part_is_recorded_before_a_cancel_in_the_hook(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 300 * KIB)
    holder: dict[str, asyncio.Task[oss.UploadResult]] = {}

    async def hook(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.BytesSent) and event.bytes_done == 100 * KIB:
            holder["task"].cancel()  # the app shuts down right after part 1's answer
            await asyncio.sleep(0)

    async with exact_client(fake) as client:
        holder["task"] = task = asyncio.create_task(
            client.bucket("bkt").upload_file("k", src, 100 * KIB, checkpoint=True, on_progress=hook)
        )
        with pytest.raises(asyncio.CancelledError):
            await task
    assert recorded_parts(tmp_path / "src.bin.cp") == [1]


async def test_async_hook_error_inside_a_part_body_is_not_retried(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 3 * 1024 * KIB)  # 1 MiB chunks: the hook runs mid-body

    async def hook(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.BytesSent):
            raise ValueError("bug in the hook")

    async with client_for(fake) as client:
        with pytest.raises(ValueError, match="bug in the hook"):
            await client.bucket("bkt").upload_file(
                "k", src, 2 * 1024 * KIB, checkpoint=True, on_progress=hook
            )
    assert fake.ops("UploadPart") == []  # the body never reached the server
    assert len(fake.uploads) == 1 and (tmp_path / "src.bin.cp").exists()
