"""Typed, immutable records for the OSS multipart API documents.

Each struct mirrors one XML document of the protocol reference (sections 5.3-5.8 and 7.1) in
plain Python types, so the rest of the library and the local emulator never touch XML
directly: ``_xml`` turns bytes into these structs and back. They are ``msgspec`` structs so
they are cheap to build in bulk (a ListParts page holds up to 1000 parts), compare by value and
can be serialised to JSON or msgpack as they are (checkpoints).

Strings hold *decoded* values: a ``key`` is the real object key even when the wire document
was percent-encoded under ``encoding-type=url``. ETags are kept exactly as OSS sent them,
surrounding quotes included, and are to be treated as opaque.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "CompleteResult",
    "ErrorDocument",
    "InitiateResult",
    "ListPartsResult",
    "ListUploadsResult",
    "PartInfo",
    "UploadSummary",
]


class InitiateResult(msgspec.Struct, frozen=True):
    """``InitiateMultipartUploadResult``: the upload id of a new multipart upload."""

    bucket: str
    key: str
    upload_id: str


class PartInfo(msgspec.Struct, frozen=True):
    """One uploaded part, as listed by ListParts.

    ``crc64`` is the part's CRC-64/XZ (``HashCrc64ecma``), or ``None`` when OSS did not send
    one (objects or gateways without CRC support). ``last_modified`` is ISO 8601 UTC text,
    kept as a string because nothing in the upload logic computes with it.
    """

    part_number: int
    etag: str
    size: int
    crc64: int | None = None
    last_modified: str = ""


# Keyword-only: seven scalar fields, four of them ints, are too easy to pass in the wrong order.
class ListPartsResult(msgspec.Struct, frozen=True, kw_only=True):
    """``ListPartsResult``: one page of the parts of an upload, in ascending part number.

    While ``is_truncated`` is true, the next page starts after ``next_part_number_marker``.
    """

    bucket: str
    key: str
    upload_id: str
    part_number_marker: int
    next_part_number_marker: int
    max_parts: int
    is_truncated: bool
    parts: tuple[PartInfo, ...]
    storage_class: str = "Standard"


class CompleteResult(msgspec.Struct, frozen=True):
    """``CompleteMultipartUploadResult``: the object created by CompleteMultipartUpload.

    ``location`` is informational and kept verbatim (it is a URL, never percent-decoded).
    """

    bucket: str
    key: str
    etag: str
    location: str = ""


class UploadSummary(msgspec.Struct, frozen=True):
    """One ``Upload`` entry of ListMultipartUploads: an upload that is still open."""

    key: str
    upload_id: str
    initiated: str = ""


# Keyword-only: nine string fields in a row cannot safely be passed by position.
class ListUploadsResult(msgspec.Struct, frozen=True, kw_only=True):
    """``ListMultipartUploadsResult``: one page of the open uploads of a bucket.

    While ``is_truncated`` is true, the next page starts after the pair
    (``next_key_marker``, ``next_upload_id_marker``).
    """

    bucket: str
    prefix: str
    delimiter: str
    key_marker: str
    upload_id_marker: str
    next_key_marker: str
    next_upload_id_marker: str
    max_uploads: int
    is_truncated: bool
    uploads: tuple[UploadSummary, ...]
    common_prefixes: tuple[str, ...] = ()


class ErrorDocument(msgspec.Struct, frozen=True):
    """An OSS ``<Error>`` document (section 7.1), from a body or the ``x-oss-err`` header.

    ``details`` holds every child other than ``Code``, ``Message``, ``RequestId``, ``HostId``
    and ``EC`` (``ArgumentName``, ``StringToSign``, ``UploadId``...), by element name. Being a
    dict, it makes instances unhashable despite ``frozen``; nothing needs to hash them.
    """

    code: str
    message: str = ""
    request_id: str = ""
    host_id: str = ""
    ec: str = ""
    details: dict[str, str] = msgspec.field(default_factory=dict)
