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


def collect() -> tuple[list[oss.ProgressEvent], oss.ProgressHook]:
    events: list[oss.ProgressEvent] = []
    return events, events.append


def assert_progress_monotone(events: list[oss.ProgressEvent], total: int) -> None:
    done = [e.bytes_done for e in events if isinstance(e, oss.BytesSent)]
    assert done == sorted(done)
    assert done[-1] == total
    assert isinstance(events[0], oss.UploadStarted)
    assert isinstance(events[-1], oss.UploadCompleted)


async def test_small_and_empty_files_use_one_put(tmp_path: Path) -> None:
    fake = FakeOss()
    small = make_file(tmp_path, 1000, "small.txt")
    empty = make_file(tmp_path, 0, "empty.bin")
    async with client_for(fake) as client:
        bucket = client.bucket("bkt")
        r1 = await bucket.upload_file("s.txt", small, checkpoint=True)
        r2 = await bucket.upload_file("e.bin", empty, checkpoint=True)
    assert [c.op for c in fake.calls] == ["PutObject", "PutObject"]
    assert fake.objects["s.txt"][0] == small.read_bytes()
    assert fake.objects["e.bin"][0] == b""
    assert r1.upload_id is None and r1.crc64 != 0 and r2.crc64 == 0
    assert fake.objects["s.txt"][1]["Content-Type"] == "text/plain"
    assert not (tmp_path / "small.txt.cp").exists()


async def test_default_part_size_is_100_kib_and_exact_multiple(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 300 * KIB)
    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_file("k", src)
    sizes = [len(c.request.body) for c in fake.ops("UploadPart")]  # type: ignore[arg-type]
    assert sizes == [100 * KIB] * 3
    assert result.part_size == 100 * KIB
    assert fake.objects["k"][0] == src.read_bytes()


async def test_file_of_exactly_one_part_is_a_one_part_multipart(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 100 * KIB)
    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_file("k", src)
    assert result.parts_uploaded == 1 and result.upload_id is not None


async def test_peak_parts_in_flight_equals_routines(tmp_path: Path) -> None:
    fake = FakeOss()
    fake.part_delay = 0.02
    src = make_file(tmp_path, 2000 * KIB)
    async with client_for(fake) as client:
        await client.bucket("bkt").upload_file("k", src, 100 * KIB, routines=5)
    assert fake.peak_in_flight == 5


async def test_part_crc_mismatch_is_resent_and_progress_never_goes_back(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 350 * KIB)

    async def wrong_crc_once(call: Call) -> oss.HttpResponse | None:
        part2 = [c for c in fake.ops("UploadPart") if c.part_number == 2]
        if call.part_number == 2 and len(part2) == 1:
            return oss.HttpResponse(200, {"etag": '"X"', "x-oss-hash-crc64ecma": "1"})
        return None

    fake.fault = wrong_crc_once
    events, hook = collect()
    async with client_for(fake) as client:
        await client.bucket("bkt").upload_file("k", src, 100 * KIB, on_progress=hook)
    assert [c.part_number for c in fake.ops("UploadPart")] == [1, 2, 2, 3, 4]
    retried = [e for e in events if isinstance(e, oss.PartRetried)]
    assert len(retried) == 1 and retried[0].part_number == 2 and "CRC-64" in retried[0].error
    assert_progress_monotone(events, 350 * KIB)
    assert fake.objects["k"][0] == src.read_bytes()


async def test_transient_faults_on_every_operation(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 250 * KIB)
    failed: set[str] = set()

    async def first_of_each_fails(call: Call) -> oss.HttpResponse | None:
        name = f"{call.op}:{call.part_number}"
        if name not in failed:
            failed.add(name)
            if call.op == "CompleteMultipartUpload":
                raise oss.TransportError("connection reset")
            return error(503, "SlowDown")
        return None

    fake.fault = first_of_each_fails
    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_file("k", src, 100 * KIB, routines=2)
    assert fake.objects["k"][0] == src.read_bytes()
    assert result.parts_uploaded == 3
    assert len(failed) == 5  # initiate, three parts, complete


