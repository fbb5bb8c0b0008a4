"""What a download's checkpoint lets the next run keep: its ranges, or the finished file.

Theory of operation
-------------------
``read_checkpoint`` loads ``<file>.dcp``: it counts only if it decodes (checksummed
envelope) and records the very object the HEAD just described (endpoint, bucket, key,
ETag, size, CRC-64) with the same part size; otherwise it is ignored (logged) and
everything is downloaded again. ``listed_ranges`` keeps the ranges it lists that lie within
the temp file.

``finished_file`` covers a run killed between the temp file's rename over the destination
and the checkpoint's deletion (the last two steps of a download): the checkpoint lists every
range, the temp file is gone, the destination has the object's size. Then the destination
is most likely the finished download, but nothing on disk proves it: its CRC-64 is
computed (read off the event loop in the library's ``IoRunner``, in bounded jobs with a
cancellation point between them) and compared with the object's, as reported by this run's
HEAD (the object is still the one the checkpoint recorded: same ETag). Equal: the download is
finished without a request more. Anything else (no CRC-64 from OSS, another size, other
bytes, not a regular file) and the download runs as without the checkpoint's ranges. The
destination is only read, never written or removed, by this check.
"""

from __future__ import annotations

import logging
import os
import stat

from ._checkpoint import DownloadCheckpoint, DownloadPart, decode_download_checkpoint
from ._errors import CheckpointError
from ._fileio import IoRunner, SourceFile, read_optional
from ._planner import PartPlan
from ._transfer import _fold_crcs

__all__ = ["finished_file", "listed_ranges", "read_checkpoint"]

logger = logging.getLogger("aiooss_resume")


def _identity(cp: DownloadCheckpoint) -> tuple[object, ...]:
    return (cp.endpoint, cp.bucket, cp.key, cp.etag, cp.size, cp.crc64, cp.part_size)


async def read_checkpoint(
    io: IoRunner, cp_path: str | None, ident: DownloadCheckpoint
) -> DownloadCheckpoint | None:
    """The checkpoint at ``cp_path`` if it decodes and records the object ``ident`` names."""
    if cp_path is None:
        return None
    data = await io.run(read_optional, cp_path)
    if data is None:
        return None
    try:
        cp = decode_download_checkpoint(data)
    except CheckpointError as exc:
        logger.warning("checkpoint %s is damaged (%s): downloading all", cp_path, exc)
        return None
    if _identity(cp) != _identity(ident):
        logger.warning("checkpoint %s is of another object: downloading all", cp_path)
        return None
    return cp


def listed_ranges(
    cp: DownloadCheckpoint | None, plan: list[PartPlan], tmp_size: int
) -> dict[int, DownloadPart]:
    """The ranges ``cp`` lists, as planned, that lie within the temp file's ``tmp_size``."""
    if cp is None:
        return {}
    planned = {p.number: p for p in plan}
    return {
        p.number: p
        for p in cp.parts
        if p.number in planned
        and planned[p.number].size == p.size
        and planned[p.number].offset + p.size <= tmp_size
    }


def _regular_size(path: str) -> int | None:
    """The size of ``path`` if it is a regular file (not a symlink), else None."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


async def finished_file(
    io: IoRunner, cp: DownloadCheckpoint | None, plan: list[PartPlan], tmp: str, dest: str
) -> int | None:
    """The destination's CRC-64 if it is this checkpoint's finished download, else None.

    See the module docstring: every range listed, no temp file, ``dest`` a regular file of
    the object's size whose CRC-64 is the object's (and the listed ranges' combined).
    """
    if cp is None or cp.crc64 is None or not plan:
        return None
    listed = {p.number: p for p in cp.parts}
    if any(p.number not in listed or listed[p.number].size != p.size for p in plan):
        return None
    if await _fold_crcs([listed[p.number] for p in plan]) != cp.crc64:
        return None  # the ranges never added up to the object: nothing to recognise
    if await io.run(_regular_size, tmp) is not None:
        return None  # a temp file is there: the rename did not happen
    if await io.run(_regular_size, dest) != cp.size:
        return None
    try:
        source = await SourceFile.open(dest, io)
    except OSError:
        return None
    try:
        crc = await source.crc_range(0, cp.size)
    except (OSError, EOFError):
        return None  # shrank or vanished meanwhile
    finally:
        await source.aclose()
    if crc != cp.crc64:
        logger.warning("%s has the object's size but not its CRC-64: downloading it again", dest)
        return None
    return crc
