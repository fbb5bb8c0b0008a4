"""upload_many / upload_dir with ``options: ObjectOptions`` (issues 10.15 and 11).

Against the bundled emulator over 127.0.0.1: every stored object (small ones by PutObject,
a large one by multipart upload) carries the options, read back by the emulator and by oss2
as an independent client; options combine with raw ``headers=``; a header given both ways,
or options of the wrong type, fail before any request.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import oss2
import pytest
from aiohttp import web

import aiooss_resume as oss
from aiooss_resume.testing import Fault, FaultContext, OssServer

from .reliability_helpers import BUCKET, KIB, assert_object, make_client, make_file

pytestmark = pytest.mark.anyio

OPTIONS = oss.ObjectOptions(
    content_type="text/csv",
    cache_control="no-cache",
    storage_class="IA",
    metadata={"owner": "ops"},
    tagging={"team": "a b"},
    acl="public-read",
)


def _check_stored(server: OssServer, key: str) -> None:
    info = server.object_info(BUCKET, key)
    assert info is not None, key
    assert info.headers.get("content-type") == "text/csv", key
    assert info.headers.get("cache-control") == "no-cache", key
    assert info.headers.get("x-oss-storage-class") == "IA", key
    assert info.headers.get("x-oss-meta-owner") == "ops", key
    assert info.headers.get("x-oss-meta-raw") == "1", key  # the raw header rides along


async def test_upload_dir_applies_options_to_every_object(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    small = make_file(src / "a.txt", 4 * KIB, 1)
    nested = make_file(src / "d" / "b.bin", 5 * KIB, 2)
    large = make_file(src / "big.bin", 250 * KIB, 3)  # multipart at 100 KiB parts
    async with OssServer(root=tmp_path / "server", buckets=[BUCKET]) as server:
        async with make_client(server) as client:
            result = await client.bucket(BUCKET).upload_dir(
                "p", src, 100 * KIB, options=OPTIONS, headers={"x-oss-meta-raw": "1"}
            )
        assert result.ok and result.count("uploaded") == 3
        for key, data in (("p/a.txt", small), ("p/d/b.bin", nested), ("p/big.bin", large)):
            assert_object(server, key, data)
            _check_stored(server, key)
        assert any(r.operation == "InitiateMultipartUpload" for r in server.requests)
        # oss2 reads the same back (the emulator does not serve GetObjectAcl: ACL below).
        endpoint = server.endpoint
        creds = server.credentials
        bucket = oss2.Bucket(
            oss2.Auth(creds.access_key_id, creds.access_key_secret), endpoint, BUCKET
        )
        head = await asyncio.to_thread(bucket.head_object, "p/big.bin")
        assert head.headers["Content-Type"] == "text/csv"
        assert head.headers["x-oss-tagging-count"] == "1"
        stored = server.object_info(BUCKET, "p/a.txt")
        assert stored is not None and stored.headers.get("x-oss-object-acl") == "public-read"


async def test_upload_many_applies_options(tmp_path: Path) -> None:
    files = [tmp_path / f"f{i}" for i in range(3)]
    blobs = [make_file(f, 2000 * (i + 1), i) for i, f in enumerate(files)]
    async with OssServer(root=tmp_path / "server", buckets=[BUCKET]) as server:
        async with make_client(server) as client:
            result = await client.bucket(BUCKET).upload_many(
                [(f"k/{i}", f) for i, f in enumerate(files)],
                options=OPTIONS,
                headers={"x-oss-meta-raw": "1"},
            )
        assert result.ok and result.count("uploaded") == 3
        for i, blob in enumerate(blobs):
            assert_object(server, f"k/{i}", blob)
            _check_stored(server, f"k/{i}")


async def test_a_conflict_or_a_bad_type_fails_before_any_request(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_file(src / "a.txt", 1000, 1)
    async with OssServer(root=tmp_path / "server", buckets=[BUCKET]) as server:
        async with make_client(server) as client:
            bucket = client.bucket(BUCKET)
            with pytest.raises(ValueError, match="'Content-Type' is given twice"):
                await bucket.upload_dir(
                    "p/", src, options=OPTIONS, headers={"Content-Type": "text/plain"}
                )
            with pytest.raises(ValueError, match="'x-oss-meta-owner' is given twice"):
                await bucket.upload_many(
                    [("k", src / "a.txt")],
                    options=OPTIONS,
                    headers={"x-oss-meta-owner": "someone"},
                )
            with pytest.raises(TypeError, match="options must be an ObjectOptions"):
                await bucket.upload_many(
                    [("k", src / "a.txt")],
                    options={"acl": "private"},  # type: ignore[arg-type]
                )
        assert list(server.requests) == []
        assert server.object_info(BUCKET, "k") is None


async def test_a_rerun_may_change_the_traffic_limit_not_what_shapes_the_objects(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    blobs = {name: make_file(src / name, 3000, i) for i, name in enumerate(("a.txt", "b.txt"))}
    cp = tmp_path / "cp"
    limits: list[str | None] = []

    async def capture(ctx: FaultContext) -> web.StreamResponse | None:
        if ctx.operation == "PutObject":
            limits.append(ctx.request.headers.get("x-oss-traffic-limit"))
        return None

    first = oss.ObjectOptions(traffic_limit=819_200, content_type="text/plain")
    async with OssServer(root=tmp_path / "server", buckets=[BUCKET]) as server:
        server.faults.add(Fault(operation="PutObject", nth=2, times=None, status=403))
        async with make_client(server) as client:
            bucket = client.bucket(BUCKET)
            one = await bucket.upload_dir(
                "p/", src, checkpoint_dir=cp, options=first, routines=1, files_in_flight=1
            )
            assert one.count("uploaded") == 1 and one.count("failed") == 1
            assert cp.is_dir()  # kept for the rerun
            # Other options that shape the objects: another transfer, refused.
            other = oss.ObjectOptions(traffic_limit=819_200, content_type="text/csv")
            with pytest.raises(oss.CheckpointError, match="another transfer"):
                await bucket.upload_dir("p/", src, checkpoint_dir=cp, options=other)
            # Another traffic limit: the same transfer, resumed.
            server.faults.clear()
            server.faults.add(Fault(times=None, hook=capture))
            again = oss.ObjectOptions(traffic_limit=1_000_000, content_type="text/plain")
            two = await bucket.upload_dir("p/", src, checkpoint_dir=cp, options=again)
        assert two.ok and two.count("unchanged") == 1 and two.count("uploaded") == 1
        assert limits == ["1000000"]  # only the file that had failed was sent, throttled anew
        assert not cp.exists()
        for name, blob in blobs.items():
            assert_object(server, "p/" + name, blob)
