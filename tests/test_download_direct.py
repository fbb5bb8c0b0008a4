"""The download's temp file written with ``O_DIRECT`` where aligned, when
``download_file(direct_io=True)`` asks (``_direct_io``); never by default."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import aiooss_resume as oss
from aiooss_resume._crc64 import crc64
from aiooss_resume._direct_io import ALIGN, close_quietly, open_temp, write_chunk_direct
from aiooss_resume.testing import OssServer

from .test_download import BUCKET, client_for, put

MIB = 1024 * 1024


def _fs_does_o_direct(path: Path) -> bool:
    if not hasattr(os, "O_DIRECT") or not sys.platform.startswith("linux"):
        return False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError:
        return False
    os.close(fd)
    os.unlink(path)
    return True


def test_open_temp_opens_a_direct_descriptor_where_the_file_system_allows(
    tmp_path: Path,
) -> None:
    expected = _fs_does_o_direct(tmp_path / "probe")
    fd, direct, size = open_temp(str(tmp_path / "f.tmp"), True)
    try:
        assert size == 0
        assert (direct >= 0) == expected
    finally:
        close_quietly(direct)
        os.close(fd)
    close_quietly(-1)  # nothing opened: nothing to close


def test_open_temp_opens_no_direct_descriptor_unless_asked(tmp_path: Path) -> None:
    fd, direct, _ = open_temp(str(tmp_path / "f.tmp"), False)
    os.close(fd)
    assert direct == -1


def test_chunks_land_exactly_whichever_way_they_are_written(tmp_path: Path) -> None:
    path = str(tmp_path / "f.tmp")
    fd, direct, _ = open_temp(path)
    data = os.urandom(3 * MIB + 12345)
    # (offset, length): aligned 1 MiB, aligned short, unaligned length, unaligned offset,
    # and the file's unaligned tail; written out of order, as concurrent ranges do.
    pieces = [
        (MIB, MIB),
        (0, 8 * ALIGN),
        (8 * ALIGN, MIB - 8 * ALIGN - 3),
        (MIB - 3, 3),
        (2 * MIB, MIB),
        (3 * MIB, 12345),
    ]
    try:
        for offset, length in pieces:
            chunk = data[offset : offset + length]
            crc = write_chunk_direct(fd, direct, offset, chunk, 0)
            assert crc == crc64(chunk)
        # continuing a CRC works as write_chunk's does
        assert write_chunk_direct(fd, -1, 0, data[:ALIGN], crc64(b"x")) == crc64(
            data[:ALIGN], crc64(b"x")
        )
    finally:
        close_quietly(direct)
        os.close(fd)
    assert Path(path).read_bytes() == data


def test_only_aligned_chunks_go_through_the_direct_descriptor(tmp_path: Path) -> None:
    # A read-only descriptor as the "direct" one: a write through it fails with EBADF,
    # which shows exactly which chunks are sent that way (and that EBADF is not swallowed).
    path = tmp_path / "f.tmp"
    fd, direct, _ = open_temp(str(path))
    close_quietly(direct)
    trap = os.open(path, os.O_RDONLY)
    try:
        unaligned = [(0, ALIGN + 1), (1, ALIGN), (3 * ALIGN, 100)]
        for offset, length in unaligned:
            write_chunk_direct(fd, trap, offset, b"u" * length, 0)  # buffered: fine
        with pytest.raises(OSError, match="Bad file descriptor") as info:
            write_chunk_direct(fd, trap, 4 * ALIGN, b"a" * (2 * ALIGN), 0)
        assert info.value.errno == errno.EBADF
        too_long = b"b" * (MIB + ALIGN)  # longer than the aligned buffer: buffered
        write_chunk_direct(fd, trap, 8 * ALIGN, too_long, 0)
    finally:
        os.close(trap)
        os.close(fd)
    assert path.read_bytes()[8 * ALIGN :] == too_long


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "srv") as srv:
        yield srv


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("part_size", "size"),
    [
        (256 * 1024, 3 * MIB),  # every chunk aligned: all direct
        (256 * 1024, 3 * MIB + 7),  # the object's tail buffered
        (100 * 1024 + 1, 2 * MIB + 4097),  # ranges start mid-page: mostly buffered
    ],
)
@pytest.mark.parametrize("direct_io", [True, False])
async def test_downloads_are_exact_with_aligned_and_unaligned_ranges(
    server: OssServer, tmp_path: Path, part_size: int, size: int, direct_io: bool
) -> None:
    data = os.urandom(size)
    dest = tmp_path / "out.bin"
    async with client_for(server) as client:
        await put(client, tmp_path, "obj", data)
        result = await client.bucket(BUCKET).download_file(
            "obj", dest, part_size, routines=4, checkpoint=True, direct_io=direct_io
        )
    assert dest.read_bytes() == data
    assert result.crc64 == crc64(data)
    assert not Path(f"{dest}.tmp").exists()
    assert not Path(f"{dest}.dcp").exists()
    assert isinstance(result, oss.DownloadResult)


def _temp_file_flags(tmp: Path) -> list[int]:
    """The open flags of this process's descriptors of ``tmp`` (Linux ``/proc``)."""
    flags = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") != str(tmp):
                continue
            with open(f"/proc/self/fdinfo/{name}") as info:
                for line in info:
                    if line.startswith("flags:"):
                        flags.append(int(line.split()[1], 8))
        except OSError:
            continue  # closed meanwhile
    return flags


@pytest.mark.anyio
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fdinfo")
@pytest.mark.parametrize("direct_io", [None, False, True])
async def test_o_direct_only_when_asked(
    server: OssServer, tmp_path: Path, direct_io: bool | None
) -> None:
    """Seen from outside: the temp file's open descriptors, read from /proc during the
    download, carry O_DIRECT only with ``direct_io=True`` (and a file system that takes it)."""
    data = os.urandom(2 * MIB)
    dest = tmp_path / "out.bin"
    seen: list[int] = []

    def look(event: object) -> None:
        seen.extend(_temp_file_flags(tmp_path / "out.bin.tmp"))

    kwargs = {} if direct_io is None else {"direct_io": direct_io}
    async with client_for(server) as client:
        await put(client, tmp_path, "obj", data)
        await client.bucket(BUCKET).download_file(
            "obj", dest, 256 * 1024, routines=2, on_progress=look, **kwargs
        )
    assert dest.read_bytes() == data
    assert seen, "the progress hook never saw the temp file open"
    with_direct = {bool(f & os.O_DIRECT) for f in seen}
    if direct_io and _fs_does_o_direct(tmp_path / "probe"):
        assert with_direct == {False, True}  # the buffered descriptor and the direct one
    else:
        assert with_direct == {False}
