"""The emulator's addressing and body-receiving rules, over real sockets.

* virtual-hosted Hosts: ``BUCKET.<virtual_host_base>``, ``BUCKET.oss-REGION[-internal]
  .aliyuncs.com`` (what node ``ali-oss`` sends to an IP endpoint) and ``cname`` host names;
  a virtual Host with a path that starts with the bucket is read the way it was signed;
* ``RequestTimeout``: a body that stops sending is answered (or closed) after
  ``request_timeout`` seconds of silence and stores nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from aiooss_resume._signing import SignatureVersion, sign_request
from aiooss_resume._xml import decode_complete_result, decode_error, decode_initiate_result
from aiooss_resume.testing import OssServer, ThreadedOssServer

from .emulator_helpers import BUCKET, complete_xml, oss_request

pytestmark = pytest.mark.anyio


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "oss", cname={"files.example.test": "cname-bucket"}) as s:
        yield s
        assert s.stats.internal_errors == 0


VERSIONS = pytest.mark.parametrize("version", ["v1", "v4"])


@VERSIONS
@pytest.mark.parametrize(
    "host",
    [
        f"{BUCKET}.oss-cn-hangzhou.aliyuncs.com",
        f"{BUCKET}.oss-cn-hangzhou-internal.aliyuncs.com",
        f"{BUCKET.upper()}.OSS-CN-HANGZHOU.ALIYUNCS.COM:80",
        f"{BUCKET}.localhost:9000",
    ],
)
async def test_virtual_hosted_host_names_the_bucket(
    server: OssServer, session: aiohttp.ClientSession, host: str, version: SignatureVersion
) -> None:
    """The path is the whole key; ``dir/`` is not taken for a bucket (was InvalidBucketName)."""
    put = await oss_request(
        session, server, "PUT", "dir/a b.txt", raw_path="/dir/a%20b.txt",
        headers={"Host": host}, body=b"virtual", version=version,
    )  # fmt: skip
    assert put.status == 200, put.body
    assert server.read_object(BUCKET, "dir/a b.txt") == b"virtual"
    initiate = await oss_request(
        session, server, "POST", "big.bin", raw_path="/big.bin", query=[("uploads", "")],
        headers={"Host": host}, version=version,
    )  # fmt: skip
    assert initiate.status == 200, initiate.body
    assert [u.key for u in server.list_uploads(BUCKET)] == ["big.bin"]


@VERSIONS
async def test_virtual_host_with_bucket_in_path_is_read_as_signed(
    server: OssServer, session: aiohttp.ClientSession, version: SignatureVersion
) -> None:
    """``Host: b.oss-...`` + ``/b/k``: key ``k`` if ``/b/k`` was signed, ``b/k`` if that was."""
    host = {"Host": f"{BUCKET}.oss-cn-hangzhou.aliyuncs.com"}
    path_style = await oss_request(
        session, server, "PUT", "k", raw_path=f"/{BUCKET}/k", headers=host, body=b"path",
        version=version,
    )  # fmt: skip
    assert path_style.status == 200, path_style.body
    virtual = await oss_request(
        session, server, "PUT", f"{BUCKET}/k", raw_path=f"/{BUCKET}/k", headers=host,
        body=b"virtual", version=version,
    )  # fmt: skip
    assert virtual.status == 200, virtual.body
    assert server.read_object(BUCKET, "k") == b"path"
    assert server.read_object(BUCKET, f"{BUCKET}/k") == b"virtual"
    # a bucket-level request in path style under the virtual Host
    listed = await oss_request(
        session, server, "GET", None, raw_path=f"/{BUCKET}/", query=[("uploads", "")],
        headers=host, version=version,
    )  # fmt: skip
    assert listed.status == 200, listed.body
    assert server.requests[-1].operation == "ListMultipartUploads"
    # signed for neither reading: the first (virtual) reading's mismatch is the answer
    wrong = await oss_request(
        session, server, "PUT", "other", raw_path=f"/{BUCKET}/k", headers=host, body=b"x",
        version=version,
    )  # fmt: skip
    assert wrong.status == 403 and wrong.code == "SignatureDoesNotMatch"
    assert (server.requests[-1].bucket, server.requests[-1].key) == (BUCKET, f"{BUCKET}/k")
    assert server.read_object(BUCKET, "k") == b"path"


@VERSIONS
async def test_cname_host_maps_to_its_bucket(
    server: OssServer, session: aiohttp.ClientSession, version: SignatureVersion
) -> None:
    reply = await oss_request(
        session, server, "PUT", "doc.txt", bucket="cname-bucket", raw_path="/doc.txt",
        headers={"Host": "FILES.example.test:8443"}, body=b"cname", version=version,
    )  # fmt: skip
    assert reply.status == 200, reply.body
    assert server.read_object("cname-bucket", "doc.txt") == b"cname"
    # any other host is still path style
    plain = await oss_request(
        session, server, "PUT", "doc.txt", raw_path=f"/{BUCKET}/doc.txt",
        headers={"Host": "other.example.test"}, body=b"path", version=version,
    )  # fmt: skip
    assert plain.status == 200, plain.body
    assert server.read_object(BUCKET, "doc.txt") == b"path"


async def test_virtual_host_base_none_keeps_localhost_path_style(tmp_path: Path) -> None:
    async with (
        OssServer(root=tmp_path / "oss", virtual_host_base=None) as server,
        aiohttp.ClientSession() as session,
    ):
        reply = await oss_request(
            session, server, "PUT", "k", raw_path=f"/{BUCKET}/k",
            headers={"Host": "other-bucket.localhost"}, body=b"x",
        )  # fmt: skip
        assert reply.status == 200, reply.body
        assert server.read_object(BUCKET, "k") == b"x"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"request_timeout": 0}, ValueError),
        ({"request_timeout": -1.0}, ValueError),
        ({"request_timeout": float("nan")}, ValueError),
        ({"request_timeout": "5"}, TypeError),
        ({"request_timeout": True}, TypeError),
        ({"cname": {"files.example.test": "Not_A_Bucket"}}, ValueError),
    ],
)
def test_bad_server_arguments_are_refused(
    kwargs: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        OssServer(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(error):
        ThreadedOssServer(**kwargs)  # type: ignore[arg-type]


# -- RequestTimeout


async def _stalled_request(
    server: OssServer, head: str, query: str = "", *, sent: bytes = b"x", length: int = 100
) -> tuple[bytes, bytes]:
    """Send ``head`` with ``Content-Length: length`` and only ``sent``; the answer's head and body.

    Waits at most 10 s for the answer, so a server that never gives up fails the test
    instead of hanging it. (The server then still drains the connection for up to aiohttp's
    lingering time before it closes it; the client does not wait for that.)
    """
    method, key = head.split(" ", 1)
    query_pairs = [tuple(p.split("=", 1)) if "=" in p else (p, "") for p in query.split("&") if p]
    headers = sign_request(
        method=method,
        bucket=BUCKET,
        key=key,
        query=[(n, v) for n, v in query_pairs],
        headers={"Content-Length": str(length), "Content-Type": "application/octet-stream"},
        access_key_id=server.credentials.access_key_id,
        access_key_secret=server.credentials.access_key_secret,
        security_token=None,
        version="v4",
        region=server.region,
        now=datetime.now(UTC),
    )
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        target = f"/{BUCKET}/{key}" + (f"?{query}" if query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {server.host}:{server.port}"]
        lines += [f"{n}: {v}" for n, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + sent)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length_line = re.search(rb"\r\nContent-Length: (\d+)\r\n", head, re.IGNORECASE)
        assert length_line is not None, head
        body = await asyncio.wait_for(reader.readexactly(int(length_line.group(1))), 10)
        return head, body
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):  # the server may have reset it
            await writer.wait_closed()


async def test_stalled_put_object_body_is_answered_request_timeout(tmp_path: Path) -> None:
    async with OssServer(root=tmp_path / "oss", request_timeout=0.5) as server:
        head, body = await _stalled_request(server, "PUT stalled.bin")
        assert head.startswith(b"HTTP/1.1 400 "), head
        assert b"Connection: close" in head
        error = decode_error(body)
        assert error.code == "RequestTimeout"
        assert "not read from or written to within the timeout period" in error.message
        assert server.object_info(BUCKET, "stalled.bin") is None
        record = server.requests[-1]
        assert (record.operation, record.status, record.code) == (
            "PutObject",
            400,
            "RequestTimeout",
        )
        assert record.bytes_received == 1
        assert server.stats.internal_errors == 0


async def test_stalled_upload_part_body_stores_no_part(tmp_path: Path) -> None:
    async with (
        OssServer(root=tmp_path / "oss", request_timeout=0.5) as server,
        aiohttp.ClientSession() as session,
    ):
        initiate = await oss_request(session, server, "POST", "mp.bin", query=[("uploads", "")])
        assert initiate.status == 200, initiate.body
        (upload,) = server.list_uploads(BUCKET)
        head, body = await _stalled_request(
            server, "PUT mp.bin", f"partNumber=1&uploadId={upload.upload_id}"
        )
        assert head.startswith(b"HTTP/1.1 400 ") and decode_error(body).code == "RequestTimeout"
        assert server.list_parts(BUCKET, upload.upload_id) == []
        # the server is still healthy: the same part goes through afterwards
        part = await oss_request(
            session, server, "PUT", "mp.bin",
            query=[("partNumber", "1"), ("uploadId", upload.upload_id)], body=b"y" * 100,
        )  # fmt: skip
        assert part.status == 200, part.body
        assert [p.size for p in server.list_parts(BUCKET, upload.upload_id)] == [100]


async def test_stalled_complete_body_is_answered_request_timeout(tmp_path: Path) -> None:
    async with (
        OssServer(root=tmp_path / "oss", request_timeout=0.5) as server,
        aiohttp.ClientSession() as session,
    ):
        initiate = await oss_request(session, server, "POST", "c.bin", query=[("uploads", "")])
        assert initiate.status == 200
        (upload,) = server.list_uploads(BUCKET)
        head, body = await _stalled_request(
            server, "POST c.bin", f"uploadId={upload.upload_id}", sent=b"<"
        )
        assert head.startswith(b"HTTP/1.1 400 ") and decode_error(body).code == "RequestTimeout"
        assert server.object_info(BUCKET, "c.bin") is None
        assert [u.upload_id for u in server.list_uploads(BUCKET)] == [upload.upload_id]


async def test_request_timeout_is_per_wait_not_per_body(tmp_path: Path) -> None:
    """A body trickling in slower than the limit in total, but never idle that long, is stored."""
    async with (
        OssServer(root=tmp_path / "oss", request_timeout=2.0) as server,
        aiohttp.ClientSession() as session,
    ):

        async def trickle() -> AsyncIterator[bytes]:
            for _ in range(12):  # ~3 s in total, 0.25 s between pieces
                yield b"z" * 10
                await asyncio.sleep(0.25)

        reply = await oss_request(
            session, server, "PUT", "slow.bin", body=trickle(),
            headers={"Content-Length": "120"},
        )  # fmt: skip
        assert reply.status == 200, reply.body
        assert server.read_object(BUCKET, "slow.bin") == b"z" * 120


def test_request_timeout_attribute_is_checked_too() -> None:
    server = OssServer(request_timeout=5)
    assert server.request_timeout == 5.0
    server.request_timeout = 0.25
    assert server.request_timeout == 0.25
    with pytest.raises(ValueError, match="positive"):
        server.request_timeout = 0
    with pytest.raises(TypeError):
        server.request_timeout = "1"  # type: ignore[assignment]
    threaded = ThreadedOssServer()
    threaded.request_timeout = 2
    assert threaded.server.request_timeout == 2.0


async def test_virtual_hosted_answers_name_the_host_as_oss_does(
    server: OssServer, session: aiohttp.ClientSession
) -> None:
    """HostId and the Complete Location do not repeat the bucket the Host already names."""
    host = f"{BUCKET}.oss-cn-hangzhou.aliyuncs.com"
    refused = await oss_request(
        session, server, "PUT", "k", raw_path="/k", headers={"Host": host}, secret="wrong"
    )
    assert refused.code == "SignatureDoesNotMatch"
    assert refused.error.host_id == host
    initiate = await oss_request(
        session, server, "POST", "k", raw_path="/k", query=[("uploads", "")],
        headers={"Host": host},
    )  # fmt: skip
    upload_id = decode_initiate_result(initiate.body).upload_id
    part = await oss_request(
        session, server, "PUT", "k", raw_path="/k", headers={"Host": host}, body=b"p",
        query=[("partNumber", "1"), ("uploadId", upload_id)],
    )  # fmt: skip
    done = await oss_request(
        session, server, "POST", "k", raw_path="/k", headers={"Host": host},
        query=[("uploadId", upload_id)], body=complete_xml([(1, part.headers["ETag"])]),
    )  # fmt: skip
    assert done.status == 200, done.body
    assert decode_complete_result(done.body).location == f"http://{host}/k"
    # path style keeps the bucket in both
    plain = await oss_request(session, server, "PUT", "k", secret="wrong")
    assert plain.error.host_id == f"{BUCKET}.{server.host}"
