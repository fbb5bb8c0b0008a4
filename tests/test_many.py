"""upload_many / upload_dir against the bundled emulator over 127.0.0.1 (issue 11.2).

Each property is checked at the emulator: what it received (its request log), what it stores
(byte-exact objects), what uploads it still holds open.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from pathlib import Path

import oss2
import pytest
from aiohttp import web

import aiooss_resume as oss
from aiooss_resume._manifest import decode_manifest
from aiooss_resume.testing import Fault, FaultContext, OssServer

from .reliability_helpers import BUCKET, KIB, assert_object, make_client, make_file

pytestmark = pytest.mark.anyio

SENDS = ("PutObject", "UploadPart")


def _make_tree(
    root: Path, small: int, large: int, *, large_size: int = 350 * KIB
) -> dict[str, bytes]:
    """``small`` 4 KiB files and ``large`` multipart-sized ones; returns rel path -> bytes."""
    data: dict[str, bytes] = {}
    for i in range(small):
        rel = f"s/{i // 10}/f{i:03}.txt"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        data[rel] = make_file(root / rel, 4 * KIB, i)
    for i in range(large):
        rel = f"l/big{i}.bin"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        data[rel] = make_file(root / rel, large_size, 1000 + i)
    return data


def _assert_all_stored(server: OssServer, prefix: str, data: dict[str, bytes]) -> None:
    for rel, expected in data.items():
        assert_object(server, prefix + rel, expected)


def _sends(server: OssServer, start: int = 0) -> Counter[str | None]:
    """Successful PutObject/UploadPart requests per key since ``start``."""
    return Counter(
        r.key for r in list(server.requests)[start:] if r.operation in SENDS and r.status == 200
    )


class _Concurrency:
    """A fault hook counting requests in flight at the emulator (each held ``hold`` s)."""

    def __init__(self, hold: float = 0.02) -> None:
        self.hold = hold
        self.now = 0
        self.peak = 0
        self.keys: Counter[str | None] = Counter()
        self.peak_files = 0
        self.mixed = False  # requests of two different files were in flight together

    async def __call__(self, ctx: FaultContext) -> web.StreamResponse | None:
        if ctx.operation not in (*SENDS, "HeadObject"):
            return None
        self.now += 1
        self.keys[ctx.key] += 1
        self.peak = max(self.peak, self.now)
        live = [k for k, n in self.keys.items() if n > 0]
        self.peak_files = max(self.peak_files, len(live))
        self.mixed = self.mixed or len(live) > 1
        try:
            await asyncio.sleep(self.hold)
        finally:
            self.now -= 1
            self.keys[ctx.key] -= 1
        return None


async def test_one_budget_across_files_and_files_in_flight(tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = _make_tree(src, small=24, large=3)
    async with OssServer(root=tmp_path / "server", buckets=[BUCKET]) as server:
        probe = _Concurrency()
        server.faults.add(Fault(times=None, hook=probe))
        async with make_client(server) as client:
            result = await client.bucket(BUCKET).upload_dir(
                "b/", src, 100 * KIB, routines=3, files_in_flight=5
            )
        assert result.ok and result.count("uploaded") == len(data)
        _assert_all_stored(server, "b/", data)
        # Every request of every file shares one budget of 3; parts of the large files and
        # the small files' PutObjects interleave.
        assert 2 <= probe.peak <= 3, probe.peak
        assert probe.mixed
        assert probe.peak_files <= 3

        probe2 = _Concurrency()
        server.faults.clear()
        server.faults.add(Fault(times=None, hook=probe2))
        async with make_client(server) as client:
            result = await client.bucket(BUCKET).upload_dir(
                "c/", src, 100 * KIB, routines=16, files_in_flight=2
            )
        assert result.ok
        # With a large budget, files_in_flight is the bound that holds.
        assert probe2.peak_files <= 2, probe2.peak_files
        assert probe2.peak > 2  # the large files' parts still use the budget


async def test_upload_many_pairs_events_and_bad_items(tmp_path: Path) -> None:
    files = [tmp_path / f"f{i}" for i in range(4)]
    blobs = [make_file(f, 1000 * (i + 1), i) for i, f in enumerate(files)]
    events: list[oss.ManyEvent] = []
    async with OssServer(root=tmp_path / "server", buckets=[BUCKET]) as server:
        async with make_client(server) as client:
            pairs = [(f"k/{i}", f) for i, f in enumerate(files)]
            pairs += [("k/0", files[1]), ("k/gone", tmp_path / "absent"), ("/bad", files[0])]
            result = await client.bucket(BUCKET).upload_many(
                pairs, routines=2, on_progress=events.append
            )
        for i, blob in enumerate(blobs):
            assert_object(server, f"k/{i}", blob)
        status = {(o.key, o.status) for o in result.outcomes}
        assert status == {
            ("k/0", "uploaded"),
            ("k/1", "uploaded"),
            ("k/2", "uploaded"),
            ("k/3", "uploaded"),
            ("k/0", "failed"),  # the same key twice: the second is refused, not raced
            ("k/gone", "missing"),
            ("/bad", "failed"),
        }
        assert not result.ok and len(result.failed) == 2
        assert all(isinstance(o.error, ValueError) for o in result.failed)
        assert result.bytes_uploaded == sum(map(len, blobs))
        finished = [e for e in events if isinstance(e, oss.FileFinished)]
        assert len(finished) == len(pairs)
        last = [e for e in events if isinstance(e, oss.ManyProgress)][-1]
        assert (last.files_done, last.files_total, last.files_failed) == (7, 7, 2)
        assert any(isinstance(e, oss.UploadCompleted) for e in events)  # per-file events too


async def test_bad_arguments_fail_before_any_request(tmp_path: Path) -> None:
    async with OssServer(root=tmp_path / "server", buckets=[BUCKET]) as server:
        async with make_client(server) as client:
            bucket = client.bucket(BUCKET)
            with pytest.raises(ValueError, match="routines"):
                await bucket.upload_dir("p", tmp_path, routines=0)
            with pytest.raises(ValueError, match="files_in_flight"):
                await bucket.upload_dir("p", tmp_path, files_in_flight=0)
            with pytest.raises(TypeError, match="files_in_flight"):
                await bucket.upload_dir("p", tmp_path, files_in_flight="2")  # type: ignore[arg-type]
            with pytest.raises(FileNotFoundError):
                await bucket.upload_dir("p", tmp_path / "absent")
            with pytest.raises(ValueError, match="glob"):
                await bucket.upload_dir("p", tmp_path, include=["[x"])
            with pytest.raises(ValueError, match="normalize"):
                await bucket.upload_dir("p", tmp_path, normalize="NFKC")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="key"):
                await bucket.upload_dir("/p", tmp_path)
            with pytest.raises(TypeError, match="pairs"):
                await bucket.upload_many("not pairs")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="pairs"):
                await bucket.upload_many([("k",)])  # type: ignore[list-item]
        assert list(server.requests) == []


async def test_rerun_sends_only_what_is_missing_and_changed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = _make_tree(src, small=12, large=2)
    cp = tmp_path / "cp"
    async with OssServer(root=tmp_path / "server", buckets=[BUCKET]) as server:
        # Run 1: two files fail for good (403 is not retried), the rest are recorded.
        server.faults.add(Fault(operation="PutObject", nth=3, times=1, status=403))
        server.faults.add(Fault(operation="UploadPart", nth=2, times=None, status=403))
        async with make_client(server) as client:
            first = await client.bucket(BUCKET).upload_dir(
                "r/", src, 100 * KIB, routines=4, checkpoint_dir=cp
            )
        failed = {o.key for o in first.failed}
        assert len(failed) == 3 and not first.ok  # one small file and the two large ones
        manifest = decode_manifest((cp / "manifest.json").read_bytes())
        assert len(manifest.files) == len(data) - 3
        server.faults.clear()
        # Between the runs: one done file changes, one is deleted.
        done = sorted(rel for rel in data if "r/" + rel not in failed)
        changed, deleted = done[0], done[-1]
        data[changed] = make_file(src / changed, 4 * KIB, 777)
        os.utime(src / changed, ns=(1, 1))  # a new mtime even on a coarse clock
        (src / deleted).unlink()
        del data[deleted]
        start = len(server.requests)
        async with make_client(server) as client:
            second = await client.bucket(BUCKET).upload_dir(
                "r/", src, 100 * KIB, routines=4, checkpoint_dir=cp
            )
        assert second.ok, second.failed
        _assert_all_stored(server, "r/", data)
        sent = _sends(server, start)
        # Only the failed files and the changed one were sent; each small one once.
        assert {k for k in sent if k is not None} == failed | {"r/" + changed}
        assert all(n == 1 for k, n in sent.items() if k is not None and "big" not in k)
        by_key = {o.key: o.status for o in second.outcomes}
        assert by_key["r/" + deleted] == "missing"
        assert by_key["r/" + changed] == "uploaded"
        assert second.count("unchanged") == len(data) - 4
        # Success: the checkpoint directory is gone, no upload left open.
        assert not cp.exists()
        assert server.list_uploads(BUCKET) == []


async def test_sync_skips_objects_that_match(tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = _make_tree(src, small=6, large=1)
    async with OssServer(root=tmp_path / "server", buckets=[BUCKET]) as server:
        creds = server.credentials
        auth = oss2.AuthV4(creds.access_key_id, creds.access_key_secret)
        sdk = oss2.Bucket(auth, server.endpoint, BUCKET, region=server.region)
        # Upload with the official SDK first: four identical, one different, one absent.
        for rel in ["s/0/f000.txt", "s/0/f001.txt", "s/0/f002.txt", "l/big0.bin"]:
            await asyncio.to_thread(sdk.put_object_from_file, "y/" + rel, str(src / rel))
        await asyncio.to_thread(sdk.put_object, "y/s/0/f003.txt", b"other bytes")
        start = len(server.requests)
        async with make_client(server) as client:
            result = await client.bucket(BUCKET).upload_dir("y", src, 100 * KIB, sync=True)
        assert result.ok
        _assert_all_stored(server, "y/", data)
        sent = _sends(server, start)
        assert set(sent) == {"y/s/0/f003.txt", "y/s/0/f004.txt", "y/s/0/f005.txt"}
        assert result.count("unchanged") == 4 and result.count("uploaded") == 3
        assert result.bytes_uploaded == 3 * 4 * KIB


@pytest.mark.parametrize("fail_fast", [False, True])
async def test_fail_fast_or_not(tmp_path: Path, fail_fast: bool) -> None:
    src = tmp_path / "src"
    data = _make_tree(src, small=30, large=2)
    async with OssServer(root=tmp_path / "server", buckets=[BUCKET]) as server:
        server.faults.add(Fault(operation="PutObject", nth=2, status=403))
        server.faults.add(Fault(operation="PutObject", delay=0.01, times=None))
        async with make_client(server) as client:
            result = await client.bucket(BUCKET).upload_dir(
                "f/", src, 100 * KIB, routines=3, files_in_flight=4, fail_fast=fail_fast
            )
        assert len(result.failed) == 1
        assert isinstance(result.failed[0].error, oss.ServiceError)
        assert result.failed[0].error.status == 403
        if fail_fast:
            assert result.stopped and not result.ok
            assert len(result.outcomes) < len(data)
        else:
            assert not result.stopped
            assert result.count("uploaded") == len(data) - 1
        # Without a checkpoint directory, nothing resumable is kept: no upload left open.
        assert server.list_uploads(BUCKET) == []


async def test_chaos_faults_every_object_exact(tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = _make_tree(src, small=40, large=3)
    async with OssServer(root=tmp_path / "server", buckets=[BUCKET]) as server:
        server.faults.chaos(
            0.15,
            seed=11,
            kinds=("error", "slowdown", "reset", "wrong_crc", "drop_response"),
            operations=SENDS,
        )
        async with make_client(server, max_attempts=8) as client:
            result = await client.bucket(BUCKET).upload_dir(
                "x/", src, 100 * KIB, routines=4, checkpoint_dir=tmp_path / "cp"
            )
        assert result.ok, [(o.key, o.reason) for o in result.failed]
        faulted = sum(1 for r in server.requests if r.faults)
        assert faulted > 5  # the chaos really happened
        _assert_all_stored(server, "x/", data)
        assert server.list_uploads(BUCKET) == []
        assert not (tmp_path / "cp").exists()


async def test_cancel_is_prompt_and_resumable(tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = _make_tree(src, small=30, large=3, large_size=600 * KIB)
    cp = tmp_path / "cp"
    async with OssServer(root=tmp_path / "server", buckets=[BUCKET]) as server:
        server.faults.add(Fault(operation="UploadPart", delay=0.05, times=None))
        server.faults.add(Fault(operation="PutObject", delay=0.05, times=None))
        async with make_client(server) as client:
            task = asyncio.create_task(
                client.bucket(BUCKET).upload_dir(
                    "z/", src, 100 * KIB, routines=4, checkpoint_dir=cp
                )
            )
            while sum(1 for r in server.requests if r.status == 200) < 8:
                await asyncio.sleep(0.01)
            task.cancel()
            loop = asyncio.get_running_loop()
            cancelled_at = loop.time()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert loop.time() - cancelled_at < 3.0  # cleanup is bounded (FLUSH_TIMEOUT)
        # The manifest decodes; every open upload is named by a kept per-file checkpoint.
        decode_manifest((cp / "manifest.json").read_bytes())
        named = set()
        for path in (cp / "files").glob("*.cp"):
            named.add(oss._checkpoint.decode_checkpoint(path.read_bytes()).upload_id)  # type: ignore[attr-defined]
        assert {u.upload_id for u in server.list_uploads(BUCKET)} <= named
        server.faults.clear()
        async with make_client(server) as client:
            result = await client.bucket(BUCKET).upload_dir(
                "z/", src, 100 * KIB, routines=4, checkpoint_dir=cp
            )
        assert result.ok
        _assert_all_stored(server, "z/", data)
        assert server.list_uploads(BUCKET) == []
        assert not cp.exists()


async def test_stale_temporaries_are_removed_and_leftovers_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "src"
    data = _make_tree(src, small=3, large=0)
    cp = tmp_path / "cp"
    (cp / "files").mkdir(parents=True)
    # What a kill -9 inside write_atomic and inside a file's upload leaves behind.
    (cp / ".manifest.json.4242.0badf00d.tmp").write_bytes(b"half a manif")
    (cp / "files" / ".0123abcd.cp.4242.deadbeef.tmp").write_bytes(b"half")
    (cp / "files" / "0123abcd.cp.lock").write_bytes(b"")
    async with OssServer(root=tmp_path / "server", buckets=[BUCKET]) as server:
        async with make_client(server) as client:
            result = await client.bucket(BUCKET).upload_dir("t/", src, checkpoint_dir=cp)
        assert result.ok
        _assert_all_stored(server, "t/", data)
        assert not cp.exists()
        # A file that is not ours is left alone, and saying so is not optional.
        (cp / "files").mkdir(parents=True)
        (cp / "files" / "notes.txt").write_bytes(b"mine")
        with caplog.at_level(logging.WARNING, logger="aiooss_resume"):
            async with make_client(server) as client:
                again = await client.bucket(BUCKET).upload_dir("t/", src, checkpoint_dir=cp)
        assert again.ok
        assert (cp / "files" / "notes.txt").read_bytes() == b"mine"
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(str(cp / "files") in m for m in warned), warned


async def test_sync_uploads_when_head_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = _make_tree(src, small=4, large=0)
    async with OssServer(root=tmp_path / "server", buckets=[BUCKET]) as server:
        async with make_client(server) as client:
            assert (await client.bucket(BUCKET).upload_dir("h", src)).ok
            # A key allowed to PUT but not to HEAD: the file is sent, not failed.
            server.faults.add(Fault(operation="HeadObject", status=403, code="AccessDenied"))
            start = len(server.requests)
            result = await client.bucket(BUCKET).upload_dir("h", src, sync=True)
        assert result.ok
        assert (result.count("uploaded"), result.count("unchanged")) == (1, 3)
        assert sum(_sends(server, start).values()) == 1
        _assert_all_stored(server, "h/", data)


async def test_keep_outcomes_false_keeps_only_the_problems(tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = _make_tree(src, small=20, large=0)
    os.symlink(src / "s", src / "link")
    finished: list[oss.FileFinished] = []

    def hook(event: oss.ManyEvent) -> None:
        if isinstance(event, oss.FileFinished):
            finished.append(event)

    async with OssServer(root=tmp_path / "server", buckets=[BUCKET]) as server:
        server.faults.add(Fault(operation="PutObject", nth=5, status=403))
        async with make_client(server) as client:
            result = await client.bucket(BUCKET).upload_dir(
                "o/", src, keep_outcomes=False, on_progress=hook
            )
    assert (result.count("uploaded"), result.count("failed"), result.count("skipped")) == (
        len(data) - 1,
        1,
        1,
    )
    assert sorted(o.status for o in result.outcomes) == ["failed", "skipped"]
    assert len(finished) == len(data) + 1  # every file was still reported, as it finished


async def test_damaged_manifest_starts_over_without_resending_and_foreign_one_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "src"
    data = _make_tree(src, small=8, large=0)
    cp = tmp_path / "cp"
    async with OssServer(root=tmp_path / "server", buckets=[BUCKET]) as server:
        server.faults.add(Fault(operation="PutObject", nth=4, status=403))
        async with make_client(server) as client:
            first = await client.bucket(BUCKET).upload_dir("m/", src, checkpoint_dir=cp)
            assert len(first.failed) == 1
            manifest = cp / "manifest.json"
            manifest.write_bytes(manifest.read_bytes()[:-20])  # torn: the checksum fails
            start = len(server.requests)
            with caplog.at_level(logging.WARNING, logger="aiooss_resume"):
                second = await client.bucket(BUCKET).upload_dir("m/", src, checkpoint_dir=cp)
            assert second.ok
            assert any("damaged" in r.getMessage() for r in caplog.records)
            # Nothing stored is sent again: HEAD recognises the 7 objects run 1 stored.
            assert sum(_sends(server, start).values()) == 1
            _assert_all_stored(server, "m/", data)
            # A checkpoint directory holding another transfer's manifest is refused.
            server.faults.add(Fault(operation="PutObject", nth=1, status=403))
            await client.bucket(BUCKET).upload_dir("other/", src, checkpoint_dir=cp)
            with pytest.raises(oss.CheckpointError, match="another transfer"):
                await client.bucket(BUCKET).upload_dir("m2/", src, checkpoint_dir=cp)
