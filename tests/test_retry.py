"""Tests for aiooss_resume._retry: error classification, backoff, HTTP dates, clock skew."""

from __future__ import annotations

import asyncio
import builtins
import email.utils
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiooss_resume._errors import (
    CheckpointError,
    CredentialsError,
    FileChangedError,
    IntegrityError,
    NoSuchUploadError,
    OssError,
    ProtocolError,
    ServiceError,
    TransportError,
)
from aiooss_resume._retry import (
    RETRYABLE_CODES,
    RETRYABLE_STATUSES,
    ClockSkew,
    RetryPolicy,
    format_http_date,
    format_iso8601_basic,
    is_retryable,
    parse_http_date,
)

# ---------------------------------------------------------------------------------------------
# Classification

# Spec 7.2's code table, transcribed row by row: (status, code, retryable).
SPEC_7_2_TABLE = [
    (400, "InvalidArgument", False),
    (400, "InvalidDigest", False),
    (400, "MalformedXML", False),
    (400, "InvalidPart", False),
    (400, "InvalidPartOrder", False),
    (400, "EntityTooSmall", False),
    (400, "EntityTooLarge", False),
    (400, "InvalidObjectName", False),
    (400, "InvalidBucketName", False),
    (400, "BadRequest", True),
    (403, "AccessDenied", False),
    (403, "SignatureDoesNotMatch", False),
    (403, "InvalidAccessKeyId", False),
    (403, "RequestTimeTooSkewed", True),
    (404, "NoSuchBucket", False),
    (404, "NoSuchKey", False),
    (404, "NoSuchUpload", False),
    (409, "FileAlreadyExists", False),
    (411, "MissingContentLength", False),
    (203, "CallbackFailed", False),
    (500, "InternalError", True),
    (503, "ServiceUnavailable", True),
    (401, "", True),
    (408, "RequestTimeout", True),
    (429, "TooManyRequests", True),
]


@pytest.mark.parametrize(("status", "code", "expected"), SPEC_7_2_TABLE)
def test_spec_code_table(status: int, code: str, expected: bool) -> None:
    assert is_retryable(ServiceError(status, code, "message")) is expected


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599, 401, 408, 429])
@pytest.mark.parametrize("code", ["", "InternalError", "InvalidArgument", "AccessDenied"])
def test_retryable_statuses_whatever_the_code(status: int, code: str) -> None:
    assert is_retryable(ServiceError(status, code))


@pytest.mark.parametrize("status", [400, 403, 404, 409, 411])
@pytest.mark.parametrize(
    "code", ["", "InvalidArgument", "AccessDenied", "SecurityTokenExpired", "Whatever"]
)
def test_client_errors_are_final(status: int, code: str) -> None:
    assert not is_retryable(ServiceError(status, code))


@pytest.mark.parametrize("status", [400, 403, 404, 409, 411])
@pytest.mark.parametrize("code", ["RequestTimeTooSkewed", "BadRequest"])
def test_retryable_codes_whatever_the_status(status: int, code: str) -> None:
    assert is_retryable(ServiceError(status, code))


def test_constants() -> None:
    assert frozenset({"RequestTimeTooSkewed", "BadRequest"}) == RETRYABLE_CODES
    assert frozenset({401, 408, 429}) == RETRYABLE_STATUSES


def test_codes_are_case_sensitive() -> None:
    # OSS codes are exact identifiers; a case variant is some other, unknown code.
    assert not is_retryable(ServiceError(400, "badrequest"))


@pytest.mark.parametrize("status", [404, 500, 503])
def test_no_such_upload_is_never_retried(status: int) -> None:
    assert not is_retryable(NoSuchUploadError(status, "NoSuchUpload"))


@pytest.mark.parametrize(
    "error",
    [
        TransportError("connection reset"),
        ProtocolError("truncated XML"),
        IntegrityError("part CRC mismatch", expected=1, actual=2),
        IntegrityError("part CRC missing", expected=1, actual=None),
    ],
)
def test_transient_local_errors_are_retried(error: BaseException) -> None:
    assert is_retryable(error)


@pytest.mark.parametrize(
    "error",
    [
        CheckpointError("locked"),
        FileChangedError("mtime changed"),
        CredentialsError("none"),
        OssError("root"),
        ValueError("misuse"),
        TypeError("misuse"),
        OSError("disk"),
        TimeoutError(),
        asyncio.CancelledError(),
        KeyboardInterrupt(),
        SystemExit(1),
        ExceptionGroup("group", [TransportError("reset")]),
        BaseExceptionGroup("group", [KeyboardInterrupt()]),
    ],
)
def test_everything_else_is_final(error: BaseException) -> None:
    assert not is_retryable(error)


