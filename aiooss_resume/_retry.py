"""Retry policy, error classification, and clock-skew correction; pure code, no I/O.

Nothing here sleeps, reads the clock or draws random numbers: the caller passes the current
time and the random source in. That keeps the policy deterministic under test and lets the
client decide how to wait (``anyio.sleep``, cancellable).

What is retried (protocol spec 7.2 and 7.3; the baseline is the official v2 SDKs' policy):

* ``TransportError``: no complete response (reset, refused, EOF, timeout). Spec 7.3.
* ``ProtocolError``: a truncated or garbled response is far more often a broken connection
  than a server that speaks a different protocol, and the attempt count bounds the cost of
  being wrong. (Our choice; the SDKs have no such class.)
* ``IntegrityError``: a part's CRC-64 did not match, i.e. corruption in transit; resending the
  part fixes it. Spec 7.3 (the SDKs' ``InconsistentError``).
* ``ServiceError`` with status >= 500, or 401/408/429 (``RETRYABLE_STATUSES``), or code
  ``RequestTimeTooSkewed``/``BadRequest`` (``RETRYABLE_CODES``). Spec 7.2's table and 7.3.
  ``RequestTimeTooSkewed`` is only worth retrying after correcting the clock: see
  ``ClockSkew``.

Everything else is final: ``NoSuchUploadError`` (whatever its status: the upload is gone and
only a restart helps), every other 4xx of spec 7.2 (``InvalidArgument``, ``AccessDenied``,
``SignatureDoesNotMatch``, ``InvalidPart``, ``EntityTooSmall``, ``FileAlreadyExists``...),
203 ``CallbackFailed``, the local failures (``CheckpointError``, ``FileChangedError``,
``CredentialsError``), misuse (``ValueError``...), cancellation, and any exception this
library does not know, including exception groups (the caller should unwrap those itself).

Two cases of spec 7.2 are deliberately not retried here: ``InvalidDigest`` (the SDKs do not
retry it; our parts carry CRC-64, not MD5, so it signals a bug, not corruption) and expired
STS tokens (their code names are unconfirmed, spec 12, and the fix is a credentials refresh,
which is the provider's business, not a blind resend).

Clock skew: OSS rejects requests whose time is more than 15 minutes from its own (spec 2.3)
with ``RequestTimeTooSkewed``, and every response carries the server's ``Date``. The official
Python SDKs ignore it; we record ``server Date - local time`` in a ``ClockSkew`` and sign the
retry, and every later request, with the corrected time, as Go v2 does (spec 7.3).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, final

from ._errors import (
    IntegrityError,
    NoSuchUploadError,
    ProtocolError,
    ServiceError,
    TransportError,
)

__all__ = [
    "RETRYABLE_CODES",
    "RETRYABLE_STATUSES",
    "ClockSkew",
    "RetryPolicy",
    "format_http_date",
    "format_iso8601_basic",
    "is_retryable",
    "parse_http_date",
]

RETRYABLE_CODES: Final[frozenset[str]] = frozenset({"BadRequest", "RequestTimeTooSkewed"})
"""OSS error codes retried whatever their status (spec 7.2 table, spec 7.3)."""

RETRYABLE_STATUSES: Final[frozenset[int]] = frozenset({401, 408, 429})
"""Non-5xx statuses retried whatever their code: auth glitch, timeout, throttling (spec 7.3).

Every status >= 500 is retried as well.
"""


@final
@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to try a request and how long to wait between tries.

    Attributes:
        max_attempts: total attempts, the first one included (1 disables retries).
        base_delay: seconds; the backoff cap doubles from this after each failure.
        max_delay: seconds; the backoff cap never exceeds this.

    The defaults are the official v2 SDKs' (spec 7.3).
    """

    max_attempts: int = 3
    base_delay: float = 0.2
    max_delay: float = 20.0

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise ValueError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        for name in ("base_delay", "max_delay"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    def backoff(self, attempt: int, rng: Callable[[], float]) -> float:
        """Seconds to wait before the next try, with full jitter.

        ``attempt`` is the number of failures so far minus one (0 after the first failure);
        ``rng`` returns a float in [0, 1), e.g. ``random.random``. The result is
        ``rng() * min(base_delay * 2**attempt, max_delay)``. Full jitter spreads out clients
        that failed together (a throttled burst) instead of having them retry in lockstep.
        """
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
            raise ValueError(f"attempt must be an int >= 0, got {attempt!r}")
        try:
            grown = math.ldexp(self.base_delay, attempt)
        except OverflowError:
            # base_delay * 2**attempt exceeds every float, so max_delay is the cap.
            grown = math.inf
        cap = min(grown, self.max_delay)
        r = rng()
        # 1.0 is tolerated (some generators are closed on the right); NaN fails this test too.
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"rng() must return a number in [0, 1), got {r!r}")
        return r * cap

    def should_retry(self, error: BaseException, failures: int) -> bool:
        """Whether to try again after ``failures`` failed attempts, the last one with ``error``.

        True when ``failures < max_attempts`` and ``is_retryable(error)``. Wait
        ``backoff(failures - 1, rng)`` before the next try.
        """
        return failures < self.max_attempts and is_retryable(error)


