"""Issue 10 item 3: a retried Initiate whose first answer was lost leaves no orphan upload,
and never touches an upload of the same key that is not this call's.

The emulator over real sockets (``drop_response``: OSS creates the upload, the answer is
lost, the client retries), oss2 as the independent "someone else" uploading the same key.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import oss2
import pytest

import aiooss_resume as oss
from aiooss_resume.testing import Fault, ThreadedOssServer

from .fake_oss import Call, FakeOss, Upload

pytestmark = pytest.mark.anyio

KIB = 1024
BUCKET = "bkt"
KEY = "dir/object.bin"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadedOssServer]:
    with ThreadedOssServer(root=tmp_path / "oss") as s:
        yield s
        assert s.stats.internal_errors == 0


def client_for(server: ThreadedOssServer) -> oss.Client:
    ak, sk, token = server.credentials
    return oss.Client(
        server.endpoint,
        credentials=oss.Credentials(ak, sk, token),
        region=server.region,
        retry=oss.RetryPolicy(max_attempts=4, base_delay=0.0),
    )


def oss2_bucket(server: ThreadedOssServer) -> Any:
    ak, sk, _ = server.credentials
    return oss2.Bucket(oss2.AuthV4(ak, sk), server.endpoint, BUCKET, region=server.region)


def source(tmp_path: Path, size: int = 300 * KIB) -> Path:
    path = tmp_path / "src.bin"
    path.write_bytes(os.urandom(size))
    return path


def open_ids(server: ThreadedOssServer) -> set[str]:
    return {u.upload_id for u in server.list_uploads(BUCKET)}


def operations(server: ThreadedOssServer) -> list[str]:
    return [r.operation for r in server.requests]


@pytest.mark.parametrize("checkpoint", [False, True])
async def test_a_lost_initiate_answer_leaves_no_open_upload(
    server: ThreadedOssServer, tmp_path: Path, checkpoint: bool
) -> None:
    src = source(tmp_path)
    server.faults.add(Fault(operation="InitiateMultipartUpload", times=1, drop_response=True))
    async with client_for(server) as client:
        result = await client.bucket(BUCKET).upload_file(KEY, src, 100 * KIB, checkpoint=checkpoint)
    assert operations(server).count("InitiateMultipartUpload") == 2  # the fault really fired
    assert server.read_object(BUCKET, KEY) == src.read_bytes()
    assert result.upload_id is not None
    assert open_ids(server) == set()  # the first attempt's upload was aborted
    assert "ListMultipartUploads" in operations(server)


async def test_two_lost_answers_leave_no_open_upload(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    src = source(tmp_path)
    server.faults.add(Fault(operation="InitiateMultipartUpload", times=2, drop_response=True))
    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_file(KEY, src, 100 * KIB, routines=2)
    assert operations(server).count("InitiateMultipartUpload") == 3
    assert open_ids(server) == set()


async def test_without_a_retry_nothing_is_listed(server: ThreadedOssServer, tmp_path: Path) -> None:
    src = source(tmp_path)
    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_file(KEY, src, 100 * KIB)
    assert "ListMultipartUploads" not in operations(server)
    assert open_ids(server) == set()


async def test_an_upload_initiated_before_the_call_is_left_alone(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    # Someone else's upload of the same key, initiated (with no parts yet) two minutes ago.
    real_clock = server.clock
    server.clock = lambda: datetime.now(UTC) - timedelta(minutes=2)
    theirs = (await asyncio.to_thread(oss2_bucket(server).init_multipart_upload, KEY)).upload_id
    server.clock = real_clock
    src = source(tmp_path)
    server.faults.add(Fault(operation="InitiateMultipartUpload", times=1, drop_response=True))
    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_file(KEY, src, 100 * KIB)
    assert open_ids(server) == {theirs}


async def test_an_upload_of_a_longer_key_is_left_alone(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    # Inside the window but under another key that merely starts with ours.
    src = source(tmp_path)
    server.faults.add(Fault(operation="InitiateMultipartUpload", times=1, drop_response=True))
    longer: list[str] = []

    async def during_retry(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.PartRetried) and event.part_number == 0:
            bucket = oss2_bucket(server)
            longer.append(
                (await asyncio.to_thread(bucket.init_multipart_upload, KEY + "2")).upload_id
            )

    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_file(KEY, src, 100 * KIB, on_progress=during_retry)
    assert len(longer) == 1
    assert open_ids(server) == set(longer)


async def test_an_upload_with_parts_initiated_during_the_retry_is_left_alone(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    src = source(tmp_path)
    server.faults.add(Fault(operation="InitiateMultipartUpload", times=1, drop_response=True))
    theirs: list[str] = []

    def someone_else_uploads() -> None:
        bucket = oss2_bucket(server)
        upload_id = bucket.init_multipart_upload(KEY).upload_id
        bucket.upload_part(KEY, upload_id, 1, b"x" * 1000)
        theirs.append(upload_id)

    async def during_retry(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.PartRetried) and event.part_number == 0:
            await asyncio.to_thread(someone_else_uploads)

    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_file(KEY, src, 100 * KIB, on_progress=during_retry)
    assert len(theirs) == 1
    assert open_ids(server) == set(theirs)  # ours aborted, theirs (it has a part) kept


async def test_more_empty_uploads_than_failed_attempts_are_all_left_alone(
    server: ThreadedOssServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # One lost answer, but two empty uploads initiated in the window: which one is ours
    # cannot be told, so neither is aborted, and the warning names both.
    src = source(tmp_path)
    server.faults.add(Fault(operation="InitiateMultipartUpload", times=1, drop_response=True))
    theirs: list[str] = []

    async def during_retry(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.PartRetried) and event.part_number == 0:
            bucket = oss2_bucket(server)
            theirs.append((await asyncio.to_thread(bucket.init_multipart_upload, KEY)).upload_id)

    with caplog.at_level(logging.WARNING, logger="aiooss_resume"):
        async with client_for(server) as client:
            result = await client.bucket(BUCKET).upload_file(
                KEY, src, 100 * KIB, on_progress=during_retry
            )
    left = open_ids(server)
    assert len(left) == 2 and set(theirs) < left and result.upload_id not in left
    warning = next(r.getMessage() for r in caplog.records if "another client" in r.getMessage())
    assert all(upload_id in warning for upload_id in left)


async def test_a_failing_cleanup_warns_and_does_not_fail_the_upload(
    server: ThreadedOssServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = source(tmp_path)
    server.faults.add(Fault(operation="InitiateMultipartUpload", times=1, drop_response=True))
    server.faults.add(Fault(operation="ListMultipartUploads", status=403, code="AccessDenied"))
    with caplog.at_level(logging.WARNING, logger="aiooss_resume"):
        async with client_for(server) as client:
            result = await client.bucket(BUCKET).upload_file(KEY, src, 100 * KIB)
    assert server.read_object(BUCKET, KEY) == src.read_bytes()
    (orphan,) = open_ids(server)  # left, and said so
    assert orphan != result.upload_id
    warning = next(
        r.getMessage() for r in caplog.records if "could not be looked for" in r.getMessage()
    )
    assert "AccessDenied" in warning and f"aiooss-resume uploads oss://{BUCKET}/{KEY}" in warning


async def test_a_failing_abort_names_the_upload_id(
    server: ThreadedOssServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = source(tmp_path)
    server.faults.add(Fault(operation="InitiateMultipartUpload", times=1, drop_response=True))
    server.faults.add(Fault(operation="AbortMultipartUpload", status=403, code="AccessDenied"))
    with caplog.at_level(logging.WARNING, logger="aiooss_resume"):
        async with client_for(server) as client:
            await client.bucket(BUCKET).upload_file(KEY, src, 100 * KIB)
    (orphan,) = open_ids(server)
    assert any(
        orphan in r.getMessage() and "could not abort" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize("skew", [timedelta(minutes=5), timedelta(minutes=-5)])
async def test_the_window_is_in_server_time(
    server: ThreadedOssServer, tmp_path: Path, skew: timedelta
) -> None:
    # The server's clock is 5 minutes off ours (within OSS's 15-minute tolerance, so nothing
    # tells the client): the listing's Date bounds the offset, and the orphan is found.
    server.clock = lambda: datetime.now(UTC) + skew
    src = source(tmp_path)
    server.faults.add(Fault(operation="InitiateMultipartUpload", times=1, drop_response=True))
    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_file(KEY, src, 100 * KIB)
        assert client.clock_offset == 0.0  # no skew error ever told the client
    assert open_ids(server) == set()


async def test_an_error_answer_to_initiate_needs_no_cleanup(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    # A 503 from OSS means no upload was created: retried, but nothing to look for.
    src = source(tmp_path)
    server.faults.add(Fault(operation="InitiateMultipartUpload", times=1, status=503))
    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_file(KEY, src, 100 * KIB)
    assert operations(server).count("InitiateMultipartUpload") == 2
    assert "ListMultipartUploads" not in operations(server)
    assert open_ids(server) == set()


async def test_every_page_of_the_listing_is_read(tmp_path: Path) -> None:
    # Through the MockTransport seam: pages of 2 uploads, five older uploads of the key and
    # uploads of longer keys around it; the lost attempt's upload is on the last page.
    fake = FakeOss(list_page=2)
    for n in range(5):
        fake.uploads[f"{n:032X}".replace("0", "A", 1)] = Upload(KEY, {}, initiated=1_000_000.0)
    fake.uploads["F" * 32] = Upload(KEY + "x", {})  # a longer key, initiated now
    lost: list[str] = []

    async def first_initiate_answer_is_lost(call: Call) -> oss.HttpResponse | None:
        if call.op == "InitiateMultipartUpload" and not lost:
            resp = fake._InitiateMultipartUpload(call.key, call.query, call.request)
            lost.append(max(fake.uploads, key=lambda i: fake.uploads[i].initiated))
            assert resp.status == 200
            raise oss.TransportError("connection reset after the server acted")
        return None

    fake.fault = first_initiate_answer_is_lost
    src = source(tmp_path)
    async with oss.Client(
        "http://127.0.0.1:1",
        credentials=oss.Credentials("ak", "sk"),
        region="cn-hangzhou",
        transport=fake.transport,
        retry=oss.RetryPolicy(max_attempts=3, base_delay=0.0),
    ) as client:
        await client.bucket(BUCKET).upload_file(KEY, src, 100 * KIB)
    assert len(fake.ops("ListMultipartUploads")) >= 3  # it paged
    assert lost and lost[0] not in fake.uploads  # the lost attempt's upload was aborted
    assert len(fake.ops("AbortMultipartUpload")) == 1
    assert sorted(u.key for u in fake.uploads.values()) == [KEY] * 5 + [KEY + "x"]


async def test_seeded_chaos_on_initiate_leaves_no_open_upload(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    # Half of the Initiates fail, in every way chaos knows: answered with an error (nothing
    # created), the answer lost or cut short (created), the connection reset.
    server.faults.chaos(
        0.5,
        11,
        kinds=("error", "slowdown", "reset", "drop_response", "truncate"),
        operations=("InitiateMultipartUpload",),
    )
    src = source(tmp_path)
    ak, sk, token = server.credentials
    async with oss.Client(
        server.endpoint,
        credentials=oss.Credentials(ak, sk, token),
        region=server.region,
        retry=oss.RetryPolicy(max_attempts=8, base_delay=0.0),
    ) as client:
        for i in range(8):
            await client.bucket(BUCKET).upload_file(f"chaos/{i}.bin", src, 100 * KIB)
    initiates = [r for r in server.requests if r.operation == "InitiateMultipartUpload"]
    lost = [r for r in initiates if r.faults and r.status in (0, 200)]
    assert len(initiates) > 8 and lost  # the seed's decisions include lost answers
    assert open_ids(server) == set()


async def test_the_restart_after_a_vanished_upload_cleans_up_too(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    # The engine's second Initiate (the upload "vanished": a NoSuchUpload on a part) is the
    # other path that initiates; its lost answer is cleaned up the same way.
    src = source(tmp_path)
    server.faults.add(
        Fault(operation="UploadPart", part_number=2, times=1, status=404, code="NoSuchUpload")
    )
    server.faults.add(
        Fault(operation="InitiateMultipartUpload", nth=2, times=1, drop_response=True)
    )
    started: list[str] = []

    def on_progress(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.UploadStarted) and event.upload_id:
            started.append(event.upload_id)

    async with client_for(server) as client:
        result = await client.bucket(BUCKET).upload_file(
            KEY, src, 100 * KIB, on_progress=on_progress
        )
    assert operations(server).count("InitiateMultipartUpload") == 3
    assert server.read_object(BUCKET, KEY) == src.read_bytes()
    # Left: only the first upload, which the fault made look gone (it is not really).
    assert open_ids(server) == set(started[:1]) and result.upload_id != started[0]
