"""What an upload is asked to do, decided before any request: header routing, the result
type, and where the checkpoint lives.

``route_headers`` validates the caller's headers and sends each on the requests OSS reads it
from (spec section 9); ``checkpoint_path_for`` picks the checkpoint file (``<file>.cp`` as
the OSS SDKs do, or a per-target name). Both are re-exported by ``_uploader``.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import stat
from collections.abc import Mapping
from os import PathLike

import msgspec

from ._checkpoint import decode_checkpoint, peek_upload_target
from ._errors import CheckpointError
from ._fileio import read_optional, refuse_symlink

__all__ = ["UploadResult", "checkpoint_path_for", "route_headers"]

# Where each user header goes in a multipart upload (spec section 9). Anything not listed
# here describes the object and goes on Initiate (and on PutObject for small files).
_PART_ONLY = frozenset({"x-oss-traffic-limit"})
_COMPLETE_ONLY = frozenset({"x-oss-object-acl", "x-oss-callback", "x-oss-callback-var"})
_INITIATE_AND_COMPLETE = frozenset({"x-oss-forbid-overwrite"})
_EVERY_REQUEST = frozenset({"x-oss-request-payer"})
_NOT_SHAPING = _PART_ONLY | _EVERY_REQUEST  # left out of the checkpoint's options fingerprint
_RESERVED = frozenset(
    {
        "authorization", "date", "x-oss-date", "x-oss-content-sha256", "x-oss-security-token",
        "host", "content-length", "transfer-encoding", "content-md5", "expect",
        "x-oss-complete-all", "connection",
    }
)  # fmt: skip
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")

_mime = mimetypes.MimeTypes()  # read the system tables now, at import, not on the event loop


class UploadResult(msgspec.Struct, frozen=True, kw_only=True):
    """What ``upload_file`` stored.

    Attributes:
        bucket, key: where the object is.
        etag: the object's ETag as OSS returned it (quoted).
        crc64: the object's CRC-64/XZ, verified against OSS's.
        size: the object's size in bytes.
        upload_id: the multipart upload id, or None when one PutObject sufficed.
        part_size: the part size used (after growing to fit 10,000 parts), or None.
        parts_uploaded: parts sent by this call (1 for a PutObject).
        parts_resumed: parts found on OSS from an earlier run and kept.
        bytes_resumed: bytes in those parts (not sent again).
        request_id: the request id of the Complete (or PutObject) request.
    """

    bucket: str
    key: str
    etag: str
    crc64: int
    size: int
    upload_id: str | None
    part_size: int | None
    parts_uploaded: int
    parts_resumed: int
    bytes_resumed: int
    request_id: str


class _HeaderPlan(msgspec.Struct, frozen=True):
    put: dict[str, str]
    initiate: dict[str, str]
    part: dict[str, str]
    complete: dict[str, str]
    other: dict[str, str]


def route_headers(headers: Mapping[str, str] | None, key: str) -> _HeaderPlan:
    """Validate the caller's headers and send each on the requests OSS reads it from."""
    if headers is not None and not isinstance(headers, Mapping):
        raise TypeError("headers must be a mapping of header names to values")
    put: dict[str, str] = {}
    initiate: dict[str, str] = {}
    part: dict[str, str] = {}
    complete: dict[str, str] = {}
    other: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("header names and values must be str")
        lower = name.lower()
        if not lower or not set(lower) <= _TOKEN_CHARS:
            raise ValueError(f"invalid header name {name!r}")
        if lower in seen:
            raise ValueError(f"header {name!r} is given twice (names are case-insensitive)")
        seen.add(lower)
        if lower in _RESERVED:
            raise ValueError(f"header {name!r} is set by aiooss_resume and cannot be passed")
        if not value.isascii() or any(c in value for c in "\r\n\0"):
            raise ValueError(
                f"header {name!r} must have a single-line ASCII value "
                "(percent-encode other text yourself)"
            )
        if value != value.strip():
            raise ValueError(f"header {name!r} has leading or trailing spaces")
        put[name] = value
        if lower in _EVERY_REQUEST:
            for target in (initiate, part, complete, other):
                target[name] = value
        elif lower in _PART_ONLY:
            part[name] = value
        elif lower in _COMPLETE_ONLY:
            complete[name] = value
        elif lower in _INITIATE_AND_COMPLETE:
            initiate[name] = value
            complete[name] = value
        else:
            initiate[name] = value
    if "content-type" not in seen:
        content_type = _mime.guess_type(key, strict=False)[0] or "application/octet-stream"
        put["Content-Type"] = content_type
        initiate["Content-Type"] = content_type
    return _HeaderPlan(put, initiate, part, complete, other)


