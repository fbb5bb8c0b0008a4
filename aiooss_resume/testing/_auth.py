"""The emulator's request authentication: V1 and V4 signature checks, STS token, clock skew.

Theory of operation
-------------------
:func:`verify_request` is a pure function of the logical request (method, *decoded* bucket,
key and query, the received headers), the server's credentials and region, and the server's
clock reading. It never looks at the raw path or the Host header, because neither version signs
them (spec 1.2): the same signature is valid whatever wire encoding or addressing the client
used. The string to sign or canonical request is rebuilt with the very functions the client
side uses (``aiooss_resume._signing``), and compared in constant time.

Checks, in order (spec 2.9 and 3.8):

1. ``Authorization`` missing: ``AccessDenied`` (403).
2. Unknown AccessKey ID: ``InvalidAccessKeyId`` (403).
3. V4 only: a malformed credential scope or a signing date that is not 8 digits gives
   ``InvalidArgument``; a region other than the server's gives 400 ``InvalidArgument``
   "Invalid signing region in Authorization header." (EC 0002-00000226); an
   ``x-oss-content-sha256`` other than ``UNSIGNED-PAYLOAD`` gives ``InvalidArgument``.
4. No usable date (``x-oss-date`` or ``Date``): ``AccessDenied`` (EC 0002-00000503).
5. Signature mismatch: ``SignatureDoesNotMatch`` (403); V1 answers carry ``StringToSign``
   (and its bytes in hex), V4 answers carry ``CanonicalRequest`` and ``StringToSign``.
6. Unparsable date (0002-00000502) or more than ``max_skew`` away from the server clock:
   ``RequestTimeTooSkewed`` (403). The caller puts the server's correct ``Date`` on the
   answer, so clients can correct their clock (spec 4.2).
7. When the server has an STS token configured, the request must carry it, either signed in
   ``x-oss-security-token`` or, for V1 only, in the unsigned ``security-token`` header the
   Python v2 SDK uses (spec 2.6, accepted as a fallback): else ``InvalidSecurityToken`` (403).
   A token sent to a server without one is ignored.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal

from .._signing import (
    parse_v4_authorization,
    v1_signature,
    v1_string_to_sign,
    v4_canonical_request,
    v4_signature,
    v4_signing_key,
    v4_string_to_sign,
)
from ._protocol import OssHttpError

__all__ = ["AuthConfig", "AuthResult", "headers_for_signing", "verify_request"]

_ISO_BASIC = re.compile(r"\d{8}T\d{6}Z", re.ASCII)
_V4_ALGORITHM = "OSS4-HMAC-SHA256"


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """What the verifier accepts: one AccessKey pair, an optional STS token, one region."""

    access_key_id: str
    access_key_secret: str
    region: str
    security_token: str | None = None
    max_skew: timedelta = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class AuthResult:
    """A successfully verified request."""

    version: Literal["v1", "v4"]
    access_key_id: str


def headers_for_signing(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased header map; a repeated header is joined with ``,`` as HTTP allows."""
    merged: dict[str, str] = {}
    for name, value in headers:
        lowered = name.lower()
        merged[lowered] = f"{merged[lowered]},{value}" if lowered in merged else value
    return merged


def _parse_time(value: str) -> datetime | None:
    value = value.strip()
    if not value.isascii():
        return None  # email.utils would read "٢٠" (Arabic-Indic digits) as 20
    if _ISO_BASIC.fullmatch(value):
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _check_skew(value: str, now: datetime, config: AuthConfig) -> None:
    when = _parse_time(value)
    if when is None:
        raise OssHttpError(
            "AccessDenied",
            "Invalid date format of the request.",
            ec="0002-00000502",
            details={"RequestTime": value},
        )
    if abs(now - when) > config.max_skew:
        raise OssHttpError(
            "RequestTimeTooSkewed",
            details={
                "RequestTime": value,
                "ServerTime": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "MaxAllowedSkewMilliseconds": str(int(config.max_skew.total_seconds() * 1000)),
            },
        )


def _same(expected: str, provided: str) -> bool:
    return hmac.compare_digest(expected.encode(), provided.encode())


def _check_token(headers: Mapping[str, str], config: AuthConfig, *, allow_unsigned: bool) -> None:
    if config.security_token is None:
        return
    provided = headers.get("x-oss-security-token")
    if provided is None and allow_unsigned:
        provided = headers.get("security-token")
    if provided is None or not _same(config.security_token, provided):
        raise OssHttpError("InvalidSecurityToken")


def _check_access_key(access_key_id: str, config: AuthConfig) -> None:
    if not _same(config.access_key_id, access_key_id):
        raise OssHttpError("InvalidAccessKeyId", details={"OSSAccessKeyId": access_key_id})