def test_half_built_service_error_does_not_raise() -> None:
    class Odd(ServiceError):
        def __init__(self) -> None:  # skips ServiceError.__init__: no status, no code
            Exception.__init__(self, "odd")

    assert is_retryable(Odd()) is False


def _oracle(status: int, code: str) -> bool:
    return (
        status >= 500 or status in {401, 408, 429} or code in {"RequestTimeTooSkewed", "BadRequest"}
    )


@given(
    status=st.integers(min_value=-1000, max_value=10_000),
    code=st.one_of(st.sampled_from([c for _, c, _ in SPEC_7_2_TABLE]), st.text(max_size=30)),
)
def test_service_error_classification_is_total(status: int, code: str) -> None:
    assert is_retryable(ServiceError(status, code)) is _oracle(status, code)
    assert is_retryable(NoSuchUploadError(status, code)) is False


_EXCEPTION_TYPES = sorted(
    {
        obj
        for obj in vars(builtins).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseException)
        # Groups need arguments even in __new__; they are covered by the table above.
        and not issubclass(obj, BaseExceptionGroup)
    }
    | {
        OssError,
        ServiceError,
        NoSuchUploadError,
        TransportError,
        ProtocolError,
        IntegrityError,
        CheckpointError,
        FileChangedError,
        CredentialsError,
        asyncio.CancelledError,
    },
    key=lambda cls: cls.__qualname__,
)


_RETRYABLE_TYPES = (TransportError, ProtocolError, IntegrityError)


@st.composite
def _exception_types(draw: st.DrawFn) -> type[BaseException]:
    """A known exception class, or a freshly made subclass of one (where subclassing works)."""
    base = draw(st.sampled_from(_EXCEPTION_TYPES))
    if draw(st.booleans()):
        # typing.final is not enforced at runtime, so even our @final classes can be extended.
        return type(draw(st.from_regex(r"[A-Z][a-z]{0,8}", fullmatch=True)), (base,), {})
    return base


@given(_exception_types())
def test_is_retryable_total_over_exception_types(cls: type[BaseException]) -> None:
    # __new__ without __init__ yields the barest instance each class allows (ServiceError
    # without status/code, IntegrityError without expected...): is_retryable must cope.
    error = cls.__new__(cls)
    assert is_retryable(error) is issubclass(cls, _RETRYABLE_TYPES)


# ---------------------------------------------------------------------------------------------
# RetryPolicy


def test_policy_defaults_match_spec_7_3() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.base_delay, policy.max_delay) == (3, 0.2, 20.0)


@pytest.mark.parametrize("max_attempts", [0, -1, True, 1.5, "3"])
def test_policy_rejects_bad_max_attempts(max_attempts: object) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=max_attempts)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["base_delay", "max_delay"])
@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), "1"])
def test_policy_rejects_bad_delays(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**{field: value})  # type: ignore[arg-type]


def test_policy_is_frozen() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 5  # type: ignore[misc]


def test_backoff_known_values() -> None:
    policy = RetryPolicy()
    assert policy.backoff(0, lambda: 0.5) == pytest.approx(0.1)
    assert policy.backoff(1, lambda: 0.5) == pytest.approx(0.2)
    assert policy.backoff(3, lambda: 1.0) == pytest.approx(1.6)
    assert policy.backoff(7, lambda: 1.0) == pytest.approx(20.0)  # 25.6 capped
    assert policy.backoff(10_000, lambda: 0.5) == pytest.approx(10.0)  # no overflow
    assert policy.backoff(5, lambda: 0.0) == 0.0


def test_backoff_is_deterministic_for_a_seeded_rng() -> None:
    policy = RetryPolicy()
    a = [policy.backoff(n, random.Random(7).random) for n in range(6)]
    b = [policy.backoff(n, random.Random(7).random) for n in range(6)]
    assert a == b


@pytest.mark.parametrize("attempt", [-1, True, 1.0])
def test_backoff_rejects_bad_attempt(attempt: object) -> None:
    with pytest.raises(ValueError, match="attempt"):
        RetryPolicy().backoff(attempt, lambda: 0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), float("inf")])
