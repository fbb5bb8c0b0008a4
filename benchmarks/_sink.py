"""A minimal OSS *sink* for ceiling measurements: ``python -m benchmarks._sink``.

Not an emulator: no authentication, no MD5, no storage. It answers the few multipart calls an
upload makes (Initiate, UploadPart, Complete, Abort, HEAD) on 127.0.0.1 from an
``asyncio.BufferedProtocol`` that receives bodies into one reused buffer and only computes
their CRC-64 (fastcrc) so every client's CRC check still runs. It shows how fast a client can
go when the server costs almost nothing; it prints the same JSON line as ``_serve``.
``--tls-ca-file PATH`` serves HTTPS (asyncio's TLS under the same protocol) with a certificate
made at start, the CA written to PATH, so TLS's own cost can be told apart from the client's.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import sys
from urllib.parse import parse_qs, urlsplit

from aiooss_resume._crc64 import crc64, crc64_fold

_PART_RE = re.compile(rb"<PartNumber>\s*(\d+)\s*</PartNumber>")
_ids = itertools.count(1)


class _Uploads:
    def __init__(self) -> None:
        self.parts: dict[str, dict[int, tuple[int, int]]] = {}
        self.objects: dict[str, tuple[int, int]] = {}


class SinkProtocol(asyncio.BufferedProtocol):
    def __init__(self, state: _Uploads) -> None:
        self.state = state
        self.buf = bytearray(1024 * 1024)
        self.view = memoryview(self.buf)
        self.head = bytearray()
        self.transport: asyncio.Transport | None = None
        self.remaining = -1  # body bytes still expected; -1 = reading headers
        self.crc = 0
        self.body = bytearray()  # kept only for small (XML) bodies
        self.keep_body = False
        self.request: tuple[str, str, dict[str, str]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self._feed(self.view[:nbytes])

    def _feed(self, data: memoryview) -> None:
        while data:
            if self.remaining < 0:
                self.head += data
                end = self.head.find(b"\r\n\r\n")
                if end < 0:
                    return
                rest = memoryview(bytes(self.head[end + 4 :]))
                self._start(bytes(self.head[:end]))
                self.head.clear()
                data = rest
                if self.remaining == 0:
                    self._finish()
                continue
            take = data[: self.remaining]
            self.crc = crc64(take, self.crc)
            if self.keep_body:
                self.body += take
            self.remaining -= len(take)
            data = data[len(take) :]
            if self.remaining == 0:
                self._finish()

    def _start(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.request = (method, target, headers)
        self.remaining = int(headers.get("content-length", "0"))
        self.crc = 0
        self.body.clear()
        self.keep_body = method == "POST"

    def _finish(self) -> None:
        assert self.request is not None
        method, target, headers = self.request
        self.remaining = -1
        url = urlsplit(target)
        query = parse_qs(url.query, keep_blank_values=True)
        path = url.path
        status, extra, body = 200, {}, b""
        if method == "POST" and "uploads" in query:
            upload_id = f"{next(_ids):032X}"
            self.state.parts[upload_id] = {}
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult>'
                f"<Bucket>b</Bucket><Key>k</Key><UploadId>{upload_id}</UploadId>"
                "</InitiateMultipartUploadResult>"
            ).encode()
        elif method == "PUT" and "partNumber" in query:
            parts = self.state.parts.get(query["uploadId"][0])
            size = int(headers.get("content-length", "0"))
            if parts is None:
                status = 404
            else:
                parts[int(query["partNumber"][0])] = (self.crc, size)
            extra = {"ETag": f'"{self.crc:032X}"', "x-oss-hash-crc64ecma": str(self.crc)}
        elif method == "POST" and "uploadId" in query:
            parts = self.state.parts.pop(query["uploadId"][0], None)
            if parts is None:
                status = 404
            else:
                numbers = [int(n) for n in _PART_RE.findall(bytes(self.body))] or sorted(parts)
                crc = crc64_fold(parts[n] for n in numbers)
                size = sum(parts[n][1] for n in numbers)
                self.state.objects[path] = (crc, size)
                extra = {"ETag": f'"{crc:032X}-{len(numbers)}"', "x-oss-hash-crc64ecma": str(crc)}
                body = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n<CompleteMultipartUploadResult>'
                    f"<Location>http://sink{path}</Location><Bucket>b</Bucket><Key>k</Key>"
                    f'<ETag>"{crc:032X}-{len(numbers)}"</ETag></CompleteMultipartUploadResult>'
                ).encode()
        elif method == "GET" and "uploadId" in query:
            upload_id = query["uploadId"][0]
            parts = self.state.parts.get(upload_id)
            if parts is None:
                status = 404
            else:
                body = _list_parts_xml(upload_id, parts)
        elif method == "DELETE" and "uploadId" in query:
            self.state.parts.pop(query["uploadId"][0], None)
            status = 204
        elif method in ("PUT", "POST"):
            self.state.objects[path] = (self.crc, int(headers.get("content-length", "0")))
            extra = {"ETag": f'"{self.crc:032X}"', "x-oss-hash-crc64ecma": str(self.crc)}
        elif method == "HEAD" and path in self.state.objects:
            crc, size = self.state.objects[path]
            extra = {"ETag": f'"{crc:032X}"', "x-oss-hash-crc64ecma": str(crc)}
            self._respond(200, extra, b"", content_length=size)
            return
        else:
            status = 404
        self._respond(status, extra, body)

    def _respond(
        self, status: int, extra: dict[str, str], body: bytes, content_length: int | None = None
    ) -> None:
        assert self.transport is not None
        reason = {200: "OK", 204: "No Content", 404: "Not Found"}[status]
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Content-Length: {len(body) if content_length is None else content_length}",
            "Server: AliyunOSS",
            f"x-oss-request-id: {next(_ids):024X}",
        ]
        if body:
            lines.append("Content-Type: application/xml")
        lines += [f"{k}: {v}" for k, v in extra.items()]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def _list_parts_xml(upload_id: str, parts: dict[int, tuple[int, int]]) -> bytes:
    items = "".join(
        f"<Part><PartNumber>{n}</PartNumber><LastModified>2024-01-01T00:00:00.000Z"
        f'</LastModified><ETag>"{crc:032X}"</ETag><HashCrc64ecma>{crc}</HashCrc64ecma>'
        f"<Size>{size}</Size></Part>"
        for n, (crc, size) in sorted(parts.items())
    )
    last = max(parts, default=0)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<ListPartsResult><Bucket>b</Bucket><Key>k</Key>'
        f"<UploadId>{upload_id}</UploadId><PartNumberMarker>0</PartNumberMarker>"
        f"<NextPartNumberMarker>{last}</NextPartNumberMarker><MaxParts>10000</MaxParts>"
        f"<IsTruncated>false</IsTruncated>{items}</ListPartsResult>"
    ).encode()


async def _serve(ca_file: str | None) -> None:
    loop = asyncio.get_running_loop()
    state = _Uploads()
    context = None
    if ca_file:
        from aiooss_resume.testing import self_signed_tls

        context = self_signed_tls(ca_file=ca_file).server_context
    server = await loop.create_server(lambda: SinkProtocol(state), "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    print(
        json.dumps(
            {
                "endpoint": f"{'https' if context else 'http'}://127.0.0.1:{port}",
                "access_key_id": "sink-ak",
                "access_key_secret": "sink-sk",
                "region": "cn-hangzhou",
                "ca_file": ca_file,
            }
        ),
        flush=True,
    )
    async with server:
        await loop.run_in_executor(None, sys.stdin.buffer.read)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._sink")
    parser.add_argument("--tls-ca-file", default=None, help="serve HTTPS; write the CA here")
    asyncio.run(_serve(parser.parse_args().tls_ca_file))


if __name__ == "__main__":
    main()
