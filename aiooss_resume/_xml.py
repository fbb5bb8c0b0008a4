"""XML encoders and decoders for the OSS multipart documents (pure functions, no I/O).

Both sides of the wire live here: the client decodes responses and encodes the
CompleteMultipartUpload request, and the local OSS emulator does the opposite. Keeping the two
directions in one module lets the tests prove that whatever one side writes, the other reads
back unchanged.

Decoding follows the protocol reference (sections 4.3, 5.3-5.8, 7.1):

* Element names are matched without their namespace, so a ``xmlns`` on the root (seen in old
  documentation samples) or on any child changes nothing.
* Under ``<EncodingType>url</EncodingType>`` the key-like values (``Key``, ``Prefix``,
  ``Delimiter``, ``KeyMarker``, ``NextKeyMarker``) are percent-decoded. Upload ids, upload-id
  markers, ETags and ``Location`` are never percent-coded: they are opaque tokens or a URL.
* ETags and keys are kept exactly as written, whitespace and quotes included; integers and
  booleans tolerate surrounding whitespace.
* Anything that is not what the protocol allows (bytes that are not UTF-8, XML that is not
  well-formed or is truncated, a different root element, a missing element, a non-integer
  where an integer belongs) raises :class:`ProtocolError`, never a parser exception. Documents
  with a DTD are refused outright, so no entity can ever be expanded.

Encoding writes what the SDKs expect: responses start with an XML declaration and carry no
namespace, and the Complete request is one line without declaration, byte-identical to what
the official SDKs send. Values that XML 1.0 cannot carry (most control characters) raise
``ValueError``; object keys can still be sent with ``url_encode=True``, which percent-encodes
them as OSS does under ``encoding-type=url``.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from urllib.parse import quote, unquote_to_bytes

from ._errors import ProtocolError
from ._models import (
    CompleteResult,
    ErrorDocument,
    InitiateResult,
    ListPartsResult,
    ListUploadsResult,
    PartInfo,
    UploadSummary,
)

__all__ = [
    "COMPLETE_REQUEST_CLOSE",
    "COMPLETE_REQUEST_OPEN",
    "decode_complete_request",
    "decode_complete_result",
    "decode_error",
    "decode_error_header",
    "decode_initiate_result",
    "decode_list_parts_result",
    "decode_list_uploads_result",
    "encode_complete_parts",
    "encode_complete_request",
    "encode_complete_result",
    "encode_error",
    "encode_initiate_result",
    "encode_list_parts_result",
    "encode_list_uploads_result",
    "url_decode_xml_value",
    "url_encode_xml_value",
]

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'

# The XML 1.0 Char production, inverted: what may not appear in a document, even as a
# character reference.
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_UNSIGNED = re.compile(r"[0-9]+")
_SIGNED = re.compile(r"[+-]?[0-9]+")
# Deliberately narrower than the XML Name production: detail element names come from OSS's
# own vocabulary (ArgumentName, StringToSign...), and anything exotic is a caller bug.
_ELEMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_MAX_CRC64 = (1 << 64) - 1
_ERROR_FIELDS = ("Code", "Message", "RequestId", "HostId", "EC")
# The elements that encoding-type=url percent-encodes.
_KEY_LIKE = frozenset({"Key", "Prefix", "Delimiter", "KeyMarker", "NextKeyMarker"})


# --- percent-encoding (spec 4.3) ------------------------------------------------------------


def url_encode_xml_value(s: str) -> str:
    """Percent-encode ``s`` as OSS does for ``encoding-type=url``.

    Every UTF-8 byte outside ``A-Z a-z 0-9 - _ . ~ /`` becomes ``%XX`` (upper-case hex), so a
    space is ``%20`` and a plus ``%2B``: both plain percent-decoding (Python SDK) and
    query-unescaping (Go SDK, where a raw ``+`` would mean space) read it back correctly.
    """
    # quote() never encodes ASCII letters, digits and "_.-~"; "/" is added to that set.
    return quote(s, safe="/", encoding="utf-8", errors="strict")


def url_decode_xml_value(s: str) -> str:
    """Plain percent-decoding of an ``encoding-type=url`` value; a ``+`` stays ``+``.

    Raises:
        ProtocolError: a ``%`` not followed by two hex digits, or escapes that do not form
            UTF-8. A conforming server always escapes ``%`` itself, so neither can be a key.
    """
    return _percent_decode(s, "percent-encoded value")


def _percent_decode(s: str, where: str) -> str:
    if "%" not in s:
        return s
    bad = _BAD_PERCENT.search(s)
    if bad is not None:
        escape = s[bad.start() : bad.start() + 3]
        raise ProtocolError(f"{where}: invalid percent-escape {escape!r}")
    try:
        return unquote_to_bytes(s).decode("utf-8")
    except UnicodeError as exc:
        raise ProtocolError(f"{where}: percent-escapes do not decode to UTF-8") from exc


# --- writing ----------------------------------------------------------------------------------


class _Writer:
    """Accumulates one document; every value passes through :func:`_escape`."""

    def __init__(self, root: str, *, declaration: bool = True) -> None:
        self._root = root
        self._chunks: list[str] = [_DECLARATION] if declaration else []
        self._chunks.append(f"<{root}>")

    def leaf(self, name: str, value: str) -> None:
        self._chunks.append(f"<{name}>{_escape(value, name)}</{name}>")

    def open(self, name: str) -> None:
        self._chunks.append(f"<{name}>")

    def close(self, name: str) -> None:
        self._chunks.append(f"</{name}>")

    def finish(self) -> bytes:
        self._chunks.append(f"</{self._root}>")
        return "".join(self._chunks).encode("utf-8")


def _escape(value: str, name: str) -> str:
    bad = _XML_ILLEGAL.search(value)
    if bad is not None:
        hint = " (send it with url_encode=True)" if name in _KEY_LIKE else ""
        raise ValueError(
            f"<{name}> value contains U+{ord(bad.group()):04X}, which XML 1.0 cannot carry{hint}"
        )
    # A raw CR would be normalised to LF by every parser; a character reference survives.
    # Quotes stay raw: ETags must go out exactly as the SDKs write them.
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _key_value(value: str, url_encode: bool) -> str:
    return url_encode_xml_value(value) if url_encode else value


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


# --- reading ----------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rpartition("}")[2] if tag.startswith("{") else tag


def _parse(body: bytes, root_name: str) -> ET.Element:
    """Parse ``body`` and check that its root element is ``root_name``."""
    try:
        text = str(body, "utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            f"<{root_name}> document is not UTF-8 (invalid byte at offset {exc.start})"
        ) from exc
    # Parsing the decoded text (not the bytes) pins the encoding to UTF-8, so the DTD check
    # below cannot be dodged by declaring UTF-16 or another encoding.
    text = text.removeprefix("\ufeff")
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ProtocolError(f"<{root_name}> document contains a DTD or entity declaration")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ProtocolError(f"<{root_name}> document is not well-formed XML: {exc}") from exc
    got = _local(root.tag)
    if got != root_name:
        hint = ""
        if got == "Error":
            code = next((c.text for c in root if _local(c.tag) == "Code"), None)
            hint = f" (an OSS error, Code={code!r})"
        raise ProtocolError(f"expected a <{root_name}> document, got <{got}>{hint}")
    return root


def _parse_int(text: str, where: str, *, signed: bool = False) -> int:
    stripped = text.strip()
    pattern = _SIGNED if signed else _UNSIGNED
    if pattern.fullmatch(stripped) is None:
        raise ProtocolError(f"{where}: expected an integer, got {_clip(text)!r}")
    try:
        return int(stripped)
    except ValueError as exc:  # more digits than int() accepts
        raise ProtocolError(f"{where}: integer too long ({len(stripped)} digits)") from exc


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "..."


class _Fields:
    """The children of one element, looked up by local name."""

    def __init__(self, element: ET.Element, where: str) -> None:
        self.where = where
        self._children: dict[str, list[ET.Element]] = {}
        for child in element:
            self._children.setdefault(_local(child.tag), []).append(child)

    def elements(self, name: str) -> list[ET.Element]:
        return self._children.get(name, [])

    def opt_text(self, name: str) -> str | None:
        found = self._children.get(name)
        if not found:
            return None
        # When an element is repeated, the first one counts, as in the SDK parsers.
        element = found[0]
        if len(element):
            raise ProtocolError(f"{self.where}/{name}: expected text, found child elements")
        return element.text or ""

    def text(self, name: str) -> str:
        value = self.opt_text(name)
        if value is None:
            raise ProtocolError(f"{self.where}: missing required element <{name}>")
        return value

    def integer(self, name: str) -> int:
        return _parse_int(self.text(name), f"{self.where}/{name}")

    def marker(self, name: str) -> int:
        # An empty part-number marker means "from the start", as it does in the query string.
        value = self.text(name)
        return 0 if not value.strip() else _parse_int(value, f"{self.where}/{name}")

    def boolean(self, name: str) -> bool:
        value = self.text(name).strip().lower()
        if value == "true":
            return True
        if value == "false":
            return False
        raise ProtocolError(f"{self.where}/{name}: expected true or false, got {_clip(value)!r}")

    def url_encoded(self) -> bool:
        value = self.opt_text("EncodingType")
        if value is None or not value.strip():
            return False
        if value.strip().lower() == "url":
            return True
        raise ProtocolError(f"{self.where}: unsupported EncodingType {_clip(value)!r}")

    def key(self, name: str, url: bool) -> str:
        value = self.text(name)
        return _percent_decode(value, f"{self.where}/{name}") if url else value

    def opt_key(self, name: str, url: bool) -> str:
        value = self.opt_text(name)
        if value is None:
            return ""
        return _percent_decode(value, f"{self.where}/{name}") if url else value


# --- InitiateMultipartUpload (5.3) -------------------------------------------------------------

_INITIATE = "InitiateMultipartUploadResult"


def encode_initiate_result(r: InitiateResult, *, url_encode: bool = False) -> bytes:
    """Encode an ``InitiateMultipartUploadResult`` response body."""
    w = _Writer(_INITIATE)
    w.leaf("Bucket", r.bucket)
    w.leaf("Key", _key_value(r.key, url_encode))
    w.leaf("UploadId", r.upload_id)
    if url_encode:
        w.leaf("EncodingType", "url")
    return w.finish()


def decode_initiate_result(body: bytes) -> InitiateResult:
    """Decode an ``InitiateMultipartUploadResult`` response body."""
    doc = _Fields(_parse(body, _INITIATE), _INITIATE)
    url = doc.url_encoded()
    return InitiateResult(
        bucket=doc.text("Bucket"), key=doc.key("Key", url), upload_id=doc.text("UploadId")
    )


# --- ListParts (5.5) ---------------------------------------------------------------------------

_LIST_PARTS = "ListPartsResult"


def encode_list_parts_result(r: ListPartsResult, *, url_encode: bool = False) -> bytes:
    """Encode a ``ListPartsResult`` response body.

    ``NextPartNumberMarker`` is always written, because oss2 cannot parse a page without it.
    """
    w = _Writer(_LIST_PARTS)
    if url_encode:
        w.leaf("EncodingType", "url")
    w.leaf("Bucket", r.bucket)
    w.leaf("Key", _key_value(r.key, url_encode))
    w.leaf("UploadId", r.upload_id)
    w.leaf("StorageClass", r.storage_class)
    w.leaf("PartNumberMarker", str(r.part_number_marker))
    w.leaf("NextPartNumberMarker", str(r.next_part_number_marker))
    w.leaf("MaxParts", str(r.max_parts))
    w.leaf("IsTruncated", _bool_text(r.is_truncated))
    for part in r.parts:
        w.open("Part")
        w.leaf("PartNumber", str(part.part_number))
        w.leaf("LastModified", part.last_modified)
        w.leaf("ETag", part.etag)
        if part.crc64 is not None:
            w.leaf("HashCrc64ecma", str(part.crc64))
        w.leaf("Size", str(part.size))
        w.close("Part")
    return w.finish()


def decode_list_parts_result(body: bytes) -> ListPartsResult:
    """Decode a ``ListPartsResult`` response body.

    ``HashCrc64ecma``, ``LastModified`` and ``StorageClass`` are optional; every other element
    of section 5.5 is required. An empty marker element reads as 0.
    """
    doc = _Fields(_parse(body, _LIST_PARTS), _LIST_PARTS)
    url = doc.url_encoded()
    parts = [
        _decode_part(_Fields(element, f"{_LIST_PARTS}/Part[{index}]"))
        for index, element in enumerate(doc.elements("Part"), start=1)
    ]
    storage_class = doc.opt_text("StorageClass")
    return ListPartsResult(
        bucket=doc.text("Bucket"),
        key=doc.key("Key", url),
        upload_id=doc.text("UploadId"),
        part_number_marker=doc.marker("PartNumberMarker"),
        next_part_number_marker=doc.marker("NextPartNumberMarker"),
        max_parts=doc.integer("MaxParts"),
        is_truncated=doc.boolean("IsTruncated"),
        parts=tuple(parts),
        storage_class="Standard" if storage_class is None else storage_class,
    )


def _decode_part(part: _Fields) -> PartInfo:
    crc_text = part.opt_text("HashCrc64ecma")
    crc64: int | None = None
    if crc_text is not None and crc_text.strip():
        crc64 = _parse_int(crc_text, f"{part.where}/HashCrc64ecma")
        if crc64 > _MAX_CRC64:
            raise ProtocolError(f"{part.where}/HashCrc64ecma: {crc64} does not fit in 64 bits")
    return PartInfo(
        part_number=part.integer("PartNumber"),
        etag=part.text("ETag"),
        size=part.integer("Size"),
        crc64=crc64,
        last_modified=part.opt_text("LastModified") or "",
    )


# --- CompleteMultipartUpload (5.6) -------------------------------------------------------------

_COMPLETE_REQUEST = "CompleteMultipartUpload"
_COMPLETE_RESULT = "CompleteMultipartUploadResult"


COMPLETE_REQUEST_OPEN = f"<{_COMPLETE_REQUEST}>".encode()
COMPLETE_REQUEST_CLOSE = f"</{_COMPLETE_REQUEST}>".encode()


def encode_complete_request(parts: Iterable[tuple[int, str]]) -> bytes:
    """Encode a CompleteMultipartUpload request body from ``(part number, ETag)`` pairs.

    The pairs are written in the order given (OSS requires ascending part numbers; checking
    that is the caller's job) and the ETags verbatim, quotes included. The output is one line
    with no declaration and no namespace, byte-identical to the official SDKs' body.
    """
    return COMPLETE_REQUEST_OPEN + encode_complete_parts(parts) + COMPLETE_REQUEST_CLOSE


def encode_complete_parts(parts: Iterable[tuple[int, str]]) -> bytes:
    """The ``<Part>`` elements of a Complete body, without the enclosing document.

    ``COMPLETE_REQUEST_OPEN + encode_complete_parts(a) + encode_complete_parts(b) +
    COMPLETE_REQUEST_CLOSE`` equals ``encode_complete_request(a + b)``, so a caller can
    encode 10,000 parts in slices and yield to the event loop between them.
    """
    pairs = list(parts)
    for number, _ in pairs:
        # bool is an int subclass; True would silently become part 1.
        if not isinstance(number, int) or isinstance(number, bool):
            raise TypeError(f"part number must be an int, not {type(number).__name__}")
    # One comprehension; ETags are validated and escaped in one pass over their
    # concatenation, per ETag only if that pass finds something.
    etags = "".join(etag for _, etag in pairs)
    if _escape(etags, "ETag") == etags:
        body = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>" for n, etag in pairs
        )
    else:
        body = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{_escape(etag, 'ETag')}</ETag></Part>"
            for n, etag in pairs
        )
    return body.encode()


def decode_complete_request(body: bytes) -> list[tuple[int, str]]:
    """Decode a CompleteMultipartUpload request body (server side) into ``(number, ETag)``.

    Pairs come back in document order and ETags verbatim (``&#34;`` from Go's encoder is a
    quote like any other), so the server can apply its own order, range and ETag checks.
    Part numbers may carry a sign, so that an out-of-range number is reported as such
    rather than as malformed XML. A document with no ``Part`` gives an empty list.

    Raises:
        ProtocolError: the body is not a well-formed ``CompleteMultipartUpload`` document, or
            a ``Part`` lacks ``PartNumber`` or ``ETag``, or a part number is not an integer.
            A server answers these with ``MalformedXML``.
    """
    doc = _Fields(_parse(body, _COMPLETE_REQUEST), _COMPLETE_REQUEST)
    result: list[tuple[int, str]] = []
    for index, element in enumerate(doc.elements("Part"), start=1):
        part = _Fields(element, f"{_COMPLETE_REQUEST}/Part[{index}]")
        number = _parse_int(part.text("PartNumber"), f"{part.where}/PartNumber", signed=True)
        result.append((number, part.text("ETag")))
    return result


def encode_complete_result(r: CompleteResult, *, url_encode: bool = False) -> bytes:
    """Encode a ``CompleteMultipartUploadResult`` response body.

    ``Location`` is written verbatim either way: it is a URL, already escaped as URLs are.
    """
    w = _Writer(_COMPLETE_RESULT)
    if url_encode:
        w.leaf("EncodingType", "url")
    w.leaf("Location", r.location)
    w.leaf("Bucket", r.bucket)
    w.leaf("Key", _key_value(r.key, url_encode))
    w.leaf("ETag", r.etag)
    return w.finish()


def decode_complete_result(body: bytes) -> CompleteResult:
    """Decode a ``CompleteMultipartUploadResult`` response body (``Location`` optional)."""
    doc = _Fields(_parse(body, _COMPLETE_RESULT), _COMPLETE_RESULT)
    url = doc.url_encoded()
    return CompleteResult(
        bucket=doc.text("Bucket"),
        key=doc.key("Key", url),
        etag=doc.text("ETag"),
        location=doc.opt_text("Location") or "",
    )


# --- ListMultipartUploads (5.8) ----------------------------------------------------------------

_LIST_UPLOADS = "ListMultipartUploadsResult"


def encode_list_uploads_result(r: ListUploadsResult, *, url_encode: bool = False) -> bytes:
    """Encode a ``ListMultipartUploadsResult`` response body.

    Under ``url_encode`` the prefix, delimiter, key markers, each upload's key and each common
    prefix are percent-encoded; upload ids and upload-id markers are not.
    """
    w = _Writer(_LIST_UPLOADS)
    if url_encode:
        w.leaf("EncodingType", "url")
    w.leaf("Bucket", r.bucket)
    w.leaf("KeyMarker", _key_value(r.key_marker, url_encode))
    w.leaf("UploadIdMarker", r.upload_id_marker)
    w.leaf("NextKeyMarker", _key_value(r.next_key_marker, url_encode))
    w.leaf("NextUploadIdMarker", r.next_upload_id_marker)
    w.leaf("Delimiter", _key_value(r.delimiter, url_encode))
    w.leaf("Prefix", _key_value(r.prefix, url_encode))
    w.leaf("MaxUploads", str(r.max_uploads))
    w.leaf("IsTruncated", _bool_text(r.is_truncated))
    for upload in r.uploads:
        w.open("Upload")
        w.leaf("Key", _key_value(upload.key, url_encode))
        w.leaf("UploadId", upload.upload_id)
        w.leaf("Initiated", upload.initiated)
        w.close("Upload")
    for prefix in r.common_prefixes:
        w.open("CommonPrefixes")
        w.leaf("Prefix", _key_value(prefix, url_encode))
        w.close("CommonPrefixes")
    return w.finish()


def decode_list_uploads_result(body: bytes) -> ListUploadsResult:
    """Decode a ``ListMultipartUploadsResult`` response body.

    ``Bucket``, ``MaxUploads`` and ``IsTruncated`` are required, and each ``Upload`` needs
    ``Key`` and ``UploadId``; the markers, prefix and delimiter default to ``""``.
    """
    doc = _Fields(_parse(body, _LIST_UPLOADS), _LIST_UPLOADS)
    url = doc.url_encoded()
    uploads: list[UploadSummary] = []
    for index, element in enumerate(doc.elements("Upload"), start=1):
        upload = _Fields(element, f"{_LIST_UPLOADS}/Upload[{index}]")
        uploads.append(
            UploadSummary(
                key=upload.key("Key", url),
                upload_id=upload.text("UploadId"),
                initiated=upload.opt_text("Initiated") or "",
            )
        )
    common_prefixes: list[str] = []
    for index, element in enumerate(doc.elements("CommonPrefixes"), start=1):
        group = _Fields(element, f"{_LIST_UPLOADS}/CommonPrefixes[{index}]")
        for prefix in group.elements("Prefix"):
            if len(prefix):
                raise ProtocolError(f"{group.where}/Prefix: expected text, found child elements")
            text = prefix.text or ""
            common_prefixes.append(_percent_decode(text, f"{group.where}/Prefix") if url else text)
    return ListUploadsResult(
        bucket=doc.text("Bucket"),
        prefix=doc.opt_key("Prefix", url),
        delimiter=doc.opt_key("Delimiter", url),
        key_marker=doc.opt_key("KeyMarker", url),
        upload_id_marker=doc.opt_text("UploadIdMarker") or "",
        next_key_marker=doc.opt_key("NextKeyMarker", url),
        next_upload_id_marker=doc.opt_text("NextUploadIdMarker") or "",
        max_uploads=doc.integer("MaxUploads"),
        is_truncated=doc.boolean("IsTruncated"),
        uploads=tuple(uploads),
        common_prefixes=tuple(common_prefixes),
    )


# --- Error (7.1) -------------------------------------------------------------------------------


def encode_error(doc: ErrorDocument) -> bytes:
    """Encode an OSS ``<Error>`` body: the standard children, then ``details``, then ``EC``.

    Raises:
        ValueError: a ``details`` name is not a plain element name or repeats a standard
            child (it would not read back as a detail).
    """
    w = _Writer("Error")
    w.leaf("Code", doc.code)
    w.leaf("Message", doc.message)
    w.leaf("RequestId", doc.request_id)
    w.leaf("HostId", doc.host_id)
    for name, value in doc.details.items():
        if _ELEMENT_NAME.fullmatch(name) is None or name in _ERROR_FIELDS:
            raise ValueError(f"invalid error detail name {name!r}")
        w.leaf(name, value)
    if doc.ec:
        w.leaf("EC", doc.ec)
    return w.finish()


def decode_error(body: bytes) -> ErrorDocument:
    """Decode an OSS ``<Error>`` body.

    Only ``Code`` is required. Every child other than the five standard ones lands in
    ``details`` under its local name; their text is read leniently (nested markup flattened)
    since an error is decoded to be reported, not acted on field by field.

    Raises:
        ProtocolError: not a well-formed ``<Error>`` document, or no ``<Code>``.
    """
    root = _parse(body, "Error")
    standard: dict[str, str] = {}
    details: dict[str, str] = {}
    for child in root:
        name = _local(child.tag)
        target = standard if name in _ERROR_FIELDS else details
        target.setdefault(name, "".join(child.itertext()))
    if "Code" not in standard:
        raise ProtocolError("Error: missing required element <Code>")
    return ErrorDocument(
        code=standard["Code"],
        message=standard.get("Message", ""),
        request_id=standard.get("RequestId", ""),
        host_id=standard.get("HostId", ""),
        ec=standard.get("EC", ""),
        details=details,
    )


def decode_error_header(value: str) -> ErrorDocument:
    """Decode the ``x-oss-err`` header: base64 of the error XML, sent on body-less errors.

    Raises:
        ProtocolError: the value is not base64, or does not decode to an ``<Error>`` document.
    """
    text = value.strip()
    # Tolerate stripped padding; any other deviation from base64 is an error.
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        raise ProtocolError(f"x-oss-err header is not valid base64: {exc}") from exc
    return decode_error(raw)