async def test_final_crc_mismatch_raises_integrity_error(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 250 * KIB)

    async def corrupt_complete(call: Call) -> oss.HttpResponse | None:
        if call.op == "CompleteMultipartUpload":
            resp = fake._CompleteMultipartUpload(call.key, call.query, call.request)
            return oss.HttpResponse(resp.status, {"x-oss-hash-crc64ecma": "42"}, resp.body)
        return None

    fake.fault = corrupt_complete
    async with client_for(fake) as client:
        with pytest.raises(oss.IntegrityError, match="exists") as info:
            await client.bucket("bkt").upload_file("k", src, 100 * KIB, checkpoint=True)
    assert info.value.actual == 42
    assert not (tmp_path / "src.bin.cp").exists()
    assert len(fake.ops("CompleteMultipartUpload")) == 1  # never retried blindly


async def test_permanent_failure_without_checkpoint_aborts(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 450 * KIB)

    async def deny_part_3(call: Call) -> oss.HttpResponse | None:
        if call.op == "UploadPart" and call.part_number == 3:
            return error(403, "AccessDenied", "no")
        return None

    fake.fault = deny_part_3
    async with client_for(fake) as client:
        with pytest.raises(oss.ServiceError) as info:
            await client.bucket("bkt").upload_file("k", src, 100 * KIB, routines=2)
    assert info.value.code == "AccessDenied" and info.value.status == 403
    assert info.value.request_id == "FAKE"
    assert [c.part_number for c in fake.ops("UploadPart") if c.part_number == 3] == [3]
    assert fake.uploads == {}  # aborted
    assert len(fake.ops("AbortMultipartUpload")) == 1


async def test_permanent_failure_with_checkpoint_keeps_it_and_resumes(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 700 * KIB)

    async def deny_part_3_slowly(call: Call) -> oss.HttpResponse | None:
        if call.op == "UploadPart" and call.part_number == 3:
            await asyncio.sleep(0.3)  # parts after it finish meanwhile
            return error(403, "AccessDenied")
        return None

    fake.fault = deny_part_3_slowly
    async with client_for(fake) as client:
        bucket = client.bucket("bkt")
        with pytest.raises(oss.ServiceError) as info:
            await bucket.upload_file("k", src, 100 * KIB, routines=4, checkpoint=True)
        assert "resumed" in " ".join(info.value.__notes__)
        assert (tmp_path / "src.bin.cp").exists()
        assert len(fake.uploads) == 1  # kept for the next run
        (upload,) = fake.uploads.values()
        on_server = set(upload.parts)
        assert 3 not in on_server and {1, 2, 4, 5} <= on_server  # not a prefix
        fake.fault = None
        fake.calls.clear()
        events, hook = collect()
        result = await bucket.upload_file(
            "k", src, 100 * KIB, routines=2, checkpoint=True, on_progress=hook
        )
    resent = sorted(c.part_number for c in fake.ops("UploadPart"))
    assert resent == sorted(set(range(1, 8)) - on_server)
    assert result.parts_resumed == len(on_server) and result.parts_uploaded == len(resent)
    assert result.bytes_resumed == 100 * KIB * len(on_server)
    started = events[0]
    assert isinstance(started, oss.UploadStarted)
    assert started.resumed and started.resumed_bytes == 100 * KIB * len(on_server)
    assert_progress_monotone(events, 700 * KIB)
    assert fake.objects["k"][0] == src.read_bytes()
    assert not (tmp_path / "src.bin.cp").exists()


async def interrupted_upload(
    fake: FakeOss, src: Path, *, parts_ok: int = 2, **kwargs: object
) -> None:
    """Leave a resumable upload behind: parts after ``parts_ok`` are refused."""

    async def deny_later(call: Call) -> oss.HttpResponse | None:
        if call.op == "UploadPart" and call.part_number > parts_ok:
            return error(403, "AccessDenied")
        return None

    fake.fault = deny_later
    async with client_for(fake) as client:
        with pytest.raises(oss.ServiceError):
            await client.bucket("bkt").upload_file("k", src, 100 * KIB, checkpoint=True, **kwargs)  # type: ignore[arg-type]
    fake.fault = None
    fake.calls.clear()


