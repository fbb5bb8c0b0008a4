"""Pure wire-level helpers of the emulator: error values, target parsing, naming rules.

Theory of operation
-------------------
Everything here is a pure function of strings, so the server and the signature verifier can be
tested without sockets. ``parse_target`` turns the *raw* request target into the logical
(bucket, key, query) triple exactly as the protocol reference prescribes (sections 1.3-1.5):
the first path segment is the bucket, the rest is percent-decoded as UTF-8 into the key (``%2F``
becomes ``/``, a ``+`` in the path stays a plus, no ``.``/``..`` normalisation, no slash
merging), and query parameters are split at ``&`` and the first ``=``, with valueless
parameters (``uploads`` or ``uploads=``) both giving an empty value. ``route`` then maps
method + query to an OSS operation name following the dispatch table of section 11.2.

Every failure is an :class:`OssHttpError`: the status, code, message and EC that the server
turns into an OSS error document (section 7.1). EC values are informational (clients branch on
``Code``); where the reference names one it is used, otherwise a stable made-up value is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import unquote, unquote_plus

__all__ = [
    "MAX_OBJECT_SIZE",
    "MAX_PART_NUMBER",
    "MAX_TRAFFIC_LIMIT",
    "MIN_PART_SIZE",
    "MIN_TRAFFIC_LIMIT",
    "OPERATIONS",
    "OssHttpError",
    "Target",
    "check_traffic_limit",
    "host_bucket",
    "parse_target",
    "parse_target_candidates",
    "route",
    "validate_bucket_name",
    "validate_key",
]

# Limits of spec section 6.
MAX_OBJECT_SIZE: Final = 5 * 1024**3
MIN_PART_SIZE: Final = 102400
MAX_PART_NUMBER: Final = 10000
MAX_KEY_BYTES: Final = 1023
# x-oss-traffic-limit, in bit/s (100 KB/s to 100 MB/s), spec section 6.
MIN_TRAFFIC_LIMIT: Final = 819_200
MAX_TRAFFIC_LIMIT: Final = 838_860_800

OPERATIONS: Final = (
    "AbortMultipartUpload",
    "CompleteMultipartUpload",
    "DeleteObject",
    "GetObject",
    "HeadObject",
    "InitiateMultipartUpload",
    "ListMultipartUploads",
    "ListParts",
    "PutBucket",
    "PutObject",
    "UploadPart",
)
"""Operation names the emulator implements (and that fault rules match on)."""

# Default message and EC per code. ECs named by the reference are used verbatim (7.1, 7.2,
# 5.6, 3.8); the others only need to be stable and well-formed.
_DEFAULTS: Final[Mapping[str, tuple[str, str]]] = {
    "AccessDenied": ("You have no right to access this object.", "0003-00000001"),
    "BadRequest": ("The request is malformed.", "0016-00000001"),
    "EntityTooLarge": (
        "Your proposed upload exceeds the maximum allowed size.",
        "0016-00000209",
    ),
    "EntityTooSmall": (
        "Your proposed upload is smaller than the minimum allowed size.",
        "0042-00000213",
    ),
    "FileAlreadyExists": ("The object you specified already exists.", "0042-00000214"),
    "InternalError": ("We encountered an internal error. Please try again.", "0000-00000001"),
    "InvalidAccessKeyId": (
        "The OSS Access Key Id you provided does not exist in our records.",
        "0002-00000005",
    ),
    "InvalidArgument": ("Invalid argument.", "0017-00000001"),
    "InvalidBucketName": ("The specified bucket is not valid.", "0015-00000001"),
    "InvalidDigest": (
        "The Content-MD5 you specified is not valid or did not match the body.",
        "0016-00000101",
    ),
    "InvalidObjectName": ("The specified object name is not valid.", "0016-00000005"),
    "InvalidPart": (
        "One or more of the specified parts could not be found or the specified entity tag "
        "might not have matched the part's entity tag",
        "0042-00000208",
    ),
    "InvalidPartOrder": (
        "The list of parts was not in ascending order. Parts must be ordered by part number.",
        "0042-00000209",
    ),
    "InvalidRange": ("The requested range cannot be satisfied.", "0026-00000010"),
    "InvalidRequest": ("The request is not valid.", "0016-00000020"),
    "InvalidSecurityToken": ("The security token you provided is invalid.", "0002-00000013"),
    "InvalidURI": ("The request URI is not valid.", "0016-00000003"),
    "MalformedXML": (
        "The XML you provided was not well-formed or did not validate against our "
        "published schema.",
        "0042-00000201",
    ),
    "MethodNotAllowed": (
        "The specified method is not allowed against this resource.",
        "0016-00000010",
    ),
    "MissingContentLength": ("You must provide the Content-Length HTTP header.", "0016-00000008"),
    "NoSuchBucket": ("The specified bucket does not exist.", "0015-00000101"),
    "NoSuchKey": ("The specified key does not exist.", "0026-00000001"),
    "NoSuchUpload": ("The specified upload does not exist.", "0042-00000002"),
    "NotImplemented": ("This operation is not implemented by the emulator.", "0000-00000501"),
    "PreconditionFailed": (
        "At least one of the pre-conditions you specified did not hold.",
        "0026-00000011",
    ),
    "RequestTimeout": (
        "Your socket connection to the server was not read from or written to within the "
        "timeout period.",
        "0002-00000008",
    ),
    "RequestTimeTooSkewed": (
        "The difference between the request time and the current time is too large.",
        "0002-00000504",
    ),
    "ServiceUnavailable": ("Please reduce your request rate.", "0000-00000503"),
    "SignatureDoesNotMatch": (
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
        "0002-00000040",
    ),
    "SlowDown": ("Please reduce your request rate.", "0000-00000503"),
}

_STATUS_FOR_CODE: Final[Mapping[str, int]] = {
    "AccessDenied": 403,
    "CallbackFailed": 203,
    "FileAlreadyExists": 409,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidRange": 416,
    "InvalidSecurityToken": 403,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "NotImplemented": 501,
    "PreconditionFailed": 412,
    "RequestTimeTooSkewed": 403,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "SlowDown": 503,
}

_CODE_FOR_STATUS: Final[Mapping[int, str]] = {
    400: "InvalidArgument",
    403: "AccessDenied",
    404: "NoSuchKey",
    409: "FileAlreadyExists",
    412: "PreconditionFailed",
    416: "InvalidRange",
    500: "InternalError",
    501: "NotImplemented",
    502: "InternalError",
    503: "SlowDown",
    504: "InternalError",
}


def default_status(code: str) -> int:
    """The HTTP status OSS pairs with ``code`` (400 for the many client errors)."""
    return _STATUS_FOR_CODE.get(code, 400)


def default_code(status: int) -> str:
    """A plausible OSS code for a bare ``status`` (used by fault rules given only a status)."""
    return _CODE_FOR_STATUS.get(status, "InternalError" if status >= 500 else "InvalidRequest")


class OssHttpError(Exception):
    """An OSS error answer: status, ``Code``, ``Message``, ``EC`` and extra children."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        status: int | None = None,
        ec: str | None = None,
        details: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        default_message, default_ec = _DEFAULTS.get(code, ("", "0000-00000000"))
        self.code = code
        self.message = default_message if message is None else message
        self.status = default_status(code) if status is None else status
        self.ec = default_ec if ec is None else ec
        self.details: dict[str, str] = dict(details or {})
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(f"{self.status} {code}: {self.message}")


