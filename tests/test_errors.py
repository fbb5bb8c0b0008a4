"""The exception tree: its shape, ServiceError's attributes, pickling, and secrets kept out.

The hierarchy is the one drawn in ``_errors``' docstring and ../shared/design/architecture.md.
Against the emulator: a body-less HEAD error (``x-oss-err`` header) becomes a ServiceError
through the client, and an STS upload with a wrong secret fails without the secret or the
token showing up in logs, ``str``, ``repr`` or a formatted traceback, although the server
quotes the token back in its string to sign.
"""

from __future__ import annotations

import logging
import pickle
import traceback
from pathlib import Path

import pytest

import aiooss_resume as oss
from aiooss_resume._errors import redact_secrets
from aiooss_resume.testing import Fault, OssServer

BUCKET = "errors-test"
TOKEN = "CAIS+STStokenQXZ/with+slash=and=equals0123"
WRONG_SECRET = "WrongSecretQXZ0123456789abcdefghijklmnop"

# ---------------------------------------------------------------- the tree


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (oss.ServiceError, oss.OssError),
        (oss.NoSuchUploadError, oss.ServiceError),
        (oss.TransportError, oss.OssError),
        (oss.ProtocolError, oss.OssError),
        (oss.IntegrityError, oss.OssError),
        (oss.CheckpointError, oss.OssError),
        (oss.FileChangedError, oss.OssError),
        (oss.CredentialsError, oss.OssError),
    ],
)
def test_hierarchy(cls: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(cls, parent)
    assert cls.__mro__[1] is parent, "a direct child, as drawn in architecture.md"
    assert issubclass(cls, oss.OssError)
    assert issubclass(oss.OssError, Exception)
    assert not issubclass(oss.OssError, (OSError, ValueError))


def test_only_the_branch_points_can_be_subclassed() -> None:
    leaves = [
        oss.NoSuchUploadError,
        oss.TransportError,
        oss.ProtocolError,
        oss.IntegrityError,
        oss.CheckpointError,
        oss.FileChangedError,
        oss.CredentialsError,
    ]
    assert all(getattr(cls, "__final__", False) for cls in leaves)
    assert not getattr(oss.ServiceError, "__final__", False)


# ---------------------------------------------------------------- ServiceError


def test_service_error_attributes_and_str() -> None:
    err = oss.ServiceError(
        503,
        "SlowDown",
        "Please reduce your request rate.",
        "5C3D9175B6FC201293AD4890",
        ec="0000-00000503",
        host_id="b.oss-cn-hangzhou.aliyuncs.com",
        details={"Extra": "x"},
        server_date="Mon, 20 May 2024 08:30:00 GMT",
    )
    assert (err.status, err.code, err.message, err.request_id, err.ec) == (
        503,
        "SlowDown",
        "Please reduce your request rate.",
        "5C3D9175B6FC201293AD4890",
        "0000-00000503",
    )
    assert err.host_id == "b.oss-cn-hangzhou.aliyuncs.com"
    assert err.details == {"Extra": "x"}
    assert err.server_date == "Mon, 20 May 2024 08:30:00 GMT"
    assert str(err) == (
        "OSS error 503 SlowDown: Please reduce your request rate. "
        "(request id 5C3D9175B6FC201293AD4890) [ec 0000-00000503]"
    )


def test_service_error_without_a_document() -> None:
    err = oss.ServiceError(502, "")
    assert str(err) == "OSS error 502 (no code)"
    assert (err.message, err.request_id, err.ec, err.host_id, err.server_date) == ("",) * 5
    assert err.details == {}


def test_details_are_copied() -> None:
    details = {"A": "1"}
    err = oss.ServiceError(400, "InvalidArgument", details=details)
    details["A"] = "2"
    assert err.details == {"A": "1"}


@pytest.mark.parametrize(
    "err",
    [
        oss.ServiceError(
            403,
            "AccessDenied",
            "no",
            "RID",
            ec="0003-00000001",
            host_id="h",
            details={"K": "v"},
            server_date="Mon, 20 May 2024 08:30:00 GMT",
        ),
        oss.NoSuchUploadError(404, "NoSuchUpload", "gone", "RID2", details={"UploadId": "U"}),
        oss.IntegrityError("part 3 CRC mismatch", expected=1, actual=2),
        oss.IntegrityError("object CRC missing", expected=7, actual=None),
        oss.TransportError("PUT http://h/b/k: reset"),
        oss.ProtocolError("bad XML"),
        oss.CheckpointError("locked"),
        oss.FileChangedError("changed"),
        oss.CredentialsError("set OSS_ACCESS_KEY_ID"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_pickle_round_trip_keeps_type_attributes_and_notes(err: oss.OssError) -> None:
    err.add_note("(gave up after 3 attempts)")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err)
    assert str(copy) == str(err)
    assert copy.__notes__ == ["(gave up after 3 attempts)"]
    for name in (
        "status",
        "code",
        "message",
        "request_id",
        "ec",
        "host_id",
        "details",
        "server_date",
        "expected",
        "actual",
    ):
        assert getattr(copy, name, None) == getattr(err, name, None), name


# ---------------------------------------------------------------- redaction (pure)


def test_redact_secrets_in_every_form_oss_quotes_it() -> None:
    v1 = f"PUT\n\n\nMon, 20 May 2024 08:30:00 GMT\nx-oss-security-token:{TOKEN}\n/b/k"
    assert TOKEN not in redact_secrets(v1)
    assert "x-oss-security-token:<redacted>\n/b/k" in redact_secrets(v1)
    crlf = f"x-oss-date:20240520T083000Z\r\nX-OSS-Security-Token: {TOKEN}\r\nnext"
    assert (
        redact_secrets(crlf)
        == "x-oss-date:20240520T083000Z\r\nX-OSS-Security-Token:<redacted>\r\nnext"
    )
    presigned = f"/b/k?security-token={TOKEN}&uploads"
    assert redact_secrets(presigned) == "/b/k?security-token=<redacted>&uploads"
    v4_query = f"uploads=\nx-oss-security-token={TOKEN}\n"
    assert TOKEN not in redact_secrets(v4_query)
    hex_bytes = " ".join(f"{b:02x}" for b in v1.encode())
    cleaned = redact_secrets(hex_bytes)
    assert bytes.fromhex(cleaned).decode() == redact_secrets(v1)
    assert TOKEN.encode().hex() not in cleaned.replace(" ", "")
    for harmless in ("", "ab", "ab cd", "PUT\n/b/k", "x-oss-meta-token:1"):
        assert redact_secrets(harmless) == harmless


def test_service_error_redacts_details_and_message() -> None:
    v1 = f"GET\n\n\nMon, 20 May 2024 08:30:00 GMT\nx-oss-security-token:{TOKEN}\n/b/k"
    err = oss.ServiceError(
        403,
        "SignatureDoesNotMatch",
        f"signed /b/k?security-token={TOKEN}",
        details={
            "StringToSign": v1,
            "StringToSignBytes": " ".join(f"{b:02x}" for b in v1.encode()),
            "CanonicalRequest": f"GET\n/b/k\n\nx-oss-security-token:{TOKEN}\n\nhost\nUNSIGNED",
            "OSSAccessKeyId": "AKID",
        },
    )
    assert err.message == "signed /b/k?security-token=<redacted>"
    assert err.details["StringToSign"].endswith("x-oss-security-token:<redacted>\n/b/k")
    assert bytes.fromhex(err.details["StringToSignBytes"]).decode() == err.details["StringToSign"]
    assert "x-oss-security-token:<redacted>\n" in err.details["CanonicalRequest"]
    assert err.details["OSSAccessKeyId"] == "AKID"  # an id, not a secret
    copy = pickle.loads(pickle.dumps(err))
    for text in (str(err), repr(err), repr(err.details), repr(copy.details), copy.message):
        assert TOKEN not in text
        assert TOKEN.encode().hex() not in text.replace(" ", "")


# ---------------------------------------------------------------- against the emulator


@pytest.mark.anyio
async def test_x_oss_err_header_becomes_service_error_on_head(tmp_path: Path) -> None:
    async with OssServer(root=tmp_path / "oss") as server:
        ak, sk, _ = server.credentials
        handle = server.faults.add(Fault(operation="HeadObject", code="AccessDenied"))
        async with oss.Client(
            server.endpoint,
            credentials=oss.Credentials(ak, sk),
            region=server.region,
            retry=oss.RetryPolicy(max_attempts=1),
        ) as client:
            with pytest.raises(oss.ServiceError) as info:
                await client._head(BUCKET, "some/key")
            assert await client._head(BUCKET, "missing") is None  # 404 NoSuchKey
        assert handle.fired == 1
        head = server.requests[0]
        assert head.operation == "HeadObject" and head.status == 403
        err = info.value
        assert type(err) is oss.ServiceError
        assert (err.status, err.code) == (403, "AccessDenied")
        assert err.message == "You have no right to access this object."
        assert err.request_id == head.request_id
        assert err.ec == "0003-00000001"
        assert err.host_id.startswith(BUCKET + ".")
        assert err.server_date.endswith(" GMT")
        assert server.stats.internal_errors == 0


@pytest.mark.anyio
@pytest.mark.parametrize("version", ["v1", "v4"])
@pytest.mark.parametrize("size", [50 * 1024, 350 * 1024], ids=["put", "multipart"])
async def test_sts_upload_with_wrong_secret_leaks_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, version: str, size: int
) -> None:
    caplog.set_level(logging.DEBUG)
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x5a" * size)
    async with OssServer(root=tmp_path / "oss", security_token=TOKEN) as server:
        ak, right_secret, _ = server.credentials
        credentials = oss.Credentials(ak, WRONG_SECRET, TOKEN)
        async with oss.Client(
            server.endpoint,
            credentials=credentials,
            region=server.region,
            signature_version=version,  # type: ignore[arg-type]
            retry=oss.RetryPolicy(max_attempts=2, base_delay=0.0),
        ) as client:
            with pytest.raises(oss.ServiceError) as info:
                await client.bucket(BUCKET).upload_file(
                    "k.bin", src, 100 * 1024, routines=2, checkpoint=True
                )
            with pytest.raises(oss.ServiceError) as head_info:
                await client._head(BUCKET, "k.bin")  # the x-oss-err header route
        assert server.stats.internal_errors == 0
    for err in (info.value, head_info.value):
        assert err.code == "SignatureDoesNotMatch"
        # Not vacuous: the server did quote the signed text, token line included.
        quoted = err.details["StringToSign" if version == "v1" else "CanonicalRequest"]
        assert "x-oss-security-token:<redacted>" in quoted
        texts = [
            str(err),
            repr(err),
            "".join(traceback.format_exception(err)),
            repr(err.details),
            repr(credentials),
            str(credentials),
            caplog.text,
            *(repr(r.args) + r.getMessage() for r in caplog.records),
        ]
        for text in texts:
            for secret in (TOKEN, WRONG_SECRET, right_secret):
                assert secret not in text
                assert secret.encode().hex() not in text.replace(" ", "")
