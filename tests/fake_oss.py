"""A minimal in-memory OSS behind ``MockTransport``, for testing the engine through its seam.

It implements just the multipart subset the engine uses, with OSS's ETags and CRC headers,
and a ``fault`` hook that may answer any request instead of the store (or raise
``TransportError`` to simulate a lost connection). Signatures are not checked here: the
emulator tests do that over real sockets.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, unquote, urlsplit

from aiooss_resume._crc64 import crc64, crc64_fold
from aiooss_resume._http import HttpRequest, HttpResponse, MockTransport
from aiooss_resume._models import (
    CompleteResult,
    ErrorDocument,
    InitiateResult,
    ListPartsResult,
    ListUploadsResult,
    PartInfo,
    UploadSummary,
)
from aiooss_resume._retry import format_http_date
from aiooss_resume._xml import (
    decode_complete_request,
    encode_complete_result,
    encode_error,
    encode_initiate_result,
    encode_list_parts_result,
    encode_list_uploads_result,
)

Fault = Callable[["Call"], Awaitable[HttpResponse | None]]


@dataclass
class Call:
    op: str
    method: str
    key: str
    query: dict[str, str]
    request: HttpRequest
    part_number: int = 0


@dataclass
class Upload:
    key: str
    headers: dict[str, str]
    parts: dict[int, tuple[bytes, str, int]] = field(default_factory=dict)
    initiated: float = field(default_factory=time.time)


def _etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest().upper() + '"'


def error(status: int, code: str, message: str = "") -> HttpResponse:
    body = encode_error(ErrorDocument(code=code, message=message, request_id="FAKE"))
    return HttpResponse(status, {"x-oss-request-id": "FAKE"}, body)


class FakeOss:
    def __init__(self, *, list_page: int = 1000) -> None:
        self.objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.uploads: dict[str, Upload] = {}
        self.calls: list[Call] = []
        self.fault: Fault | None = None
        self.list_page = list_page
        self.in_flight = 0
        self.peak_in_flight = 0
        self.part_delay = 0.0
        self._ids = itertools.count(1)
        self.transport = MockTransport(self.handle)

    def ops(self, op: str) -> list[Call]:
        return [c for c in self.calls if c.op == op]

    async def handle(self, request: HttpRequest) -> HttpResponse:
        url = urlsplit(request.url)
        _, _bucket, key = url.path.split("/", 2)
        key = unquote(key)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        op = self._op(request.method, query)
        call = Call(op, request.method, key, query, request, int(query.get("partNumber", 0)))
        self.calls.append(call)
        if self.fault is not None:
            answer = await self.fault(call)
            if answer is not None:
                return answer
        if op == "UploadPart":
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.part_delay)
                return self._upload_part(key, query, request)
            finally:
                self.in_flight -= 1
        return getattr(self, "_" + op)(key, query, request)  # type: ignore[no-any-return]

    @staticmethod
    def _op(method: str, query: dict[str, str]) -> str:
        if method == "POST" and "uploads" in query:
            return "InitiateMultipartUpload"
        if method == "PUT" and "uploadId" in query:
            return "UploadPart"
        if method == "GET" and "uploadId" in query:
            return "ListParts"
        if method == "GET" and "uploads" in query:
            return "ListMultipartUploads"
        if method == "POST" and "uploadId" in query:
            return "CompleteMultipartUpload"
        if method == "DELETE" and "uploadId" in query:
            return "AbortMultipartUpload"
        return {"PUT": "PutObject", "HEAD": "HeadObject", "GET": "GetObject"}[method]

    def _PutObject(self, key: str, query: dict[str, str], req: HttpRequest) -> HttpResponse:
        data = bytes(req.body or b"")  # type: ignore[arg-type]
        self.objects[key] = (data, dict(req.headers))
        return HttpResponse(
            200,
            {
                "etag": _etag(data),
                "x-oss-hash-crc64ecma": str(crc64(data)),
                "x-oss-request-id": "P",
            },
        )

    def _HeadObject(self, key: str, query: dict[str, str], req: HttpRequest) -> HttpResponse:
        if key not in self.objects:
            return HttpResponse(404, {"x-oss-request-id": "H"})
        data, _ = self.objects[key]
        return HttpResponse(
            200,
            {
                "content-length": str(len(data)),
                "etag": _etag(data),
                "x-oss-hash-crc64ecma": str(crc64(data)),
            },
        )

    def _InitiateMultipartUpload(
        self, key: str, query: dict[str, str], req: HttpRequest
    ) -> HttpResponse:
        upload_id = f"{next(self._ids):032X}"
        self.uploads[upload_id] = Upload(key, dict(req.headers))
        return HttpResponse(200, {}, encode_initiate_result(InitiateResult("b", key, upload_id)))

    def _upload(self, query: dict[str, str]) -> Upload | HttpResponse:
        upload = self.uploads.get(query["uploadId"])
        return upload if upload is not None else error(404, "NoSuchUpload")

    def _upload_part(self, key: str, query: dict[str, str], req: HttpRequest) -> HttpResponse:
        upload = self._upload(query)
        if isinstance(upload, HttpResponse):
            return upload
        data = bytes(req.body or b"")  # type: ignore[arg-type]
        number = int(query["partNumber"])
        upload.parts[number] = (data, _etag(data), crc64(data))
        return HttpResponse(200, {"etag": _etag(data), "x-oss-hash-crc64ecma": str(crc64(data))})

    def _ListParts(self, key: str, query: dict[str, str], req: HttpRequest) -> HttpResponse:
        upload = self._upload(query)
        if isinstance(upload, HttpResponse):
            return upload
        marker = int(query.get("part-number-marker") or 0)
        numbers = sorted(n for n in upload.parts if n > marker)
        page = numbers[: self.list_page]
        parts = tuple(
            PartInfo(n, upload.parts[n][1], len(upload.parts[n][0]), upload.parts[n][2])
            for n in page
        )
        result = ListPartsResult(
            bucket="b",
            key=key,
            upload_id=query["uploadId"],
            part_number_marker=marker,
            next_part_number_marker=page[-1] if page else 0,
            max_parts=self.list_page,
            is_truncated=len(numbers) > len(page),
            parts=parts,
        )
        return HttpResponse(200, {}, encode_list_parts_result(result, url_encode=True))

    def _CompleteMultipartUpload(
        self, key: str, query: dict[str, str], req: HttpRequest
    ) -> HttpResponse:
        upload = self._upload(query)
        if isinstance(upload, HttpResponse):
            return upload
        listed = decode_complete_request(bytes(req.body or b""))  # type: ignore[arg-type]
        for number, etag in listed:
            if number not in upload.parts or upload.parts[number][1] != etag:
                return error(400, "InvalidPart")
        data = b"".join(upload.parts[n][0] for n, _ in listed)
        crc = crc64_fold((upload.parts[n][2], len(upload.parts[n][0])) for n, _ in listed)
        self.objects[key] = (data, upload.headers)
        del self.uploads[query["uploadId"]]
        body = encode_complete_result(CompleteResult("b", key, f'"MULTI-{len(listed)}"'))
        return HttpResponse(200, {"x-oss-hash-crc64ecma": str(crc), "x-oss-request-id": "C"}, body)

    def _AbortMultipartUpload(
        self, key: str, query: dict[str, str], req: HttpRequest
    ) -> HttpResponse:
        if self.uploads.pop(query["uploadId"], None) is None:
            return error(404, "NoSuchUpload")
        return HttpResponse(204)

    def _ListMultipartUploads(
        self, key: str, query: dict[str, str], req: HttpRequest
    ) -> HttpResponse:
        """Open uploads under ``prefix``, ``list_page`` per page (no delimiter), by key then
        upload id, with the ``Date`` header OSS sends."""
        prefix = query.get("prefix", "")
        marker = (query.get("key-marker", ""), query.get("upload-id-marker", ""))
        listed = sorted(
            (u.key, upload_id, u.initiated)
            for upload_id, u in self.uploads.items()
            if u.key.startswith(prefix) and (u.key, upload_id) > marker
        )
        page = listed[: self.list_page]
        truncated = len(listed) > len(page)
        result = ListUploadsResult(
            bucket="b",
            prefix=prefix,
            delimiter="",
            key_marker=marker[0],
            upload_id_marker=marker[1],
            next_key_marker=page[-1][0] if page else "",
            next_upload_id_marker=page[-1][1] if truncated else "",
            max_uploads=self.list_page,
            is_truncated=truncated,
            uploads=tuple(
                UploadSummary(
                    k, i, datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
                )
                for k, i, t in page
            ),
        )
        body = encode_list_uploads_result(result, url_encode=True)
        return HttpResponse(200, {"date": format_http_date(datetime.now(UTC))}, body)


class PullingTransport:
    """Pulls a part's body one chunk at a time, calling ``on_chunk(index)`` before each
    next pull (the index of the chunk just received), then hands the body to the fake."""

    def __init__(self, fake: FakeOss) -> None:
        self.fake = fake
        self.on_chunk: Callable[[int], object] | None = None

    async def send(self, request: HttpRequest) -> HttpResponse:
        body = request.body
        if callable(body):
            chunks: AsyncIterator[bytes | bytearray | memoryview] = body()
            data = bytearray()
            index = 0
            try:
                async for chunk in chunks:
                    data += chunk
                    if self.on_chunk is not None:
                        result = self.on_chunk(index)
                        if asyncio.iscoroutine(result):
                            await result
                    index += 1
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
            request = HttpRequest(
                request.method, request.url, dict(request.headers), bytes(data), len(data)
            )
        return await self.fake.handle(request)

    async def aclose(self) -> None:
        return None
