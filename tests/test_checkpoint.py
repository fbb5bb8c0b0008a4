from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiooss_resume._checkpoint import (
    Checkpoint,
    CheckpointPart,
    SourceIdentity,
    decode_checkpoint,
    encode_checkpoint,
    options_fingerprint,
    peek_upload_target,
)
from aiooss_resume._errors import CheckpointError


def sample(parts: int = 3) -> Checkpoint:
    return Checkpoint(
        endpoint="http://127.0.0.1:9000",
        bucket="bkt",
        key="dir/文件.bin",
        upload_id="0123456789ABCDEF0123456789ABCDEF",
        part_size=102400,
        options_fingerprint="f" * 32,
        source=SourceIdentity(path="/tmp/x", size=300000, mtime_ns=1, inode=2, device=3),
        parts=[CheckpointPart(n, 102400, f'"{n:032X}"', n * 7) for n in range(1, parts + 1)],
    )


def test_round_trip_and_compact_parts() -> None:
    data = encode_checkpoint(sample())
    assert decode_checkpoint(data) == sample()
    doc = json.loads(data)
    assert doc["format"] == "aiooss_resume.checkpoint"
    assert doc["version"] == 1
    assert doc["payload"]["parts"][0] == [1, 102400, '"00000000000000000000000000000001"', 7]


def test_ten_thousand_parts_stay_small() -> None:
    assert len(encode_checkpoint(sample(10_000))) < 700_000


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[: len(d) // 2],
        lambda d: d[:-3],
        lambda d: b"",
        lambda d: b"not json at all",
        lambda d: d.replace(b'"version":1', b'"version":2'),
        lambda d: d.replace(b'"format":"aiooss_resume.checkpoint"', b'"format":"other"'),
        lambda d: d.replace(b'"bkt"', b'"bkx"'),
        lambda d: d.replace(b"102400,", b"102401,", 1),
        lambda d: b"\xff\xfe" + d,
    ],
)
def test_damage_is_detected(damage: object) -> None:
    data = encode_checkpoint(sample())
    with pytest.raises(CheckpointError):
        decode_checkpoint(damage(data))  # type: ignore[operator]


@given(st.data())
def test_any_single_bit_flip_is_detected_or_harmless(data: st.DataObject) -> None:
    encoded = bytearray(encode_checkpoint(sample()))
    index = data.draw(st.integers(0, len(encoded) - 2))  # the final newline is not covered
    bit = data.draw(st.integers(0, 7))
    encoded[index] ^= 1 << bit
    try:
        decoded = decode_checkpoint(bytes(encoded))
    except CheckpointError:
        return
    # A flip outside the payload that JSON still reads the same (e.g. in whitespace) is
    # harmless only if the content is unchanged.
    assert decoded == sample()


def test_inconsistent_payload_is_rejected() -> None:
    bad = sample()
    bad.parts = [bad.parts[1], bad.parts[0]]
    with pytest.raises(CheckpointError, match="part numbers"):
        decode_checkpoint(encode_checkpoint(bad))


def test_peek_target_reads_a_damaged_checkpoint() -> None:
    data = encode_checkpoint(sample())
    flipped = data.replace(b'"sha256":"', b'"sha256":"0', 1)
    with pytest.raises(CheckpointError):
        decode_checkpoint(flipped)
    assert peek_upload_target(flipped) == (
        "http://127.0.0.1:9000",
        "bkt",
        "dir/文件.bin",
        "0123456789ABCDEF0123456789ABCDEF",
    )
    assert peek_upload_target(data[:20]) is None


def test_fingerprint_tracks_options_not_case() -> None:
    base = options_fingerprint(
        part_size=102400, initiate_headers={"X-Oss-Meta-A": "1"}, complete_headers={}
    )
    assert base == options_fingerprint(
        part_size=102400, initiate_headers={"x-oss-meta-a": "1"}, complete_headers={}
    )
    assert base != options_fingerprint(
        part_size=102401, initiate_headers={"x-oss-meta-a": "1"}, complete_headers={}
    )
    assert base != options_fingerprint(
        part_size=102400, initiate_headers={"x-oss-meta-a": "2"}, complete_headers={}
    )
