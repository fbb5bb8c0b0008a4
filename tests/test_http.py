"""The HTTP seam: what ``HttpRequest``/``HttpResponse`` show, and how the aiohttp transport maps
failures of a real socket (the emulator on 127.0.0.1) to ``TransportError``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

import aiooss_resume as oss
from aiooss_resume._http import (
    AiohttpTransport,
    HttpRequest,
    HttpResponse,
    MockTransport,
    redact_url,
)
from aiooss_resume._retry import is_retryable
from aiooss_resume._signing import sign_request
from aiooss_resume.testing import Fault, OssServer

BUCKET = "http-test"

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


# ---------------------------------------------------------------- the aiohttp transport


@pytest.mark.anyio
async def test_truncated_response_is_a_retryable_transport_error(tmp_path: Path) -> None:
    async with OssServer(root=tmp_path / "oss") as server:
        ak, sk, _ = server.credentials
        server.faults.add(Fault(operation="PutObject", truncate_response=True))
        transport = AiohttpTransport()
        try:
            url = f"{server.endpoint}/{BUCKET}/k"
            headers = sign_request(
                method="PUT",
                bucket=BUCKET,
                key="k",
                query=[],
                headers={},
                access_key_id=ak,
                access_key_secret=sk,
                security_token=None,
                version="v4",
                region=server.region,
                now=datetime.now(UTC),
            )
            with pytest.raises(oss.TransportError) as info:
                await transport.send(HttpRequest("PUT", url, headers, b"data"))
        finally:
            await transport.aclose()
        message = str(info.value)
        assert (
            message
            == f"PUT {url}: response truncated: the connection closed before the whole body arrived"
        )
        assert isinstance(info.value.__cause__, aiohttp.ClientPayloadError)
        assert is_retryable(info.value)
        assert server.requests[-1].code == "truncate_response"
        assert server.stats.internal_errors == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "operation", ["UploadPart", "InitiateMultipartUpload", "CompleteMultipartUpload"]
)
async def test_client_retries_a_truncated_answer(tmp_path: Path, operation: str) -> None:
    src = tmp_path / "src.bin"
    data = bytes(range(256)) * 1200  # 300 KiB: three parts
    src.write_bytes(data)
    async with OssServer(root=tmp_path / "oss") as server:
        ak, sk, _ = server.credentials
        handle = server.faults.add(Fault(operation=operation, truncate_response=True))
        retried: list[oss.PartRetried] = []
        async with oss.Client(
            server.endpoint,
            credentials=oss.Credentials(ak, sk),
            region=server.region,
            retry=oss.RetryPolicy(max_attempts=3, base_delay=0.0),
        ) as client:

            def on_progress(event: oss.ProgressEvent) -> None:
                if isinstance(event, oss.PartRetried):
                    retried.append(event)

            result = await client.bucket(BUCKET).upload_file(
                "k.bin", src, 100 * 1024, on_progress=on_progress
            )
        assert handle.fired == 1
        assert [e.error for e in retried if "response truncated" in e.error], retried
        assert result.size == len(data)
        assert server.read_object(BUCKET, "k.bin") == data
        assert [r.code for r in server.requests if r.operation == operation].count(
            "truncate_response"
        ) == 1
        assert server.stats.internal_errors == 0


@pytest.mark.anyio
async def test_mock_transport_is_exported_from_testing_as_documented() -> None:
    from aiooss_resume import testing

    assert testing.MockTransport is MockTransport
    assert "MockTransport" in testing.__all__
    assert testing.__all__ == sorted(testing.__all__, key=lambda n: (not n.isupper(), n))

    async def handler(request: oss.HttpRequest) -> oss.HttpResponse:
        return oss.HttpResponse(204, {"x-oss-request-id": "TEST"})

    transport = testing.MockTransport(handler)
    async with oss.Client(
        "http://127.0.0.1:9000",
        credentials=oss.Credentials("AK", "SK"),
        region="cn-hangzhou",
        transport=transport,
    ) as client:
        await client.bucket("my-bucket").abort_upload("key", "UPLOAD_ID")
    assert transport.requests[0].url == "http://127.0.0.1:9000/my-bucket/key?uploadId=UPLOAD_ID"