async def test_throttle_and_payer_may_change_between_runs(tmp_path: Path) -> None:
    """They do not shape the object, so changing them must not cost the uploaded parts;
    an object option (metadata) does, and means a full upload."""
    fake = FakeOss()
    src = make_file(tmp_path, 450 * KIB)
    await interrupted_upload(fake, src, headers={"x-oss-traffic-limit": "838860800"})
    headers = {"x-oss-traffic-limit": "1638400", "x-oss-request-payer": "requester"}
    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_file(
            "k", src, 100 * KIB, checkpoint=True, headers=headers
        )
    assert result.parts_resumed == 2 and result.parts_uploaded == 3
    assert all(
        c.request.headers["x-oss-traffic-limit"] == "1638400" for c in fake.ops("UploadPart")
    )
    assert fake.objects["k"][0] == src.read_bytes()

    fake = FakeOss()
    await interrupted_upload(fake, src)
    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_file(
            "k", src, 100 * KIB, checkpoint=True, headers={"x-oss-meta-owner": "bob"}
        )
    assert result.parts_resumed == 0 and result.parts_uploaded == 5
    assert len(fake.ops("AbortMultipartUpload")) == 1  # the stale upload is not orphaned


async def test_damaged_checkpoint_means_full_upload_and_stale_abort(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 450 * KIB)
    await interrupted_upload(fake, src)
    cp = tmp_path / "src.bin.cp"
    (stale_id,) = fake.uploads
    cp.write_bytes(cp.read_bytes().replace(b'"part_size":102400', b'"part_size":102401'))
    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_file("k", src, 100 * KIB, checkpoint=True)
    assert "damaged" in caplog.text
    assert [c.query["uploadId"] for c in fake.ops("AbortMultipartUpload")] == [stale_id]
    assert result.parts_resumed == 0 and result.parts_uploaded == 5
    assert fake.objects["k"][0] == src.read_bytes()


async def test_garbage_checkpoint_means_full_upload(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 250 * KIB)
    (tmp_path / "src.bin.cp").write_bytes(b"\x00garbage")
    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_file("k", src, 100 * KIB, checkpoint=True)
    assert result.parts_uploaded == 3
    assert fake.objects["k"][0] == src.read_bytes()


async def test_source_changed_between_runs_means_full_upload(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 450 * KIB)
    await interrupted_upload(fake, src)
    (stale_id,) = fake.uploads
    data = bytearray(src.read_bytes())
    data[0] ^= 0xFF
    src.write_bytes(bytes(data))  # same size, new mtime
    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_file("k", src, 100 * KIB, checkpoint=True)
    assert result.parts_resumed == 0
    assert [c.query["uploadId"] for c in fake.ops("AbortMultipartUpload")] == [stale_id]
    assert fake.objects["k"][0] == bytes(data)


async def test_in_place_edit_keeping_mtime_is_caught_by_crc(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 450 * KIB)
    await interrupted_upload(fake, src)
    st = src.stat()
    with open(src, "r+b") as f:  # same inode, same size
        f.seek(10)
        f.write(b"\xff\xfe\xfd")
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime
    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_file("k", src, 100 * KIB, checkpoint=True)
    # Part 1 differs locally: re-sent; part 2 still matches OSS: resumed.
    assert sorted(c.part_number for c in fake.ops("UploadPart")) == [1, 3, 4, 5]
    assert result.parts_resumed == 1
    assert fake.objects["k"][0] == src.read_bytes()


async def test_source_changed_during_upload_aborts_and_raises(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 450 * KIB)

    async def touch_after_first_part(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.PartDone) and event.parts_done == 1:
            with open(src, "ab") as f:
                f.write(b"more")

    async with client_for(fake) as client:
        with pytest.raises(oss.FileChangedError, match="changed"):
            await client.bucket("bkt").upload_file(
                "k", src, 100 * KIB, checkpoint=True, on_progress=touch_after_first_part
            )
    assert "k" not in fake.objects
    assert fake.uploads == {}
    assert not fake.ops("CompleteMultipartUpload")
    assert not (tmp_path / "src.bin.cp").exists()


async def test_file_truncated_during_upload_raises_file_changed(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 450 * KIB)

    async def truncate(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.PartDone) and event.parts_done == 1:
            os.truncate(src, 150 * KIB)

    async with client_for(fake) as client:
        with pytest.raises(oss.FileChangedError):
            await client.bucket("bkt").upload_file("k", src, 100 * KIB, on_progress=truncate)
    assert fake.uploads == {} and "k" not in fake.objects


