"""Checkpoint corruption fuzzing (issue 6, reliability suite; issue 4 "damaged checkpoint").

A real run fails for good on part 7 and leaves a checkpoint naming an open upload ``U``
with some parts. The checkpoint is then damaged (seeded random: truncations, bit flips,
overwritten ranges, wrong versions or formats, garbage, empty) or replaced by a valid one
that lies (another file, another key, another endpoint, another upload, bogus parts), and
the same upload is run again. Asserted every time:

* never a crash: the run succeeds, or fails with a documented, clear error;
* never a wrong object: the object is byte-identical (CRC-64 and full compare);
* a checkpoint that does not decode means a full re-upload (nothing resumed, a new upload
  id), and ``U`` is aborted whenever its id can still be read from the damaged file;
* no unfinished upload is left, except ``U`` when the damage made its id unreadable.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import aiooss_resume as oss
from aiooss_resume import _uploader
from aiooss_resume._checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    decode_checkpoint,
    encode_checkpoint,
    peek_source_path,
    peek_upload_target,
)
from aiooss_resume._errors import CheckpointError
from aiooss_resume.testing import Fault, OssServer

from .reliability_helpers import (
    BUCKET,
    KIB,
    WriteTracker,
    assert_checkpoint_gone,
    assert_object,
    make_client,
    make_file,
    open_upload_ids,
    part_records,
    read_checkpoint,
    wait_until,
)

pytestmark = pytest.mark.anyio

SIZE = 1024 * KIB + 50 * KIB  # 11 parts of 100 KiB
PART = 100 * KIB
PARTS = 11


@pytest.fixture(autouse=True)
def tracker(monkeypatch: pytest.MonkeyPatch) -> WriteTracker:
    return WriteTracker().install(monkeypatch)


async def _interrupted(server: OssServer, src: Path, key: str) -> Checkpoint:
    """A run that fails for good on part 7, leaving a checkpoint and an open upload."""
    tracker = _uploader._encode_and_write
    fault = server.faults.add(Fault(operation="UploadPart", part_number=7, status=403))
    async with make_client(server) as client:
        with pytest.raises(oss.ServiceError):
            await client.bucket(BUCKET).upload_file(key, src, PART, routines=3, checkpoint=True)
    fault.remove()
    assert await wait_until(lambda: sum(server.stats.in_flight.values()) == 0)
    assert isinstance(tracker, WriteTracker)
    await tracker.settle()  # a cancelled periodic write may still be landing (engine bug)
    cp = read_checkpoint(Path(str(src) + ".cp"))
    assert cp is not None and cp.parts
    assert cp.upload_id in open_upload_ids(server, key)
    return cp


def _envelope(data: bytes) -> dict[str, object]:
    return json.loads(data)


def _rewrap(payload: bytes, **envelope: object) -> bytes:
    import hashlib

    doc = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "sha256": hashlib.sha256(payload).hexdigest(),
        **envelope,
    }
    # the payload is spliced in raw, as the engine writes it
    head = json.dumps(doc)[:-1]
    return f'{head}, "payload": '.encode() + payload + b"}\n"


def _payload(data: bytes) -> bytes:
    # The encoder writes {"format":..,"version":..,"sha256":..,"payload":{...}}\n
    start = data.index(b'"payload":') + len(b'"payload":')
    return data[start : data.rstrip().rindex(b"}")]


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One seeded-random damage of an encoded checkpoint."""
    kind = rng.choice(
        [
            "truncate",
            "truncate",
            "bitflip",
            "bitflip",
            "bitflip",
            "overwrite",
            "version",
            "format",
            "sha",
            "garbage",
            "empty",
            "json-other",
            "payload-edit",
            "trailing",
        ]
    )
    if kind == "truncate":
        return kind, data[: rng.randrange(0, len(data))]
    if kind == "bitflip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        return kind, bytes(out)
    if kind == "overwrite":
        out = bytearray(data)
        start = rng.randrange(len(out))
        length = rng.randint(1, 64)
        out[start : start + length] = rng.randbytes(min(length, len(out) - start))
        return kind, bytes(out)
    if kind == "version":
        version = rng.choice([0, 2, -1, 99, "1", None, 1.5, True])
        return kind, _rewrap(_payload(data), version=version)
    if kind == "format":
        return kind, _rewrap(_payload(data), format=rng.choice(["", "x", "oss2.checkpoint"]))
    if kind == "sha":
        return kind, _rewrap(_payload(data), sha256=rng.choice(["", "0" * 64, "zz", 5]))
    if kind == "garbage":
        return kind, rng.randbytes(rng.randint(1, 4096))
    if kind == "empty":
        return kind, b""
    if kind == "json-other":
        return kind, rng.choice([b"[]", b"null", b"{}", b"1", b'"x"', b"\xff\xfe{}", b"{" * 5000])
    if kind == "payload-edit":
        # Payload changed, checksum not recomputed: a hand edit.
        payload = _payload(data).replace(b'"part_size":', b'"part_size": ', 1)
        env = _envelope(data)
        return kind, _rewrap(payload, sha256=env["sha256"])
    return kind, data.rstrip(b"\n") + rng.choice([b"x", b"\n\n{}", b"\x00", b" "])


