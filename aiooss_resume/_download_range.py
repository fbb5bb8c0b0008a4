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
2. A *read pass*: fetch every range again, computing its CRC-64 without writing anything.
   Each range now has the set of CRCs it was read with (the recorded one, the fresh one).
3. *Solve*: the object's CRC-64 is linear in each range's CRC (``fold = XOR over ranges of
   crc_r shifted by the bytes after r``), so for every choice among the ranges read
   differently the combined CRC is one XOR away. The choice that gives the object's CRC-64
   names the bad ranges and their right CRC (another choice matching by accident is a 2^-64
   event). Only those ranges are rewritten: each is first removed from the checkpoint
   (``forget``, flushed before the first byte is overwritten, so a crash mid-rewrite never
   leaves a recorded CRC over mixed bytes), fetched again into the file until it is read
   with the chosen CRC (a few attempts), then recorded again (``record``).
4. No choice matches: another read pass (a corruption may have repeated itself identically,
   a deterministic fault flipping the same byte twice). Two read passes in a row that read
   every range as before mean OSS consistently serves bytes that do not match its own
   CRC-64: ``IntegrityError``; so is no match after ``MAX_REPAIR_ROUNDS`` passes.

A transient corruption (one bad body) is thus repaired by reading every range once more (the
network cost of a second download) and rewriting only the bad one (one more GET); the file
is renamed into place only once its CRC-64 matches.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence

from ._checkpoint import DownloadPart
from ._crc64 import crc64, crc64_combine
from ._direct_io import write_chunk_direct
from ._errors import FileChangedError, IntegrityError, ProtocolError, ServiceError
from ._fileio import IoRunner
from ._http import HttpResponse
from ._planner import PartPlan
from ._session import Session
from ._transfer import _fold_crcs, _response_crc, _same_etag, run_parts

__all__ = ["MAX_REPAIR_ROUNDS", "fetch_range", "repair"]

MAX_REPAIR_ROUNDS = 4
"""Read passes over every range before a CRC-64 mismatch is an error (see ``repair``)."""


class _Attempt:
    """The bytes of one attempt at a range: how many were written, their CRC-64."""

    __slots__ = ("crc", "written")

    def __init__(self) -> None:
        self.written = 0
        self.crc = 0


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
    write: bool = True,
    direct: int = -1,
    fatal: Callable[[], BaseException | None] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, int]:
    """Fetch ``part`` into ``fd``; return its CRC-64 and its size.

    ``on_bytes(n)``: ``n`` bytes of the range received so far in this attempt.
    ``write=False``: the repair's read pass, the CRC-64 only, nothing written.
    ``direct``: an ``O_DIRECT`` descriptor of the same file, or -1 (``_direct_io``).
    A 412 (the object changed) is raised as ``FileChangedError``.
    """
    io: IoRunner = session._io
    attempt = _Attempt()

    def sink() -> Callable[[bytes], Awaitable[None]]:
        nonlocal attempt
        attempt = current = _Attempt()

        async def take(data: bytes) -> None:
            position = part.offset + current.written
            if current.written + len(data) > part.size:
                raise ProtocolError(
                    f"GetObject of oss://{bucket}/{key} bytes {part.offset}-"
                    f"{part.offset + part.size - 1} answered more than {part.size} bytes"
                )
            if write:
                current.crc = await io.run(
                    write_chunk_direct, fd, direct, position, data, current.crc
                )
            else:
                current.crc = await io.run(_crc_only, data, current.crc)
            current.written += len(data)
            if on_bytes is not None:
                await on_bytes(current.written)

        return take

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
            {**(headers or {}), "If-Match": etag},
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
    return attempt.crc, attempt.written


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
    headers: Mapping[str, str] | None = None,
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
    seen: dict[int, set[int]] = {p.number: {done[p.number].crc64} for p in plan}
    unchanged = 0  # read passes in a row that read nothing new
    for _ in range(MAX_REPAIR_ROUNDS):
        new = 0

        async def read(part: PartPlan) -> None:
            nonlocal new
            fresh, _ = await fetch_range(
                session, bucket, key, etag, part, fd, write=False, fatal=fatal, headers=headers
            )
            if fresh not in seen[part.number]:
                seen[part.number].add(fresh)
                new += 1

        await run_parts(list(plan), routines, read, None)
        choice = _solve(plan, seen, done, crc, reported)
        if choice is not None:
            await _rewrite(
                session, bucket, key, etag, plan, fd, done, choice, forget, record, headers
            )
            return await folded()
        unchanged = 0 if new else unchanged + 1
        if unchanged == 2:
            break  # every range read the same on two more passes: nothing to choose from
    raise IntegrityError(
        f"oss://{bucket}/{key}: CRC-64 of the downloaded bytes ({crc}) differs from the "
        f"object's ({' or '.join(map(str, sorted(reported)))}), also after reading every "
        "range again: no combination of the ranges as read matches it",
        expected=expected,
        actual=crc,
    )