async def test_file_changed_during_put_object_is_never_stored(tmp_path: Path) -> None:
    fake = FakeOss()
    fake.objects["k"] = (b"the previous object", {})
    src = make_file(tmp_path, 3 * 1024 * KIB)  # one PutObject, read in 1 MiB chunks

    async def edit_in_place(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.BytesSent) and event.bytes_done == 1024 * KIB:
            with open(src, "r+b") as f:  # same size and inode: the mtime tells
                f.write(b"changed")

    async with client_for(fake) as client:
        with pytest.raises(oss.FileChangedError, match="it was not stored"):
            await client.bucket("bkt").upload_file(
                "k", src, 5 * 1024 * KIB, checkpoint=True, on_progress=edit_in_place
            )
    assert fake.ops("PutObject") == []  # the body was cut before its last chunk
    assert fake.objects["k"][0] == b"the previous object"


async def test_file_changed_after_put_object_read_it_all_is_a_faithful_copy(
    tmp_path: Path,
) -> None:
    """Once every byte was read with the file unchanged, the object is the file as it was
    then: a change afterwards does not make it mixed, and it is kept."""
    fake = FakeOss()
    src = make_file(tmp_path, 50 * KIB)  # one chunk
    original = src.read_bytes()

    def edit_after_the_read(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.BytesSent):
            src.write_bytes(b"new")

    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_file("k", src, on_progress=edit_after_the_read)
    assert fake.objects["k"][0] == original
    assert result.size == len(original)


async def test_no_such_upload_on_resume_starts_fresh(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 450 * KIB)
    await interrupted_upload(fake, src)
    fake.uploads.clear()  # expired on the server
    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_file("k", src, 100 * KIB, checkpoint=True)
    assert result.parts_resumed == 0 and result.parts_uploaded == 5
    assert len(fake.ops("InitiateMultipartUpload")) == 1
    assert fake.objects["k"][0] == src.read_bytes()


async def test_upload_vanishing_mid_way_restarts_once(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 450 * KIB)

    async def vanish_once(call: Call) -> oss.HttpResponse | None:
        third = [c for c in fake.ops("UploadPart") if c.part_number == 3]
        if call.op == "UploadPart" and call.part_number == 3 and len(third) == 1:
            fake.uploads.clear()
        return None

    fake.fault = vanish_once
    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_file("k", src, 100 * KIB, checkpoint=True)
    assert len(fake.ops("InitiateMultipartUpload")) == 2
    assert fake.objects["k"][0] == src.read_bytes()
    assert result.parts_uploaded == 5


async def test_upload_vanishing_twice_fails_instead_of_looping(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 450 * KIB)

    async def always_gone(call: Call) -> oss.HttpResponse | None:
        return error(404, "NoSuchUpload") if call.op == "UploadPart" else None

    fake.fault = always_gone
    async with client_for(fake) as client:
        with pytest.raises(oss.NoSuchUploadError):
            await client.bucket("bkt").upload_file("k", src, 100 * KIB)
    assert len(fake.ops("InitiateMultipartUpload")) == 2


async def test_lost_complete_answer_is_settled_by_head(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 250 * KIB)

    async def complete_then_drop(call: Call) -> oss.HttpResponse | None:
        if call.op == "CompleteMultipartUpload" and len(fake.ops(call.op)) == 1:
            fake._CompleteMultipartUpload(call.key, call.query, call.request)
            raise oss.TransportError("connection reset after Complete")
        return None

    fake.fault = complete_then_drop
    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_file("k", src, 100 * KIB, checkpoint=True)
    assert len(fake.ops("CompleteMultipartUpload")) == 2
    assert len(fake.ops("HeadObject")) == 1
    assert result.size == 250 * KIB
    assert not (tmp_path / "src.bin.cp").exists()


async def test_lost_complete_with_other_content_fails(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 250 * KIB)

    async def gone(call: Call) -> oss.HttpResponse | None:
        if call.op == "CompleteMultipartUpload":
            fake.objects["k"] = (b"someone else's", {})
            return error(404, "NoSuchUpload")
        return None

    fake.fault = gone
    async with client_for(fake) as client:
        with pytest.raises(oss.NoSuchUploadError) as info:
            await client.bucket("bkt").upload_file("k", src, 100 * KIB)
    assert "does not hold this file" in " ".join(info.value.__notes__)


