"""One range of a download fetched into the temp file, and the repair of a file whose CRC-64
does not match the object's.

Theory of operation
-------------------
**A range** (``fetch_range``) is a Range GET with ``If-Match: <etag>``, its body streamed to
the temp file at the range's offset (``pwrite`` in the library's ``IoRunner``) with the
CRC-64 continued over it in the same thread. The answer must be exactly the range: a body
that would run past its end is refused before a byte of it lands outside the range, and one
that ends short (a connection closed mid-body without a ``Content-Length``) or a
``Content-Range`` that starts elsewhere is a ``ProtocolError``; both are retried like a lost
connection (``Session._request``), the next attempt overwriting the same bytes.

**The repair** (``repair``). OSS reports only the whole object's CRC-64, on a Range GET too,
so a bad range cannot be told from the headers. Each range's CRC-64 is computed as it is
written and recorded in the checkpoint; when the ranges' CRCs, combined, differ from the
object's:

1. HEAD the object again: another ETag is a ``FileChangedError``; a CRC-64 that now equals
   the bytes' means the first HEAD's header was wrong, and the file is right. From here on
   the bytes must match either HEAD's CRC-64 (both are OSS's word for this ETag).
2. Fetch every range not yet *confirmed* once more and compare it, chunk by chunk, with the
   bytes in the temp file (``pread``). A range whose fresh bytes equal the written ones is
   confirmed: two fetches agree. A range that differs is rewritten with the fresh bytes: it
   is first removed from the checkpoint (``forget``, flushed before the first byte is
   overwritten, so a crash mid-rewrite never leaves a recorded CRC over mixed bytes), then
   recorded again with its new CRC-64 (``record``).
3. If the combined CRC-64 now matches, done. Otherwise the ranges not confirmed are fetched
   again (another round). If a round rewrites nothing (every range confirmed) and the CRC
   still differs, a corruption may have repeated itself identically on a range's two reads
   (a deterministic fault: a proxy flipping the same byte): every range is read once more.
   If that pass rewrites nothing either, OSS consistently serves bytes that do not match its
   own CRC-64: ``IntegrityError``. At most ``MAX_REPAIR_ROUNDS`` rounds, then
   ``IntegrityError`` too.

A transient corruption (one bad body) is thus repaired by fetching each range once more and
rewriting only the bad one; the file is renamed into place only once its CRC-64 matches.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence

from ._checkpoint import DownloadPart
from ._crc64 import crc64
from ._errors import FileChangedError, IntegrityError, ProtocolError, ServiceError
from ._fileio import IoRunner, write_chunk
from ._http import HttpResponse
from ._planner import PartPlan
from ._session import Session
from ._transfer import _fold_crcs, _response_crc, _same_etag, run_parts

__all__ = ["MAX_REPAIR_ROUNDS", "fetch_range", "repair"]

MAX_REPAIR_ROUNDS = 4
"""Rounds of re-fetching ranges before a CRC-64 mismatch is an error (see ``repair``)."""


class _Attempt:
    """The bytes of one attempt at a range: how many were written, their CRC-64."""

    __slots__ = ("crc", "written")

    def __init__(self) -> None:
        self.written = 0
        self.crc = 0


def _differs(fd: int, offset: int, data: bytes) -> bool:
    """Whether the file's bytes at ``offset`` differ from ``data`` (a short file differs)."""
    return os.pread(fd, len(data), offset) != data


def _crc_only(data: bytes, crc: int) -> int:
    return crc64(data, crc)