def test_backoff_rejects_bad_rng(value: float) -> None:
    with pytest.raises(ValueError, match="rng"):
        RetryPolicy().backoff(0, lambda: value)


_delays = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
_unit = st.floats(min_value=0, max_value=1, exclude_max=True)


@given(
    base=_delays,
    cap=_delays,
    attempt=st.integers(min_value=0, max_value=3000),
    r=_unit,
)
def test_backoff_within_bounds(base: float, cap: float, attempt: int, r: float) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=base, max_delay=cap)
    bound = float(min(Fraction(base) * 2**attempt, Fraction(cap)))
    delay = policy.backoff(attempt, lambda: r)
    assert 0.0 <= delay <= bound


@given(
    base=_delays,
    cap=_delays,
    attempt=st.integers(min_value=0, max_value=3000),
    r=_unit,
)
def test_backoff_cap_is_monotone(base: float, cap: float, attempt: int, r: float) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=cap)
    assert policy.backoff(attempt, lambda: r) <= policy.backoff(attempt + 1, lambda: r)
    assert policy.backoff(attempt, lambda: r) <= r * cap


@pytest.mark.parametrize(
    ("error", "failures", "expected"),
    [
        (TransportError("reset"), 1, True),
        (TransportError("reset"), 2, True),
        (TransportError("reset"), 3, False),  # the third attempt was the last
        (ServiceError(404, "NoSuchKey"), 1, False),
    ],
)
def test_should_retry(error: BaseException, failures: int, expected: bool) -> None:
    assert RetryPolicy(max_attempts=3).should_retry(error, failures) is expected


def test_single_attempt_policy_never_retries() -> None:
    assert not RetryPolicy(max_attempts=1).should_retry(TransportError("reset"), 1)


# ---------------------------------------------------------------------------------------------
# HTTP dates


SPEC_DATE = "Mon, 20 May 2024 08:30:00 GMT"
SPEC_INSTANT = datetime(2024, 5, 20, 8, 30, tzinfo=UTC)


def test_spec_date_examples() -> None:
    assert format_http_date(SPEC_INSTANT) == SPEC_DATE
    assert parse_http_date(SPEC_DATE) == SPEC_INSTANT
    assert format_iso8601_basic(SPEC_INSTANT) == "20240520T083000Z"


def test_formatting_converts_to_utc_and_drops_microseconds() -> None:
    cst = timezone(timedelta(hours=8))
    local = datetime(2024, 5, 20, 16, 30, 0, 999_999, tzinfo=cst)
    assert format_http_date(local) == SPEC_DATE
    assert format_iso8601_basic(local) == "20240520T083000Z"


@pytest.mark.parametrize("formatter", [format_http_date, format_iso8601_basic])
def test_formatting_rejects_naive_datetimes(formatter: object) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        formatter(datetime(2024, 5, 20, 8, 30))  # type: ignore[operator]


def test_dates_match_signing_vectors() -> None:
    seen = 0
    vectors = json.loads((Path(__file__).parent / "vectors" / "signing.json").read_text("utf-8"))
    for vector in vectors["vectors"]:
        headers = {k.lower(): v for k, v in vector["inputs"]["headers"].items()}
        date, iso = headers.get("date"), headers.get("x-oss-date")
        if date is None:
            continue
        instant = parse_http_date(date)
        assert instant is not None
        assert format_http_date(instant) == date
        if iso is not None:
            assert format_iso8601_basic(instant) == iso
            seen += 1
    assert seen > 0


@pytest.mark.parametrize(
    "text",
    [
        "mon, 20 may 2024 08:30:00 gmt",
        "20 May 2024 08:30:00 GMT",
        "Mon, 20 May 2024 08:30:00 UTC",
        "Mon, 20 May 2024 08:30:00 +0000",
        "  Mon,  20 May 2024 08:30:00 GMT \r\n",
        "Fri, 20 May 2024 08:30:00 GMT",  # wrong weekday: the date wins
    ],
)
def test_parse_is_lenient_on_form(text: str) -> None:
    assert parse_http_date(text) == SPEC_INSTANT


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "20240520T083000Z",
        "Mon, 20 May 2024 08:30:00",  # no zone
        "Mon, 20 May 2024 08:30:00 +0800",  # not UTC
        "Mon, 20 Foo 2024 08:30:00 GMT",
        "Thu, 31 Feb 2024 08:30:00 GMT",
        "Mon, 20 May 2024 25:00:00 GMT",
        "Mon, 20 May 2024 08:30:60 GMT",
        "Mon, 00 May 2024 08:30:00 GMT",
        "Mon, 20 May 2024 08:30:00 GMT trailing",
        "Mon, 20 May 2024 ０8:30:00 GMT",  # non-ASCII digit
    ],
)
def test_parse_rejects_garbage(text: str) -> None:
    assert parse_http_date(text) is None


