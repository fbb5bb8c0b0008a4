"""The URLs the Client builds (spec 1.3-1.5), recorded through the MockTransport seam.

IP-literal and ``localhost`` endpoints use path style (``/bucket/key``), real domains
virtual-hosted style (``bucket.host/key``), and ``path_style=`` overrides either way. Keys are
percent-encoded with ``/`` kept; query values never carry a raw ``+``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

import aiooss_resume as oss
from aiooss_resume._crc64 import crc64
from aiooss_resume._http import HttpRequest, HttpResponse, MockTransport
from aiooss_resume._models import ListUploadsResult
from aiooss_resume._xml import encode_list_uploads_result

pytestmark = pytest.mark.anyio

BUCKET = "url-bucket"
KEY = "dir/a b+é"
ENCODED_KEY = "dir/a%20b%2B%C3%A9"


async def _answer(request: HttpRequest) -> HttpResponse:
    if request.method == "DELETE":
        return HttpResponse(204, {"x-oss-request-id": "R"})
    if request.method == "GET":
        result = ListUploadsResult(
            bucket=BUCKET,
            prefix="",
            delimiter="",
            key_marker="",
            upload_id_marker="",
            next_key_marker="",
            next_upload_id_marker="",
            max_uploads=1000,
            is_truncated=False,
            uploads=(),
        )
        return HttpResponse(200, {"x-oss-request-id": "R"}, encode_list_uploads_result(result))
    body = request.body
    assert isinstance(body, bytes)
    return HttpResponse(
        200,
        {"etag": '"E"', "x-oss-hash-crc64ecma": str(crc64(body)), "x-oss-request-id": "R"},
    )


async def _urls(tmp_path: Path, endpoint: str, path_style: bool | None = None) -> list[str]:
    """Abort, list and upload through a client on ``endpoint``; the URLs it sent."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "small.bin"
    src.write_bytes(b"tiny")
    transport = MockTransport(_answer)
    async with oss.Client(
        endpoint,
        credentials=oss.Credentials("AKID", "SECRET"),
        region="cn-hangzhou",
        path_style=path_style,
        transport=transport,
    ) as client:
        bucket = client.bucket(BUCKET)
        await bucket.abort_upload(KEY, "id+with/slash")
        assert await bucket.list_uploads() == []
        result = await bucket.upload_file(KEY, src)  # one PutObject
        assert result.upload_id is None
    return [request.url for request in transport.requests]


PATH_STYLE = [
    ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
    ("http://127.0.0.1", "http://127.0.0.1"),
    ("127.0.0.1:9000", "https://127.0.0.1:9000"),  # no scheme: https
    ("http://10.1.2.3:80", "http://10.1.2.3:80"),
    ("http://localhost:9000", "http://localhost:9000"),
    ("http://LocalHost:9000", "http://localhost:9000"),
    ("http://[::1]:9000", "http://[::1]:9000"),
    ("http://[2001:db8::7]", "http://[2001:db8::7]"),
]


@pytest.mark.parametrize(("endpoint", "base"), PATH_STYLE)
async def test_ip_and_localhost_endpoints_use_path_style(
    tmp_path: Path, endpoint: str, base: str
) -> None:
    abort, listing, put = await _urls(tmp_path, endpoint)
    assert abort == f"{base}/{BUCKET}/{ENCODED_KEY}?uploadId=id%2Bwith%2Fslash"
    assert listing == f"{base}/{BUCKET}/?uploads&max-uploads=1000&encoding-type=url"
    assert put == f"{base}/{BUCKET}/{ENCODED_KEY}"


VIRTUAL_HOSTED = [
    ("https://oss-cn-hangzhou.aliyuncs.com", "https", "oss-cn-hangzhou.aliyuncs.com"),
    ("oss-cn-hangzhou.aliyuncs.com", "https", "oss-cn-hangzhou.aliyuncs.com"),
    (
        "http://oss-cn-hangzhou-internal.aliyuncs.com",
        "http",
        "oss-cn-hangzhou-internal.aliyuncs.com",
    ),
    ("https://files.example.com:8443", "https", "files.example.com:8443"),
]


@pytest.mark.parametrize(("endpoint", "scheme", "host"), VIRTUAL_HOSTED)
async def test_domain_endpoints_use_virtual_hosted_style(
    tmp_path: Path, endpoint: str, scheme: str, host: str
) -> None:
    abort, listing, put = await _urls(tmp_path, endpoint)
    base = f"{scheme}://{BUCKET}.{host}"
    assert abort == f"{base}/{ENCODED_KEY}?uploadId=id%2Bwith%2Fslash"
    assert listing == f"{base}/?uploads&max-uploads=1000&encoding-type=url"
    assert put == f"{base}/{ENCODED_KEY}"
    assert urlsplit(put).netloc == f"{BUCKET}.{host}"


async def test_path_style_true_overrides_a_domain(tmp_path: Path) -> None:
    urls = await _urls(tmp_path, "https://oss-cn-hangzhou.aliyuncs.com", path_style=True)
    base = f"https://oss-cn-hangzhou.aliyuncs.com/{BUCKET}"
    assert urls == [
        f"{base}/{ENCODED_KEY}?uploadId=id%2Bwith%2Fslash",
        f"{base}/?uploads&max-uploads=1000&encoding-type=url",
        f"{base}/{ENCODED_KEY}",
    ]


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "http://localhost:9000"])
async def test_path_style_false_overrides_an_ip_or_localhost(tmp_path: Path, endpoint: str) -> None:
    urls = await _urls(tmp_path, endpoint, path_style=False)
    base = endpoint.replace("http://", f"http://{BUCKET}.")
    assert urls == [
        f"{base}/{ENCODED_KEY}?uploadId=id%2Bwith%2Fslash",
        f"{base}/?uploads&max-uploads=1000&encoding-type=url",
        f"{base}/{ENCODED_KEY}",
    ]


async def test_path_style_none_is_the_default(tmp_path: Path) -> None:
    assert await _urls(tmp_path / "a", "http://127.0.0.1:9000") == await _urls(
        tmp_path / "b", "http://127.0.0.1:9000", path_style=True
    )
    domain = "https://oss-cn-hangzhou.aliyuncs.com"
    assert await _urls(tmp_path / "c", domain) == await _urls(
        tmp_path / "d", domain, path_style=False
    )
