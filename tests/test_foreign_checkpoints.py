"""Adopting the Go SDK's and oss2's checkpoints (issue 14 item 2), against the emulator.

The oss2 records are real: oss2 itself runs against the emulator and is interrupted by a
failing part. The Go SDK is not on the machine, so its checkpoint is written here exactly
as its ``uploadCheckpoint.dump`` does (``encoding/json`` field order and escaping, MD5 over
the document with ``MD5`` empty, base64), for a real multipart upload with real parts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import oss2
import pytest

import aiooss_resume as oss
from aiooss_resume._checkpoint import (
    Checkpoint,
    SourceIdentity,
    decode_checkpoint,
    encode_checkpoint,
)
from aiooss_resume._errors import CheckpointError
from aiooss_resume._foreign import GO_MAGIC, _rfc3339_ns, oss2_record_path, recognise
from aiooss_resume._http import HttpResponse
from aiooss_resume._models import ListPartsResult, PartInfo
from aiooss_resume._xml import encode_list_parts_result
from aiooss_resume.testing import Fault, ThreadedOssServer

from .fake_oss import Call, FakeOss
from .reliability_helpers import (
    BUCKET,
    KIB,
    assert_object,
    make_client,
    make_file,
    open_upload_ids,
    part_records,
)

pytestmark = [pytest.mark.anyio, pytest.mark.sdk]  # oss2 writes the real records

SIZE = 450 * KIB  # five parts of 100 KiB: 4 full ones and a 50 KiB tail
PART = 100 * KIB
OTHER_BUCKET = "another-bucket"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadedOssServer]:
    with ThreadedOssServer(root=tmp_path / "oss") as s:
        yield s
        assert s.stats.internal_errors == 0


def _oss2_bucket(server: ThreadedOssServer, bucket: str = BUCKET) -> Any:
    ak, sk, _ = server.credentials
    return oss2.Bucket(oss2.AuthV4(ak, sk), server.endpoint, bucket, region=server.region)


def _oss2_interrupted(server: ThreadedOssServer, key: str, src: Path, store: Any) -> None:
    """oss2.resumable_upload, stopped for good by a failing part 4: parts 1-3 are on OSS."""
    fault = server.faults.add(Fault(operation="UploadPart", part_number=4, status=500))
    with pytest.raises(oss2.exceptions.ServerError):
        oss2.resumable_upload(
            _oss2_bucket(server), key, str(src), store=store, part_size=PART,
            num_threads=1, multipart_threshold=PART,
        )  # fmt: skip
    fault.remove()


# ---------------------------------------------------------------------- the Go SDK's format


def _go_json(value: object) -> bytes:
    """``encoding/json.Marshal``: compact, UTF-8, with <, >, & and U+2028/9 escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


def _go_time(mtime_ns: int) -> str:
    """``time.Time`` as Go's JSON writes ``os.Stat().ModTime()``: RFC 3339, local offset."""
    zone = timezone(timedelta(hours=8))  # a user in China: Local is UTC+8
    seconds, nanos = divmod(mtime_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, zone).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f".{nanos:09d}".rstrip("0").rstrip(".")
    return f"{stamp}{fraction}+08:00"


def _go_checkpoint(
    src: Path, key: str, upload_id: str, etags: dict[int, str], *, file_path: str | None = None
) -> bytes:
    """The bytes ``uploadCheckpoint.dump`` writes for ``src`` with ``etags`` completed."""
    st = src.stat()
    parts = []
    for n, offset in enumerate(range(0, st.st_size, PART), start=1):
        size = min(PART, st.st_size - offset)
        done = n in etags
        parts.append(
            {
                "Chunk": {"Number": n, "Offset": offset, "Size": size},
                "Part": {
                    "XMLName": {"Space": "", "Local": ""},
                    "PartNumber": n if done else 0,
                    "ETag": etags.get(n, ""),
                },
                "IsCompleted": done,
            }
        )
    doc: dict[str, object] = {
        "Magic": GO_MAGIC,
        "MD5": "",
        "FilePath": file_path if file_path is not None else str(src),
        "FileStat": {"Size": st.st_size, "LastModified": _go_time(st.st_mtime_ns), "MD5": ""},
        "ObjectKey": key,
        "UploadID": upload_id,
        "Parts": parts,
        "CallbackVal": "",
        "CallbackBody": None,
    }
    doc["MD5"] = base64.b64encode(hashlib.md5(_go_json(doc)).digest()).decode()
    return _go_json(doc)