async def _fuzz(tmp_path: Path, examples: int, base_seed: int) -> dict[str, int]:
    tally: dict[str, int] = {}
    async with OssServer(root=tmp_path / "server") as server:
        for i in range(examples):
            seed = base_seed + i
            try:
                kind = await _one_fuzz_case(server, tmp_path, seed)
            except BaseException as exc:
                exc.add_note(f"checkpoint fuzz example {i}, seed={seed}")
                raise
            tally[kind] = tally.get(kind, 0) + 1
        assert server.stats.internal_errors == 0
    print(f"checkpoint fuzz: {tally}")
    return tally


async def _one_fuzz_case(server: OssServer, tmp_path: Path, seed: int) -> str:
    rng = random.Random(seed)
    key = f"fuzz/{seed}.bin"
    src = tmp_path / f"src-{seed}.bin"
    data = make_file(src, SIZE, seed)
    cp_path = Path(str(src) + ".cp")
    original = await _interrupted(server, src, key)
    kind, damaged = mutate(cp_path.read_bytes(), rng)
    cp_path.write_bytes(damaged)
    try:
        decode_checkpoint(damaged)
        decodes = True
    except CheckpointError:
        decodes = False
    target = peek_upload_target(damaged)
    # The engine aborts a damaged checkpoint's upload only when what can be read names this
    # very target *and* source file (issue 10: a checkpoint is data, not a command).
    readable = target == (server.endpoint, BUCKET, key, original.upload_id) and (
        peek_source_path(damaged) == str(src)
    )
    # Damage that leaves another target readable (a flipped bit in the endpoint's port, the
    # bucket or the key) makes the file look like another target's record: it is left as
    # it is and this run keeps its own ``<file>.<digest>.cp`` (issue 10, item 8).
    elsewhere = not decodes and target is not None and target[:3] != (server.endpoint, BUCKET, key)
    try:
        await _check_rerun(
            server, src, key, data, original, kind, decodes, readable, elsewhere, damaged
        )
    except BaseException as exc:
        exc.add_note(f"damage {kind!r}: {damaged[:200]!r}")
        raise
    return kind + ("" if decodes else "!")


async def _check_rerun(
    server: OssServer,
    src: Path,
    key: str,
    data: bytes,
    original: Checkpoint,
    kind: str,
    decodes: bool,
    readable: bool,
    elsewhere: bool,
    damaged: bytes,
) -> None:
    cp_path = Path(str(src) + ".cp")
    sent_before = len(part_records(server, key))
    async with make_client(server) as client:
        result = await client.bucket(BUCKET).upload_file(
            key, src, PART, routines=3, checkpoint=True
        )
    tracker = _uploader._encode_and_write
    assert isinstance(tracker, WriteTracker)
    await tracker.settle()
    assert_object(server, key, data)
    if elsewhere:
        assert cp_path.read_bytes() == damaged, f"{kind}: another target's record was touched"
        specific = _uploader.checkpoint_path_for(
            str(src), True, None, endpoint=server.endpoint, bucket=BUCKET, key=key
        )
        assert specific is not None and specific != str(cp_path)
        assert_checkpoint_gone(Path(specific), result.upload_id)
        cp_path.unlink()  # the next case starts from a clean directory
    else:
        assert_checkpoint_gone(cp_path, result.upload_id)
    sent = len(part_records(server, key)) - sent_before
    left = open_upload_ids(server, key)
    if decodes:  # harmless damage (e.g. trailing whitespace): an ordinary resume
        assert result.upload_id == original.upload_id
        assert result.parts_resumed >= len(original.parts)
        assert not left
    else:
        assert result.parts_resumed == 0, f"{kind}: resumed from a damaged checkpoint"
        assert sent == PARTS, f"{kind}: {sent} parts sent, expected a full re-upload"
        assert result.upload_id != original.upload_id
        if readable:
            assert not left, f"{kind}: the stale upload was not aborted"
        else:
            assert left <= {original.upload_id}
            if left:  # explained: its id could not be read; clean up for the next case
                await _abort(server, key, original.upload_id)