async def complete_leaving_checkpoint(fake: FakeOss, client: oss.Client, src: Path) -> Path:
    """Upload ``src`` to "k", then put back the checkpoint as it was when Complete was sent:
    as if the run had been killed between Complete and the checkpoint's deletion."""
    cp = Path(str(src) + ".cp")
    saved: list[bytes] = []

    async def keep_checkpoint(call: Call) -> oss.HttpResponse | None:
        if call.op == "CompleteMultipartUpload":
            saved.append(cp.read_bytes())
        return None

    fake.fault = keep_checkpoint
    await client.bucket("bkt").upload_file("k", src, 100 * KIB, checkpoint=True)
    fake.fault = None
    cp.write_bytes(saved[0])
    fake.calls.clear()
    return cp


async def test_killed_after_complete_finishes_without_resending(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 250 * KIB)
    async with client_for(fake) as client:
        cp = await complete_leaving_checkpoint(fake, client, src)
        result = await client.bucket("bkt").upload_file("k", src, 100 * KIB, checkpoint=True)
    assert [c.op for c in fake.calls] == ["ListParts", "HeadObject"]
    assert result.parts_resumed == 3 and result.parts_uploaded == 0
    assert not cp.exists()


async def test_cancellation_keeps_checkpoint_and_leaves_no_tasks(tmp_path: Path) -> None:
    fake = FakeOss()
    fake.part_delay = 0.05
    src = make_file(tmp_path, 1000 * KIB)
    async with client_for(fake) as client:
        bucket = client.bucket("bkt")
        before = asyncio.all_tasks()
        task = asyncio.ensure_future(
            bucket.upload_file("k", src, 100 * KIB, routines=2, checkpoint=True)
        )
        while len(fake.ops("UploadPart")) < 5:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert asyncio.all_tasks() - before == set()
        assert len(fake.uploads) == 1 and not fake.ops("AbortMultipartUpload")
        from aiooss_resume._checkpoint import decode_checkpoint

        recorded = decode_checkpoint((tmp_path / "src.bin.cp").read_bytes()).parts
        (upload,) = fake.uploads.values()
        assert recorded
        for part in recorded:  # only acknowledged parts are recorded
            assert upload.parts[part.number][1] == part.etag
        fake.part_delay = 0
        fake.calls.clear()
        result = await bucket.upload_file("k", src, 100 * KIB, routines=2, checkpoint=True)
    assert result.parts_resumed >= len(recorded)
    assert fake.objects["k"][0] == src.read_bytes()


async def test_cancellation_without_checkpoint_aborts(tmp_path: Path) -> None:
    fake = FakeOss()
    fake.part_delay = 0.05
    src = make_file(tmp_path, 1000 * KIB)
    async with client_for(fake) as client:
        task = asyncio.ensure_future(client.bucket("bkt").upload_file("k", src, 100 * KIB))
        while len(fake.ops("UploadPart")) < 2:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert fake.uploads == {}


async def test_second_upload_on_same_checkpoint_is_refused(tmp_path: Path) -> None:
    fake = FakeOss()
    fake.part_delay = 0.05
    src = make_file(tmp_path, 500 * KIB)
    async with client_for(fake) as client:
        bucket = client.bucket("bkt")
        first = asyncio.ensure_future(bucket.upload_file("k", src, 100 * KIB, checkpoint=True))
        while not fake.ops("UploadPart"):
            await asyncio.sleep(0.005)
        with pytest.raises(oss.CheckpointError, match="in use"):
            await bucket.upload_file("k", src, 100 * KIB, checkpoint=True)
        await first
    assert fake.objects["k"][0] == src.read_bytes()


async def test_checkpoint_locations(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 250 * KIB)
    seen: list[list[str]] = []

    def look(event: oss.ProgressEvent) -> None:
        if isinstance(event, oss.PartDone):
            seen.append(sorted(p.name for p in tmp_path.rglob("*.cp")))

    async with client_for(fake) as client:
        bucket = client.bucket("bkt")
        await bucket.upload_file("k", src, 100 * KIB, checkpoint=True, on_progress=look)
        assert seen[-1] == ["src.bin.cp"]
        seen.clear()
        await bucket.upload_file(
            "k", src, 100 * KIB, checkpoint=tmp_path / "a" / "b" / "my.cp", on_progress=look
        )
        assert seen[-1] == ["my.cp"]
        seen.clear()
        await bucket.upload_file(
            "k", src, 100 * KIB, checkpoint_dir=tmp_path / "cps", on_progress=look
        )
        assert len(seen[-1]) == 1 and seen[-1][0].startswith("src.bin.")
    assert list(tmp_path.rglob("*.cp")) == []
    assert list(tmp_path.rglob("*.lock")) == []