def _go_interrupted(
    server: ThreadedOssServer, key: str, *, bucket: str = BUCKET, parts: int = 3, src: Path
) -> tuple[str, dict[int, str]]:
    """A real multipart upload with ``parts`` parts sent, as the Go SDK's workers send them."""
    b = _oss2_bucket(server, bucket)
    upload_id = b.init_multipart_upload(key).upload_id
    data = src.read_bytes()
    etags: dict[int, str] = {}
    for n in range(1, parts + 1):
        result = b.upload_part(key, upload_id, n, data[(n - 1) * PART : n * PART])
        etags[n] = f'"{result.etag}"'  # Go keeps the ETag header as sent, quotes included
    return upload_id, etags


def test_go_fixture_is_what_the_go_sdk_would_verify(tmp_path: Path) -> None:
    """The fixture's MD5 is Go's: base64(md5(json with MD5 "")), recognised as intact."""
    src = tmp_path / "src.bin"
    make_file(src, SIZE, 1)
    data = _go_checkpoint(src, "k.bin", "UPLOADID", {1: '"ABC"'})
    assert data.startswith(b'{"Magic":"' + GO_MAGIC.encode() + b'","MD5":"')
    record = recognise(data, "x.cp")
    assert record is not None and record.tool == "Go SDK" and not record.problem
    assert record.mtime_ns == src.stat().st_mtime_ns and record.part_size == PART
    flipped = data.replace(b"ABC", b"ABD")
    assert flipped != data
    damaged = recognise(flipped, "x.cp")
    assert damaged is not None and "MD5" in damaged.problem and damaged.upload_id == "UPLOADID"
    # Ours is never taken for theirs, even naming a key that contains Go's magic string.
    ours = encode_checkpoint(
        Checkpoint(
            endpoint="http://x", bucket="b", key=GO_MAGIC + '"op_type" ResumableUpload',
            upload_id="U", part_size=PART, options_fingerprint="f",
            source=SourceIdentity(path="/p", size=1, mtime_ns=1, inode=1),
        )
    )  # fmt: skip
    assert recognise(ours, "x.cp") is None and recognise(ours[:-9], "x.cp") is None


# ---------------------------------------------------------------------- adoption


@pytest.mark.parametrize("recorded", ["absolute", "relative"])
async def test_go_checkpoint_is_adopted_converted_and_completed(
    server: ThreadedOssServer, tmp_path: Path, recorded: str
) -> None:
    src = tmp_path / "src.bin"
    data = make_file(src, SIZE, 2)
    upload_id, etags = _go_interrupted(server, "go.bin", src=src)
    cp = tmp_path / "src.bin.cp"
    # Go records the path as its caller passed it: relative to that process's directory.
    file_path = str(src) if recorded == "absolute" else "src.bin"
    cp.write_bytes(_go_checkpoint(src, "go.bin", upload_id, etags, file_path=file_path))
    mark = len(server.requests)
    fault = server.faults.add(Fault(operation="UploadPart", part_number=5, status=403))
    async with make_client(server) as client:
        # A different part size: the layout of the parts already on OSS wins.
        with pytest.raises(oss.ServiceError):
            await client.bucket(BUCKET).upload_file(
                "go.bin", src, 256 * KIB, routines=1, checkpoint=True
            )
        fault.remove()
        converted = decode_checkpoint(cp.read_bytes())  # ours now, same upload
        assert converted.upload_id == upload_id and converted.part_size == PART
        assert [p.number for p in converted.parts] == [1, 2, 3, 4]
        result = await client.bucket(BUCKET).upload_file(
            "go.bin", src, 256 * KIB, routines=1, checkpoint=True
        )
    assert result.upload_id == upload_id and result.parts_resumed == 4
    assert_object(server, "go.bin", data)
    sent = [r.part_number or 0 for r in part_records(server, "go.bin")[3:]]
    assert sorted(sent) == [4, 5, 5], "parts the Go SDK had sent were sent again"
    assert all(r.upload_id == upload_id for r in list(server.requests)[mark:] if r.upload_id)
    assert not open_upload_ids(server)
    assert not cp.exists()