def verify_request(
    *,
    method: str,
    bucket: str | None,
    key: str | None,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    config: AuthConfig,
    now: datetime,
) -> AuthResult:
    """Verify one request; raise :class:`OssHttpError` with OSS's answer when refused.

    ``headers`` must have lower-cased names (see :func:`headers_for_signing`); ``query`` holds
    the decoded parameters in any order.
    """
    authorization = headers.get("authorization", "").strip()
    if not authorization:
        raise OssHttpError(
            "AccessDenied",
            "AccessDenied: You have no right to access this object because of bucket acl.",
        )
    query = list(query)
    if authorization.startswith(_V4_ALGORITHM):
        return _verify_v4(method, bucket, key, query, headers, config, now, authorization)
    if authorization.startswith("OSS "):
        return _verify_v1(method, bucket, key, query, headers, config, now, authorization)
    raise OssHttpError("InvalidArgument", "Authorization header is invalid.", ec="0002-00000010")


def _verify_v1(
    method: str,
    bucket: str | None,
    key: str | None,
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    config: AuthConfig,
    now: datetime,
    authorization: str,
) -> AuthResult:
    access_key_id, sep, signature = authorization[4:].strip().partition(":")
    if not sep or not access_key_id or not signature:
        raise OssHttpError(
            "InvalidArgument", "Authorization header is invalid.", ec="0002-00000010"
        )
    _check_access_key(access_key_id, config)
    # spec 2.3: the Python SDKs put x-oss-date on the Date line when they send it.
    date_line = headers.get("x-oss-date", headers.get("date", ""))
    if not date_line:
        raise OssHttpError(
            "AccessDenied", "OSS authentication requires a valid Date.", ec="0002-00000503"
        )
    string_to_sign = v1_string_to_sign(method, bucket, key, query, headers, headers.get("date", ""))
    expected = v1_signature(config.access_key_secret, string_to_sign)
    if not _same(expected, signature):
        raise OssHttpError(
            "SignatureDoesNotMatch",
            details={
                "OSSAccessKeyId": access_key_id,
                "SignatureProvided": signature,
                "StringToSign": string_to_sign,
                "StringToSignBytes": " ".join(f"{b:02x}" for b in string_to_sign.encode()),
            },
        )
    _check_skew(date_line, now, config)
    _check_token(headers, config, allow_unsigned=True)
    return AuthResult("v1", access_key_id)


def _verify_v4(
    method: str,
    bucket: str | None,
    key: str | None,
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    config: AuthConfig,
    now: datetime,
    authorization: str,
) -> AuthResult:
    parsed = parse_v4_authorization(authorization)
    if parsed is None:
        raise OssHttpError(
            "InvalidArgument", "Authorization header is invalid.", ec="0002-00000211"
        )
    _check_access_key(parsed.access_key_id, config)
    if not re.fullmatch(r"\d{8}", parsed.date, re.ASCII):
        raise OssHttpError(
            "InvalidArgument", "Invalid signing date in Authorization header.", ec="0002-00000212"
        )
    if parsed.region != config.region:
        raise OssHttpError(
            "InvalidArgument",
            "Invalid signing region in Authorization header.",
            ec="0002-00000226",
            details={"ArgumentName": "Authorization", "ArgumentValue": parsed.region},
        )
    if parsed.product != "oss":
        raise OssHttpError(
            "InvalidArgument",
            "Invalid signing product in Authorization header.",
            ec="0002-00000227",
        )
    content_sha256 = headers.get("x-oss-content-sha256")
    if content_sha256 != "UNSIGNED-PAYLOAD":
        raise OssHttpError(
            "InvalidArgument",
            "x-oss-content-sha256 must be UNSIGNED-PAYLOAD.",
            ec="0002-00000214",
            details={"ArgumentName": "x-oss-content-sha256", "ArgumentValue": content_sha256 or ""},
        )
    # spec 3.1: Go v1 sends no x-oss-date and signs the raw Date header as the timestamp.
    timestamp = headers.get("x-oss-date", headers.get("date", ""))
    if not timestamp:
        raise OssHttpError(
            "AccessDenied", "OSS authentication requires a valid Date.", ec="0002-00000503"
        )
    canonical = v4_canonical_request(method, bucket, key, query, headers, parsed.additional_headers)
    # For the Go v1 Date-header form the scope date is the credential's, not timestamp[:8].
    string_to_sign = v4_string_to_sign(
        canonical,
        timestamp,
        parsed.region,
        parsed.product,
        scope_date=None if _ISO_BASIC.fullmatch(timestamp) else parsed.date,
    )
    signing_key = v4_signing_key(
        config.access_key_secret, parsed.date, parsed.region, parsed.product
    )
    expected = v4_signature(signing_key, string_to_sign)
    missing = [h for h in parsed.additional_headers if not headers.get(h.lower())]
    if missing or not _same(expected, parsed.signature.lower()):
        details = {
            "OSSAccessKeyId": parsed.access_key_id,
            "SignatureProvided": parsed.signature,
            "CanonicalRequest": canonical,
            "StringToSign": string_to_sign,
        }
        if missing:
            details["MissingAdditionalHeaders"] = ";".join(missing)
        raise OssHttpError("SignatureDoesNotMatch", ec="0002-00000228", details=details)
    _check_skew(timestamp, now, config)
    _check_token(headers, config, allow_unsigned=False)
    return AuthResult("v4", parsed.access_key_id)
