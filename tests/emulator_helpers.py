"""Raw, signed OSS requests for the emulator tests (aiohttp client, no SDK in between)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from aiooss_resume._models import ErrorDocument
from aiooss_resume._signing import SignatureVersion, encode_query, request_path, sign_request
from aiooss_resume._xml import decode_error, decode_error_header
from aiooss_resume.testing import OssServer, ServerCredentials


class ServerLike(Protocol):
    """What a request needs to know about a server (OssServer, ThreadedOssServer...)."""

    @property
    def endpoint(self) -> str: ...

    @property
    def region(self) -> str: ...

    @property
    def credentials(self) -> ServerCredentials: ...


BUCKET = "emulator-test"


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def error(self) -> ErrorDocument:
        if self.body:
            return decode_error(self.body)
        return decode_error_header(self.headers["x-oss-err"])

    @property
    def code(self) -> str:
        return self.error.code


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


async def oss_request(
    session: aiohttp.ClientSession,
    server: ServerLike,
    method: str,
    key: str | None = None,
    *,
    bucket: str | None = BUCKET,
    query: Sequence[tuple[str, str]] = (),
    headers: Mapping[str, str] | None = None,
    body: bytes | AsyncIterable[bytes] = b"",
    version: SignatureVersion = "v4",
    secret: str | None = None,
    access_key_id: str | None = None,
    token: str | None = None,
    region: str | None = None,
    now: datetime | None = None,
    sign: bool = True,
    raw_path: str | None = None,
    expect100: bool = False,
) -> Reply:
    """Send one request signed like aiooss_resume's client would, and read the whole answer."""
    creds = server.credentials
    all_headers = dict(headers or {})
    if sign:
        all_headers = sign_request(
            method=method,
            bucket=bucket,
            key=key,
            query=list(query),
            headers=all_headers,
            access_key_id=access_key_id or creds.access_key_id,
            access_key_secret=secret or creds.access_key_secret,
            security_token=token or creds.security_token,
            version=version,
            region=region or server.region,
            now=now or datetime.now(UTC),
        )
    path = raw_path or request_path(bucket, key, path_style=True)
    target = path + ("?" + encode_query(query) if query else "")
    url = URL(server.endpoint + target, encoded=True)
    async with session.request(
        method,
        url,
        headers=all_headers,
        data=body,
        skip_auto_headers=("Content-Type",),
        expect100=expect100,
    ) as response:
        data = await response.read()
        return Reply(response.status, response.headers, data)


async def initiate(session: aiohttp.ClientSession, server: OssServer, key: str) -> str:
    from aiooss_resume._xml import decode_initiate_result

    reply = await oss_request(session, server, "POST", key, query=[("uploads", "")])
    assert reply.status == 200, reply.body
    return decode_initiate_result(reply.body).upload_id


async def upload_part(
    session: aiohttp.ClientSession,
    server: OssServer,
    key: str,
    upload_id: str,
    number: int,
    data: bytes,
) -> Reply:
    return await oss_request(
        session,
        server,
        "PUT",
        key,
        query=[("partNumber", str(number)), ("uploadId", upload_id)],
        body=data,
    )


def complete_xml(parts: Sequence[tuple[int, str]]) -> bytes:
    from aiooss_resume._xml import encode_complete_request

    return encode_complete_request(parts)
