"""Request signing for OSS: V1 (HMAC-SHA1) and V4 (OSS4-HMAC-SHA256), and URL encoding.

Theory of operation
-------------------
Both versions sign the *logical* request: method, decoded bucket and key, decoded query
parameters and a selection of headers. Neither signs the Host header or the wire encoding of
the path, so the same signature is valid whatever the addressing style (spec 1.2). The
functions here are pure: the caller supplies the time and the credentials' strings.

V1 (spec section 2)::

    VERB \\n Content-MD5 \\n Content-Type \\n Date \\n CanonicalizedOSSHeaders CanonicalizedResource

where the OSS headers are every ``x-oss-*`` header, lower-cased and sorted, and the resource
is ``/bucket/key`` (raw key) plus the *sub-resource* query parameters, sorted and decoded.

V4 (spec section 3): a canonical request of six lines (verb, URI-encoded ``/bucket/key``,
every query parameter URI-encoded and sorted, the signed headers, the additional header list,
``UNSIGNED-PAYLOAD``), hashed into a string to sign scoped to ``date/region/oss``, and an
HMAC-SHA256 chain ``aliyun_v4 + secret -> date -> region -> product -> aliyun_v4_request``.

Pitfall (spec 4.1): every header that is signed must be sent exactly as signed. The transport
must not add a Content-Type after signing; the client passes ``skip_auto_headers``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Literal, NamedTuple
from urllib.parse import quote

from ._retry import format_http_date, format_iso8601_basic

__all__ = [
    "SUBRESOURCES",
    "UNSIGNED_PAYLOAD",
    "SignatureVersion",
    "V4Authorization",
    "canonical_query_v4",
    "encode_query",
    "format_http_date",
    "format_iso8601_basic",
    "is_ip_endpoint_host",
    "parse_v4_authorization",
    "request_path",
    "sign_request",
    "uri_encode",
    "v1_authorization",
    "v1_signature",
    "v1_string_to_sign",
    "v4_authorization",
    "v4_canonical_request",
    "v4_signature",
    "v4_signing_key",
    "v4_string_to_sign",
]

SignatureVersion = Literal["v1", "v4"]

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_V4_ALGORITHM = "OSS4-HMAC-SHA256"
_V4_TERMINATOR = "aliyun_v4_request"

# Query parameters that V1 signs (spec 2.5: the union of the official SDKs' lists). Other
# parameters (max-parts, part-number-marker, encoding-type, prefix, ...) are not signed by V1.
SUBRESOURCES: frozenset[str] = frozenset(
    {
        "acl", "uploads", "uploadId", "partNumber", "security-token", "append", "position",
        "tagging", "symlink", "restore", "versions", "versioning", "versionId", "objectMeta",
        "location", "bucketInfo", "stat", "delete", "cors", "logging", "website", "referer",
        "lifecycle", "qos", "qosInfo", "policy", "encryption", "requestPayment", "sequential",
        "callback", "callback-var", "x-oss-process", "x-oss-traffic-limit",
        "x-oss-request-payer", "response-content-type", "response-content-language",
        "response-expires", "response-cache-control", "response-content-disposition",
        "response-content-encoding", "continuation-token", "inventory", "inventoryId", "worm",
        "wormId", "wormExtend", "live", "comp", "status", "vod", "startTime", "endTime", "img",
        "style", "styleName", "replication", "replicationProgress", "replicationLocation",
        "cname", "asyncFetch", "transferAcceleration", "regionList", "cloudboxes", "metaQuery",
        "resourceGroup", "x-oss-async-process", "withHashContext", "x-oss-enable-md5",
        "x-oss-enable-sha1", "x-oss-enable-sha256", "x-oss-hash-ctx", "x-oss-md5-ctx",
        "x-oss-ac-source-ip", "x-oss-ac-subnet-mask", "x-oss-ac-vpc-id",
        "x-oss-ac-forward-allow", "responseHeader",
    }
)  # fmt: skip

_UNRESERVED = "-_.~"  # plus ASCII letters and digits, which quote() never encodes


def uri_encode(value: str, *, keep_slash: bool) -> str:
    """Percent-encode UTF-8 bytes except ``A-Z a-z 0-9 - _ . ~`` (and ``/`` if kept).

    Upper-case hex, ``%20`` for space, ``%2B`` for plus (spec 1.4, 3.2).
    """
    return quote(value, safe=_UNRESERVED + ("/" if keep_slash else ""))


def request_path(bucket: str | None, key: str | None, *, path_style: bool) -> str:
    """The encoded request path: ``/bucket/key`` (path style) or ``/key`` (virtual host)."""
    encoded_key = uri_encode(key, keep_slash=True) if key else ""
    if bucket and path_style:
        return f"/{bucket}/{encoded_key}"
    return f"/{encoded_key}"


def encode_query(query: Iterable[tuple[str, str]]) -> str:
    """The query string as sent: ``name=value`` pairs, never a raw ``+`` (spec 1.5)."""
    return "&".join(
        f"{uri_encode(name, keep_slash=False)}={uri_encode(value, keep_slash=False)}"
        if value
        else uri_encode(name, keep_slash=False)
        for name, value in query
    )


def is_ip_endpoint_host(host: str) -> bool:
    """True for IP literals and ``localhost``: such endpoints use path-style addressing."""
    host = host.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _canonical_resource(bucket: str | None, key: str | None) -> str:
    if not bucket:
        return "/"
    return f"/{bucket}/{key or ''}"


# ---------------------------------------------------------------------------- V1


def v1_string_to_sign(
    method: str,
    bucket: str | None,
    key: str | None,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    date: str,
) -> str:
    """The V1 string to sign (spec 2.2-2.5).

    ``date`` fills the Date line unless an ``x-oss-date`` header is present, which the
    official Python SDKs prefer (spec 2.3); aiooss_resume itself never sends one with V1.
    """
    lowered = _lower_headers(headers)
    oss_headers = sorted((n, v) for n, v in lowered.items() if n.startswith("x-oss-"))
    canonical_headers = "".join(f"{name}:{value}\n" for name, value in oss_headers)
    sub = sorted((n, v) for n, v in query if n in SUBRESOURCES)
    resource = _canonical_resource(bucket, key)
    if sub:
        resource += "?" + "&".join(f"{n}={v}" if v else n for n, v in sub)
    return "\n".join(
        [
            method.upper(),
            lowered.get("content-md5", ""),
            lowered.get("content-type", ""),
            lowered.get("x-oss-date", date),
            canonical_headers + resource,
        ]
    )


def v1_signature(access_key_secret: str, string_to_sign: str) -> str:
    """Base64 of HMAC-SHA1(secret, string to sign)."""
    digest = hmac.new(access_key_secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def v1_authorization(access_key_id: str, signature: str) -> str:
    """``OSS <AccessKeyId>:<Signature>``."""
    return f"OSS {access_key_id}:{signature}"


# ---------------------------------------------------------------------------- V4


def canonical_query_v4(query: Iterable[tuple[str, str]]) -> str:
    """Every query parameter, URI-encoded (slash too), sorted by name then value (spec 3.2)."""
    encoded = sorted(
        (uri_encode(n, keep_slash=False), uri_encode(v, keep_slash=False)) for n, v in query
    )
    return "&".join(f"{n}={v}" if v else n for n, v in encoded)


def _v4_additional(headers: Mapping[str, str], additional: Iterable[str]) -> list[str]:
    names = set()
    for name in additional:
        lowered = name.lower()
        if lowered.startswith("x-oss-") or lowered in ("content-type", "content-md5"):
            continue
        if headers.get(lowered):
            names.add(lowered)
    return sorted(names)


def v4_canonical_request(
    method: str,
    bucket: str | None,
    key: str | None,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    additional_headers: Iterable[str] = (),
) -> str:
    """The V4 canonical request (spec 3.2, 3.5)."""
    lowered = _lower_headers(headers)
    extra = _v4_additional(lowered, additional_headers)
    signed = sorted(
        (n, v.strip())
        for n, v in lowered.items()
        if n.startswith("x-oss-") or n in ("content-type", "content-md5") or n in extra
    )
    return "\n".join(
        [
            method.upper(),
            uri_encode(_canonical_resource(bucket, key), keep_slash=True),
            canonical_query_v4(query),
            "".join(f"{name}:{value}\n" for name, value in signed),
            ";".join(extra),
            lowered.get("x-oss-content-sha256", UNSIGNED_PAYLOAD),
        ]
    )


def _scope(date: str, region: str, product: str) -> str:
    return f"{date}/{region}/{product}/{_V4_TERMINATOR}"


def v4_string_to_sign(
    canonical_request: str,
    timestamp: str,
    region: str,
    product: str = "oss",
    *,
    scope_date: str | None = None,
) -> str:
    """The V4 string to sign; ``timestamp`` is the ``x-oss-date`` value (spec 3.3).

    The scope date is ``timestamp[:8]`` unless given: the Go v1 SDK signs the RFC 1123
    ``Date`` header as the timestamp, with the credential's date as the scope (spec 3.1).
    """
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    scope = _scope(scope_date or timestamp[:8], region, product)
    return "\n".join([_V4_ALGORITHM, timestamp, scope, digest])


def v4_signing_key(access_key_secret: str, date: str, region: str, product: str = "oss") -> bytes:
    """The derived V4 signing key for ``date`` (``YYYYMMDD``), region and product (spec 3.4)."""
    key = ("aliyun_v4" + access_key_secret).encode()
    for part in (date, region, product, _V4_TERMINATOR):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def v4_signature(signing_key: bytes, string_to_sign: str) -> str:
    """Lower-case hex HMAC-SHA256 of the string to sign."""
    return hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def v4_authorization(
    access_key_id: str,
    date: str,
    region: str,
    signature: str,
    additional_headers: Sequence[str] = (),
    product: str = "oss",
) -> str:
    """The Authorization value in the documented form (spec 3.6)."""
    fields = [f"Credential={access_key_id}/{_scope(date, region, product)}"]
    if additional_headers:
        fields.append("AdditionalHeaders=" + ";".join(additional_headers))
    fields.append(f"Signature={signature}")
    return f"{_V4_ALGORITHM} " + ", ".join(fields)


class V4Authorization(NamedTuple):
    """The fields of a parsed V4 Authorization header (server side)."""

    access_key_id: str
    date: str
    region: str
    product: str
    additional_headers: tuple[str, ...]
    signature: str


def parse_v4_authorization(value: str) -> V4Authorization | None:
    """Parse a V4 Authorization header in any of the SDKs' layouts, or return None.

    Fields are comma-separated ``key=value`` pairs in any order, with or without spaces
    (spec 3.6).
    """
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != _V4_ALGORITHM:
        return None
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, field_value = item.strip().partition("=")
        if not sep:
            return None
        fields[name.strip()] = field_value.strip()
    credential = fields.get("Credential", "").split("/")
    signature = fields.get("Signature", "")
    if len(credential) != 5 or credential[4] != _V4_TERMINATOR or not signature:
        return None
    additional = fields.get("AdditionalHeaders", "")
    return V4Authorization(
        access_key_id=credential[0],
        date=credential[1],
        region=credential[2],
        product=credential[3],
        additional_headers=tuple(h for h in additional.split(";") if h),
        signature=signature,
    )


# ---------------------------------------------------------------------------- client side


def sign_request(
    *,
    method: str,
    bucket: str | None,
    key: str | None,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    access_key_id: str,
    access_key_secret: str,
    security_token: str | None,
    version: SignatureVersion,
    region: str | None,
    now: datetime,
) -> dict[str, str]:
    """Return ``headers`` plus the date, token and Authorization headers for this request.

    V1 adds ``Date``; V4 adds ``x-oss-date``, ``x-oss-content-sha256`` and ``Date`` (unsigned,
    as the v2 SDKs send it). V4 needs ``region``. Nothing is added after signing.
    """
    signed = {n: v for n, v in headers.items() if n.lower() != "authorization"}
    if security_token:
        signed["x-oss-security-token"] = security_token
    http_date = format_http_date(now)
    signed["Date"] = http_date
    if version == "v1":
        sts = v1_string_to_sign(method, bucket, key, query, signed, http_date)
        sig = v1_signature(access_key_secret, sts)
        signed["Authorization"] = v1_authorization(access_key_id, sig)
        return signed
    if not region:
        raise ValueError("signature version v4 needs a region (e.g. region='cn-hangzhou')")
    timestamp = format_iso8601_basic(now)
    signed["x-oss-date"] = timestamp
    signed["x-oss-content-sha256"] = UNSIGNED_PAYLOAD
    canonical = v4_canonical_request(method, bucket, key, query, signed)
    sts = v4_string_to_sign(canonical, timestamp, region)
    sig = v4_signature(v4_signing_key(access_key_secret, timestamp[:8], region), sts)
    signed["Authorization"] = v4_authorization(access_key_id, timestamp[:8], region, sig)
    return signed