MAX_CHOICES = 1 << 16
"""Combinations of differently-read ranges tried by ``_solve`` (each costs a few XORs)."""


def _solve(
    plan: Sequence[PartPlan],
    seen: dict[int, set[int]],
    done: dict[int, DownloadPart],
    crc: int,
    reported: set[int],
) -> dict[int, int] | None:
    """The ranges to rewrite and the CRC each must be read with for the combined CRC-64 to be
    one of ``reported``, or None. ``crc`` is the combined CRC of ``done``.

    The combined CRC is ``XOR over ranges r of M_r(crc_r)``, ``M_r`` the (linear) shift by
    the bytes after r, so replacing a range's CRC ``a`` by ``b`` changes it by
    ``M_r(a ^ b)`` = ``crc64_combine(a ^ b, 0, bytes after r)``.
    """
    end = max((p.offset + p.size for p in plan), default=0)
    options: list[list[tuple[int, int, int]]] = []  # per ambiguous range: (number, crc, delta)
    for p in plan:
        current = done[p.number].crc64
        others = sorted(seen[p.number] - {current})
        if others:
            after = end - p.offset - p.size
            deltas = [(p.number, c, crc64_combine(c ^ current, 0, after)) for c in others]
            options.append([(p.number, current, 0), *deltas])
    if not options or math.prod(len(o) for o in options) > MAX_CHOICES:
        return None
    for combination in itertools.product(*options):
        total = crc
        for _, _, delta in combination:
            total ^= delta
        if total in reported:
            return {n: c for n, c, delta in combination if delta}
    return None


async def _rewrite(
    session: Session,
    bucket: str,
    key: str,
    etag: str,
    plan: Sequence[PartPlan],
    fd: int,
    done: dict[int, DownloadPart],
    choice: dict[int, int],
    forget: Callable[[int], Awaitable[None]],
    record: Callable[[DownloadPart], Awaitable[None]],
    headers: Mapping[str, str] | None = None,
) -> None:
    """Rewrite each chosen range until it is read with its chosen CRC (a few attempts)."""
    for part in plan:
        if part.number not in choice:
            continue
        done.pop(part.number, None)
        await forget(part.number)  # on disk before the first byte is overwritten
        for _ in range(REWRITE_ATTEMPTS):
            new_crc, _ = await fetch_range(session, bucket, key, etag, part, fd, headers=headers)
            if new_crc == choice[part.number]:
                break
        else:
            raise IntegrityError(
                f"oss://{bucket}/{key}: range {part.number} was read {REWRITE_ATTEMPTS} times "
                f"without the CRC-64 ({choice[part.number]}) that makes the object's",
                expected=choice[part.number],
                actual=new_crc,
            )
        done[part.number] = DownloadPart(part.number, part.size, new_crc)
        await record(done[part.number])


REWRITE_ATTEMPTS = 3
