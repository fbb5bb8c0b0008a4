"""Splitting a file into OSS parts.

Theory of operation
-------------------
OSS limits (spec section 6): part numbers 1..10,000; every part but the last at least
100 KB (102,400 bytes, checked at Complete); at most 5 GB (5 x 1024^3) per part. The caller's
part size must lie in [100 KiB, 5 GiB]; when the file would need more than 10,000 parts, the
part size grows to ``ceil(size / 10,000)``, just enough to fit, instead of failing. Part ``n``
covers bytes ``[(n - 1) * S, min(n * S, size))``, so the parts tile the file exactly.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "DEFAULT_PART_SIZE",
    "MAX_OBJECT_SIZE",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "PartPlan",
    "effective_part_size",
    "part_count",
    "plan_parts",
    "validate_part_size",
]

MIN_PART_SIZE = 100 * 1024
MAX_PART_SIZE = 5 * 1024**3
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = MIN_PART_SIZE  # what the OSS documentation promises for UploadFile
MAX_OBJECT_SIZE = MAX_PARTS * MAX_PART_SIZE


class PartPlan(msgspec.Struct, frozen=True, gc=False):
    """One planned part: its 1-based number, byte offset and length.

    Untracked by the garbage collector (it holds only ints): 10,000 tracked plans would
    trigger a full collection, a ~10 ms event-loop pause, in the middle of an upload.
    """

    number: int
    offset: int
    size: int


def validate_part_size(part_size: object) -> int:
    """Return ``part_size`` if it is an int in [100 KiB, 5 GiB]; raise otherwise."""
    if isinstance(part_size, bool) or not isinstance(part_size, int):
        raise TypeError(f"part_size must be an int, not {type(part_size).__name__}")
    if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
        raise ValueError(
            f"part_size must be between {MIN_PART_SIZE} (100 KiB) and {MAX_PART_SIZE} (5 GiB) "
            f"bytes, got {part_size}"
        )
    return part_size


def effective_part_size(file_size: int, part_size: int) -> int:
    """The part size actually used: grown just enough to fit 10,000 parts."""
    if file_size > MAX_OBJECT_SIZE:
        raise ValueError(
            f"a {file_size}-byte file exceeds OSS's multipart limit of {MAX_OBJECT_SIZE} bytes"
        )
    needed = -(-file_size // MAX_PARTS)
    return max(part_size, needed)


def part_count(file_size: int, part_size: int) -> int:
    """How many parts of ``part_size`` tile ``file_size`` bytes (0 for an empty file)."""
    return -(-file_size // part_size)


def plan_parts(file_size: int, part_size: int) -> list[PartPlan]:
    """The parts tiling ``file_size`` bytes, in order."""
    return [
        PartPlan(n + 1, n * part_size, min(part_size, file_size - n * part_size))
        for n in range(part_count(file_size, part_size))
    ]
