"""The emulator over real sockets, driven by raw signed aiohttp requests.

Every known-bad request must get OSS's answer (status, Code, EC header), never a 500: each
test module's server fixture asserts at teardown that the catch-all never fired.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

import aiooss_resume as oss
from aiooss_resume._crc64 import crc64, crc64_fold
from aiooss_resume._models import PartInfo
from aiooss_resume._xml import (
    decode_complete_result,
    decode_list_parts_result,
    decode_list_uploads_result,
)
from aiooss_resume.testing import DEFAULT_ACCESS_KEY_ID, Fault, FaultContext, OssServer

from .emulator_helpers import (
    BUCKET,
    complete_xml,
    initiate,
    md5_b64,
    oss_request,
    upload_part,
)

pytestmark = pytest.mark.anyio

PART = 102400


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "oss") as s:
        yield s
        assert s.stats.internal_errors == 0
        assert all(r.status != 500 or r.faults for r in s.requests)


def _etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest().upper() + '"'


# ---------------------------------------------------------------- simple objects


async def test_put_get_head_delete(server: OssServer, session: aiohttp.ClientSession) -> None:
    data = bytes(range(256)) * 1000
    key = "dir/ünï code+plus &=.txt"
    put = await oss_request(
        session,
        server,
        "PUT",
        key,
        body=data,
        headers={
            "Content-Type": "text/plain",
            "Content-MD5": md5_b64(data),
            "x-oss-meta-Author": "alice",
            "Cache-Control": "no-cache",
        },
    )
    assert put.status == 200, put.body
    assert put.headers["ETag"] == _etag(data)
    assert put.headers["x-oss-hash-crc64ecma"] == str(crc64(data))
    assert re.fullmatch(r"[0-9A-F]{24}", put.headers["x-oss-request-id"])
    assert put.headers["Server"] == "AliyunOSS"
    assert put.headers["Date"].endswith("GMT")
    assert server.read_object(BUCKET, key) == data

    get = await oss_request(session, server, "GET", key)
    assert (get.status, get.body) == (200, data)
    assert get.headers["x-oss-object-type"] == "Normal"

    head = await oss_request(session, server, "HEAD", key)
    assert head.status == 200
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["Content-Type"] == "text/plain"
    assert head.headers["x-oss-meta-author"] == "alice"
    assert head.headers["Cache-Control"] == "no-cache"
    assert head.headers["Content-MD5"] == md5_b64(data)
    assert head.headers["x-oss-hash-crc64ecma"] == str(crc64(data))

    for rng, expected, content_range in [
        ("bytes=10-19", data[10:20], f"bytes 10-19/{len(data)}"),
        ("bytes=255990-", data[255990:], f"bytes 255990-255999/{len(data)}"),
        ("bytes=-5", data[-5:], f"bytes 255995-255999/{len(data)}"),
    ]:
        part = await oss_request(session, server, "GET", key, headers={"Range": rng})
        assert (part.status, part.body) == (206, expected)
        assert part.headers["Content-Range"] == content_range
    # Out-of-object ranges are ignored by default (tests/test_emulator_get.py); with
    # x-oss-range-behavior: standard the end is clamped and a start beyond is 416.
    standard = {"x-oss-range-behavior": "standard"}
    clamped = await oss_request(
        session, server, "GET", key, headers={"Range": "bytes=0-999999999", **standard}
    )
    assert (clamped.status, clamped.body) == (206, data)
    assert clamped.headers["Content-Range"] == f"bytes 0-255999/{len(data)}"
    unsatisfiable = await oss_request(
        session, server, "GET", key, headers={"Range": "bytes=300000-", **standard}
    )
    assert (unsatisfiable.status, unsatisfiable.code) == (416, "InvalidRange")
    ignored = await oss_request(session, server, "GET", key, headers={"Range": "bytes=junk"})
    assert (ignored.status, ignored.body) == (200, data)

    delete = await oss_request(session, server, "DELETE", key)
    assert delete.status == 204
    missing = await oss_request(session, server, "HEAD", key)
    assert missing.status == 404
    assert missing.body == b""
    assert missing.headers["x-oss-ec"] == "0026-00000001"
    assert missing.code == "NoSuchKey"  # decoded from x-oss-err
    get_missing = await oss_request(session, server, "GET", key)
    assert (get_missing.status, get_missing.code) == (404, "NoSuchKey")
    assert get_missing.error.request_id == get_missing.headers["x-oss-request-id"]
    assert get_missing.headers["Content-Type"] == "application/xml"


async def test_v1_signed_requests_and_chunked_body(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            yield bytes([i]) * 70000

    put = await oss_request(session, server, "PUT", "chunked.bin", body=chunks(), version="v1")
    assert put.status == 200, put.body
    expected = b"".join(bytes([i]) * 70000 for i in range(5))
    assert server.read_object(BUCKET, "chunked.bin") == expected
    assert put.headers["x-oss-hash-crc64ecma"] == str(crc64(expected))


async def test_content_md5_is_verified(server: OssServer, session: aiohttp.ClientSession) -> None:
    for md5 in (md5_b64(b"other"), "not base64!", base64.b64encode(b"short").decode()):
        reply = await oss_request(
            session, server, "PUT", "k", body=b"data", headers={"Content-MD5": md5}
        )
        assert (reply.status, reply.code) == (400, "InvalidDigest")
    assert server.object_info(BUCKET, "k") is None


async def test_forbid_overwrite_on_put(server: OssServer, session: aiohttp.ClientSession) -> None:
    headers = {"x-oss-forbid-overwrite": "true"}
    first = await oss_request(session, server, "PUT", "k", body=b"1", headers=headers)
    assert first.status == 200
    second = await oss_request(session, server, "PUT", "k", body=b"2", headers=headers)
    assert (second.status, second.code) == (409, "FileAlreadyExists")
    assert server.read_object(BUCKET, "k") == b"1"


async def test_names_are_validated(server: OssServer, session: aiohttp.ClientSession) -> None:
    leading_slash = await oss_request(
        session, server, "PUT", "/abs", raw_path=f"/{BUCKET}/%2Fabs", body=b"x"
    )
    assert (leading_slash.status, leading_slash.code) == (400, "InvalidObjectName")
    too_long = await oss_request(session, server, "PUT", "k" * 1024, body=b"x")
    assert (too_long.status, too_long.code) == (400, "InvalidObjectName")
    bad_bucket = await oss_request(session, server, "PUT", "k", bucket="Bad_Bucket", body=b"x")
    assert (bad_bucket.status, bad_bucket.code) == (400, "InvalidBucketName")
    bad_utf8 = await oss_request(session, server, "GET", "k", raw_path=f"/{BUCKET}/%FF")
    assert (bad_utf8.status, bad_utf8.code) == (400, "InvalidURI")


async def test_fixed_bucket_list(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with OssServer(root=tmp_path, buckets=["only-this"]) as server:
        ok = await oss_request(session, server, "PUT", "k", bucket="only-this", body=b"x")
        assert ok.status == 200
        other = await oss_request(session, server, "PUT", "k", bucket="another", body=b"x")
        assert (other.status, other.code) == (404, "NoSuchBucket")


async def test_entity_too_large_is_refused_from_the_header(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    # The declared length alone decides; the server answers before reading any body.
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        from aiooss_resume._signing import sign_request

        headers = sign_request(
            method="PUT",
            bucket=BUCKET,
            key="huge",
            query=[],
            headers={"Content-Length": str(5 * 1024**3 + 1)},
            access_key_id=server.credentials.access_key_id,
            access_key_secret=server.credentials.access_key_secret,
            security_token=None,
            version="v4",
            region=server.region,
            now=datetime.now(UTC),
        )
        lines = [f"PUT /{BUCKET}/huge HTTP/1.1", f"Host: {server.host}:{server.port}"]
        lines += [f"{n}: {v}" for n, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert b" 400 " in status_line
        rest = await asyncio.wait_for(reader.read(65536), 10)
        assert b"<Code>EntityTooLarge</Code>" in rest
    finally:
        writer.close()
        await writer.wait_closed()


async def test_expect_100_continue(server: OssServer, session: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    reply = await asyncio.wait_for(
        oss_request(session, server, "PUT", "k", body=b"x" * 200_000, expect100=True), 10
    )
    assert reply.status == 200
    assert time.monotonic() - started < 2
    refused = await oss_request(
        session, server, "PUT", "k", body=b"x", secret="bad", expect100=True
    )
    assert refused.code == "SignatureDoesNotMatch"


@pytest.mark.parametrize(
    ("raw_path", "headers", "status"),
    [
        (f"/{BUCKET}/k?partNumber=99999999999999999999&uploadId=X", {}, 404),
        (f"/{BUCKET}/k?%zz=%zz&uploadId", {}, 404),
        (f"/{BUCKET}/k?uploadId=&&&", {}, 404),
        (f"/{BUCKET}/k?uploads&uploadId=", {}, 200),
        (f"/{BUCKET}/k", {"Authorization": "OSS4-HMAC-SHA256 garbage"}, 400),
        (
            f"/{BUCKET}/k",
            {"Authorization": "OSS4-HMAC-SHA256 Credential=a/b/c/d/e,Signature=x"},
            400,
        ),
        (f"/{BUCKET}/k", {"Authorization": "OSS nocolon"}, 400),
        (f"/{BUCKET}/k", {"Authorization": "Bearer x"}, 400),
        (f"/{BUCKET}/k", {"Range": "bytes=9-1,3-4"}, 404),
        (f"/{BUCKET}/k", {"Authorization": f"OSS {DEFAULT_ACCESS_KEY_ID}:x", "Date": "later"}, 403),
        ("/", {}, 501),
        (f"/{BUCKET}/?acl", {}, 501),
        (f"/{BUCKET}/k?acl", {}, 501),
    ],
)
async def test_garbage_gets_oss_answers(
    server: OssServer,
    session: aiohttp.ClientSession,
    raw_path: str,
    headers: dict[str, str],
    status: int,
) -> None:
    """Odd inputs are answered as OSS errors (never the 500 catch-all; see the fixture)."""
    sign = "Authorization" not in headers
    from aiooss_resume.testing._protocol import parse_target

    target = parse_target(raw_path)
    reply = await oss_request(
        session,
        server,
        "POST" if "uploads" in target.query_map else "GET",
        target.key,
        bucket=target.bucket,
        query=target.query,
        raw_path=raw_path.split("?")[0],
        headers=headers,
        sign=sign,
    )
    assert reply.status == status, reply.body
    if status >= 400:
        assert reply.code
        assert reply.headers["x-oss-ec"]


# ---------------------------------------------------------------- auth over the wire


async def test_auth_failures(server: OssServer, session: aiohttp.ClientSession) -> None:
    missing = await oss_request(session, server, "PUT", "k", body=b"x", sign=False)
    assert (missing.status, missing.code) == (403, "AccessDenied")
    for version in ("v1", "v4"):
        wrong = await oss_request(
            session, server, "PUT", "k", body=b"x", secret="bad", version=version
        )
        assert (wrong.status, wrong.code) == (403, "SignatureDoesNotMatch")
        assert wrong.headers["x-oss-ec"]
        unknown = await oss_request(
            session,
            server,
            "PUT",
            "k",
            body=b"x",
            access_key_id="NOPE",
            version=version,
        )
        assert (unknown.status, unknown.code) == (403, "InvalidAccessKeyId")
    v1_wrong = await oss_request(session, server, "GET", "k", secret="bad", version="v1")
    assert v1_wrong.error.details["StringToSign"].endswith(f"/{BUCKET}/k")
    region = await oss_request(session, server, "PUT", "k", body=b"x", region="cn-beijing")
    assert (region.status, region.code) == (400, "InvalidArgument")
    assert region.error.message == "Invalid signing region in Authorization header."


async def test_clock_skew(server: OssServer, session: aiohttp.ClientSession) -> None:
    skewed = datetime.now(UTC) + timedelta(hours=2)
    server.clock = lambda: skewed
    reply = await oss_request(session, server, "PUT", "k", body=b"x")
    assert (reply.status, reply.code) == (403, "RequestTimeTooSkewed")
    # the Date header tells the client the server's time, so it can correct itself
    assert reply.headers["Date"] == skewed.strftime("%a, %d %b %Y %H:%M:%S GMT")
    corrected = await oss_request(session, server, "PUT", "k", body=b"x", now=skewed)
    assert corrected.status == 200


async def test_security_token(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with OssServer(root=tmp_path, security_token="CAIS+tok/en=") as server:
        for version in ("v1", "v4"):
            ok = await oss_request(session, server, "PUT", "k", body=b"x", version=version)
            assert ok.status == 200
            wrong = await oss_request(
                session,
                server,
                "PUT",
                "k",
                body=b"x",
                version=version,
                token="other",
            )
            assert (wrong.status, wrong.code) == (403, "InvalidSecurityToken")


# ---------------------------------------------------------------- multipart


async def test_multipart_flow(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with OssServer(root=tmp_path, list_parts_page_size=2) as server:
        key = "big/ob ject+1.bin"
        upload_id = await initiate(session, server, key)
        assert re.fullmatch(r"[0-9A-F]{32}", upload_id)
        parts = [bytes([n]) * PART for n in range(1, 5)] + [b"tail-bytes"]
        etags = []
        for number, data in enumerate(parts, start=1):
            reply = await upload_part(session, server, key, upload_id, number, data)
            assert reply.status == 200
            assert reply.headers["ETag"] == _etag(data)
            assert reply.headers["x-oss-hash-crc64ecma"] == str(crc64(data))
            etags.append(reply.headers["ETag"])
        # re-upload replaces
        reply = await upload_part(session, server, key, upload_id, 2, parts[1])
        assert reply.headers["ETag"] == etags[1]

        # paging with the forced page size (2) and url encoding
        seen: list[PartInfo] = []
        marker = ""
        while True:
            page = await oss_request(
                session,
                server,
                "GET",
                key,
                query=[("uploadId", upload_id), ("part-number-marker", marker),
                       ("encoding-type", "url")],
            )  # fmt: skip
            assert page.status == 200
            assert b"<Key>big/ob%20ject%2B1.bin</Key>" in page.body
            result = decode_list_parts_result(page.body)
            assert result.key == key
            assert result.max_parts == 2
            seen.extend(result.parts)
            if not result.is_truncated:
                break
            marker = str(result.next_part_number_marker)
        assert [p.part_number for p in seen] == [1, 2, 3, 4, 5]
        assert [p.etag for p in seen] == etags
        assert [p.crc64 for p in seen] == [crc64(d) for d in parts]
        assert seen[0].size == PART

        uploads = await oss_request(session, server, "GET", None, query=[("uploads", "")])
        listed = decode_list_uploads_result(uploads.body)
        assert [(u.key, u.upload_id) for u in listed.uploads] == [(key, upload_id)]

        body = complete_xml(list(enumerate(etags, start=1)))
        done = await oss_request(
            session,
            server,
            "POST",
            key,
            query=[("uploadId", upload_id), ("encoding-type", "url")],
            body=body,
            headers={"Content-MD5": md5_b64(body), "x-oss-object-acl": "private"},
        )
        assert done.status == 200, done.body
        completed = decode_complete_result(done.body)
        md5s = b"".join(hashlib.md5(d).digest() for d in parts)
        expected_etag = f'"{hashlib.md5(md5s).hexdigest().upper()}-5"'
        assert completed.etag == expected_etag == done.headers["ETag"]
        whole = b"".join(parts)
        assert done.headers["x-oss-hash-crc64ecma"] == str(crc64(whole))
        assert crc64_fold((crc64(d), len(d)) for d in parts) == crc64(whole)
        assert server.read_object(BUCKET, key) == whole
        head = await oss_request(session, server, "HEAD", key)
        assert head.headers["x-oss-object-type"] == "Multipart"
        info = server.object_info(BUCKET, key)
        assert info is not None and info.headers["x-oss-object-acl"] == "private"
        again = await oss_request(
            session, server, "POST", key, query=[("uploadId", upload_id)], body=body
        )
        assert (again.status, again.code) == (404, "NoSuchUpload")
        assert server.list_uploads(BUCKET) == []


async def test_list_parts_max_parts_2_paging(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    """``max-parts=2`` from the request (no forced page size): pages of two, in part order,
    over parts uploaded out of order and with gaps, each page resuming after its marker."""
    key = "paged"
    upload_id = await initiate(session, server, key)
    numbers = [9, 1, 7, 3, 2, 10000]
    for number in numbers:
        reply = await upload_part(session, server, key, upload_id, number, bytes([number % 256]))
        assert reply.status == 200

    pages: list[tuple[int, list[int], bool, int, int]] = []
    marker = 0
    while True:
        reply = await oss_request(
            session, server, "GET", key,
            query=[("uploadId", upload_id), ("max-parts", "2"),
                   ("part-number-marker", str(marker))],
        )  # fmt: skip
        assert reply.status == 200, reply.body
        page = decode_list_parts_result(reply.body)
        assert (page.bucket, page.key, page.upload_id) == (BUCKET, key, upload_id)
        pages.append(
            (
                page.part_number_marker,
                [p.part_number for p in page.parts],
                page.is_truncated,
                page.next_part_number_marker,
                page.max_parts,
            )
        )
        if not page.is_truncated:
            break
        assert page.next_part_number_marker > marker
        marker = page.next_part_number_marker
    assert pages == [
        (0, [1, 2], True, 2, 2),
        (2, [3, 7], True, 7, 2),
        (7, [9, 10000], False, 10000, 2),
    ]
    # past the last part: an empty, untruncated page whose next marker is 0 (spec 5.5)
    reply = await oss_request(
        session, server, "GET", key,
        query=[("uploadId", upload_id), ("max-parts", "2"), ("part-number-marker", "10000")],
    )  # fmt: skip
    empty = decode_list_parts_result(reply.body)
    assert (empty.parts, empty.is_truncated, empty.next_part_number_marker) == ((), False, 0)
    # a marker between parts starts after it; max-parts above 1000 is clamped
    reply = await oss_request(
        session, server, "GET", key,
        query=[("uploadId", upload_id), ("max-parts", "5000"), ("part-number-marker", "5")],
    )  # fmt: skip
    rest = decode_list_parts_result(reply.body)
    assert ([p.part_number for p in rest.parts], rest.max_parts) == ([7, 9, 10000], 1000)


async def test_client_follows_list_parts_pages(tmp_path: Path) -> None:
    """The client's ListParts (max-parts=1000) against a server forcing pages of two."""
    async with (
        OssServer(root=tmp_path / "oss", list_parts_page_size=2) as server,
        aiohttp.ClientSession() as session,
    ):
        upload_id = await initiate(session, server, "k")
        for number in (5, 1, 4, 2, 3):
            await upload_part(session, server, "k", upload_id, number, b"p" * number)
        ak, sk, _ = server.credentials
        async with oss.Client(
            server.endpoint, credentials=oss.Credentials(ak, sk), region=server.region
        ) as client:
            parts = await client._list_parts(BUCKET, "k", upload_id)
        assert [(p.part_number, p.size) for p in parts] == [(n, n) for n in range(1, 6)]
        listings = [r for r in server.requests if r.operation == "ListParts"]
        assert len(listings) == 3  # 2 + 2 + 1
        assert [r.raw_target.split("part-number-marker=")[1][:1] for r in listings] == [
            "0",
            "2",
            "4",
        ]
        assert server.stats.internal_errors == 0


