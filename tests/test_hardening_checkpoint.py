"""Checkpoint safety (issue 10 items 1, 2, 5, 8), against the emulator over real sockets."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import aiooss_resume as oss
from aiooss_resume._checkpoint import decode_checkpoint, encode_checkpoint
from aiooss_resume._errors import CheckpointError
from aiooss_resume.testing import Fault, OssServer

from .reliability_helpers import BUCKET, KIB, assert_object, make_client, make_file, open_upload_ids

pytestmark = pytest.mark.anyio

SIZE = 450 * KIB
PART = 100 * KIB


async def _interrupt(server: OssServer, src: Path, key: str) -> None:
    fault = server.faults.add(Fault(operation="UploadPart", part_number=4, status=403))
    async with make_client(server) as client:
        with pytest.raises(oss.ServiceError):
            await client.bucket(BUCKET).upload_file(key, src, PART, routines=1, checkpoint=True)
    fault.remove()


async def test_planted_checkpoint_naming_another_key_is_not_aborted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with OssServer(root=tmp_path / "server") as server:
        victim = tmp_path / "victim.bin"
        make_file(victim, SIZE, 1)
        await _interrupt(server, victim, "victim.bin")
        planted = decode_checkpoint((tmp_path / "victim.bin.cp").read_bytes())
        (live,) = open_upload_ids(server, "victim.bin")
        src = tmp_path / "src.bin"
        data = make_file(src, 10 * KIB, 2)  # fits in one request: the discard path
        (tmp_path / "src.bin.cp").write_bytes(encode_checkpoint(planted))
        caplog.set_level(logging.WARNING, "aiooss_resume")
        async with make_client(server) as client:
            await client.bucket(BUCKET).upload_file(
                "mine.bin", src, PART, checkpoint=tmp_path / "src.bin.cp"
            )
        assert_object(server, "mine.bin", data)
        assert open_upload_ids(server, "victim.bin") == {live}
        assert live in caplog.text


async def test_explicit_checkpoint_of_another_target_is_refused(tmp_path: Path) -> None:
    async with OssServer(root=tmp_path / "server") as server:
        src = tmp_path / "src.bin"
        make_file(src, SIZE, 3)
        await _interrupt(server, src, "a.bin")
        (live,) = open_upload_ids(server, "a.bin")
        before = len(server.requests)
        async with make_client(server) as client:
            with pytest.raises(CheckpointError, match=live):
                await client.bucket(BUCKET).upload_file(
                    "b.bin", src, PART, checkpoint=tmp_path / "src.bin.cp"
                )
        assert len(server.requests) == before
        assert open_upload_ids(server, "a.bin") == {live}


@pytest.mark.parametrize("link", ["src.bin.cp", "src.bin.cp.lock"])
async def test_planted_symlink_is_refused(tmp_path: Path, link: str) -> None:
    async with OssServer(root=tmp_path / "server") as server:
        src = tmp_path / "src.bin"
        make_file(src, SIZE, 4)
        target = tmp_path / "elsewhere" / "created-by-root"
        target.parent.mkdir()
        os.symlink(target, tmp_path / link)
        async with make_client(server) as client:
            with pytest.raises(CheckpointError, match="symbolic link"):
                await client.bucket(BUCKET).upload_file("k.bin", src, PART, checkpoint=True)
        assert not target.exists()
        assert not server.requests


async def test_one_file_two_targets_both_resume(tmp_path: Path) -> None:
    async with OssServer(root=tmp_path / "server") as server:
        src = tmp_path / "src.bin"
        data = make_file(src, SIZE, 5)
        await _interrupt(server, src, "a.bin")
        await _interrupt(server, src, "b.bin")
        (a_id,) = open_upload_ids(server, "a.bin")
        (b_id,) = open_upload_ids(server, "b.bin")
        async with make_client(server) as client:
            ra = await client.bucket(BUCKET).upload_file("a.bin", src, PART, checkpoint=True)
            rb = await client.bucket(BUCKET).upload_file("b.bin", src, PART, checkpoint=True)
        assert (ra.upload_id, rb.upload_id) == (a_id, b_id)
        assert ra.parts_resumed == 3 and rb.parts_resumed == 3
        assert_object(server, "a.bin", data)
        assert_object(server, "b.bin", data)
        assert not open_upload_ids(server)


_CHILD = """
import asyncio, sys
import aiooss_resume as oss
from aiooss_resume._errors import CheckpointError
import aiooss_resume._uploader, aiooss_resume._client, aiooss_resume._http, os, anyio
import anyio._backends._asyncio
# Everything is imported as root (the interpreter lives under /root); now drop privileges,
# so the mode-000 checkpoint is really unreadable.
os.setgid(65534)
os.setuid(65534)

async def main():
    endpoint, src, cp = sys.argv[1:4]
    client = oss.Client(endpoint, region="cn-hangzhou",
                        credentials=oss.Credentials(sys.argv[4], sys.argv[5]))
    async with client:
        try:
            await client.bucket(sys.argv[6]).upload_file("k.bin", src, 102400, checkpoint=cp)
        except CheckpointError as exc:
            print("CheckpointError", exc)
            return
    print("no error")

asyncio.run(main())
"""


@pytest.mark.timeout(60)
async def test_unreadable_checkpoint_is_a_checkpoint_error(tmp_path: Path) -> None:
    """Run as ``nobody`` (root reads mode 000 files): the check is meaningful as root too."""
    import sys
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root to drop privileges to nobody for a mode-000 checkpoint")
    work = Path(tempfile.mkdtemp(dir="/tmp"))
    os.chmod(work, 0o777)
    src = work / "src.bin"
    make_file(src, SIZE, 6)
    os.chmod(src, 0o644)
    cp = work / "src.bin.cp"
    cp.write_bytes(b"{}")
    os.chmod(cp, 0o000)
    async with OssServer(root=tmp_path / "server") as server:
        creds = server.credentials
        args = [sys.executable, "-c", _CHILD, server.endpoint, str(src), str(cp),
                creds.access_key_id, creds.access_key_secret, BUCKET]  # fmt: skip
        import anyio

        done = await anyio.run_process(args, check=False)
        out = done.stdout.decode() + done.stderr.decode()
        assert out.startswith("CheckpointError"), out
        assert not server.requests