async def _abort(server: OssServer, key: str, upload_id: str) -> None:
    async with make_client(server) as client:
        await client.bucket(BUCKET).abort_upload(key, upload_id)


async def test_fuzz_damaged_checkpoints(tmp_path: Path) -> None:
    tally = await _fuzz(tmp_path, examples=60, base_seed=30_000)
    assert sum(n for k, n in tally.items() if k.endswith("!")) >= 50


@pytest.mark.soak
@pytest.mark.timeout(3600)
async def test_fuzz_damaged_checkpoints_soak(tmp_path: Path) -> None:
    await _fuzz(tmp_path, examples=1000, base_seed=40_000)


# ---------------------------------------------------------------- valid checkpoints that lie


async def _rerun(server: OssServer, src: Path, key: str) -> oss.UploadResult:
    async with make_client(server) as client:
        result = await client.bucket(BUCKET).upload_file(
            key, src, PART, routines=3, checkpoint=True
        )
    tracker = _uploader._encode_and_write
    assert isinstance(tracker, WriteTracker)
    await tracker.settle()
    return result


async def test_checkpoint_of_another_file(tmp_path: Path) -> None:
    """A valid checkpoint left by a different file with the same path: full re-upload."""
    async with OssServer(root=tmp_path / "server") as server:
        src = tmp_path / "src.bin"
        make_file(src, SIZE, 1)
        old = await _interrupted(server, src, "other-file.bin")
        saved = (tmp_path / "src.bin.cp").read_bytes()
        src.unlink()
        data = make_file(src, SIZE, 2)  # a new file (new inode, same size) at the same path
        (tmp_path / "src.bin.cp").write_bytes(saved)
        result = await _rerun(server, src, "other-file.bin")
        assert_object(server, "other-file.bin", data)
        assert result.parts_resumed == 0 and result.upload_id != old.upload_id
        assert not open_upload_ids(server), "the stale upload was not aborted"


async def test_checkpoint_of_another_key(tmp_path: Path) -> None:
    """A checkpoint for the same file but another key is not resumed into this key."""
    async with OssServer(root=tmp_path / "server") as server:
        src = tmp_path / "src.bin"
        data = make_file(src, SIZE, 3)
        old = await _interrupted(server, src, "key-a.bin")
        result = await _rerun(server, src, "key-b.bin")
        assert_object(server, "key-b.bin", data)
        assert server.object_info(BUCKET, "key-a.bin") is None
        assert result.parts_resumed == 0 and result.upload_id != old.upload_id
        # The other key's upload is not this call's (issue 10): it stays, and so does its
        # checkpoint (issue 10 item 8: key-b used a name of its own), so it still resumes.
        assert open_upload_ids(server) == {old.upload_id}
        assert read_checkpoint(tmp_path / "src.bin.cp") == old
        again = await _rerun(server, src, "key-a.bin")
        assert again.upload_id == old.upload_id and again.parts_resumed >= len(old.parts)
        assert_object(server, "key-a.bin", data)
        assert not open_upload_ids(server)


async def test_checkpoint_of_another_endpoint(tmp_path: Path) -> None:
    async with OssServer(root=tmp_path / "server") as server:
        src = tmp_path / "src.bin"
        data = make_file(src, SIZE, 4)
        cp_path = tmp_path / "src.bin.cp"
        old = await _interrupted(server, src, "ep.bin")
        cp = decode_checkpoint(cp_path.read_bytes())
        cp.endpoint = "http://127.0.0.1:9"
        cp_path.write_bytes(encode_checkpoint(cp))
        result = await _rerun(server, src, "ep.bin")
        assert_object(server, "ep.bin", data)
        assert result.parts_resumed == 0
        # Not ours to abort (another endpoint): U stays, explained.
        assert open_upload_ids(server) == {old.upload_id}


