"""GetObject / HeadObject of the emulator, as a download client needs them (issue 12).

Ranges (OSS's default "ignore what cannot be served" and ``x-oss-range-behavior: standard``),
conditional headers in RFC 7232 order, the whole-object CRC-64 on every answer, and the GET
faults: a reset mid-body, a truncated body and a corrupted byte. Three independent clients:
raw signed aiohttp requests (plus a raw socket where the exact bytes on the wire matter),
oss2 and alibabacloud-oss-v2.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import alibabacloud_oss_v2 as oss_v2
import oss2
import pytest

from aiooss_resume._crc64 import crc64
from aiooss_resume._signing import format_http_date, request_path, sign_request
from aiooss_resume.testing import Fault, FaultPlan, OssServer, ThreadedOssServer

from .emulator_helpers import BUCKET, Reply, oss_request

pytestmark = pytest.mark.anyio

SIZE = 300_000
DATA = os.urandom(SIZE)
KEY = "dl/object.bin"
STANDARD = {"x-oss-range-behavior": "standard"}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def server(tmp_path: Path, session: aiohttp.ClientSession) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "oss") as s:
        put = await oss_request(session, s, "PUT", KEY, body=DATA)
        assert put.status == 200
        yield s
        assert s.stats.internal_errors == 0


async def _get(
    session: aiohttp.ClientSession,
    server: OssServer,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    key: str = KEY,
) -> Reply:
    return await oss_request(session, server, method, key, headers=headers)


def _assert_object_headers(reply: Reply, server: OssServer, key: str = KEY) -> None:
    meta = server.object_info(BUCKET, key)
    assert meta is not None
    assert reply.headers["x-oss-hash-crc64ecma"] == str(meta.crc64)  # of the WHOLE object
    assert reply.headers["ETag"] == meta.etag
    assert reply.headers["Last-Modified"] == format_http_date(
        datetime.fromtimestamp(int(meta.last_modified), UTC)
    )


# ---------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    ("value", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=0-", 0, SIZE - 1),
        ("bytes=299990-", 299990, SIZE - 1),
        ("bytes=-5", SIZE - 5, SIZE - 1),
        (f"bytes=-{SIZE}", 0, SIZE - 1),
        (f"bytes=0-{SIZE - 1}", 0, SIZE - 1),
        (" bytes = 7 - 9 ", 7, 9),
    ],
)
async def test_valid_range_is_206(
    server: OssServer, session: aiohttp.ClientSession, value: str, start: int, end: int
) -> None:
    for extra in ({}, STANDARD):
        reply = await _get(session, server, {"Range": value, **extra})
        assert (reply.status, reply.body) == (206, DATA[start : end + 1])
        assert reply.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
        assert reply.headers["Content-Length"] == str(end - start + 1)
        _assert_object_headers(reply, server)


@pytest.mark.parametrize(
    "value",
    [
        f"bytes=0-{SIZE}",  # end beyond the object
        f"bytes={SIZE}-",  # start beyond
        f"bytes={SIZE}-{SIZE + 10}",
        f"bytes=-{SIZE + 1}",  # suffix longer than the object
        "bytes=-0",
        "bytes=9-1",  # inverted
        "bytes=junk",
        "byte=0-1",  # OSS's own example of a malformed value
        "bytes=0-1,3-4",  # several ranges
        "bytes=-",
        "items=0-1",
    ],
)
async def test_range_oss_cannot_serve_is_ignored_by_default(
    server: OssServer, session: aiohttp.ClientSession, value: str
) -> None:
    """OSS's default: an invalid or out-of-object range is ignored, 200 with everything."""
    reply = await _get(session, server, {"Range": value})
    assert (reply.status, reply.body) == (200, DATA)
    assert "Content-Range" not in reply.headers
    assert reply.headers["Content-Length"] == str(SIZE)
    _assert_object_headers(reply, server)