async def test_unwritable_checkpoint_location_fails_before_any_request(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 250 * KIB)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    async with client_for(fake) as client:
        with pytest.raises(oss.CheckpointError):
            await client.bucket("bkt").upload_file("k", src, checkpoint=blocker / "sub" / "x.cp")
        with pytest.raises(oss.CheckpointError):
            await client.bucket("bkt").upload_file("k", src, checkpoint_dir=blocker)
    assert fake.calls == []


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"key": ""}, ValueError),
        ({"key": "/abs"}, ValueError),
        ({"key": "\\abs"}, ValueError),
        ({"key": "k" * 1024}, ValueError),
        ({"key": "\ud800"}, ValueError),
        ({"part_size": 100 * KIB - 1}, ValueError),
        ({"part_size": 5 * 1024**3 + 1}, ValueError),
        ({"routines": 0}, ValueError),
        ({"routines": 1.5}, TypeError),
        ({"headers": {"Authorization": "x"}}, ValueError),
        ({"headers": {"x-oss-meta-a": "line\nbreak"}}, ValueError),
        ({"headers": {"x-oss-meta-a": "é"}}, ValueError),
        ({"headers": {"bad name": "v"}}, ValueError),
        ({"checkpoint": "x.cp", "checkpoint_dir": "/tmp"}, ValueError),
        ({"checkpoint": False, "checkpoint_dir": "/tmp"}, ValueError),
        ({"checkpoint": 3}, TypeError),
        ({"on_progress": "not callable"}, TypeError),
    ],
)
async def test_bad_input_fails_before_any_request(
    tmp_path: Path, kwargs: dict[str, object], exc: type[Exception]
) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 250 * KIB)
    args: dict[str, object] = {"key": "k", "file_path": src, "part_size": 100 * KIB, **kwargs}
    async with client_for(fake) as client:
        with pytest.raises(exc):
            await client.bucket("bkt").upload_file(**args)  # type: ignore[arg-type]
    assert fake.calls == []


@pytest.mark.parametrize(
    "key",
    ["k" * 1023, "é" * 511 + "k", "目" * 341],  # 1023 bytes of UTF-8
)
async def test_key_of_1023_bytes_is_accepted(tmp_path: Path, key: str) -> None:
    assert len(key.encode()) == 1023
    fake = FakeOss()
    src = make_file(tmp_path, 10)
    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_file(key, src)
    assert result.key == key and fake.objects[key][0] == src.read_bytes()


@pytest.mark.parametrize("key", ["k" * 1024, "é" * 512, "目" * 341 + "k"])  # 1024 bytes
async def test_key_of_1024_bytes_is_refused_before_any_request(tmp_path: Path, key: str) -> None:
    assert len(key.encode()) == 1024
    fake = FakeOss()
    src = make_file(tmp_path, 10)
    async with client_for(fake) as client:
        with pytest.raises(ValueError, match="1024 bytes"):
            await client.bucket("bkt").upload_file(key, src)
    assert fake.calls == []


async def test_missing_file_and_directory(tmp_path: Path) -> None:
    fake = FakeOss()
    async with client_for(fake) as client:
        with pytest.raises(FileNotFoundError):
            await client.bucket("bkt").upload_file("k", tmp_path / "nope")
        with pytest.raises(IsADirectoryError):
            await client.bucket("bkt").upload_file("k", tmp_path)
    assert fake.calls == []


