"""Objects the official SDKs uploaded (their own resumable uploaders, against the emulator)
download byte-exact with ``Bucket.download_file``, and equal what oss2's
``resumable_download`` gets."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import alibabacloud_oss_v2 as v2
import oss2
import pytest

import aiooss_resume as aoss
from aiooss_resume.testing import ThreadedOssServer

pytestmark = pytest.mark.sdk

KEY = "测试目录/下载 文件(1)+&=.bin"
BUCKET = "sdk-bucket"
PART = 100 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadedOssServer]:
    with ThreadedOssServer(root=tmp_path / "oss") as s:
        yield s
        assert s.stats.internal_errors == 0


def _download(server: ThreadedOssServer, dest: Path, routines: int) -> aoss.DownloadResult:
    ak, sk, token = server.credentials

    async def run() -> aoss.DownloadResult:
        async with aoss.Client(
            server.endpoint, credentials=aoss.Credentials(ak, sk, token), region=server.region
        ) as client:
            return await client.bucket(BUCKET).download_file(
                KEY, dest, PART, routines=routines, checkpoint=True
            )

    return asyncio.run(run())


def _oss2_bucket(server: ThreadedOssServer) -> Any:
    ak, sk, _ = server.credentials
    return oss2.Bucket(oss2.AuthV4(ak, sk), server.endpoint, BUCKET, region=server.region)


def test_an_object_uploaded_by_oss2_downloads_byte_exact(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    data = os.urandom(7 * PART + 11)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    bucket = _oss2_bucket(server)
    oss2.resumable_upload(
        bucket, KEY, str(src), multipart_threshold=PART, part_size=PART, num_threads=2,
        store=oss2.ResumableStore(root=str(tmp_path)),
    )  # fmt: skip
    ours = tmp_path / "ours.bin"
    result = _download(server, ours, routines=4)
    theirs = tmp_path / "theirs.bin"
    oss2.resumable_download(
        bucket, KEY, str(theirs), multiget_threshold=PART, part_size=PART, num_threads=2,
        store=oss2.ResumableDownloadStore(root=str(tmp_path)),
    )  # fmt: skip
    assert ours.read_bytes() == data == theirs.read_bytes()
    assert result.parts_downloaded == 8


def test_an_object_uploaded_by_the_v2_sdk_downloads_byte_exact(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    data = os.urandom(5 * PART + 3)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    ak, sk, _ = server.credentials
    cfg = v2.config.load_default()
    cfg.credentials_provider = v2.credentials.StaticCredentialsProvider(ak, sk)
    cfg.region = server.region
    cfg.endpoint = server.endpoint
    client = v2.Client(cfg)
    uploader = client.uploader(part_size=PART, parallel_num=3)
    uploader.upload_file(v2.PutObjectRequest(bucket=BUCKET, key=KEY), filepath=str(src))
    ours = tmp_path / "ours.bin"
    _download(server, ours, routines=8)
    assert ours.read_bytes() == data