async def test_spec_example_part_crc(server: OssServer, session: aiohttp.ClientSession) -> None:
    # spec 8.2 / 5.6: parts A x 102400 and "tail-bytes" fold to 11836416778599125456
    upload_id = await initiate(session, server, "crc")
    await upload_part(session, server, "crc", upload_id, 1, b"A" * PART)
    await upload_part(session, server, "crc", upload_id, 2, b"tail-bytes")
    done = await oss_request(
        session, server, "POST", "crc", query=[("uploadId", upload_id)],
        headers={"x-oss-complete-all": "yes"},
    )  # fmt: skip
    assert done.status == 200, done.body
    assert done.headers["x-oss-hash-crc64ecma"] == "11836416778599125456"
    assert done.headers["ETag"] == '"8C8936CE3CC74536D9A4AC8021B89D01-2"'


async def test_bad_multipart_requests_get_oss_answers(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    key = "bad"
    upload_id = await initiate(session, server, key)
    big = b"x" * PART
    e1 = (await upload_part(session, server, key, upload_id, 1, big)).headers["ETag"]
    e2 = (await upload_part(session, server, key, upload_id, 2, b"small")).headers["ETag"]
    e3 = (await upload_part(session, server, key, upload_id, 3, b"last")).headers["ETag"]

    for number in ("0", "10001", "-1", "abc", ""):
        reply = await oss_request(
            session, server, "PUT", key,
            query=[("partNumber", number), ("uploadId", upload_id)], body=b"x",
        )  # fmt: skip
        assert (reply.status, reply.code) == (400, "InvalidArgument"), number
        assert (
            reply.error.message == "Part number must be an integer between 1 and 10000, inclusive."
        )
        assert reply.error.details["ArgumentName"] == "partNumber"

    unknown = "0" * 32
    for method, query, body in [
        ("PUT", [("partNumber", "1"), ("uploadId", unknown)], b"x"),
        ("GET", [("uploadId", unknown)], b""),
        ("POST", [("uploadId", unknown)], complete_xml([(1, e1)])),
        ("DELETE", [("uploadId", unknown)], b""),
        ("GET", [("uploadId", "../../etc")], b""),
    ]:
        reply = await oss_request(session, server, method, key, query=query, body=body)
        assert (reply.status, reply.code) == (404, "NoSuchUpload"), method

    async def complete(body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
        reply = await oss_request(
            session, server, "POST", key, query=[("uploadId", upload_id)], body=body,
            headers=headers,
        )  # fmt: skip
        return reply.status, reply.code if reply.status != 200 else ""

    assert await complete(b"<CompleteMultipartUpload><Part>") == (400, "MalformedXML")
    assert await complete(b"not xml at all") == (400, "MalformedXML")
    assert await complete(b"") == (400, "MalformedXML")
    assert await complete(b"<CompleteMultipartUpload/>") == (400, "MalformedXML")
    assert await complete(
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>"
    ) == (400, "MalformedXML")
    assert await complete(complete_xml([(2, e2), (1, e1)])) == (400, "InvalidPartOrder")
    assert await complete(complete_xml([(1, e1), (1, e1)])) == (400, "InvalidPartOrder")
    assert await complete(complete_xml([(0, e1)])) == (400, "InvalidPartOrder")
    assert await complete(complete_xml([(1, e1), (4, e3)])) == (400, "InvalidPart")
    assert await complete(complete_xml([(1, e2)])) == (400, "InvalidPart")
    assert await complete(complete_xml([(1, e1), (2, e2), (3, e3)])) == (400, "EntityTooSmall")
    assert await complete(complete_xml([(1, e1)]), {"Content-MD5": md5_b64(b"x")}) == (
        400,
        "InvalidDigest",
    )
    assert await complete(complete_xml([(1, e1)]), {"x-oss-complete-all": "yes"}) == (
        400,
        "InvalidArgument",
    )
    # quotes optional and case-insensitive ETags; parts may skip numbers; 1 and 3 is fine
    lenient = [(1, e1.strip('"').lower()), (3, e3)]
    assert await complete(complete_xml(lenient)) == (200, "")
    assert server.read_object(BUCKET, key) == big + b"last"


async def test_complete_all_and_forbid_overwrite(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    await oss_request(session, server, "PUT", "exists", body=b"old")
    upload_id = await initiate(session, server, "exists")
    await upload_part(session, server, "exists", upload_id, 2, b"b" * PART)
    await upload_part(session, server, "exists", upload_id, 1, b"a" * PART)
    await upload_part(session, server, "exists", upload_id, 3, b"c")
    forbidden = await oss_request(
        session, server, "POST", "exists", query=[("uploadId", upload_id)],
        headers={"x-oss-complete-all": "yes", "x-oss-forbid-overwrite": "true"},
    )  # fmt: skip
    assert (forbidden.status, forbidden.code) == (409, "FileAlreadyExists")
    assert server.read_object(BUCKET, "exists") == b"old"
    done = await oss_request(
        session, server, "POST", "exists", query=[("uploadId", upload_id)],
        headers={"x-oss-complete-all": "yes"},
    )  # fmt: skip
    assert done.status == 200
    assert server.read_object(BUCKET, "exists") == b"a" * PART + b"b" * PART + b"c"


async def test_abort(server: OssServer, session: aiohttp.ClientSession) -> None:
    upload_id = await initiate(session, server, "k")
    await upload_part(session, server, "k", upload_id, 1, b"x")
    reply = await oss_request(session, server, "DELETE", "k", query=[("uploadId", upload_id)])
    assert reply.status == 204
    again = await upload_part(session, server, "k", upload_id, 2, b"x")
    assert (again.status, again.code) == (404, "NoSuchUpload")
    assert server.list_uploads(BUCKET) == []


async def test_initiate_headers_become_object_metadata(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    reply = await oss_request(
        session, server, "POST", "meta.txt", query=[("uploads", "")],
        headers={"Content-Type": "text/plain", "x-oss-meta-origin": "nightly",
                 "x-oss-server-side-encryption": "AES256", "x-oss-storage-class": "IA",
                 "Content-Disposition": "attachment"},
    )  # fmt: skip
    assert reply.headers["x-oss-server-side-encryption"] == "AES256"
    from aiooss_resume._xml import decode_initiate_result

    upload_id = decode_initiate_result(reply.body).upload_id
    part = await upload_part(session, server, "meta.txt", upload_id, 1, b"hello")
    assert part.headers["x-oss-server-side-encryption"] == "AES256"
    await oss_request(
        session, server, "POST", "meta.txt", query=[("uploadId", upload_id)],
        headers={"x-oss-complete-all": "yes"},
    )  # fmt: skip
    head = await oss_request(session, server, "HEAD", "meta.txt")
    assert head.headers["Content-Type"] == "text/plain"
    assert head.headers["x-oss-meta-origin"] == "nightly"
    assert head.headers["x-oss-storage-class"] == "IA"
    assert head.headers["Content-Disposition"] == "attachment"
    assert head.headers["x-oss-server-side-encryption"] == "AES256"


async def test_list_multipart_uploads_paging(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    ids = {}
    for key in ["a/1", "a/2", "b", "c/x/1", "c/y", "d"]:
        ids[key] = await initiate(session, server, key)
    second_b = await initiate(session, server, "b")
    reply = await oss_request(
        session, server, "GET", None,
        query=[("uploads", ""), ("delimiter", "/"), ("max-uploads", "3")],
    )  # fmt: skip
    page = decode_list_uploads_result(reply.body)
    assert page.common_prefixes == ("a/",)
    assert sorted(u.upload_id for u in page.uploads) == sorted([ids["b"], second_b])
    assert page.is_truncated
    reply = await oss_request(
        session, server, "GET", None,
        query=[("uploads", ""), ("delimiter", "/"), ("key-marker", page.next_key_marker),
               ("upload-id-marker", page.next_upload_id_marker), ("encoding-type", "url")],
    )  # fmt: skip
    rest = decode_list_uploads_result(reply.body)
    assert rest.common_prefixes == ("c/",)
    assert [u.key for u in rest.uploads] == ["d"]
    assert not rest.is_truncated
    prefixed = await oss_request(
        session, server, "GET", None, query=[("uploads", ""), ("prefix", "c/")]
    )
    assert [u.key for u in decode_list_uploads_result(prefixed.body).uploads] == ["c/x/1", "c/y"]


async def test_namespace_xml_option(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with OssServer(root=tmp_path, namespace_xml=True) as server:
        reply = await oss_request(session, server, "POST", "k", query=[("uploads", "")])
        assert b'<InitiateMultipartUploadResult xmlns="' in reply.body
        from aiooss_resume._xml import decode_initiate_result

        assert decode_initiate_result(reply.body).key == "k"
        missing = await oss_request(session, server, "GET", "nope")
        assert missing.code == "NoSuchKey"


async def test_sixteen_concurrent_part_uploads(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    upload_id = await initiate(session, server, "parallel")
    # hold each part a moment, so all 16 are provably in flight together
    server.faults.add(Fault(operation="UploadPart", delay=0.3, times=None))
    parts = [bytes([n]) * PART for n in range(16)]
    replies = await asyncio.gather(
        *(
            upload_part(session, server, "parallel", upload_id, n + 1, d)
            for n, d in enumerate(parts)
        )
    )
    assert all(r.status == 200 for r in replies)
    assert server.stats.peak_in_flight["UploadPart"] == 16
    assert server.stats.in_flight["UploadPart"] == 0
    done = await oss_request(
        session, server, "POST", "parallel", query=[("uploadId", upload_id)],
        body=complete_xml([(n + 1, r.headers["ETag"]) for n, r in enumerate(replies)]),
    )  # fmt: skip
    assert done.status == 200
    assert server.read_object(BUCKET, "parallel") == b"".join(parts)


async def test_state_survives_restart(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    root = tmp_path / "persistent"
    parts = [b"1" * PART, b"2" * PART, b"3"]
    async with OssServer(root=root) as server:
        upload_id = await initiate(session, server, "resume/me")
        for n, data in enumerate(parts[:2], start=1):
            assert (
                await upload_part(session, server, "resume/me", upload_id, n, data)
            ).status == 200
        await oss_request(session, server, "PUT", "plain", body=b"plain object")
    async with OssServer(root=root) as server:
        listed = await oss_request(
            session, server, "GET", "resume/me", query=[("uploadId", upload_id)]
        )
        result = decode_list_parts_result(listed.body)
        assert [(p.part_number, p.size) for p in result.parts] == [(1, PART), (2, PART)]
        assert (
            await upload_part(session, server, "resume/me", upload_id, 3, parts[2])
        ).status == 200
        done = await oss_request(
            session, server, "POST", "resume/me", query=[("uploadId", upload_id)],
            headers={"x-oss-complete-all": "yes"},
        )  # fmt: skip
        assert done.status == 200
        assert server.read_object(BUCKET, "resume/me") == b"".join(parts)
        assert (await oss_request(session, server, "GET", "plain")).body == b"plain object"
    assert root.is_dir()  # a given root is kept


async def test_temporary_root_is_removed(session: aiohttp.ClientSession) -> None:
    async with OssServer() as server:
        root = server.root
        await oss_request(session, server, "PUT", "k", body=b"x")
        assert root.is_dir()
    assert not root.exists()


async def test_discard_store(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with OssServer(root=tmp_path, store="discard") as server:
        data = b"z" * 300000
        put = await oss_request(session, server, "PUT", "k", body=data)
        # No MD5 in discard mode unless asked to verify one: the ETag stands in from the CRC.
        stand_in = (crc64(data).to_bytes(8, "big") + len(data).to_bytes(8, "big")).hex()
        assert put.headers["ETag"] == f'"{stand_in.upper()}"'
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        checked = await oss_request(
            session, server, "PUT", "k2", body=data, headers={"Content-MD5": md5}
        )
        assert checked.headers["ETag"] == _etag(data)
        wrong = await oss_request(
            session, server, "PUT", "k3", body=data + b"!", headers={"Content-MD5": md5}
        )
        assert (wrong.status, wrong.code) == (400, "InvalidDigest")
        info = server.object_info(BUCKET, "k")
        assert info is not None and (info.size, info.crc64) == (len(data), crc64(data))
        head = await oss_request(session, server, "HEAD", "k")
        assert head.headers["Content-Length"] == str(len(data))
        get = await oss_request(session, server, "GET", "k")
        assert (get.status, get.code) == (501, "NotImplemented")
        with pytest.raises(FileNotFoundError):
            server.read_object(BUCKET, "k")
        upload_id = await initiate(session, server, "mp")
        await upload_part(session, server, "mp", upload_id, 1, data)
        await upload_part(session, server, "mp", upload_id, 2, b"end")
        done = await oss_request(
            session, server, "POST", "mp", query=[("uploadId", upload_id)],
            headers={"x-oss-complete-all": "yes"},
        )  # fmt: skip
        assert done.headers["x-oss-hash-crc64ecma"] == str(crc64(data + b"end"))


async def test_request_log(server: OssServer, session: aiohttp.ClientSession) -> None:
    upload_id = await initiate(session, server, "log")
    await upload_part(session, server, "log", upload_id, 7, b"abc")
    await upload_part(session, server, "log", upload_id, 0, b"abc")
    records = server.requests
    assert [r.operation for r in records] == ["InitiateMultipartUpload", "UploadPart", "UploadPart"]
    ok, bad = records[1], records[2]
    assert (ok.part_number, ok.upload_id, ok.status, ok.bytes_received) == (7, upload_id, 200, 3)
    assert (bad.part_number, bad.status, bad.code) == (0, 400, "InvalidArgument")
    assert server.stats.requests["UploadPart"] == 2
    assert server.stats.errors["UploadPart"] == 1


async def test_copy_requests_are_not_implemented(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    """x-oss-copy-source turns a PUT into CopyObject/UploadPartCopy: 501, nothing stored."""
    assert (await oss_request(session, server, "PUT", "src", body=b"source")).status == 200
    copy_headers = {"x-oss-copy-source": f"/{BUCKET}/src"}
    reply = await oss_request(session, server, "PUT", "dst", headers=copy_headers)
    assert (reply.status, reply.code) == (501, "NotImplemented")
    assert reply.headers["Content-Type"] == "application/xml"
    assert "CopyObject" in reply.error.message
    assert reply.headers["x-oss-ec"] == reply.error.ec
    assert server.object_info(BUCKET, "dst") is None
    upload_id = await initiate(session, server, "mp")
    reply = await oss_request(
        session, server, "PUT", "mp",
        query=[("partNumber", "1"), ("uploadId", upload_id)],
        headers={**copy_headers, "x-oss-copy-source-range": "bytes=0-3"},
    )  # fmt: skip
    assert (reply.status, reply.code) == (501, "NotImplemented")
    assert "UploadPartCopy" in reply.error.message
    assert server.list_parts(BUCKET, upload_id) == []
    assert [r.operation for r in server.requests if r.status == 501] == [
        "CopyObject",
        "UploadPartCopy",
    ]
    # still authenticated first, as OSS does
    bad = await oss_request(session, server, "PUT", "dst", headers=copy_headers, secret="wrong")
    assert (bad.status, bad.code) == (403, "SignatureDoesNotMatch")


@pytest.mark.parametrize(
    "raw", ["١", "１", "²", "+1", " 1", "1 ", "1_0", "0x1", "-1", "1.0", "9" * 21]
)
async def test_part_number_must_be_ascii_digits(
    server: OssServer, session: aiohttp.ClientSession, raw: str
) -> None:
    upload_id = await initiate(session, server, "k")
    reply = await oss_request(
        session, server, "PUT", "k", query=[("partNumber", raw), ("uploadId", upload_id)],
        body=b"x",
    )  # fmt: skip
    assert (reply.status, reply.code) == (400, "InvalidArgument")
    assert reply.error.details == {"ArgumentName": "partNumber", "ArgumentValue": raw}
    assert server.list_parts(BUCKET, upload_id) == []
    assert server.requests[-1].part_number is None
    ok = await oss_request(
        session, server, "PUT", "k", query=[("partNumber", "0001"), ("uploadId", upload_id)],
        body=b"x",
    )  # fmt: skip
    assert ok.status == 200  # leading zeros are still ASCII digits
    assert [p.part_number for p in server.list_parts(BUCKET, upload_id)] == [1]


@pytest.mark.parametrize(
    ("name", "good"),
    [("max-parts", "2"), ("part-number-marker", "0"), ("max-uploads", "2")],
)
@pytest.mark.parametrize("raw", ["١", "٢", "+2", " 2", "2_0", "²"])
async def test_integer_query_parameters_must_be_ascii_digits(
    server: OssServer, session: aiohttp.ClientSession, name: str, good: str, raw: str
) -> None:
    upload_id = await initiate(session, server, "k")
    if name == "max-uploads":
        key, query = None, [("uploads", "")]
    else:
        key, query = "k", [("uploadId", upload_id)]
    ok = await oss_request(session, server, "GET", key, query=[*query, (name, good)])
    assert ok.status == 200
    reply = await oss_request(session, server, "GET", key, query=[*query, (name, raw)])
    assert (reply.status, reply.code) == (400, "InvalidArgument")
    assert reply.error.details == {"ArgumentName": name, "ArgumentValue": raw}


async def test_range_with_non_ascii_digits_is_ignored(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    assert (await oss_request(session, server, "PUT", "k", body=b"0123456789")).status == 200
    reply = await oss_request(session, server, "GET", "k", headers={"Range": "bytes=١-٢"})
    assert (reply.status, reply.body) == (200, b"0123456789")  # malformed: the whole object
    reply = await oss_request(session, server, "GET", "k", headers={"Range": "bytes=1-2"})
    assert (reply.status, reply.body) == (206, b"12")


# ---------------------------------------------------------------- faults


async def test_fault_status_nth_and_times(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    handle = server.faults.add(Fault.parse("PutObject:nth=2:times=2:status=503"))
    statuses = []
    for _ in range(5):
        reply = await oss_request(session, server, "PUT", "k", body=b"x" * 1000)
        statuses.append((reply.status, reply.code if reply.status != 200 else ""))
    assert statuses == [(200, ""), (503, "SlowDown"), (503, "SlowDown"), (200, ""), (200, "")]
    assert handle.fired == 2
    assert [r.operation for r in server.faults.fired] == ["PutObject", "PutObject"]
    assert server.requests[1].faults == ("PutObject:nth=2:times=2:status=503",)


@pytest.mark.parametrize(
    ("spec", "status", "code"),
    [
        ("UploadPart:part=2:status=500", 500, "InternalError"),
        ("UploadPart:part=2:code=RequestTimeTooSkewed", 403, "RequestTimeTooSkewed"),
        ("UploadPart:part=2:code=NoSuchUpload", 404, "NoSuchUpload"),
        ("UploadPart:part=2:code=InvalidDigest", 400, "InvalidDigest"),
    ],
)
async def test_fault_error_kinds(
    server: OssServer, session: aiohttp.ClientSession, spec: str, status: int, code: str
) -> None:
    server.faults.add(Fault.parse(spec))
    upload_id = await initiate(session, server, "k")
    assert (await upload_part(session, server, "k", upload_id, 1, b"x")).status == 200
    reply = await upload_part(session, server, "k", upload_id, 2, b"x")
    assert (reply.status, reply.code) == (status, code)
    assert reply.headers["x-oss-request-id"] == reply.error.request_id
    assert (await upload_part(session, server, "k", upload_id, 2, b"x")).status == 200


async def test_fault_reset_after_bytes(server: OssServer, session: aiohttp.ClientSession) -> None:
    # aiohttp silently retries an idempotent PUT once after a reset: reset both attempts
    server.faults.add(Fault(operation="UploadPart", reset_after_bytes=65536, times=2))
    upload_id = await initiate(session, server, "k")
    with pytest.raises(aiohttp.ClientError):
        await upload_part(session, server, "k", upload_id, 1, b"x" * 300000)
    for record in server.requests[-2:]:
        assert (record.status, record.code) == (0, "reset_after_bytes")
        assert record.bytes_received == 65536
    assert server.list_parts(BUCKET, upload_id) == []
    assert (await upload_part(session, server, "k", upload_id, 1, b"x" * 1000)).status == 200


async def test_fault_delay_and_throttle(server: OssServer, session: aiohttp.ClientSession) -> None:
    server.faults.add(Fault(operation="PutObject", delay=0.3))
    started = time.monotonic()
    assert (await oss_request(session, server, "PUT", "k", body=b"x")).status == 200
    assert time.monotonic() - started >= 0.3
    server.faults.add(Fault(operation="PutObject", throttle_bytes_per_sec=1_000_000))
    started = time.monotonic()
    assert (await oss_request(session, server, "PUT", "k", body=b"x" * 400_000)).status == 200
    assert time.monotonic() - started >= 0.35
    server.faults.add(Fault(operation="GetObject", throttle_bytes_per_sec=2_000_000))
    started = time.monotonic()
    assert len((await oss_request(session, server, "GET", "k")).body) == 400_000
    assert time.monotonic() - started >= 0.15


async def test_fault_stall_is_cancelled_at_shutdown(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    server = OssServer(root=tmp_path)
    await server.start()
    try:
        server.faults.add(Fault(operation="PutObject", stall=3600))
        request = asyncio.ensure_future(oss_request(session, server, "PUT", "k", body=b"x"))
        await asyncio.sleep(0.3)
        assert not request.done()
        assert server.stats.in_flight["PutObject"] == 1
    finally:
        started = time.monotonic()
        await server.aclose()
        assert time.monotonic() - started < 5
    with pytest.raises(aiohttp.ClientError):
        await request
    assert server.requests[-1].code == "stall"


async def test_fault_wrong_and_omitted_crc(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    data = b"payload" * 1000
    server.faults.add(Fault(operation="PutObject", wrong_crc=True))
    wrong = await oss_request(session, server, "PUT", "k", body=data)
    assert wrong.status == 200
    assert wrong.headers["x-oss-hash-crc64ecma"] != str(crc64(data))
    assert server.read_object(BUCKET, "k") == data  # stored correctly all the same
    server.faults.add(Fault(operation="HeadObject", omit_crc=True))
    head = await oss_request(session, server, "HEAD", "k")
    assert "x-oss-hash-crc64ecma" not in head.headers


async def test_fault_drop_response_on_complete(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    """Spec 10.3: the Complete takes effect, the answer is lost, a retry gets NoSuchUpload."""
    server.faults.add(Fault.parse("CompleteMultipartUpload:drop_response"))
    upload_id = await initiate(session, server, "lost")
    await upload_part(session, server, "lost", upload_id, 1, b"data")
    query = [("uploadId", upload_id)]
    headers = {"x-oss-complete-all": "yes"}
    with pytest.raises(aiohttp.ClientError):
        await oss_request(session, server, "POST", "lost", query=query, headers=headers)
    retry = await oss_request(session, server, "POST", "lost", query=query, headers=headers)
    assert (retry.status, retry.code) == (404, "NoSuchUpload")
    head = await oss_request(session, server, "HEAD", "lost")
    assert head.headers["x-oss-object-type"] == "Multipart"
    assert server.read_object(BUCKET, "lost") == b"data"


async def test_fault_truncate_response(server: OssServer, session: aiohttp.ClientSession) -> None:
    """The operation takes effect; the answer promises more body bytes than it sends."""
    server.faults.add(Fault.parse("PutObject:truncate_response"))
    with pytest.raises(aiohttp.ClientPayloadError, match="content length"):
        await oss_request(session, server, "PUT", "k", body=b"hello world")
    assert server.read_object(BUCKET, "k") == b"hello world"  # stored all the same
    record = server.requests[-1]
    assert (record.operation, record.status, record.code) == ("PutObject", 0, "truncate_response")
    assert record.faults == ("PutObject:truncate_response",)
    assert record.bytes_received == 11

    upload_id = await initiate(session, server, "m")
    server.faults.add(Fault(operation="UploadPart", part_number=1, truncate_response=True))
    with pytest.raises(aiohttp.ClientPayloadError):  # an empty body promised as one byte
        await upload_part(session, server, "m", upload_id, 1, b"x" * 1000)
    assert [p.size for p in server.list_parts(BUCKET, upload_id)] == [1000]

    server.faults.add(Fault(operation="InitiateMultipartUpload", truncate_response=True))
    with pytest.raises(aiohttp.ClientPayloadError):  # half of the XML
        await oss_request(session, server, "POST", "n", query=[("uploads", "")])

    server.faults.add(Fault(operation="GetObject", truncate_response=True))
    with pytest.raises(aiohttp.ClientPayloadError, match="received 5 of 11"):
        await oss_request(session, server, "GET", "k")
    server.faults.add(Fault(operation="GetObject", truncate_response=True))
    with pytest.raises(aiohttp.ClientPayloadError, match="received 2 of 5"):
        await oss_request(session, server, "GET", "k", headers={"Range": "bytes=3-7"})

    # A HEAD answer has no body: it is cut inside its headers. aiohttp retries an
    # idempotent request once after a dropped connection, so cut both attempts.
    server.faults.add(Fault(operation="HeadObject", truncate_response=True, times=2))
    with pytest.raises(aiohttp.ClientError):
        await oss_request(session, server, "HEAD", "k")
    assert [r.code for r in server.requests[-2:]] == ["truncate_response"] * 2

    # The server itself is fine afterwards.
    assert (await oss_request(session, server, "GET", "k")).body == b"hello world"
    assert server.stats.errors["GetObject"] == 2


async def test_fault_hook(server: OssServer, session: aiohttp.ClientSession) -> None:
    seen: list[FaultContext] = []

    async def hook(context: FaultContext) -> web.StreamResponse | None:
        seen.append(context)
        if context.part_number == 2:
            return web.Response(status=418, text="teapot")
        return None

    server.faults.add(Fault(operation="UploadPart", hook=hook, times=None))
    upload_id = await initiate(session, server, "k")
    assert (await upload_part(session, server, "k", upload_id, 1, b"x")).status == 200
    assert (await upload_part(session, server, "k", upload_id, 2, b"x")).status == 418
    assert [c.part_number for c in seen] == [1, 2]


async def test_chaos_fails_a_fraction_of_parts(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    server.faults.chaos(0.5, seed=1, kinds=("error", "slowdown"))
    upload_id = await initiate(session, server, "k")
    statuses = [
        (await upload_part(session, server, "k", upload_id, n, b"x")).status for n in range(1, 21)
    ]
    assert set(statuses) <= {200, 500, 503}
    assert 3 <= statuses.count(200) <= 17
    assert len(server.faults.fired) == 20 - statuses.count(200)
