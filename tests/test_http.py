"""The HTTP seam: what ``HttpRequest``/``HttpResponse`` show, and how the aiohttp transport maps
failures of a real socket (the emulator on 127.0.0.1) to ``TransportError``."""

from __future__ import annotations

import pytest

import aiooss_resume as oss
from aiooss_resume._http import HttpRequest, HttpResponse, MockTransport, redact_url

SIGNATURE = "9f2c4be1d0a7QXZsignatureQXZ3e5b8c"
TOKEN = "CAIS+STStokenQXZ/with+slash=and=equals0123"


def test_request_repr_hides_signature_token_and_body() -> None:
    request = HttpRequest(
        "PUT",
        "http://127.0.0.1:9000/b/k?partNumber=1&uploadId=U1",
        {
            "Authorization": f"OSS4-HMAC-SHA256 Credential=AKID/20240520/cn-hangzhou/oss/"
            f"aliyun_v4_request,Signature={SIGNATURE}",
            "x-oss-security-token": TOKEN,
            "security-token": TOKEN,
            "Cookie": f"session={TOKEN}",
            "x-oss-date": "20240520T083000Z",
        },
        b"part bytes " + TOKEN.encode(),
        32,
    )
    text = repr(request)
    assert SIGNATURE not in text
    assert TOKEN not in text
    assert "'Authorization': 'OSS4-HMAC-SHA256 <redacted>'" in text
    assert "'x-oss-security-token': '<redacted>'" in text
    assert "'x-oss-date': '20240520T083000Z'" in text  # what is not secret stays readable
    assert "partNumber=1&uploadId=U1" in text
    assert "body=<53 bytes>" in text
    assert str(request) == text
    # The object itself is untouched: only its repr hides things.
    assert request.headers["x-oss-security-token"] == TOKEN


def test_request_repr_of_v1_and_streamed_and_empty_requests() -> None:
    async def chunks() -> object:  # pragma: no cover - never called by repr
        raise AssertionError

    v1 = HttpRequest("GET", "http://h/b/k", {"authorization": f"OSS AKID:{SIGNATURE}"})
    assert "'authorization': 'OSS <redacted>'" in repr(v1)
    assert "body=None" in repr(v1)
    streamed = HttpRequest("PUT", "http://h/b/k", {}, chunks, 5)  # type: ignore[arg-type]
    assert "body=<streamed>, content_length=5" in repr(streamed)
    bare = HttpRequest("GET", "http://h/b/k", {"Authorization": SIGNATURE})
    assert SIGNATURE not in repr(bare)


def test_presigned_url_secrets_are_hidden() -> None:
    url = (
        f"https://b.oss-cn-hangzhou.aliyuncs.com/k?OSSAccessKeyId=AKID&Expires=1&"
        f"Signature={SIGNATURE}&security-token={TOKEN}&x-oss-signature={SIGNATURE}&"
        f"x-oss-security-token={TOKEN}&uploads"
    )
    shown = redact_url(url)
    assert SIGNATURE not in shown and TOKEN not in shown
    assert "OSSAccessKeyId=AKID&Expires=1&Signature=<redacted>&" in shown
    assert shown.endswith("x-oss-security-token=<redacted>&uploads")
    assert redact_url("http://h/b/k") == "http://h/b/k"


def test_response_repr_shows_the_body_length_only() -> None:
    body = f"<Error><StringToSign>x-oss-security-token:{TOKEN}</StringToSign></Error>".encode()
    response = HttpResponse(403, {"x-oss-request-id": "RID", "set-cookie": TOKEN}, body)
    text = repr(response)
    assert TOKEN not in text
    assert f"body=<{len(body)} bytes>" in text
    assert "'x-oss-request-id': 'RID'" in text


@pytest.mark.anyio
async def test_mock_transport_records_requests_whose_repr_is_safe() -> None:
    async def handler(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, {"etag": '"E"'})

    transport = MockTransport(handler)
    async with oss.Client(
        "http://127.0.0.1:9",
        credentials=oss.Credentials("AKID", "SecretQXZ0123456789", TOKEN),
        region="cn-hangzhou",
        transport=transport,
    ) as client:
        await client._abort("b-1", "k", "U1")
    (request,) = transport.requests
    assert request.headers["x-oss-security-token"] == TOKEN
    assert TOKEN not in repr(request)
    assert "SecretQXZ0123456789" not in repr(request)
