"""Property tests over file and part sizes (issue 6, reliability suite).

* The planner, purely, for any size up to OSS's limit (10,000 parts x 5 GiB): the planned
  parts tile the file exactly (numbered 1..n, contiguous, no overlap, sizes summing to the
  file size), every part but the last is at least 100 KiB, none exceeds 5 GiB, at most
  10,000 parts, and the part size only grows when 10,000 parts of the requested size would
  not fit, and then just enough.
* End to end against the emulator, for small sizes around the edges (0, 1 byte, around
  100 KiB, exact multiples of the part size, one byte either side): the stored object is
  byte-identical and the upload used the planned number of parts.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aiooss_resume._planner import (
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    effective_part_size,
    plan_parts,
)
from aiooss_resume.testing import ThreadedOssServer

from .reliability_helpers import BUCKET, KIB, assert_object, make_client

EDGES = [0, 1, 102399, 102400, 102401, 204799, 204800, 204801, 307200]
part_sizes = st.one_of(
    st.sampled_from([MIN_PART_SIZE, MIN_PART_SIZE + 1, 1024 * KIB, MAX_PART_SIZE]),
    st.integers(MIN_PART_SIZE, MAX_PART_SIZE),
)
file_sizes = st.one_of(
    st.sampled_from(EDGES),
    st.integers(0, 10 * MIN_PART_SIZE),
    st.integers(0, MAX_OBJECT_SIZE),
    st.integers(MAX_PARTS * MIN_PART_SIZE - 2, MAX_PARTS * MIN_PART_SIZE + 2),
)


def check_plan(size: int, requested: int) -> None:
    part_size = effective_part_size(size, requested)
    assert part_size >= requested
    if part_size > requested:  # grown: 10,000 parts of the requested size were too few
        assert -(-size // requested) > MAX_PARTS
        assert -(-size // (part_size - 1)) > MAX_PARTS  # and grown just enough
    assert MIN_PART_SIZE <= part_size <= MAX_PART_SIZE
    plan = plan_parts(size, part_size)
    assert len(plan) <= MAX_PARTS
    assert [p.number for p in plan] == list(range(1, len(plan) + 1))
    position = 0
    for p in plan:
        assert p.offset == position, "parts are not contiguous"
        assert 0 < p.size <= MAX_PART_SIZE
        position += p.size
    assert position == size, "parts do not sum to the file size"
    for p in plan[:-1]:
        assert p.size >= MIN_PART_SIZE, "a non-last part is smaller than 100 KiB"
        assert p.size == part_size


@settings(max_examples=400, deadline=None)
@given(size=file_sizes, requested=part_sizes)
@example(size=MAX_OBJECT_SIZE, requested=MIN_PART_SIZE)
@example(size=MAX_PARTS * MIN_PART_SIZE + 1, requested=MIN_PART_SIZE)
@example(size=MAX_PARTS * MIN_PART_SIZE, requested=MIN_PART_SIZE)
@example(size=0, requested=MIN_PART_SIZE)
def test_planned_parts_tile_the_file(size: int, requested: int) -> None:
    check_plan(size, requested)


def test_planner_refuses_objects_over_the_limit() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        effective_part_size(MAX_OBJECT_SIZE + 1, MIN_PART_SIZE)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with ThreadedOssServer(root=tmp_path_factory.mktemp("prop-server")) as srv:
        yield srv


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    size=st.one_of(st.sampled_from(EDGES), st.integers(0, 700 * KIB)),
    part_size=st.sampled_from([MIN_PART_SIZE, MIN_PART_SIZE + 1, 128 * KIB, 200 * KIB]),
    routines=st.integers(1, 4),
    checkpoint=st.booleans(),
)
@example(size=0, part_size=MIN_PART_SIZE, routines=1, checkpoint=True)
@example(size=1, part_size=MIN_PART_SIZE, routines=1, checkpoint=False)
@example(size=102400, part_size=MIN_PART_SIZE, routines=2, checkpoint=True)
@example(size=204800, part_size=MIN_PART_SIZE, routines=2, checkpoint=True)
@example(size=102401, part_size=MIN_PART_SIZE, routines=4, checkpoint=False)
def test_uploaded_object_is_identical(
    server: ThreadedOssServer,
    tmp_path: Path,
    size: int,
    part_size: int,
    routines: int,
    checkpoint: bool,
) -> None:
    key = f"prop/{size}-{part_size}-{routines}-{int(checkpoint)}.bin"
    src = tmp_path / f"{size}-{part_size}-{routines}.bin"
    data = random.Random(size * 31 + part_size).randbytes(size)
    src.write_bytes(data)

    async def upload():  # type: ignore[no-untyped-def]
        async with make_client(server) as client:
            return await client.bucket(BUCKET).upload_file(
                key, src, part_size, routines=routines, checkpoint=checkpoint
            )

    result = asyncio.run(upload())
    assert_object(server, key, data)
    assert result.size == size
    if size < part_size:  # one PutObject
        assert result.upload_id is None and result.parts_uploaded == 1
    else:
        assert result.parts_uploaded == len(plan_parts(size, part_size))