async def test_standard_range_behaviour(server: OssServer, session: aiohttp.ClientSession) -> None:
    """``x-oss-range-behavior: standard``: clamp the end, 416 for a start beyond."""
    clamped = await _get(session, server, {"Range": f"bytes=299000-{SIZE + 5000}", **STANDARD})
    assert (clamped.status, clamped.body) == (206, DATA[299000:])
    assert clamped.headers["Content-Range"] == f"bytes 299000-{SIZE - 1}/{SIZE}"
    longer = await _get(session, server, {"Range": f"bytes=-{SIZE * 2}", **STANDARD})
    assert (longer.status, longer.body) == (206, DATA)
    assert longer.headers["Content-Range"] == f"bytes 0-{SIZE - 1}/{SIZE}"
    for value in (f"bytes={SIZE}-", f"bytes={SIZE + 1}-{SIZE + 9}", "bytes=-0"):
        refused = await _get(session, server, {"Range": value, **STANDARD})
        assert (refused.status, refused.code) == (416, "InvalidRange")
        assert refused.error.details["RangeRequested"] == value
    malformed = await _get(session, server, {"Range": "bytes=9-1", **STANDARD})
    assert (malformed.status, malformed.body) == (200, DATA)


async def test_empty_object_ranges(server: OssServer, session: aiohttp.ClientSession) -> None:
    assert (await oss_request(session, server, "PUT", "empty", body=b"")).status == 200
    plain = await _get(session, server, {"Range": "bytes=0-"}, key="empty")
    assert (plain.status, plain.body) == (200, b"")
    assert plain.headers["x-oss-hash-crc64ecma"] == "0"
    standard = await _get(session, server, {"Range": "bytes=0-", **STANDARD}, key="empty")
    assert (standard.status, standard.code) == (416, "InvalidRange")