async def fetch_range(
    session: Session,
    bucket: str,
    key: str,
    etag: str,
    part: PartPlan,
    fd: int,
    *,
    on_bytes: Callable[[int], Awaitable[None]] | None = None,
    on_change: Callable[[], Awaitable[None]] | None = None,
    fatal: Callable[[], BaseException | None] | None = None,
) -> tuple[int, bool]:
    """Fetch ``part`` into ``fd``; return its CRC-64 and whether any byte was (re)written.

    ``on_bytes(n)``: ``n`` bytes of the range written so far in this attempt.
    ``on_change``: compare mode (the repair): chunks equal to the file's bytes are not
    written, and ``on_change`` is awaited once before the first one that differs is.
    A 412 (the object changed) is raised as ``FileChangedError``.
    """
    io: IoRunner = session._io
    attempt = _Attempt()
    changed = False

    def sink() -> Callable[[bytes], Awaitable[None]]:
        nonlocal attempt
        attempt = current = _Attempt()

        async def write(data: bytes) -> None:
            nonlocal changed
            position = part.offset + current.written
            if current.written + len(data) > part.size:
                raise ProtocolError(
                    f"GetObject of oss://{bucket}/{key} bytes {part.offset}-"
                    f"{part.offset + part.size - 1} answered more than {part.size} bytes"
                )
            if on_change is None:
                current.crc = await io.run(write_chunk, fd, position, data, current.crc)
            elif await io.run(_differs, fd, position, data):
                if not changed:
                    await on_change()
                    changed = True
                current.crc = await io.run(write_chunk, fd, position, data, current.crc)
            else:
                current.crc = await io.run(_crc_only, data, current.crc)
            current.written += len(data)
            if on_bytes is not None:
                await on_bytes(current.written)

        return write

    def check(resp: HttpResponse) -> None:
        content_range = resp.header("content-range")
        if content_range and not content_range.startswith(f"bytes {part.offset}-"):
            raise ProtocolError(
                f"GetObject asked for bytes {part.offset}-{part.offset + part.size - 1} "
                f"answered Content-Range {content_range[:60]!r}"
            )
        if attempt.written != part.size:
            raise ProtocolError(
                f"GetObject of oss://{bucket}/{key} bytes {part.offset}-"
                f"{part.offset + part.size - 1} answered {attempt.written} bytes, not {part.size}"
            )

    try:
        await session._get_range(
            bucket,
            key,
            part.offset,
            part.offset + part.size - 1,
            {"If-Match": etag},
            sink,
            check,
            None,
            fatal=fatal,
        )
    except ServiceError as exc:
        if exc.status == 412:
            raise FileChangedError(
                f"oss://{bucket}/{key} changed while it was being downloaded "
                "(412 Precondition Failed on If-Match); run it again"
            ) from exc
        raise
    if on_change is None:
        changed = True
    return attempt.crc, changed


async def repair(
    session: Session,
    bucket: str,
    key: str,
    etag: str,
    expected: int,
    plan: Sequence[PartPlan],
    fd: int,
    done: dict[int, DownloadPart],
    *,
    routines: int,
    forget: Callable[[int], Awaitable[None]],
    record: Callable[[DownloadPart], Awaitable[None]],
    fatal: Callable[[], BaseException | None] | None = None,
) -> int:
    """Make the temp file's ranges match the object's CRC-64 ``expected`` (see the module
    docstring); return the CRC-64 of the file. ``done`` is updated in place."""

    async def folded() -> int:
        return await _fold_crcs([done[p.number] for p in plan])

    crc = await folded()
    head = await session._request("HEAD", bucket, key)
    if not _same_etag(head.header("etag"), etag):
        raise FileChangedError(
            f"oss://{bucket}/{key} changed while it was being downloaded (ETag {etag} -> "
            f"{head.header('etag')}); run it again"
        )
    # Both answers are OSS's word for this ETag: one wrong header must not fail a download
    # whose bytes match the other (the bytes decide between them).
    reported = {expected}
    if (second := _response_crc(head)) is not None:
        reported.add(second)
    if crc in reported:
        return crc  # the first HEAD's CRC header was wrong; the bytes agree with this one
    confirmed: set[int] = set()
    second_look = False
    rounds = 0
    for rounds in range(1, MAX_REPAIR_ROUNDS + 1):  # noqa: B007 (reported in the error)
        rewritten = 0

        async def check(part: PartPlan) -> None:
            nonlocal rewritten

            async def drop() -> None:
                done.pop(part.number, None)
                await forget(part.number)

            new_crc, changed = await fetch_range(
                session, bucket, key, etag, part, fd, on_change=drop, fatal=fatal
            )
            if changed:
                rewritten += 1
                done[part.number] = DownloadPart(part.number, part.size, new_crc)
                await record(done[part.number])
            else:
                confirmed.add(part.number)

        await run_parts([p for p in plan if p.number not in confirmed], routines, check, None)
        crc = await folded()
        if crc in reported:
            return crc
        if rewritten == 0:
            if second_look:
                break  # every range read the same on two full passes in a row
            # Every range is confirmed, yet the CRC differs: a corruption may have repeated
            # itself identically on a range's two reads. Read every range once more.
            second_look = True
            confirmed.clear()
    raise IntegrityError(
        f"oss://{bucket}/{key}: CRC-64 of the downloaded bytes ({crc}) differs from the "
        f"object's ({' or '.join(map(str, sorted(reported)))}), also after fetching "
        f"every range again (stopped after {rounds} rounds)",
        expected=expected,
        actual=crc,
    )
