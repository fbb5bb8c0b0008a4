"""CRC-64/XZ pinned by the vectors the official SDKs produced (tests/vectors/crc64.json)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiooss_resume._crc64 import CRC64_CHECK, crc64, crc64_combine, crc64_fold

from .conftest import load_vectors

DATA: dict[str, Any] = load_vectors("crc64.json")


def _reference(data: bytes) -> int:
    """Byte-at-a-time table CRC-64/XZ, straight from spec 8.1, as an independent oracle."""
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xC96C5795D7870F42 if c & 1 else c >> 1
        table.append(c)
    crc = 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def test_check_value() -> None:
    assert crc64(b"123456789") == CRC64_CHECK == 0x995DC9BBDF1939FA
    assert crc64(b"") == 0


@pytest.mark.parametrize("vector", DATA["vectors"], ids=lambda v: v["id"])
def test_small_vectors(vector: dict[str, Any]) -> None:
    data = (
        bytes.fromhex(vector["input"])
        if vector["input_encoding"] == "hex"
        else vector["input"].encode()
    )
    assert len(data) == vector["length"]
    assert crc64(data) == int(vector["crc64_decimal"]) == _reference(data)


LARGE = {
    "A_102400": lambda: b"A" * 102400,
    "mod251_1MiB": lambda: bytes(i % 251 for i in range(1048576)),
    "zeros_6MiB": lambda: bytes(6291456),
}


@pytest.mark.parametrize("vector", DATA["large_vectors"], ids=lambda v: v["id"])
def test_large_vectors(vector: dict[str, Any]) -> None:
    data = LARGE[vector["id"]]()
    assert len(data) == vector["length"]
    assert crc64(data) == int(vector["crc64_decimal"])


@pytest.mark.parametrize("walk", DATA["combine"], ids=lambda c: c["id"])
def test_combine_walkthroughs(walk: dict[str, Any]) -> None:
    for step in walk["steps"]:
        args = step["combine_args"]
        result = crc64_combine(int(args["crc1"]), int(args["crc2"]), args["len2"])
        assert result == int(step["result_decimal"])
    pairs = [(int(s["part_crc64_decimal"]), s["part_length"]) for s in walk["steps"]]
    assert crc64_fold(pairs) == int(walk["whole_object_crc64_decimal"])


def test_continuation() -> None:
    (example,) = DATA["continuation"]
    prefix = crc64(example["prefix"].encode())
    assert prefix == int(example["prefix_crc64_decimal"])
    assert crc64(example["suffix"].encode(), prefix) == int(example["result_decimal"])


@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_combine_equals_crc_of_concatenation(a: bytes, b: bytes) -> None:
    assert crc64_combine(crc64(a), crc64(b), len(b)) == crc64(a + b)


@given(st.lists(st.binary(max_size=500), max_size=8))
def test_fold_and_incremental_agree(pieces: list[bytes]) -> None:
    whole = b"".join(pieces)
    assert crc64_fold((crc64(p), len(p)) for p in pieces) == crc64(whole) == _reference(whole)
    running = 0
    for p in pieces:
        running = crc64(p, running)
    assert running == crc64(whole)


def test_combine_edge_cases() -> None:
    assert crc64_combine(12345, 0, 0) == 12345
    assert crc64_combine(0, 999, 7) == 999
    with pytest.raises(ValueError, match="len_b"):
        crc64_combine(1, 2, -1)