def _target_digest(source: str, endpoint: str, bucket: str, key: str) -> str:
    return hashlib.sha256(
        "\n".join([source, endpoint, bucket, key]).encode("utf-8", "surrogatepass")
    ).hexdigest()[:20]


def _belongs_elsewhere(data: bytes, endpoint: str, bucket: str, key: str) -> bool:
    """Whether a checkpoint's bytes record an upload to another endpoint, bucket or key.

    A damaged checkpoint counts by what can still be read of it; one naming no target at
    all (garbage, empty) does not: it is ours to replace.
    """
    try:
        cp = decode_checkpoint(data)
    except CheckpointError:
        peeked = peek_upload_target(data)
        return peeked is not None and peeked[:3] != (endpoint, bucket, key)
    return (cp.endpoint, cp.bucket, cp.key) != (endpoint, bucket, key)


def checkpoint_path_for(
    source: str,
    checkpoint: bool | str | PathLike[str] | None,
    checkpoint_dir: str | PathLike[str] | None,
    *,
    endpoint: str,
    bucket: str,
    key: str,
) -> str | None:
    """Where the checkpoint lives (absolute), or None when the upload is not resumable.

    ``checkpoint=True`` means ``<file>.cp``, as the OSS SDKs do, unless that file records an
    upload to another target (one file uploaded to two keys): then this target gets its own
    ``<file>.<digest>.cp`` beside it, so neither upload loses its record. Once that file
    exists it is used, whatever ``<file>.cp`` holds by then. This reads the file system
    (call it off the event loop); an unreadable ``<file>.cp`` is a ``CheckpointError``.
    """
    if checkpoint_dir is not None:
        if checkpoint not in (None, True):
            raise ValueError("pass checkpoint=True (or nothing) together with checkpoint_dir")
        directory = os.path.abspath(os.fspath(checkpoint_dir))
        digest = _target_digest(source, endpoint, bucket, key)
        return os.path.join(directory, f"{os.path.basename(source)}.{digest}.cp")
    if checkpoint is None or checkpoint is False:
        return None
    if checkpoint is True:
        plain = source + ".cp"
        specific = f"{source}.{_target_digest(source, endpoint, bucket, key)}.cp"
        if os.path.lexists(specific):
            return specific
        data = read_optional(plain)
        if data is not None and _belongs_elsewhere(data, endpoint, bucket, key):
            return specific
        return plain
    if isinstance(checkpoint, (str, PathLike)):
        path = os.path.abspath(os.fspath(checkpoint))
        if path == source:
            raise ValueError("the checkpoint path must not be the file being uploaded")
        return path
    raise TypeError("checkpoint must be None, a bool, or a path")


def _resolve_paths(
    file_path: str | PathLike[str],
    checkpoint: bool | str | PathLike[str] | None,
    checkpoint_dir: str | PathLike[str] | None,
    *,
    endpoint: str,
    bucket: str,
    key: str,
) -> tuple[str, str | None]:
    path = os.path.abspath(os.fspath(file_path))
    st = os.stat(path)  # FileNotFoundError propagates as is
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"{path!r} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path!r} is not a regular file")
    cp_path = checkpoint_path_for(
        path, checkpoint, checkpoint_dir, endpoint=endpoint, bucket=bucket, key=key
    )
    if cp_path is not None:
        # Neither the checkpoint nor its lock is ever followed through a link (issue 10).
        refuse_symlink(cp_path)
        refuse_symlink(cp_path + ".lock")
        if os.path.isdir(cp_path):
            raise CheckpointError(f"cannot write checkpoint {cp_path!r}: it is a directory")
    return path, cp_path
