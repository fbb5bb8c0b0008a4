from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiooss_resume._planner import (
    DEFAULT_PART_SIZE,
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    effective_part_size,
    plan_parts,
    validate_part_size,
)


def test_limits_follow_the_oss_documentation() -> None:
    assert DEFAULT_PART_SIZE == MIN_PART_SIZE == 100 * 1024
    assert MAX_PART_SIZE == 5 * 1024**3
    assert MAX_PARTS == 10_000


@pytest.mark.parametrize("bad", [0, 1, MIN_PART_SIZE - 1, MAX_PART_SIZE + 1, -5])
def test_part_size_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError, match="part_size"):
        validate_part_size(bad)


@pytest.mark.parametrize("bad", [1.5, "8MiB", None, True])
def test_part_size_wrong_type(bad: object) -> None:
    with pytest.raises(TypeError):
        validate_part_size(bad)


def test_part_size_grows_just_enough() -> None:
    size = MAX_PARTS * MIN_PART_SIZE + 1
    grown = effective_part_size(size, MIN_PART_SIZE)
    assert grown == MIN_PART_SIZE + 1
    assert len(plan_parts(size, grown)) == MAX_PARTS
    assert effective_part_size(MAX_PARTS * MIN_PART_SIZE, MIN_PART_SIZE) == MIN_PART_SIZE
    with pytest.raises(ValueError, match="exceeds"):
        effective_part_size(MAX_OBJECT_SIZE + 1, MIN_PART_SIZE)


@given(
    size=st.one_of(
        st.integers(0, 10**7),
        st.sampled_from([0, 1, 102399, 102400, 102401, 204800, 204801]),
        st.integers(MAX_PARTS * MIN_PART_SIZE - 5, MAX_OBJECT_SIZE),
    ),
    part_size=st.integers(MIN_PART_SIZE, MAX_PART_SIZE),
)
def test_plan_tiles_the_file(size: int, part_size: int) -> None:
    effective = effective_part_size(size, part_size)
    count = -(-size // effective)
    assert count <= MAX_PARTS
    if count > 200_000:  # never: kept as a guard against a slow property
        pytest.fail("too many parts")
    parts = plan_parts(size, effective)
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    offset = 0
    for p in parts:
        assert p.offset == offset
        offset += p.size
        assert 0 < p.size <= MAX_PART_SIZE
    assert offset == size
    assert all(p.size >= MIN_PART_SIZE for p in parts[:-1])