def test_parse_never_raises_on_non_strings() -> None:
    assert parse_http_date(None) is None  # type: ignore[arg-type]
    assert parse_http_date(b"Mon, 20 May 2024 08:30:00 GMT") is None  # type: ignore[arg-type]


_aware = st.datetimes(
    min_value=datetime(1000, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5))]),
)


@given(_aware)
def test_http_date_round_trip(dt: datetime) -> None:
    text = format_http_date(dt)
    # email.utils is an independent, locale-free RFC 1123 implementation.
    assert text == email.utils.format_datetime(
        dt.astimezone(UTC).replace(microsecond=0), usegmt=True
    )
    assert parse_http_date(text) == dt.astimezone(UTC).replace(microsecond=0)


@given(_aware)
def test_iso8601_basic_format(dt: datetime) -> None:
    expected = dt.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    assert format_iso8601_basic(dt) == expected


@given(st.text(max_size=40))
def test_parse_http_date_is_total(text: str) -> None:
    result = parse_http_date(text)
    assert result is None or result.tzinfo is UTC


# ---------------------------------------------------------------------------------------------
# ClockSkew


def test_clock_skew_starts_at_zero() -> None:
    skew = ClockSkew()
    assert skew.offset == 0.0
    assert skew.now(SPEC_INSTANT) == SPEC_INSTANT


def test_clock_skew_spec_scenario() -> None:
    # Our clock is 20 minutes fast; OSS answers RequestTimeTooSkewed with its Date.
    local = SPEC_INSTANT + timedelta(minutes=20)
    skew = ClockSkew()
    skew.observe(SPEC_DATE, local)
    assert skew.offset == -1200.0
    assert skew.now(local) == SPEC_INSTANT
    assert skew.now(local + timedelta(seconds=5)) == SPEC_INSTANT + timedelta(seconds=5)
    skew.reset()
    assert skew.offset == 0.0


def test_clock_skew_now_returns_utc() -> None:
    skew = ClockSkew(3.5)
    cst = timezone(timedelta(hours=8))
    result = skew.now(datetime(2024, 5, 20, 16, 30, tzinfo=cst))
    assert result.tzinfo is UTC
    assert result == SPEC_INSTANT + timedelta(seconds=3.5)


@pytest.mark.parametrize(
    "bad", ["", "garbage", "Thu, 31 Feb 2024 08:30:00 GMT", "20240520T083000Z"]
)
def test_unparsable_date_leaves_offset_unchanged(bad: str) -> None:
    skew = ClockSkew(42.0)
    skew.observe(bad, SPEC_INSTANT)
    assert skew.offset == 42.0


def test_clock_skew_rejects_naive_local_time() -> None:
    skew = ClockSkew()
    with pytest.raises(ValueError, match="timezone-aware"):
        skew.observe(SPEC_DATE, datetime(2024, 5, 20))
    with pytest.raises(ValueError, match="timezone-aware"):
        skew.now(datetime(2024, 5, 20))
    with pytest.raises(ValueError, match="finite"):
        ClockSkew(float("nan"))


_server_times = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda dt: dt.replace(microsecond=0))
_local_times = st.datetimes(
    min_value=datetime(1900, 1, 1),
    max_value=datetime(2300, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=8))]),
)


@given(
    server=_server_times,
    local=_local_times,
    later=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=365)),
)
def test_observe_then_now_gives_server_time(
    server: datetime, local: datetime, later: timedelta
) -> None:
    skew = ClockSkew()
    skew.observe(format_http_date(server), local)
    assert skew.now(local) == server
    assert skew.now(local + later) == server + later
    assert skew.offset == (server - local).total_seconds()


@given(text=st.text(max_size=40), offset=st.floats(min_value=-1e8, max_value=1e8))
def test_observe_never_raises_and_ignores_garbage(text: str, offset: float) -> None:
    skew = ClockSkew(offset)
    before = skew.offset
    skew.observe(text, SPEC_INSTANT)
    if parse_http_date(text) is None:
        assert skew.offset == before