LIES = (
    "bogus-etags",
    "bogus-crcs",
    "all-parts-bogus",
    "unknown-upload",
    "upload-of-other-key",
    "other-part-size",
)


@pytest.mark.parametrize("lie", LIES)
async def test_valid_checkpoint_that_lies(tmp_path: Path, lie: str) -> None:
    """Checksummed and decodable, but wrong: the server and the file decide, never the lie."""
    async with OssServer(root=tmp_path / "server") as server:
        src = tmp_path / "src.bin"
        data = make_file(src, SIZE, 5)
        cp_path = tmp_path / "src.bin.cp"
        key = "lie.bin"
        original = await _interrupted(server, src, key)
        cp = decode_checkpoint(cp_path.read_bytes())
        from aiooss_resume._checkpoint import CheckpointPart

        if lie == "bogus-etags":
            cp.parts = [CheckpointPart(p.number, p.size, '"BOGUS"', p.crc64) for p in cp.parts]
        elif lie == "bogus-crcs":
            cp.parts = [CheckpointPart(p.number, p.size, p.etag, p.crc64 ^ 1) for p in cp.parts]
        elif lie == "all-parts-bogus":
            size = SIZE
            cp.parts = [
                CheckpointPart(n, min(PART, size - (n - 1) * PART), f'"E{n}"', n)
                for n in range(1, PARTS + 1)
            ]
        elif lie == "unknown-upload":
            cp.upload_id = "0" * 32
        elif lie == "upload-of-other-key":
            other_src = tmp_path / "other.bin"
            make_file(other_src, SIZE, 6)
            other = await _interrupted(server, other_src, "other.bin")
            cp.upload_id = other.upload_id
        elif lie == "other-part-size":
            cp.part_size = 200 * KIB
        cp_path.write_bytes(encode_checkpoint(cp))
        result = await _rerun(server, src, key)
        assert_object(server, key, data)
        assert_checkpoint_gone(cp_path, result.upload_id)
        if lie in ("bogus-etags", "bogus-crcs", "all-parts-bogus"):
            # The parts really on OSS (same CRC as the file) are kept; nothing else is.
            assert result.upload_id == original.upload_id
            assert result.parts_resumed >= len(original.parts)
        if lie == "upload-of-other-key":
            # The other key's upload is untouched and still resumable.
            assert other.upload_id in open_upload_ids(server, "other.bin")
            assert server.object_info(BUCKET, "other.bin") is None


# ---------------------------------------------------------------- unusable checkpoint paths


@pytest.mark.parametrize("size", [SIZE, 10 * KIB])
async def test_directory_at_checkpoint_path(tmp_path: Path, size: int) -> None:
    """A directory where ``checkpoint=True`` puts the file: a clear error before any request
    (issue 4: "a location that cannot be written is a CheckpointError before anything is
    uploaded")."""
    async with OssServer(root=tmp_path / "server") as server:
        src = tmp_path / "src.bin"
        make_file(src, size, 8)
        (tmp_path / "src.bin.cp").mkdir()
        async with make_client(server) as client:
            with pytest.raises((CheckpointError, ValueError)) as info:
                await client.bucket(BUCKET).upload_file(
                    "dir.bin", src, PART, routines=2, checkpoint=True
                )
        assert "src.bin.cp" in str(info.value)
        assert not server.requests, "requests were made despite an unusable checkpoint"
        assert (tmp_path / "src.bin.cp").is_dir()


async def test_directory_at_explicit_checkpoint_path(tmp_path: Path) -> None:
    async with OssServer(root=tmp_path / "server") as server:
        src = tmp_path / "src.bin"
        make_file(src, SIZE, 9)
        (tmp_path / "cp").mkdir()
        async with make_client(server) as client:
            with pytest.raises((CheckpointError, ValueError)):
                await client.bucket(BUCKET).upload_file(
                    "dir.bin", src, PART, checkpoint=tmp_path / "cp"
                )
        assert not server.requests


async def test_empty_checkpoint_file_means_full_upload(tmp_path: Path) -> None:
    async with OssServer(root=tmp_path / "server") as server:
        src = tmp_path / "src.bin"
        data = make_file(src, SIZE, 10)
        (tmp_path / "src.bin.cp").write_bytes(b"")
        result = await _rerun(server, src, "empty-cp.bin")
        assert_object(server, "empty-cp.bin", data)
        assert result.parts_uploaded == PARTS and result.parts_resumed == 0
