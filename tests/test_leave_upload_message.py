"""The warning that leaves another target's upload alone names an abort command the CLI
accepts (it used to give the upload id positionally; the CLI wants ``--upload-id ID``)."""

from __future__ import annotations

import logging
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

import aiooss_resume as oss
from aiooss_resume._cli import build_parser
from aiooss_resume.testing import Fault, ThreadedOssServer

pytestmark = pytest.mark.anyio

KIB = 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadedOssServer]:
    with ThreadedOssServer(root=tmp_path / "oss") as s:
        yield s


async def test_the_named_abort_command_parses(
    server: ThreadedOssServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ak, sk, token = server.credentials
    cp = tmp_path / "shared.cp"
    big, small = tmp_path / "big.bin", tmp_path / "small.bin"
    big.write_bytes(os.urandom(300 * KIB))
    small.write_bytes(os.urandom(10 * KIB))
    server.faults.add(
        Fault(operation="UploadPart", part_number=3, times=1, status=403, code="AccessDenied")
    )
    async with oss.Client(
        server.endpoint, credentials=oss.Credentials(ak, sk, token), region=server.region
    ) as client:
        bucket = client.bucket("bkt")
        with pytest.raises(oss.ServiceError):
            await bucket.upload_file("a.bin", big, 100 * KIB, checkpoint=cp)
        (upload,) = server.list_uploads("bkt")
        with caplog.at_level(logging.WARNING, logger="aiooss_resume"):
            # Another target, the same explicit checkpoint path: a.bin's upload is not ours.
            await bucket.upload_file("b.bin", small, 100 * KIB, checkpoint=cp)
    assert [u.upload_id for u in server.list_uploads("bkt")] == [upload.upload_id]
    message = next(r.getMessage() for r in caplog.records if "untouched" in r.getMessage())
    match = re.search(r"abort it with `([^`]+)`", message)
    assert match is not None, message
    argv = shlex.split(match.group(1))
    assert argv[:2] == ["aiooss-resume", "abort"]
    args = build_parser("aiooss-resume").parse_args(argv[1:])
    assert (args.target, args.upload_id) == ("oss://bkt/a.bin", upload.upload_id)