def is_retryable(error: BaseException) -> bool:
    """Whether a failed request may succeed if sent again (see the module docstring).

    Defined for every exception, and never raises.
    """
    try:
        if isinstance(error, TransportError):
            return error.retryable is not False
        if isinstance(error, ProtocolError | IntegrityError):
            return True
        if isinstance(error, NoSuchUploadError):
            return False
        if isinstance(error, ServiceError):
            # getattr: a subclass that skipped ServiceError.__init__ must not make this raise.
            status = getattr(error, "status", None)
            code = getattr(error, "code", None)
            if isinstance(status, int) and (status >= 500 or status in RETRYABLE_STATUSES):
                return True
            return isinstance(code, str) and code in RETRYABLE_CODES
    except Exception:
        # Totality: an exception object odd enough to break these checks is not retried.
        return False
    return False


# ---------------------------------------------------------------------------------------------
# HTTP dates and clock skew

# English names by index, so formatting never depends on the process locale (strftime's %a/%b
# do).
_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
_MONTH_NUMBERS: Final = {name.lower(): number for number, name in enumerate(_MONTHS, 1)}

# RFC 1123 as OSS sends it, read leniently: optional weekday (not cross-checked: the date is
# what matters), one- or two-digit day, any case, GMT/UTC/+0000.
_HTTP_DATE_RE: Final = re.compile(
    r"\s*(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+"
    r"(\d{2}):(\d{2}):(\d{2})\s+(?:GMT|UTC|\+0000)\s*",
    re.ASCII | re.IGNORECASE,
)


def _as_utc(dt: datetime, what: str) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {dt!r}")
    return dt.astimezone(UTC)


def format_http_date(dt: datetime) -> str:
    """``dt`` as an RFC 1123 GMT date, e.g. ``Mon, 20 May 2024 08:30:00 GMT`` (spec 2.3).

    ``dt`` must be timezone-aware; it is converted to UTC and its microseconds are dropped.
    """
    u = _as_utc(dt, "dt")
    return (
        f"{_DAYS[u.weekday()]}, {u.day:02d} {_MONTHS[u.month - 1]} {u.year:04d} "
        f"{u.hour:02d}:{u.minute:02d}:{u.second:02d} GMT"
    )


def parse_http_date(value: str) -> datetime | None:
    """Parse an RFC 1123 date such as ``Mon, 20 May 2024 08:30:00 GMT`` into an aware UTC
    datetime; return None for anything unparsable (never raises)."""
    try:
        match = _HTTP_DATE_RE.fullmatch(value)
        if match is None:
            return None
        day, month_name, year, hour, minute, second = match.groups()
        month = _MONTH_NUMBERS.get(month_name.lower())
        if month is None:
            return None
        return datetime(int(year), month, int(day), int(hour), int(minute), int(second), tzinfo=UTC)
    except (TypeError, ValueError):  # not a str; impossible date such as 31 Feb or 25:00
        return None


def format_iso8601_basic(dt: datetime) -> str:
    """``dt`` in ISO 8601 basic form, e.g. ``20240520T083000Z``, for ``x-oss-date`` (spec 3.1).

    ``dt`` must be timezone-aware; it is converted to UTC and its microseconds are dropped.
    """
    u = _as_utc(dt, "dt")
    return f"{u.year:04d}{u.month:02d}{u.day:02d}T{u.hour:02d}{u.minute:02d}{u.second:02d}Z"


@final
class ClockSkew:
    """The offset between the server's clock and ours, to sign requests with server time.

    One instance is shared by every request of a client. ``observe`` records the offset from a
    response's ``Date`` header; ``now`` turns a local time into the estimated server time.
    The ``Date`` header has one-second resolution, which is ample against OSS's 15-minute
    tolerance.
    """

    __slots__ = ("_offset",)

    def __init__(self, offset: float = 0.0) -> None:
        if not math.isfinite(offset):
            raise ValueError(f"offset must be finite, got {offset!r}")
        # Kept as a timedelta so that observe() followed by now() is exact to the microsecond;
        # a float of seconds loses microseconds for large offsets.
        self._offset = timedelta(seconds=offset)

    @property
    def offset(self) -> float:
        """Server time minus local time, in seconds (0.0 until a skew is observed)."""
        return self._offset.total_seconds()

    def observe(self, server_date: str, local_now: datetime) -> None:
        """Set the offset to ``server_date - local_now``.

        ``server_date`` is a response's ``Date`` header (RFC 1123); ``local_now`` is the local
        time at which the response was received (or the request signed), timezone-aware. If
        ``server_date`` cannot be parsed, the offset is left unchanged and nothing is raised:
        a bad header must not mask the error being handled.
        """
        local = _as_utc(local_now, "local_now")
        server = parse_http_date(server_date)
        if server is None:
            return
        self._offset = server - local

    def now(self, local_now: datetime) -> datetime:
        """The estimated server time at local time ``local_now`` (timezone-aware), in UTC."""
        return _as_utc(local_now, "local_now") + self._offset

    def reset(self) -> None:
        """Forget the observed offset."""
        self._offset = timedelta(0)

    def __repr__(self) -> str:
        return f"ClockSkew(offset={self.offset!r})"
