"""upload_stream at OSS's 10,000-part limit, through the in-memory transport (no sockets):
10,001 parts of 100 KiB are ~1 GB, which the emulator would write to disk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import pytest

import aiooss_resume as oss
from aiooss_resume._crc64 import crc64, crc64_fold
from aiooss_resume._models import CompleteResult, InitiateResult
from aiooss_resume._xml import (
    decode_complete_request,
    encode_complete_result,
    encode_initiate_result,
)
from aiooss_resume.testing import MockTransport

pytestmark = pytest.mark.anyio

PART = 100 * 1024
MAX_PARTS = 10_000


class CountingOss:
    """Just enough of OSS for a multipart upload, keeping each part's size and CRC only."""

    def __init__(self) -> None:
        self.parts: dict[int, tuple[int, int]] = {}
        self.operations: list[str] = []
        self.transport = MockTransport(self.handle)

    async def handle(self, request: oss.HttpRequest) -> oss.HttpResponse:
        query = dict(parse_qsl(urlsplit(request.url).query, keep_blank_values=True))
        body = request.body if isinstance(request.body, bytes) else b""
        if request.method == "POST" and "uploads" in query:
            self.operations.append("Initiate")
            initiated = InitiateResult("b", "k", "ID")
            return oss.HttpResponse(200, {}, encode_initiate_result(initiated))
        if request.method == "PUT" and "partNumber" in query:
            self.operations.append("UploadPart")
            crc = crc64(body)
            self.parts[int(query["partNumber"])] = (len(body), crc)
            etag = f'"{crc:016X}"'  # any string will do; an MD5 of 100 KiB costs 0.2 ms
            return oss.HttpResponse(200, {"etag": etag, "x-oss-hash-crc64ecma": str(crc)})
        if request.method == "POST" and "uploadId" in query:
            self.operations.append("Complete")
            numbers = [n for n, _ in decode_complete_request(body)]
            crc = crc64_fold(self.parts[n][::-1] for n in numbers)
            result = CompleteResult("b", "k", '"X"')
            headers = {"x-oss-hash-crc64ecma": str(crc)}
            return oss.HttpResponse(200, headers, encode_complete_result(result))
        if request.method == "DELETE":
            self.operations.append("Abort")
            return oss.HttpResponse(204, {})
        raise AssertionError(f"unexpected {request.method} {request.url}")


def client_for(fake: CountingOss) -> oss.Client:
    return oss.Client(
        "http://127.0.0.1:1",
        credentials=oss.Credentials("ak", "sk"),
        region="cn-hangzhou",
        transport=fake.transport,
    )


async def repeated(piece: bytes, total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        n = min(len(piece), total - sent)
        yield piece if n == len(piece) else piece[:n]
        sent += n


@pytest.mark.timeout(120)
async def test_part_10001_is_never_sent_without_size() -> None:
    fake = CountingOss()
    piece = bytes(range(256)) * (PART // 256)
    async with client_for(fake) as client:
        with pytest.raises(oss.StreamLengthError, match="10000 parts") as info:
            await client.bucket("bkt").upload_stream(
                "k", repeated(piece, MAX_PARTS * PART + 1), PART, routines=8
            )
    assert info.value.expected is None
    assert info.value.actual == MAX_PARTS * PART + 1
    assert max(fake.parts) <= MAX_PARTS
    assert "Complete" not in fake.operations
    assert fake.operations[-1] == "Abort"


@pytest.mark.timeout(120)
async def test_with_size_the_part_size_grows_to_fit() -> None:
    fake = CountingOss()
    size = MAX_PARTS * PART + 1
    piece = bytes(range(256)) * (PART // 256)
    async with client_for(fake) as client:
        result = await client.bucket("bkt").upload_stream(
            "k", repeated(piece, size), PART, routines=8, size=size
        )
    assert result.part_size == PART + 1  # ceil(size / 10,000)
    assert len(fake.parts) == MAX_PARTS and result.size == size
    assert sum(length for length, _ in fake.parts.values()) == size