class Target:
    """The logical request target: bucket (or None), key (or None) and decoded query."""

    __slots__ = ("bucket", "key", "query", "query_map")

    def __init__(self, bucket: str | None, key: str | None, query: list[tuple[str, str]]):
        self.bucket = bucket
        self.key = key
        self.query = query
        # First occurrence wins, as OSS reads a repeated parameter once.
        self.query_map: dict[str, str] = {}
        for name, value in query:
            self.query_map.setdefault(name, value)

    def __repr__(self) -> str:
        return f"Target(bucket={self.bucket!r}, key={self.key!r}, query={self.query!r})"


def _decode_path(text: str) -> str:
    # unquote (not unquote_plus): a plus in the path is a literal plus (spec 1.4).
    try:
        return unquote(text, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise OssHttpError("InvalidURI", "The request path is not valid UTF-8.") from None


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Split and percent-decode a raw query string; valueless names get ``""`` (spec 1.5)."""
    pairs: list[tuple[str, str]] = []
    for piece in raw_query.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        try:
            # A raw '+' in the query means space, matching Go v2's canonicalisation (1.5).
            pairs.append(
                (unquote_plus(name, errors="strict"), unquote_plus(value, errors="strict"))
            )
        except UnicodeDecodeError:
            raise OssHttpError("InvalidURI", "The query string is not valid UTF-8.") from None
    return pairs


# spec 1.1: BUCKET.oss-REGION.aliyuncs.com and BUCKET.oss-REGION-internal.aliyuncs.com. Node's
# ali-oss keeps such a Host even when it connects to an IP endpoint (it sets the header itself).
_OSS_VIRTUAL_HOST: Final = re.compile(r"([^.]+)\.oss-[a-z0-9-]+\.aliyuncs\.com", re.ASCII)


def host_bucket(
    host: str, virtual_host_base: str | None = None, cname: Mapping[str, str] | None = None
) -> str | None:
    """The bucket a virtual-hosted Host header names, or None for a path-style request.

    ``cname`` maps whole host names (lower case, no port) to buckets; then a Host of
    ``BUCKET.<virtual_host_base>`` names ``BUCKET``, and so does
    ``BUCKET.oss-REGION[-internal].aliyuncs.com``. The port is ignored, case too.
    """
    hostname = _strip_port(host).lower()
    if not hostname:
        return None
    if cname and hostname in cname:
        return cname[hostname]
    if virtual_host_base and hostname.endswith("." + virtual_host_base.lower()):
        return hostname[: -len(virtual_host_base) - 1]
    match = _OSS_VIRTUAL_HOST.fullmatch(hostname)
    return match.group(1) if match else None


def parse_target_candidates(
    raw_target: str,
    host: str = "",
    virtual_host_base: str | None = None,
    cname: Mapping[str, str] | None = None,
) -> tuple[Target, ...]:
    """The logical targets a request may mean, the most likely first (one or two).

    A path-style request (the Host names no bucket, see :func:`host_bucket`) has one: the
    first path segment is the bucket, the rest the key (spec 1.3-1.5). A virtual-hosted one
    means the Host's bucket and the whole path as the key; when the path also starts with
    that bucket's name (clients that keep the virtual Host with path style, such as ali-oss
    with ``sldEnable``) it may instead mean the rest of the path as the key. Both versions
    sign the bucket and key, so the signature tells the two apart: the server takes the
    candidate whose signature verifies.
    """
    if "://" in raw_target.split("?", 1)[0]:
        # absolute-form request target (proxies): drop scheme and authority
        after_scheme = raw_target.split("://", 1)[1]
        first_slash = after_scheme.find("/")
        raw_target = after_scheme[first_slash:] if first_slash >= 0 else "/"
    path, _, raw_query = raw_target.partition("?")
    query = parse_query(raw_query)
    if not path.startswith("/"):
        raise OssHttpError("InvalidURI", "The request target must start with '/'.")
    rest = path[1:]
    raw_bucket, slash, raw_key = rest.partition("/")
    bucket = host_bucket(host, virtual_host_base, cname)
    if bucket is not None:
        key = _decode_path(rest)
        virtual = Target(bucket, key if key else None, query)
        if slash and _decode_path(raw_bucket) == bucket:
            path_key = _decode_path(raw_key)
            return virtual, Target(bucket, path_key if path_key else None, query)
        return (virtual,)
    if not rest:
        return (Target(None, None, query),)
    key = _decode_path(raw_key) if slash else ""
    return (Target(_decode_path(raw_bucket), key if key else None, query),)


def parse_target(
    raw_target: str,
    host: str = "",
    virtual_host_base: str | None = None,
    cname: Mapping[str, str] | None = None,
) -> Target:
    """Parse a raw request target (``/bucket/enc-key?query``) into the logical target.

    When the Host names a bucket (:func:`host_bucket`), that is the bucket and the whole path
    is the key (spec 1.3). This is the first of :func:`parse_target_candidates`.
    """
    return parse_target_candidates(raw_target, host, virtual_host_base, cname)[0]


def _strip_port(host: str) -> str:
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end >= 0 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


_BUCKET_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


def validate_bucket_name(bucket: str) -> None:
    """Spec 1.6: 3-63 of ``a-z 0-9 -``, starting and ending with a letter or digit."""
    if not _BUCKET_RE.fullmatch(bucket):
        raise OssHttpError(
            "InvalidBucketName",
            "The specified bucket is not valid.",
            details={"BucketName": bucket},
        )


def validate_key(key: str) -> None:
    """Spec 1.6: 1-1023 UTF-8 bytes, not starting with ``/`` or ``\\``."""
    encoded = key.encode("utf-8", errors="surrogatepass")
    if not encoded or len(encoded) > MAX_KEY_BYTES or key[0] in "/\\":
        raise OssHttpError(
            "InvalidObjectName",
            "The specified object name is not valid.",
            details={"ObjectName": key},
        )


def route(method: str, target: Target) -> str:
    """The OSS operation for ``method`` on ``target`` (dispatch table of spec 11.2).

    Raises ``OssHttpError`` for what the emulator does not implement.
    """
    q = target.query_map
    if target.bucket is None:
        raise OssHttpError("NotImplemented", "Service-level operations are not emulated.")
    if target.key is None:
        if method == "GET" and "uploads" in q:
            return "ListMultipartUploads"
        if method == "PUT" and not q:
            return "PutBucket"
        if method in ("POST", "PUT", "DELETE", "HEAD", "GET") and (
            "uploads" in q or "uploadId" in q or "partNumber" in q
        ):
            # an object operation with no key
            raise OssHttpError("InvalidObjectName", "The specified object name is not valid.")
        raise OssHttpError("NotImplemented", "This bucket operation is not emulated.")
    if method == "POST":
        if "uploads" in q:
            return "InitiateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
    elif method == "PUT":
        if "uploadId" in q or "partNumber" in q:
            return "UploadPart"
        if any(name in q for name in ("acl", "tagging", "symlink", "append")):
            raise OssHttpError("NotImplemented", "This object operation is not emulated.")
        return "PutObject"
    elif method == "GET":
        if "uploadId" in q:
            return "ListParts"
        if any(name in q for name in ("acl", "tagging", "symlink", "objectMeta")):
            raise OssHttpError("NotImplemented", "This object operation is not emulated.")
        return "GetObject"
    elif method == "HEAD":
        return "HeadObject"
    elif method == "DELETE":
        if "uploadId" in q:
            return "AbortMultipartUpload"
        return "DeleteObject"
    raise OssHttpError("MethodNotAllowed", f"The method {method} is not allowed here.")


def check_traffic_limit(headers: Mapping[str, str], query: Mapping[str, str]) -> None:
    """Refuse an ``x-oss-traffic-limit`` OSS refuses, with 400 ``InvalidArgument``.

    Not an integer of bit/s from 819200 to 838860800 (OSS's EC 0004-00000502), or given both
    as a header and as a query parameter (EC 0004-00000501). OSS's documentation names the ECs
    and the range, not the Code and Message: those are the emulator's own.
    """
    header = headers.get("x-oss-traffic-limit")
    param = query.get("x-oss-traffic-limit")
    if header is not None and param is not None:
        raise OssHttpError(
            "InvalidArgument",
            "x-oss-traffic-limit is given both as a header and as a query parameter.",
            ec="0004-00000501",
        )
    raw = header if header is not None else param
    if raw is None:
        return
    value = int(raw) if raw.isascii() and raw.isdigit() else None
    if value is None or not MIN_TRAFFIC_LIMIT <= value <= MAX_TRAFFIC_LIMIT:
        raise OssHttpError(
            "InvalidArgument",
            f"x-oss-traffic-limit must be an integer from {MIN_TRAFFIC_LIMIT} to "
            f"{MAX_TRAFFIC_LIMIT} (bit/s).",
            ec="0004-00000502",
            details={"ArgumentName": "x-oss-traffic-limit", "ArgumentValue": raw},
        )