async def test_headers_go_to_the_right_requests(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 250 * KIB)
    headers = {
        "x-oss-meta-owner": "alice",
        "x-oss-object-acl": "private",
        "x-oss-traffic-limit": "838860800",
        "x-oss-request-payer": "requester",
        "x-oss-forbid-overwrite": "true",
        "Cache-Control": "no-cache",
    }

    async def lose_the_first_complete_answer(call: Call) -> oss.HttpResponse | None:
        if call.op == "CompleteMultipartUpload" and len(fake.ops(call.op)) == 1:
            fake._CompleteMultipartUpload(call.key, call.query, call.request)
            raise oss.TransportError("connection reset after Complete")  # then HEAD decides
        return None

    fake.fault = lose_the_first_complete_answer
    async with client_for(fake) as client:
        await client.bucket("bkt").upload_file("photo.JPG", src, 100 * KIB, headers=headers)

    def sent(op: str) -> dict[str, str]:
        return {k.lower(): v for k, v in fake.ops(op)[0].request.headers.items()}

    init, part, done = (
        sent("InitiateMultipartUpload"),
        sent("UploadPart"),
        sent("CompleteMultipartUpload"),
    )
    assert init["content-type"] == "image/jpeg"
    assert init["x-oss-meta-owner"] == "alice" and init["cache-control"] == "no-cache"
    assert "x-oss-object-acl" not in init and "x-oss-traffic-limit" not in init
    assert part["x-oss-traffic-limit"] == "838860800" and "x-oss-meta-owner" not in part
    assert "content-type" not in part
    assert done["x-oss-object-acl"] == "private" and done["x-oss-forbid-overwrite"] == "true"
    assert all(h["x-oss-request-payer"] == "requester" for h in (init, part, done))
    assert all(
        c.request.headers.get("x-oss-traffic-limit") == "838860800" for c in fake.ops("UploadPart")
    )
    assert {c.op for c in fake.calls} >= {"HeadObject", "CompleteMultipartUpload"}
    assert all(c.request.headers.get("x-oss-request-payer") == "requester" for c in fake.calls)


async def test_request_payer_goes_on_every_request(tmp_path: Path) -> None:
    """Spec 9: on a requester-pays bucket every request must carry x-oss-request-payer,
    including ListParts (resume), HeadObject, AbortMultipartUpload and PutObject."""
    fake = FakeOss()
    src = make_file(tmp_path, 450 * KIB)
    small = make_file(tmp_path, 10, "small.bin")
    payer = {"x-oss-request-payer": "requester"}
    async with client_for(fake) as client:
        bucket = client.bucket("bkt")
        await interrupted_upload(fake, src, headers=payer)  # ... and its checkpoint
        fake.uploads.clear()  # gone: ListParts -> NoSuchUpload -> HeadObject -> Initiate
        fake.objects["k"] = (b"x" * (450 * KIB), {})
        await bucket.upload_file("k", src, 100 * KIB, checkpoint=True, headers=payer)

        async def deny_part_2(call: Call) -> oss.HttpResponse | None:
            if call.op == "UploadPart" and call.part_number == 2:
                return error(403, "AccessDenied")
            return None

        fake.fault = deny_part_2
        with pytest.raises(oss.ServiceError):  # no checkpoint: the upload is aborted
            await bucket.upload_file("k2", src, 100 * KIB, headers=payer)
        await bucket.upload_file("k3", small, headers=payer)
    ops = {c.op for c in fake.calls}
    assert ops >= {"ListParts", "HeadObject", "AbortMultipartUpload", "PutObject"}, ops
    missing = [
        c.op for c in fake.calls if c.request.headers.get("x-oss-request-payer") != "requester"
    ]
    assert missing == []


async def test_async_progress_hook_and_event_fields(tmp_path: Path) -> None:
    fake = FakeOss()
    src = make_file(tmp_path, 250 * KIB)
    events: list[oss.ProgressEvent] = []

    async def hook(event: oss.ProgressEvent) -> None:
        await asyncio.sleep(0)
        events.append(event)

    async with client_for(fake) as client:
        await client.bucket("bkt").upload_file("k", src, 100 * KIB, on_progress=hook)
    assert_progress_monotone(events, 250 * KIB)
    done = [e for e in events if isinstance(e, oss.PartDone)]
    assert sorted(e.part_number for e in done) == [1, 2, 3]
    assert [e.parts_done for e in done] == [1, 2, 3] and done[0].part_count == 3


@pytest.mark.timeout(120)
async def test_more_than_ten_thousand_parts_grows_the_part_size(tmp_path: Path) -> None:
    fake = FakeOss()
    src = tmp_path / "sparse.bin"
    size = 10_000 * 100 * KIB + 5
    with open(src, "wb") as f:
        f.truncate(size)
    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_file("k", src, 100 * KIB, routines=8)
    assert result.part_size == 100 * KIB + 1
    assert result.parts_uploaded == 10_000
    assert len(fake.objects["k"][0]) == size