async def test_head_carries_whole_object_headers_and_ignores_range(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    head = await _get(session, server, {"Range": "bytes=0-9"}, method="HEAD")
    assert (head.status, head.body) == (200, b"")
    assert head.headers["Content-Length"] == str(SIZE)
    assert "Content-Range" not in head.headers
    assert head.headers["x-oss-hash-crc64ecma"] == str(crc64(DATA))
    _assert_object_headers(head, server)


# ---------------------------------------------------------------- conditions


def _last_modified(server: OssServer) -> datetime:
    meta = server.object_info(BUCKET, KEY)
    assert meta is not None
    return datetime.fromtimestamp(int(meta.last_modified), UTC)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_if_match(server: OssServer, session: aiohttp.ClientSession, method: str) -> None:
    meta = server.object_info(BUCKET, KEY)
    assert meta is not None
    bare = meta.etag.strip('"')
    for given in (meta.etag, bare, bare.lower(), f'"OTHER", {meta.etag}', "*"):
        reply = await _get(session, server, {"If-Match": given}, method=method)
        assert reply.status == 200, given
        assert reply.body == (DATA if method == "GET" else b"")
    for given in ('"0123456789ABCDEF0123456789ABCDEF"', f"W/{meta.etag}", ""):
        refused = await _get(session, server, {"If-Match": given}, method=method)
        assert (refused.status, refused.code) == (412, "PreconditionFailed"), given
        assert refused.error.details["Condition"] == "If-Match"
        assert refused.headers["x-oss-ec"] == "0026-00000011"
        if method == "HEAD":
            assert refused.body == b""  # the error travels in x-oss-err


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_if_none_match(
    server: OssServer, session: aiohttp.ClientSession, method: str
) -> None:
    meta = server.object_info(BUCKET, KEY)
    assert meta is not None
    for given in (meta.etag, meta.etag.strip('"').lower(), f"W/{meta.etag}", "*"):
        reply = await _get(session, server, {"If-None-Match": given}, method=method)
        assert (reply.status, reply.body) == (304, b""), given
        assert reply.headers["ETag"] == meta.etag
        assert reply.headers["Last-Modified"] == format_http_date(_last_modified(server))
        assert len(reply.headers["x-oss-request-id"]) == 24
    other = await _get(session, server, {"If-None-Match": '"ABC"'}, method=method)
    assert other.status == 200


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_if_modified_since_and_unmodified_since(
    server: OssServer, session: aiohttp.ClientSession, method: str
) -> None:
    modified = _last_modified(server)
    before, after = modified - timedelta(seconds=1), modified + timedelta(days=1)

    async def status(headers: dict[str, str]) -> int:
        return (await _get(session, server, headers, method=method)).status

    assert await status({"If-Modified-Since": format_http_date(before)}) == 200
    assert await status({"If-Modified-Since": format_http_date(modified)}) == 304
    assert await status({"If-Modified-Since": format_http_date(after)}) == 304
    assert await status({"If-Modified-Since": "yesterday"}) == 200  # unparsable: ignored
    assert await status({"If-Unmodified-Since": format_http_date(modified)}) == 200
    assert await status({"If-Unmodified-Since": format_http_date(after)}) == 200
    assert await status({"If-Unmodified-Since": "not a date"}) == 200
    refused = await _get(
        session, server, {"If-Unmodified-Since": format_http_date(before)}, method=method
    )
    assert (refused.status, refused.code) == (412, "PreconditionFailed")
    assert refused.error.details["Condition"] == "If-Unmodified-Since"


async def test_condition_precedence(server: OssServer, session: aiohttp.ClientSession) -> None:
    """RFC 7232 section 6, as OSS (and S3) document the combinations."""
    meta = server.object_info(BUCKET, KEY)
    assert meta is not None
    modified = _last_modified(server)
    old, new = format_http_date(modified - timedelta(hours=1)), format_http_date(modified)

    async def answer(headers: dict[str, str]) -> tuple[int, str]:
        reply = await _get(session, server, headers)
        return reply.status, reply.code if reply.status >= 400 else ""

    # If-Match true wins over If-Unmodified-Since false
    assert await answer({"If-Match": meta.etag, "If-Unmodified-Since": old}) == (200, "")
    # If-None-Match false (the ETag matches) wins over If-Modified-Since true: 304
    assert (await answer({"If-None-Match": meta.etag, "If-Modified-Since": old}))[0] == 304
    # If-None-Match true (another ETag) makes If-Modified-Since irrelevant
    assert await answer({"If-None-Match": '"X"', "If-Modified-Since": new}) == (200, "")
    # 412 is decided before 304
    assert await answer({"If-Match": '"X"', "If-None-Match": meta.etag}) == (
        412,
        "PreconditionFailed",
    )
    # conditions before the range: a failed condition beats an unsatisfiable range ...
    assert await answer({"If-Match": '"X"', "Range": f"bytes={SIZE}-", **STANDARD}) == (
        412,
        "PreconditionFailed",
    )
    # ... and a range is served once they hold
    ranged = await _get(session, server, {"If-Match": meta.etag, "Range": "bytes=5-9"})
    assert (ranged.status, ranged.body) == (206, DATA[5:10])
    not_modified = await _get(session, server, {"If-None-Match": meta.etag, "Range": "bytes=5-9"})
    assert (not_modified.status, not_modified.body) == (304, b"")
    # a missing object is 404 whatever the conditions say
    missing = await _get(session, server, {"If-None-Match": "*"}, key="missing")
    assert (missing.status, missing.code) == (404, "NoSuchKey")


# ---------------------------------------------------------------- faults


async def _raw_get(server: OssServer, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One signed GET over a bare socket: status, headers and every body byte that arrived.

    aiohttp drops the bytes it buffered once the connection fails, so what exactly reached
    the client before a fault is only visible this way.
    """
    signed = sign_request(
        method="GET",
        bucket=BUCKET,
        key=KEY,
        query=[],
        headers=dict(headers),
        access_key_id=server.credentials.access_key_id,
        access_key_secret=server.credentials.access_key_secret,
        security_token=None,
        version="v4",
        region=server.region,
        now=datetime.now(UTC),
    )
    reader, writer = await asyncio.open_connection(server.host, server.port)
    lines = [f"GET {request_path(BUCKET, KEY, path_style=True)} HTTP/1.1"]
    lines += [f"Host: {server.host}:{server.port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in signed.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    received = bytearray()
    try:
        async with asyncio.timeout(30):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionResetError:
        pass  # what arrived before the reset is in ``received``
    finally:
        writer.close()
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, body


async def test_fault_reset_mid_body(server: OssServer, session: aiohttp.ClientSession) -> None:
    server.faults.add(Fault(operation="GetObject", reset_after_bytes=70_000))
    status, headers, body = await _raw_get(server, {})
    assert (status, headers["content-length"]) == (200, str(SIZE))
    assert body == DATA[:70_000]  # exactly N bytes, then the connection was reset
    record = server.requests[-1]
    assert (record.status, record.code, record.bytes_sent) == (0, "reset_after_bytes", 70_000)
    assert record.faults == ("GetObject:reset_after_bytes=70000",)

    # aiohttp sees a broken body, not a short success
    server.faults.add(Fault(operation="GetObject", reset_after_bytes=1000))
    with pytest.raises(aiohttp.ClientPayloadError):
        await _get(session, server, {"Range": "bytes=1000-99999"})
    # a reset point beyond the body still leaves it one byte short
    server.faults.add(Fault.parse("GetObject:reset_after_bytes=999999"))
    status, _, body = await _raw_get(server, {"Range": "bytes=10-19"})
    assert (status, body) == (206, DATA[10:19])
    # the server is fine afterwards
    assert (await _get(session, server)).body == DATA


async def test_fault_truncated_body(server: OssServer, session: aiohttp.ClientSession) -> None:
    server.faults.add(Fault.parse("GetObject:truncate_after_bytes=12345"))
    status, headers, body = await _raw_get(server, {"Range": "bytes=100-"})
    assert (status, headers["content-length"]) == (206, str(SIZE - 100))
    assert body == DATA[100 : 100 + 12345]  # fewer bytes than promised, then an orderly close
    record = server.requests[-1]
    assert (record.code, record.bytes_sent) == ("truncate_response", 12345)
    server.faults.add(Fault(operation="GetObject", truncate_after_bytes=0))
    with pytest.raises(aiohttp.ClientPayloadError, match=f"received 0 of {SIZE}"):
        await _get(session, server)


async def test_fault_corrupt_body(server: OssServer, session: aiohttp.ClientSession) -> None:
    server.faults.add(Fault.parse("GetObject:corrupt_body"))
    reply = await _get(session, server)
    assert reply.status == 200
    assert len(reply.body) == SIZE
    differing = [i for i in range(SIZE) if reply.body[i] != DATA[i]]
    assert differing == [SIZE // 2]  # one byte, the middle one
    assert reply.headers["x-oss-hash-crc64ecma"] == str(crc64(DATA))  # the truth...
    assert crc64(reply.body) != crc64(DATA)  # ...which the body no longer matches
    server.faults.add(Fault(operation="GetObject", corrupt_body=True))
    ranged = await _get(session, server, {"Range": "bytes=1000-1999"})
    assert [i for i in range(1000) if ranged.body[i] != DATA[1000 + i]] == [500]
    assert (await _get(session, server)).body == DATA  # the stored object is untouched


async def test_fault_matches_range_start(server: OssServer, session: aiohttp.ClientSession) -> None:
    handle = server.faults.add(Fault.parse("GetObject:range_start=100000:status=503:times=inf"))
    assert (await _get(session, server, {"Range": "bytes=0-99999"})).status == 206
    assert (await _get(session, server, {"Range": "bytes=100000-199999"})).status == 503
    assert (await _get(session, server, {"Range": "bytes=100000-"})).status == 503
    assert (await _get(session, server, {"Range": "bytes=-100000"})).status == 206
    assert (await _get(session, server)).status == 200
    assert handle.fired == 2
    assert handle.fault.describe() == "GetObject:range_start=100000:status=503:times=inf"


async def test_chaos_on_get_is_every_get_fault(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    server.faults.chaos(1.0, seed=3, kinds=("corrupt", "reset"), operations=("GetObject",))
    for _ in range(6):
        try:
            reply = await _get(session, server, {"Range": "bytes=0-49999"})
        except aiohttp.ClientPayloadError:
            continue
        assert reply.body != DATA[:50000]
    kinds = {record.fault for record in server.faults.fired}
    assert kinds == {"GetObject:corrupt_body", "GetObject:reset_after_bytes=1024"}


def test_get_fault_validation() -> None:
    with pytest.raises(ValueError, match="corrupt_body applies to GetObject"):
        Fault(operation="UploadPart", corrupt_body=True)
    with pytest.raises(ValueError, match="range_start applies to GetObject"):
        Fault.parse("PutObject:range_start=0")
    with pytest.raises(ValueError, match="truncate_after_bytes out of range"):
        Fault(operation="GetObject", truncate_after_bytes=-1)
    plan = FaultPlan()
    plan.add(Fault(range_start=5))
    assert plan.evaluate("GetObject", None, "r1", range_start=5) is not None
    assert plan.evaluate("GetObject", None, "r2") is None


# ---------------------------------------------------------------- the official SDKs


@pytest.fixture
def threaded(tmp_path: Path) -> Iterator[ThreadedOssServer]:
    with ThreadedOssServer(root=tmp_path / "oss") as s:
        yield s
        assert s.stats.internal_errors == 0


def _oss2_bucket(server: ThreadedOssServer) -> Any:
    ak, sk, _ = server.credentials
    return oss2.Bucket(oss2.AuthV4(ak, sk), server.endpoint, BUCKET, region=server.region)


def _v2_client(server: ThreadedOssServer) -> Any:
    ak, sk, _ = server.credentials
    cfg = oss_v2.config.load_default()
    cfg.credentials_provider = oss_v2.credentials.StaticCredentialsProvider(ak, sk)
    cfg.region = server.region
    cfg.endpoint = server.endpoint
    cfg.retry_max_attempts = 1
    return oss_v2.Client(cfg)


@pytest.mark.sdk
def test_oss2_range_and_conditions(threaded: ThreadedOssServer) -> None:
    bucket = _oss2_bucket(threaded)
    bucket.put_object(KEY, DATA)
    etag = threaded.object_info(BUCKET, KEY).etag  # type: ignore[union-attr]
    part = bucket.get_object(KEY, byte_range=(1000, 1999), headers={"If-Match": etag})
    assert (part.status, part.read()) == (206, DATA[1000:2000])
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{SIZE}"
    assert part.server_crc == crc64(DATA)
    tail = bucket.get_object(KEY, byte_range=(None, 10))
    assert tail.read() == DATA[-10:]
    whole = bucket.get_object(KEY)  # oss2 checks the CRC-64 of a whole-object read
    assert whole.read() == DATA
    with pytest.raises(oss2.exceptions.PreconditionFailed):
        bucket.get_object(KEY, headers={"If-Match": '"0000"'})
    with pytest.raises(oss2.exceptions.NotModified):
        bucket.get_object(KEY, headers={"If-None-Match": etag})
    with pytest.raises(oss2.exceptions.NotModified):
        bucket.head_object(KEY, headers={"If-None-Match": etag})
    meta = bucket.head_object(KEY, headers={"If-Match": etag})
    assert (meta.content_length, meta.etag) == (SIZE, etag.strip('"'))
    # a corrupted body is caught by oss2's own CRC check (done by get_object_to_file)
    threaded.faults.add(Fault(operation="GetObject", corrupt_body=True))
    with pytest.raises(oss2.exceptions.InconsistentError):
        bucket.get_object_to_file(KEY, str(threaded.root.parent / "oss2-get.bin"))


@pytest.mark.sdk
def test_v2_range_and_conditions(threaded: ThreadedOssServer) -> None:
    client = _v2_client(threaded)
    client.put_object(oss_v2.PutObjectRequest(bucket=BUCKET, key=KEY, body=DATA))
    etag = threaded.object_info(BUCKET, KEY).etag  # type: ignore[union-attr]
    got = client.get_object(
        oss_v2.GetObjectRequest(bucket=BUCKET, key=KEY, range_header="bytes=10-29", if_match=etag)
    )
    assert (got.status_code, got.body.read()) == (206, DATA[10:30])
    assert got.content_range == f"bytes 10-29/{SIZE}"
    assert got.hash_crc64 == str(crc64(DATA))
    standard = client.get_object(
        oss_v2.GetObjectRequest(
            bucket=BUCKET,
            key=KEY,
            range_header=f"bytes=299990-{SIZE * 2}",
            range_behavior="standard",
        )
    )
    assert (standard.status_code, standard.body.read()) == (206, DATA[299990:])
    with pytest.raises(oss_v2.exceptions.OperationError) as failed:
        client.get_object(oss_v2.GetObjectRequest(bucket=BUCKET, key=KEY, if_match='"0000"'))
    service = failed.value.unwrap()
    assert (service.status_code, service.code) == (412, "PreconditionFailed")
    with pytest.raises(oss_v2.exceptions.OperationError) as refused:
        client.get_object(
            oss_v2.GetObjectRequest(
                bucket=BUCKET, key=KEY, range_header=f"bytes={SIZE}-", range_behavior="standard"
            )
        )
    assert refused.value.unwrap().code == "InvalidRange"
    with pytest.raises(oss_v2.exceptions.OperationError) as not_modified:
        client.get_object(oss_v2.GetObjectRequest(bucket=BUCKET, key=KEY, if_none_match=etag))
    assert not_modified.value.unwrap().status_code == 304
    # the v2 Downloader (ranged GETs with range_behavior=standard) gets the same bytes
    threaded.faults.add(Fault(operation="GetObject", reset_after_bytes=50_000))
    target = threaded.root.parent / "v2-download.bin"
    downloader = client.downloader(part_size=100 * 1024)
    downloader.download_file(oss_v2.GetObjectRequest(bucket=BUCKET, key=KEY), str(target))
    assert target.read_bytes() == DATA
    assert any(r.code == "reset_after_bytes" for r in threaded.requests)
