"""Proof of faithfulness: the official SDKs, unchanged, against the emulator.

oss2 (V1 and V4) and alibabacloud-oss-v2 (V4) upload multi-part files under a unicode key
through their own resumable uploaders, read them back byte-identical, and see OSS's refusals
for a wrong secret and a skewed clock.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Imported, not importorskip'd: both are test dependencies, and a broken install must fail
# this module loudly rather than silently skip the proof that the official SDKs work.
import alibabacloud_oss_v2 as oss
import oss2
import pytest

from aiooss_resume._crc64 import crc64
from aiooss_resume.testing import Fault, ThreadedOssServer

pytestmark = pytest.mark.sdk

KEY = "测试目录/文件 名(1)+&=.bin"
BUCKET = "sdk-bucket"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadedOssServer]:
    with ThreadedOssServer(root=tmp_path / "oss") as s:
        yield s
        assert s.stats.internal_errors == 0


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(550 * 1024 + 123)
    path = tmp_path / "source.bin"
    path.write_bytes(data)
    return path, data


def _oss2_bucket(server: ThreadedOssServer, version: str, secret: str | None = None) -> Any:
    ak, sk, _ = server.credentials
    auth = oss2.Auth(ak, secret or sk) if version == "v1" else oss2.AuthV4(ak, secret or sk)
    return oss2.Bucket(auth, server.endpoint, BUCKET, region=server.region)


def _v2_client(server: ThreadedOssServer, secret: str | None = None) -> Any:
    ak, sk, _ = server.credentials
    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(ak, secret or sk)
    cfg.region = server.region
    cfg.endpoint = server.endpoint  # an IP endpoint: path style, plain http
    cfg.retry_max_attempts = 1
    return oss.Client(cfg)


@pytest.mark.parametrize("version", ["v1", "v4"])
def test_oss2_resumable_upload(
    server: ThreadedOssServer, source: tuple[Path, bytes], tmp_path: Path, version: str
) -> None:
    path, data = source
    bucket = _oss2_bucket(server, version)
    result = oss2.resumable_upload(
        bucket,
        KEY,
        str(path),
        part_size=102400,
        num_threads=2,
        multipart_threshold=102400,
        store=oss2.ResumableStore(root=str(tmp_path / "ckpt")),
    )
    assert result.status == 200
    assert result.etag.endswith("-6")
    assert bucket.get_object(KEY).read() == data
    assert server.read_object(BUCKET, KEY) == data
    head = bucket.head_object(KEY)
    assert head.headers["x-oss-object-type"] == "Multipart"
    assert head.headers["x-oss-hash-crc64ecma"] == str(crc64(data))
    assert server.stats.requests["UploadPart"] == 6
    assert server.stats.peak_in_flight["UploadPart"] <= 2


def test_oss2_resumes_after_a_failed_part(
    server: ThreadedOssServer, source: tuple[Path, bytes], tmp_path: Path
) -> None:
    """oss2 gives up on a 500 part; a second run resumes with ListParts and finishes."""
    path, data = source
    bucket = _oss2_bucket(server, "v4")
    server.faults.add(Fault(operation="UploadPart", part_number=4, status=500))
    store = oss2.ResumableStore(root=str(tmp_path / "ckpt"))
    kwargs: dict[str, Any] = {
        "part_size": 102400, "num_threads": 1, "multipart_threshold": 102400, "store": store
    }  # fmt: skip
    with pytest.raises(oss2.exceptions.ServerError):
        oss2.resumable_upload(bucket, KEY, str(path), **kwargs)
    uploaded_before = server.stats.requests["UploadPart"]
    oss2.resumable_upload(bucket, KEY, str(path), **kwargs)
    assert server.read_object(BUCKET, KEY) == data
    assert server.stats.requests["ListParts"] >= 1
    # only the missing parts were sent again
    assert server.stats.requests["UploadPart"] - uploaded_before < 6


def test_oss2_put_object_and_sts(tmp_path: Path) -> None:
    with ThreadedOssServer(root=tmp_path, security_token="CAIS+sts/token=") as server:
        ak, sk, token = server.credentials
        for auth in (oss2.StsAuth(ak, sk, token), oss2.StsAuth(ak, sk, token, auth_version="v4")):
            bucket = oss2.Bucket(auth, server.endpoint, BUCKET, region=server.region)
            bucket.put_object(KEY, b"small object")
            assert bucket.get_object(KEY).read() == b"small object"
        bucket = _oss2_bucket(server, "v4")  # no token
        with pytest.raises(oss2.exceptions.OssError) as info:
            bucket.put_object(KEY, b"x")
        assert info.value.code == "InvalidSecurityToken"


def test_v2_uploader(server: ThreadedOssServer, tmp_path: Path) -> None:
    data = os.urandom(700 * 1024 + 5)
    path = tmp_path / "v2.bin"
    path.write_bytes(data)
    client = _v2_client(server)
    uploader = client.uploader(part_size=100 * 1024, parallel_num=3)
    result = uploader.upload_file(oss.PutObjectRequest(bucket=BUCKET, key=KEY), filepath=str(path))
    assert result.status_code == 200
    assert result.hash_crc64 == str(crc64(data))
    got = client.get_object(oss.GetObjectRequest(bucket=BUCKET, key=KEY))
    assert got.body.read() == data
    assert server.read_object(BUCKET, KEY) == data
    assert server.stats.requests["UploadPart"] == 8
    assert 1 <= server.stats.peak_in_flight["UploadPart"] <= 3
    listed = [r for r in server.requests if r.operation == "UploadPart"]
    assert sorted(r.part_number or 0 for r in listed) == list(range(1, 9))


def test_v2_list_parts_paging_with_small_pages(tmp_path: Path) -> None:
    with ThreadedOssServer(root=tmp_path, list_parts_page_size=2) as server:
        client = _v2_client(server)
        init = client.initiate_multipart_upload(
            oss.InitiateMultipartUploadRequest(bucket=BUCKET, key=KEY)
        )
        for n in range(1, 6):
            client.upload_part(
                oss.UploadPartRequest(
                    bucket=BUCKET, key=KEY, upload_id=init.upload_id, part_number=n, body=b"p" * n
                )
            )
        paginator = client.list_parts_paginator()
        numbers = [
            part.part_number
            for page in paginator.iter_page(
                oss.ListPartsRequest(bucket=BUCKET, key=KEY, upload_id=init.upload_id)
            )
            for part in page.parts
        ]
        assert numbers == [1, 2, 3, 4, 5]


def test_wrong_secret_is_refused(server: ThreadedOssServer) -> None:
    for version in ("v1", "v4"):
        bucket = _oss2_bucket(server, version, secret="wrong-secret")
        with pytest.raises(oss2.exceptions.OssError) as info:
            bucket.put_object(KEY, b"x")
        assert (info.value.status, info.value.code) == (403, "SignatureDoesNotMatch")
    client = _v2_client(server, secret="wrong-secret")
    with pytest.raises(oss.exceptions.OperationError) as v2_info:
        client.put_object(oss.PutObjectRequest(bucket=BUCKET, key=KEY, body=b"x"))
    service_error = v2_info.value.unwrap()
    assert (service_error.status_code, service_error.code) == (403, "SignatureDoesNotMatch")


def test_skewed_clock_is_refused(server: ThreadedOssServer) -> None:
    server.clock = lambda: datetime.now(UTC) + timedelta(minutes=20)
    for version in ("v1", "v4"):
        with pytest.raises(oss2.exceptions.OssError) as info:
            _oss2_bucket(server, version).put_object(KEY, b"x")
        assert (info.value.status, info.value.code) == (403, "RequestTimeTooSkewed")
    client = _v2_client(server)
    with pytest.raises(oss.exceptions.OperationError) as v2_info:
        client.put_object(oss.PutObjectRequest(bucket=BUCKET, key=KEY, body=b"x"))
    assert v2_info.value.unwrap().code == "RequestTimeTooSkewed"
    assert server.stats.internal_errors == 0


def test_sdks_detect_a_wrong_crc(server: ThreadedOssServer) -> None:
    server.faults.add(Fault(operation="PutObject", wrong_crc=True, times=None))
    with pytest.raises(oss2.exceptions.InconsistentError):
        _oss2_bucket(server, "v4").put_object(KEY, b"some bytes")
    with pytest.raises(oss.exceptions.OperationError):
        _v2_client(server).put_object(oss.PutObjectRequest(bucket=BUCKET, key=KEY, body=b"x"))