@pytest.mark.parametrize("where", ["default store", "explicit path"])
async def test_real_oss2_record_is_adopted(
    server: ThreadedOssServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # oss2's default store is ~/.py-oss-upload
    src = tmp_path / "src.bin"
    data = make_file(src, SIZE, 3)
    if where == "default store":
        store = oss2.ResumableStore()
        record = Path(oss2_record_path(BUCKET, "py.bin", str(src)))
        checkpoint: bool | Path = True
    else:
        store = oss2.ResumableStore(root=str(tmp_path / "mine"))
        record = Path(store.dir) / store.make_store_key(BUCKET, "py.bin", str(src))
        checkpoint = record
    _oss2_interrupted(server, "py.bin", src, store)
    assert record.is_file(), "oss2 wrote its record where we look for it"
    written = record.read_bytes()
    (upload_id,) = open_upload_ids(server, "py.bin")
    assert json.loads(written)["upload_id"] == upload_id
    before = len(part_records(server, "py.bin"))
    async with make_client(server) as client:
        result = await client.bucket(BUCKET).upload_file(
            "py.bin", src, 512 * KIB, routines=2, checkpoint=checkpoint
        )
    assert result.upload_id == upload_id and result.parts_resumed == 3
    assert_object(server, "py.bin", data)
    sent = sorted(r.part_number or 0 for r in part_records(server, "py.bin")[before:])
    assert sent == [4, 5], "parts oss2 had sent were sent again"
    assert not open_upload_ids(server)
    if where == "default store":
        assert record.read_bytes() == written  # oss2's store is never modified
    else:
        assert not record.exists()  # it was this upload's checkpoint: done, so removed


# ---------------------------------------------------------------------- refusals


def _case(
    case: str, server: ThreadedOssServer, src: Path
) -> tuple[str, bytes]:  # (foreign upload id, Go checkpoint bytes)
    if case == "other key":
        upload_id, etags = _go_interrupted(server, "other.bin", src=src)
        return upload_id, _go_checkpoint(src, "other.bin", upload_id, etags)
    if case == "other bucket":  # the Go SDK does not record the bucket: ListParts decides
        upload_id, etags = _go_interrupted(server, "mine.bin", bucket=OTHER_BUCKET, src=src)
        return upload_id, _go_checkpoint(src, "mine.bin", upload_id, etags)
    upload_id, etags = _go_interrupted(server, "mine.bin", src=src)
    data = _go_checkpoint(src, "mine.bin", upload_id, etags)
    if case == "changed file":
        st = src.stat()
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    elif case == "damaged MD5":
        data = data.replace(b'"IsCompleted":false', b'"IsCompleted":true ', 1)
    return upload_id, data


def _open_ids(server: ThreadedOssServer, bucket: str) -> set[str]:
    return {u.upload_id for u in server.list_uploads(bucket)}


@pytest.mark.parametrize("case", ["other key", "other bucket", "changed file", "damaged MD5"])
async def test_go_checkpoint_that_cannot_be_adopted_is_left_alone(
    server: ThreadedOssServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    src = tmp_path / "src.bin"
    data = make_file(src, SIZE, 4)
    foreign_id, foreign = _case(case, server, src)
    cp = tmp_path / "src.bin.cp"
    cp.write_bytes(foreign)
    foreign_bucket = OTHER_BUCKET if case == "other bucket" else BUCKET
    caplog.set_level(logging.WARNING, "aiooss_resume")
    fault = server.faults.add(Fault(operation="UploadPart", part_number=2, status=403))
    async with make_client(server) as client:
        with pytest.raises(oss.ServiceError):
            await client.bucket(BUCKET).upload_file("mine.bin", src, PART, checkpoint=True)
        fault.remove()
        warnings = [r.getMessage() for r in caplog.records if str(cp) in r.getMessage()]
        assert len(warnings) == 1 and foreign_id in warnings[0]
        (ours,) = tmp_path.glob("src.bin.*.cp")  # the per-target name, beside the Go file
        mine = decode_checkpoint(ours.read_bytes())
        assert mine.key == "mine.bin" and mine.upload_id != foreign_id
        assert cp.read_bytes() == foreign
        result = await client.bucket(BUCKET).upload_file("mine.bin", src, PART, checkpoint=True)
    assert result.upload_id == mine.upload_id
    assert_object(server, "mine.bin", data)
    assert cp.read_bytes() == foreign, "the Go SDK's checkpoint was overwritten"
    assert foreign_id in _open_ids(server, foreign_bucket), "an upload we do not own is gone"
    assert _open_ids(server, BUCKET) | _open_ids(server, OTHER_BUCKET) == {foreign_id}


async def test_explicit_path_to_a_go_checkpoint_of_another_key_is_refused(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    src = tmp_path / "src.bin"
    make_file(src, SIZE, 5)
    foreign_id, foreign = _case("other key", server, src)
    cp = tmp_path / "go.cp"
    cp.write_bytes(foreign)
    before = len(server.requests)
    async with make_client(server) as client:
        with pytest.raises(CheckpointError, match=foreign_id):
            await client.bucket(BUCKET).upload_file("mine.bin", src, PART, checkpoint=cp)
    assert len(server.requests) == before
    assert cp.read_bytes() == foreign
    assert open_upload_ids(server) == {foreign_id}


async def test_oss2_record_of_a_changed_file_is_left_in_its_store(
    server: ThreadedOssServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    src = tmp_path / "src.bin"
    make_file(src, SIZE, 6)
    _oss2_interrupted(server, "py.bin", src, oss2.ResumableStore())
    (foreign_id,) = open_upload_ids(server, "py.bin")
    record = Path(oss2_record_path(BUCKET, "py.bin", str(src)))
    written = record.read_bytes()
    data = make_file(src, SIZE + 7, 7)  # a new version of the file
    caplog.set_level(logging.WARNING, "aiooss_resume")
    async with make_client(server) as client:
        result = await client.bucket(BUCKET).upload_file("py.bin", src, PART, checkpoint=True)
    assert result.upload_id != foreign_id and result.parts_resumed == 0
    assert_object(server, "py.bin", data)
    assert record.read_bytes() == written
    assert open_upload_ids(server) == {foreign_id}
    (warning,) = [r.getMessage() for r in caplog.records if str(record) in r.getMessage()]
    assert foreign_id in warning and "changed" in warning


def test_utc_and_offset_times_agree() -> None:
    """Go writes Local time; the same instant in any zone is the same modification time."""
    ns = 1_700_000_000_123_456_789
    at_utc = _go_time(ns).replace("+08:00", "")  # not valid alone: build a UTC form
    stamp = datetime.fromtimestamp(ns // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert at_utc != stamp  # the fixture really used another zone
    assert _rfc3339_ns(_go_time(ns)) == ns
    assert _rfc3339_ns(f"{stamp}.123456789Z") == ns


async def test_without_crc_in_list_parts_each_part_is_checked_by_md5(tmp_path: Path) -> None:
    """ListParts with no HashCrc64ecma (a gateway): the local MD5 must equal the ETag."""
    fake = FakeOss()
    src = tmp_path / "src.bin"
    data = make_file(src, SIZE, 8)

    def client() -> oss.Client:
        return oss.Client(
            "http://127.0.0.1:1",
            credentials=oss.Credentials("ak", "sk"),
            region="cn-hangzhou",
            transport=fake.transport,
            retry=oss.RetryPolicy(max_attempts=1, base_delay=0.0),
        )

    async def part_four_fails(call: Call) -> HttpResponse | None:
        if call.op == "UploadPart" and call.part_number == 4:
            return HttpResponse(403, {"x-oss-request-id": "F"}, b"")
        return None

    fake.fault = part_four_fails
    async with client() as c:  # a checkpoint keeps the upload open; then Go's replaces it
        with pytest.raises(oss.ServiceError):
            await c.bucket("bkt").upload_file("k.bin", src, PART, routines=1, checkpoint=True)
    (upload_id, upload), *_ = [(i, u) for i, u in fake.uploads.items() if u.key == "k.bin"]
    etags = {n: etag for n, (_, etag, _) in upload.parts.items()}
    body, _, crc = upload.parts[2]
    upload.parts[2] = (body, '"' + "0" * 32 + '"', crc)  # OSS's ETag no longer the bytes' MD5
    (tmp_path / "src.bin.cp").write_bytes(_go_checkpoint(src, "k.bin", upload_id, etags))

    async def no_crc_in_list_parts(call: Call) -> HttpResponse | None:
        if call.op != "ListParts":
            return None
        parts = tuple(
            PartInfo(n, etag, len(chunk), None)
            for n, (chunk, etag, _) in sorted(fake.uploads[upload_id].parts.items())
        )
        result = ListPartsResult(
            bucket="bkt", key="k.bin", upload_id=upload_id, part_number_marker=0,
            next_part_number_marker=parts[-1].part_number, max_parts=1000,
            is_truncated=False, parts=parts,
        )  # fmt: skip
        return HttpResponse(200, {}, encode_list_parts_result(result, url_encode=True))

    fake.fault = no_crc_in_list_parts
    mark = len(fake.ops("UploadPart"))
    async with client() as c:
        result = await c.bucket("bkt").upload_file("k.bin", src, PART, checkpoint=True)
    assert result.upload_id == upload_id and result.parts_resumed == 2
    assert sorted(c.part_number for c in fake.ops("UploadPart")[mark:]) == [2, 4, 5]
    assert fake.objects["k.bin"][0] == data
