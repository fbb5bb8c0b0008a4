"""The manifest of upload_many/upload_dir (issue 11.2): a versioned, checksummed document."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiooss_resume import CheckpointError
from aiooss_resume._manifest import (
    Manifest,
    ManifestEncoder,
    ManifestEntry,
    decode_manifest,
    encode_manifest,
)


def _manifest(n: int) -> Manifest:
    files = [
        ManifestEntry(i, f"k/{i}.txt", i * 7, 10**18 + i, 1000 + i, 2**64 - 1 - i) for i in range(n)
    ]
    return Manifest(
        endpoint="http://127.0.0.1:1", bucket="bkt", options_fingerprint="f" * 32, files=files
    )


@given(st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=6))
def test_reused_encoder_writes_exactly_encode_manifest(sizes: list[int]) -> None:
    encoder = ManifestEncoder()
    for n in sizes:  # growing and shrinking documents through one buffer
        manifest = _manifest(n)
        data = bytes(encoder.encode(manifest))
        assert data == encode_manifest(manifest)
        assert decode_manifest(data) == manifest


def test_damage_is_detected() -> None:
    data = encode_manifest(_manifest(5))
    flipped = bytearray(data)
    flipped[data.index(b'"k/3.txt"') + 3] ^= 0x01
    for bad, why in [
        (bytes(flipped), "checksum"),
        (data[: len(data) // 2], "not decodable"),
        (data.replace(b'"version":1', b'"version":9'), "unknown manifest version"),
        (data.replace(b"aiooss_resume.manifest", b"aiooss_resume.checkpoint"), "not an"),
    ]:
        with pytest.raises(CheckpointError, match=why):
            decode_manifest(bad)


def test_duplicate_slots_are_damage() -> None:
    manifest = _manifest(2)
    manifest.files.append(ManifestEntry(1, "k/x", 1, 1, 1, 1))
    with pytest.raises(CheckpointError, match="uniquely"):
        decode_manifest(encode_manifest(manifest))


def test_the_file_is_plain_json_with_compact_records() -> None:
    doc = json.loads(encode_manifest(_manifest(1)))
    assert doc["format"] == "aiooss_resume.manifest" and doc["version"] == 1
    assert doc["payload"]["files"] == [[0, "k/0.txt", 0, 10**18, 1000, 2**64 - 1]]


def test_encoder_survives_a_view_still_held_on_its_last_document() -> None:
    # A frame kept alive by a traceback or a profiler keeps write_atomic's memoryview, and
    # a bytearray with a live view cannot be resized: the next rewrite must still work.
    encoder = ManifestEncoder()
    first = encoder.encode(_manifest(3))
    held = memoryview(first)
    snapshot = bytes(held)
    second = encoder.encode(_manifest(50))
    assert bytes(second) == encode_manifest(_manifest(50))
    assert bytes(held) == snapshot  # the holder's view is untouched
    # A smaller document would fit without a resize: the held view must not be overwritten.
    held_again = memoryview(second)
    again = bytes(held_again)
    assert bytes(encoder.encode(_manifest(2))) == encode_manifest(_manifest(2))
    assert bytes(held_again) == again


_OPS = st.lists(
    st.tuples(st.sampled_from(["append", "replace", "truncate", "header"]), st.integers(0, 40)),
    min_size=1,
    max_size=12,
)


@given(_OPS)
def test_incremental_encoder_follows_any_sequence_of_rewrites(ops: list[tuple[str, int]]) -> None:
    """The writer's snapshots: records appended (the usual case), a record replaced in the
    middle (a changed file keeps its slot), fewer records, other header fields. Every
    document must be exactly ``encode_manifest``'s, whatever the encoder kept from before."""
    encoder = ManifestEncoder()
    manifest = _manifest(3)
    for op, n in ops:
        files = list(manifest.files)
        if op == "append":
            files += [ManifestEntry(len(files) + i, f"k/n{i}", i, i, i, i) for i in range(n)]
        elif op == "replace" and files:
            i = n % len(files)
            files[i] = ManifestEntry(files[i].number, files[i].key + "x", n, n, n, n)
        elif op == "truncate":
            files = files[: n % (len(files) + 1)]
        elif op == "header":
            manifest = msgspec.structs.replace(manifest, created_at=f"t{n}")
        manifest = msgspec.structs.replace(manifest, files=files)
        data = bytes(encoder.encode(manifest))
        assert data == encode_manifest(manifest)
        assert decode_manifest(data) == manifest


@pytest.mark.parametrize("n", [0, 1, 5, 6])
def test_encoder_is_not_fooled_by_a_files_key_inside_strings(n: int) -> None:
    """The records are spliced in after the payload's ``"files":[``; a string holding that
    text (a key, the endpoint, the bucket) is escaped and must not be taken for it."""
    trap = '"files":[],"x'
    files = [ManifestEntry(i, f"{trap}/{i}", i, i, i, i) for i in range(n)]
    manifest = Manifest(endpoint=trap, bucket=trap, options_fingerprint=trap, files=files)
    encoder = ManifestEncoder()
    for _ in range(2):  # the second write reuses what the first encoded
        data = bytes(encoder.encode(manifest))
        assert data == encode_manifest(manifest)
        assert decode_manifest(data) == manifest
