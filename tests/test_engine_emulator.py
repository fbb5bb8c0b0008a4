"""The engine against the project's OSS emulator over real sockets on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import aiooss_resume as oss
from aiooss_resume.testing import Fault, OssServer

pytestmark = pytest.mark.anyio

KIB = 1024
BUCKET = "bkt"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "srv") as srv:
        yield srv


def client_for(server: OssServer, **kwargs: object) -> oss.Client:
    creds = server.credentials
    options: dict[str, object] = {
        "credentials": oss.Credentials(
            creds.access_key_id, creds.access_key_secret, creds.security_token
        ),
        "region": server.region,
        "retry": oss.RetryPolicy(max_attempts=4, base_delay=0.0),
    }
    options.update(kwargs)
    return oss.Client(server.endpoint, **options)  # type: ignore[arg-type]


def make_file(tmp_path: Path, size: int, name: str = "src.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


@pytest.mark.parametrize("version", ["v1", "v4"])
@pytest.mark.parametrize(
    "size", [0, 1, 100 * KIB - 1, 100 * KIB, 100 * KIB + 1, 300 * KIB, 350 * KIB + 7]
)
async def test_round_trip(server: OssServer, tmp_path: Path, version: str, size: int) -> None:
    src = make_file(tmp_path, size)
    key = "测试目录/文件 名(1)+&=?#%~.bin"
    async with client_for(server, signature_version=version) as client:
        result = await client.bucket(BUCKET).upload_file(
            key, src, 100 * KIB, routines=3, checkpoint=True
        )
    assert server.read_object(BUCKET, key) == src.read_bytes()
    assert result.size == size
    assert (result.upload_id is None) == (size < 100 * KIB)
    assert not (tmp_path / "src.bin.cp").exists()


async def test_sts_token_is_sent_and_required(tmp_path: Path) -> None:
    async with OssServer(root=tmp_path / "srv", security_token="CAIS+tok/en=") as server:
        src = make_file(tmp_path, 250 * KIB)
        async with client_for(server) as client:
            await client.bucket(BUCKET).upload_file("k", src, 100 * KIB)
        creds = server.credentials
        no_token = oss.Credentials(creds.access_key_id, creds.access_key_secret)
        async with client_for(server, credentials=no_token) as client:
            with pytest.raises(oss.ServiceError) as info:
                await client.bucket(BUCKET).upload_file("k2", src, 100 * KIB)
        assert info.value.status == 403
    assert server.read_object(BUCKET, "k") == src.read_bytes()


async def test_wrong_secret_fails_fast_with_the_oss_code(server: OssServer, tmp_path: Path) -> None:
    src = make_file(tmp_path, 250 * KIB)
    wrong = oss.Credentials(server.credentials.access_key_id, "not-the-secret")
    async with client_for(server, credentials=wrong) as client:
        with pytest.raises(oss.ServiceError) as info:
            await client.bucket(BUCKET).upload_file("k", src, 100 * KIB)
    err = info.value
    assert err.code == "SignatureDoesNotMatch" and err.status == 403
    assert len(err.request_id) == 24
    assert "not-the-secret" not in str(err)
    assert len(server.requests) == 1  # not retried


async def test_clock_skew_is_learned_and_applied(tmp_path: Path) -> None:
    ahead = timedelta(minutes=40)
    async with OssServer(root=tmp_path / "srv", clock=lambda: datetime.now(UTC) + ahead) as server:
        src = make_file(tmp_path, 350 * KIB)
        async with client_for(server) as client:
            await client.bucket(BUCKET).upload_file("k", src, 100 * KIB, routines=2)
            offset = client.clock_offset
    codes = [r.code for r in server.requests if r.code]
    assert codes == ["RequestTimeTooSkewed"]  # once, then every signature is corrected
    assert abs(offset - ahead.total_seconds()) < 5
    assert server.read_object(BUCKET, "k") == src.read_bytes()


async def test_a_later_clock_skew_error_keeps_the_learned_offset(tmp_path: Path) -> None:
    """A RequestTimeTooSkewed while the clock is already corrected (here injected) must not
    reset the offset: it is measured against the raw local clock, not the corrected one."""
    ahead = timedelta(minutes=40)
    async with OssServer(root=tmp_path / "srv", clock=lambda: datetime.now(UTC) + ahead) as server:
        server.faults.add(Fault(operation="UploadPart", part_number=3, code="RequestTimeTooSkewed"))
        src = make_file(tmp_path, 450 * KIB)
        async with client_for(server) as client:
            await client.bucket(BUCKET).upload_file("k", src, 100 * KIB)
            offset = client.clock_offset
        assert server.read_object(BUCKET, "k") == src.read_bytes()
    skewed = [(r.operation, r.part_number) for r in server.requests if r.code]
    # The real skew once, the injected one once; never a skew caused by a reset offset.
    assert skewed == [("InitiateMultipartUpload", None), ("UploadPart", 3)]
    assert abs(offset - ahead.total_seconds()) < 5


async def test_clock_skew_is_learned_even_when_the_request_is_not_retried(
    tmp_path: Path,
) -> None:
    ahead = timedelta(minutes=-30)
    async with OssServer(root=tmp_path / "srv", clock=lambda: datetime.now(UTC) + ahead) as server:
        src = make_file(tmp_path, 10)
        async with client_for(server, retry=oss.RetryPolicy(max_attempts=1)) as client:
            with pytest.raises(oss.ServiceError) as info:
                await client.bucket(BUCKET).upload_file("k", src)
            assert info.value.code == "RequestTimeTooSkewed"
            assert abs(client.clock_offset - ahead.total_seconds()) < 5
            await client.bucket(BUCKET).upload_file("k", src)  # signed with server time
        assert server.read_object(BUCKET, "k") == src.read_bytes()
    assert [r.code for r in server.requests if r.code] == ["RequestTimeTooSkewed"]


async def test_wrong_region_is_a_clear_error(server: OssServer, tmp_path: Path) -> None:
    src = make_file(tmp_path, 10)
    async with client_for(server, region="cn-beijing") as client:
        with pytest.raises(oss.ServiceError) as info:
            await client.bucket(BUCKET).upload_file("k", src)
    assert info.value.code == "InvalidArgument"


async def test_peak_parts_in_flight_equals_routines(server: OssServer, tmp_path: Path) -> None:
    server.faults.add(Fault(operation="UploadPart", delay=0.05, times=None))
    src = make_file(tmp_path, 1200 * KIB)
    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_file("k", src, 100 * KIB, routines=4)
    assert server.stats.peak_in_flight["UploadPart"] == 4


async def test_network_faults_on_every_operation(server: OssServer, tmp_path: Path) -> None:
    faults = [
        Fault(operation="InitiateMultipartUpload", status=503, code="SlowDown"),
        Fault(operation="UploadPart", part_number=1, reset_after_bytes=30 * KIB),
        Fault(operation="UploadPart", part_number=2, wrong_crc=True),
        Fault(operation="UploadPart", part_number=3, status=500, code="InternalError"),
        Fault(operation="CompleteMultipartUpload", drop_response=True),
    ]
    for fault in faults:
        server.faults.add(fault)
    src = make_file(tmp_path, 350 * KIB)
    events: list[oss.ProgressEvent] = []
    async with client_for(server) as client:
        result = await client.bucket(BUCKET).upload_file(
            "k", src, 100 * KIB, routines=2, checkpoint=True, on_progress=events.append
        )
    assert server.read_object(BUCKET, "k") == src.read_bytes()
    retried = [e for e in events if isinstance(e, oss.PartRetried)]
    assert sorted(e.part_number for e in retried) == [0, 0, 1, 2, 3]
    done = [e.bytes_done for e in events if isinstance(e, oss.BytesSent)]
    assert done == sorted(done) and done[-1] == 350 * KIB
    assert result.crc64 != 0


async def test_stalled_part_times_out_and_is_retried(server: OssServer, tmp_path: Path) -> None:
    server.faults.add(Fault(operation="UploadPart", part_number=2, stall=30))
    src = make_file(tmp_path, 250 * KIB)
    events: list[oss.ProgressEvent] = []
    async with client_for(server, read_timeout=0.5) as client:
        await client.bucket(BUCKET).upload_file("k", src, 100 * KIB, on_progress=events.append)
    (retried,) = [e for e in events if isinstance(e, oss.PartRetried)]
    assert retried.part_number == 2 and "timed out" in retried.error
    assert server.read_object(BUCKET, "k") == src.read_bytes()


async def test_retries_exhausted_keep_the_checkpoint_and_say_so(
    server: OssServer, tmp_path: Path
) -> None:
    server.faults.add(Fault(operation="UploadPart", part_number=2, status=503, times=None))
    src = make_file(tmp_path, 350 * KIB)
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(oss.ServiceError) as info:
            await bucket.upload_file("k", src, 100 * KIB, checkpoint=True)
        notes = " ".join(info.value.__notes__)
        assert "4 attempts" in notes and "src.bin.cp" in notes
        server.faults.clear()
        result = await bucket.upload_file("k", src, 100 * KIB, checkpoint=True)
    assert result.parts_resumed == 1
    assert server.read_object(BUCKET, "k") == src.read_bytes()


async def test_resume_reconciles_with_paged_list_parts(tmp_path: Path) -> None:
    async with OssServer(root=tmp_path / "srv", list_parts_page_size=2) as server:
        server.faults.add(Fault(operation="UploadPart", part_number=6, status=403, times=None))
        src = make_file(tmp_path, 700 * KIB)
        async with client_for(server) as client:
            bucket = client.bucket(BUCKET)
            with pytest.raises(oss.ServiceError):
                await bucket.upload_file("k", src, 100 * KIB, checkpoint=True)
            server.faults.clear()
            result = await bucket.upload_file("k", src, 100 * KIB, checkpoint=True)
        assert result.parts_resumed == 5
        assert len([r for r in server.requests if r.operation == "ListParts"]) == 3
        assert server.read_object(BUCKET, "k") == src.read_bytes()


async def test_resume_after_server_restart(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    src = make_file(tmp_path, 450 * KIB)
    async with OssServer(root=root) as server:
        port = int(server.endpoint.rsplit(":", 1)[1])
        server.faults.add(Fault(operation="UploadPart", part_number=4, status=403, times=None))
        async with client_for(server) as client:
            with pytest.raises(oss.ServiceError):
                await client.bucket(BUCKET).upload_file("k", src, 100 * KIB, checkpoint=True)
    # Same endpoint (a checkpoint for another endpoint is not resumed), same storage root.
    async with OssServer(root=root, port=port) as server, client_for(server) as client:
        result = await client.bucket(BUCKET).upload_file("k", src, 100 * KIB, checkpoint=True)
        assert result.parts_resumed == 3
        assert server.read_object(BUCKET, "k") == src.read_bytes()


async def test_list_and_abort_uploads(server: OssServer, tmp_path: Path) -> None:
    server.faults.add(Fault(operation="UploadPart", part_number=2, status=403, times=None))
    src = make_file(tmp_path, 250 * KIB)
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(oss.ServiceError):
            await bucket.upload_file("dir/k", src, 100 * KIB, checkpoint=True)
        (upload,) = await bucket.list_uploads("dir/")
        assert upload.key == "dir/k"
        assert await bucket.list_uploads("other/") == []
        await bucket.abort_upload("dir/k", upload.upload_id)
        assert await bucket.list_uploads() == []
        with pytest.raises(oss.NoSuchUploadError):
            await bucket.abort_upload("dir/k", upload.upload_id)


async def test_missing_credentials_name_the_variables(
    server: OssServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("OSS_", "ALIBABA_CLOUD_")):
            monkeypatch.delenv(name)
    src = make_file(tmp_path, 10)
    async with oss.Client(server.endpoint, region=server.region) as client:
        with pytest.raises(oss.CredentialsError, match="OSS_ACCESS_KEY_ID"):
            await client.bucket(BUCKET).upload_file("k", src)
    assert server.requests == []


async def test_credentials_from_the_environment(
    server: OssServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", server.credentials.access_key_id)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", server.credentials.access_key_secret)
    monkeypatch.setenv("OSS_REGION", server.region)
    src = make_file(tmp_path, 10)
    async with oss.Client(server.endpoint) as client:
        await client.bucket(BUCKET).upload_file("k", src)
    assert server.read_object(BUCKET, "k") == src.read_bytes()


async def test_client_can_use_the_callers_session(server: OssServer, tmp_path: Path) -> None:
    import aiohttp

    src = make_file(tmp_path, 250 * KIB)
    async with aiohttp.ClientSession() as session:
        async with client_for(server, session=session) as client:
            await client.bucket(BUCKET).upload_file("k", src, 100 * KIB, routines=2)
        assert not session.closed  # the caller's session stays the caller's
    assert server.read_object(BUCKET, "k") == src.read_bytes()


async def test_one_client_shared_by_concurrent_uploads(server: OssServer, tmp_path: Path) -> None:
    import asyncio

    files = [make_file(tmp_path, 150 * KIB + i, f"f{i}.bin") for i in range(8)]
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        results = await asyncio.gather(
            *(
                bucket.upload_file(f"k{i}", f, 100 * KIB, routines=2, checkpoint=True)
                for i, f in enumerate(files)
            )
        )
    for i, f in enumerate(files):
        assert server.read_object(BUCKET, f"k{i}") == f.read_bytes()
        assert results[i].size == f.stat().st_size


# ------------------------------------------------- errors raised inside a body, over aiohttp


async def test_hook_error_inside_a_part_body_is_raised_not_retried(
    server: OssServer, tmp_path: Path
) -> None:
    """aiohttp reports an exception from a streamed body as a broken connection; it was
    retried as a TransportError (or lost once every byte was out)."""
    src = make_file(tmp_path, 3 * 1024 * KIB)
    calls = 0

    def hook(event: oss.ProgressEvent) -> None:
        nonlocal calls
        if isinstance(event, oss.BytesSent):
            calls += 1
            raise RuntimeError("bug in the hook")

    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(RuntimeError, match="bug in the hook"):
            await bucket.upload_file("k", src, 2 * 1024 * KIB, checkpoint=True, on_progress=hook)
        assert calls == 1
        assert len([r for r in server.requests if r.operation == "UploadPart"]) <= 1
        assert (tmp_path / "src.bin.cp").exists()  # resumable
        result = await bucket.upload_file("k", src, 2 * 1024 * KIB, checkpoint=True)
    assert result.parts_uploaded == 2
    assert server.read_object(BUCKET, "k") == src.read_bytes()


async def test_hook_error_inside_a_put_object_body_is_raised_not_retried(
    server: OssServer, tmp_path: Path
) -> None:
    src = make_file(tmp_path, 3 * 1024 * KIB)  # one PutObject, streamed in 1 MiB chunks

    def hook(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.BytesSent):
            raise RuntimeError("bug in the hook")

    async with client_for(server) as client:
        with pytest.raises(RuntimeError, match="bug in the hook"):
            await client.bucket(BUCKET).upload_file("k", src, 5 * 1024 * KIB, on_progress=hook)
    assert len([r for r in server.requests if r.operation == "PutObject"]) <= 1
    assert server.object_info(BUCKET, "k") is None


async def test_file_changed_during_put_object_is_not_stored(
    server: OssServer, tmp_path: Path
) -> None:
    old = make_file(tmp_path, 1000, "old.bin")
    src = make_file(tmp_path, 3 * 1024 * KIB)

    def edit_in_place(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.BytesSent) and event.bytes_done == 1024 * KIB:
            with open(src, "r+b") as f:  # same size, same inode: only the mtime says so
                f.write(b"changed")

    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        await bucket.upload_file("k", old)
        with pytest.raises(oss.FileChangedError, match="it was not stored") as info:
            await bucket.upload_file("k", src, 5 * 1024 * KIB, on_progress=edit_in_place)
    assert "oss://bkt/k was left as it was" in str(info.value)
    assert server.read_object(BUCKET, "k") == old.read_bytes()  # the previous object


async def test_file_changed_after_a_lost_put_answer_says_what_may_be_stored(
    server: OssServer, tmp_path: Path
) -> None:
    src = make_file(tmp_path, 50 * KIB)
    original = src.read_bytes()
    server.faults.add(Fault(operation="PutObject", drop_response=True))

    def edit_before_the_retry(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.PartRetried):
            src.write_bytes(b"new content")

    async with client_for(server) as client:
        with pytest.raises(oss.FileChangedError, match="may hold that version"):
            await client.bucket(BUCKET).upload_file("k", src, on_progress=edit_before_the_retry)
    assert server.read_object(BUCKET, "k") == original  # the first attempt did store it
