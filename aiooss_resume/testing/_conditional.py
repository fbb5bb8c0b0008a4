"""What a GetObject/HeadObject answers: its byte range and its conditional headers.

Theory of operation
-------------------
Pure functions of header strings and object metadata, so they can be tested without sockets.

Range (``Range: bytes=a-b | a- | -n``), as OSS documents it for a ``size``-byte object:

* A valid range within ``0 .. size-1`` is served as ``206`` with ``Content-Range``.
* By default OSS *ignores* a range it cannot serve: malformed (``byte=0-1``, ``bytes=junk``,
  non-ASCII digits), inverted (``bytes=9-1``), several ranges, or one reaching outside the
  object (``bytes=0-size``, ``bytes=size-``, ``bytes=-(size+1)``): the answer is ``200`` with
  the whole object and no ``Content-Range``.
* With ``x-oss-range-behavior: standard`` (what alibabacloud-oss-v2's Downloader sends), an
  end beyond the object is clamped (``206``) and a start beyond it is ``416 InvalidRange``, as
  RFC 7233 says; a suffix longer than the object is the whole object as ``206``. A malformed
  value is still ignored.

Conditions, evaluated after the object is found and before the range, in the order of
RFC 7232 section 6 (which OSS follows, as S3 does):

1. ``If-Match`` present and no listed ETag equals the object's → ``412 PreconditionFailed``;
2. otherwise ``If-Unmodified-Since`` (a valid date) earlier than Last-Modified → ``412``;
3. ``If-None-Match`` present and a listed ETag equals the object's → ``304 Not Modified``;
4. otherwise ``If-Modified-Since`` (a valid date) not earlier than Last-Modified → ``304``.

So an ``If-Match`` that holds makes a failing ``If-Unmodified-Since`` irrelevant, and an
``If-None-Match`` that fails wins over an ``If-Modified-Since`` that holds. ETags compare
case-insensitively with the quotes optional; a list (``"a", "b"``) and ``*`` (any object)
are accepted. A date OSS cannot parse is ignored, as OSS documents for If-Modified-Since.
Dates have one-second resolution, like ``Last-Modified``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, Literal

from .._retry import parse_http_date
from ._protocol import OssHttpError

__all__ = ["Precondition", "evaluate_preconditions", "parse_range", "range_start"]

_RANGE: Final = re.compile(r"\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*", re.ASCII)

Precondition = Literal["ok", "not_modified"]


def parse_range(value: str, size: int, *, standard: bool = False) -> tuple[int, int] | None:
    """``Range`` as (start, end inclusive); None means "ignore it, send the whole object".

    ``standard`` is ``x-oss-range-behavior: standard``. Raises InvalidRange (416) only in
    standard mode, for a range starting beyond the object (see the module docstring).
    """
    match = _RANGE.fullmatch(value)
    if match is None or (not match.group(1) and not match.group(2)):
        return None  # malformed or several ranges: ignored in both modes
    first, last = match.group(1), match.group(2)
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            if standard:
                raise OssHttpError("InvalidRange", details={"RangeRequested": value})
            return None
        if suffix > size and not standard:
            return None
        return max(0, size - suffix), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # an inverted range is not a range: the whole object is sent
    if start >= size:
        if standard:
            raise OssHttpError("InvalidRange", details={"RangeRequested": value})
        return None
    if end >= size:
        if not standard:
            return None
        end = size - 1
    return start, end


def range_start(value: str | None) -> int | None:
    """The first byte a ``Range`` header asks for, for fault matching (None: no start given)."""
    if value is None:
        return None
    match = _RANGE.fullmatch(value)
    if match is None or not match.group(1):
        return None
    return int(match.group(1))


def _etag_list(value: str) -> list[str]:
    return [tag.strip() for tag in value.split(",") if tag.strip()]


def _same_etag(stored: str, given: str) -> bool:
    return stored.strip().strip('"').upper() == given.strip().strip('"').upper()


def _any_matches(value: str, etag: str, *, weak: bool) -> bool:
    for tag in _etag_list(value):
        if tag == "*":
            return True
        if tag.startswith("W/"):
            if not weak:
                continue  # If-Match compares strongly: a weak tag never matches
            tag = tag[2:]
        if _same_etag(etag, tag):
            return True
    return False


def evaluate_preconditions(
    headers: Mapping[str, str], etag: str, last_modified: float
) -> Precondition:
    """``"ok"`` or ``"not_modified"`` (304); raises PreconditionFailed (412).

    ``headers`` has lower-cased names; ``last_modified`` is the object's POSIX time.
    """
    modified = int(last_modified)  # Last-Modified is sent with one-second resolution
    if_match = headers.get("if-match")
    if if_match is not None:
        if not _any_matches(if_match, etag, weak=False):
            raise OssHttpError("PreconditionFailed", details={"Condition": "If-Match"})
    else:
        since = parse_http_date(headers.get("if-unmodified-since", "").strip())
        if since is not None and modified > since.timestamp():
            raise OssHttpError("PreconditionFailed", details={"Condition": "If-Unmodified-Since"})
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if _any_matches(if_none_match, etag, weak=True):
            return "not_modified"
    else:
        since = parse_http_date(headers.get("if-modified-since", "").strip())
        if since is not None and modified <= since.timestamp():
            return "not_modified"
    return "ok"
