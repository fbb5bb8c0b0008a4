"""The XML codecs: spec examples, namespaced and url-encoded variants, hostile input, round trips.

Note on control characters: XML 1.0 cannot carry U+0000-U+001F (except tab, LF, CR) in any
form, raw or as a character reference. A key holding them can only travel percent-encoded, so
the round-trip properties use arbitrary text only for key-like fields with ``url_encode=True``;
without it they draw from XML-safe text, and a separate property checks that arbitrary text
either round-trips or is refused with ``ValueError`` exactly when it holds such a character.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import re
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiooss_resume._errors import ProtocolError
from aiooss_resume._models import (
    CompleteResult,
    ErrorDocument,
    InitiateResult,
    ListPartsResult,
    ListUploadsResult,
    PartInfo,
    UploadSummary,
)
from aiooss_resume._xml import (
    COMPLETE_REQUEST_CLOSE,
    COMPLETE_REQUEST_OPEN,
    decode_complete_request,
    decode_complete_result,
    decode_error,
    decode_error_header,
    decode_initiate_result,
    decode_list_parts_result,
    decode_list_uploads_result,
    encode_complete_parts,
    encode_complete_request,
    encode_complete_result,
    encode_error,
    encode_initiate_result,
    encode_list_parts_result,
    encode_list_uploads_result,
    url_decode_xml_value,
    url_encode_xml_value,
)

from .conftest import load_vectors

DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
NS = "http://doc.oss-cn-hangzhou.aliyuncs.com"
SPEC_KEY = "backups/2024/db dump+v1.tar.gz"
UPLOAD_ID = "3D751E14453020993949362ABD92CA52"
ETAG1 = '"17FEA6E97583648E493E6D8BCD54C8F4"'
ETAG2 = '"F8219C7D0B101213162EF9566B81B4B5"'

# --- examples from the protocol reference --------------------------------------------------------

SPEC_INITIATE = b"""<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult>
  <Bucket>examplebucket</Bucket>
  <Key>backups/2024/db%20dump%2Bv1.tar.gz</Key>
  <UploadId>3D751E14453020993949362ABD92CA52</UploadId>
  <EncodingType>url</EncodingType>
</InitiateMultipartUploadResult>
"""

# The spec's second <Part> is elided; it is filled in here with the part of section 5.6.
SPEC_LIST_PARTS = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListPartsResult>
  <EncodingType>url</EncodingType>
  <Bucket>examplebucket</Bucket>
  <Key>backups/2024/db%20dump%2Bv1.tar.gz</Key>
  <UploadId>3D751E14453020993949362ABD92CA52</UploadId>
  <StorageClass>Standard</StorageClass>
  <PartNumberMarker>0</PartNumberMarker>
  <NextPartNumberMarker>2</NextPartNumberMarker>
  <MaxParts>1000</MaxParts>
  <IsTruncated>false</IsTruncated>
  <Part>
    <PartNumber>1</PartNumber>
    <LastModified>2024-05-20T08:30:00.000Z</LastModified>
    <ETag>"17FEA6E97583648E493E6D8BCD54C8F4"</ETag>
    <HashCrc64ecma>9427277473487083924</HashCrc64ecma>
    <Size>102400</Size>
  </Part>
  <Part>
    <PartNumber>2</PartNumber>
    <LastModified>2024-05-20T08:30:01.000Z</LastModified>
    <ETag>"F8219C7D0B101213162EF9566B81B4B5"</ETag>
    <HashCrc64ecma>18446744073709551615</HashCrc64ecma>
    <Size>10</Size>
  </Part>
</ListPartsResult>
"""

SPEC_COMPLETE_REQUEST = b"""<CompleteMultipartUpload>
  <Part><PartNumber>1</PartNumber><ETag>"17FEA6E97583648E493E6D8BCD54C8F4"</ETag></Part>
  <Part><PartNumber>2</PartNumber><ETag>"F8219C7D0B101213162EF9566B81B4B5"</ETag></Part>
</CompleteMultipartUpload>
"""

SPEC_COMPLETE_RESULT = b"""<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUploadResult>
  <EncodingType>url</EncodingType>
  <Location>http://examplebucket.oss-cn-hangzhou.aliyuncs.com/backups/2024/db%20dump%2Bv1.tar.gz</Location>
  <Bucket>examplebucket</Bucket>
  <Key>backups/2024/db%20dump%2Bv1.tar.gz</Key>
  <ETag>"8C8936CE3CC74536D9A4AC8021B89D01-2"</ETag>
</CompleteMultipartUploadResult>
"""

# Section 5.8 gives the element list only; this document follows it.
SPEC_LIST_UPLOADS = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult>
  <Bucket>examplebucket</Bucket>
  <EncodingType>url</EncodingType>
  <KeyMarker></KeyMarker>
  <UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>backups/2024/db%20dump%2Bv1.tar.gz</NextKeyMarker>
  <NextUploadIdMarker>3D751E14453020993949362ABD92CA52</NextUploadIdMarker>
  <Delimiter>/</Delimiter>
  <Prefix>backups/</Prefix>
  <MaxUploads>1000</MaxUploads>
  <IsTruncated>false</IsTruncated>
  <Upload>
    <Key>backups/2024/db%20dump%2Bv1.tar.gz</Key>
    <UploadId>3D751E14453020993949362ABD92CA52</UploadId>
    <Initiated>2024-05-20T08:30:00.000Z</Initiated>
  </Upload>
  <CommonPrefixes>
    <Prefix>backups/%E6%97%A5%E5%BF%97/</Prefix>
  </CommonPrefixes>
  <CommonPrefixes>
    <Prefix>backups/old%20stuff/</Prefix>
  </CommonPrefixes>
</ListMultipartUploadsResult>
"""

SPEC_ERROR = b"""<?xml version="1.0" encoding="UTF-8"?>
<Error>
  <Code>NoSuchUpload</Code>
  <Message>The specified upload does not exist.</Message>
  <RequestId>6650CD3E2B1A4F3C8D9E0A1B</RequestId>
  <HostId>examplebucket.oss-cn-hangzhou.aliyuncs.com</HostId>
  <UploadId>3D751E14453020993949362ABD92CA52</UploadId>
  <EC>0042-00000002</EC>
</Error>
"""


def _namespaced(body: bytes) -> bytes:
    """Put a default namespace on the root element, as old documentation samples do."""
    return re.sub(
        rb"^((?:<\?xml[^>]*\?>\s*)?<[A-Za-z]+)", rb'\1 xmlns="' + NS.encode() + b'"', body
    )


def _prefixed(body: bytes) -> bytes:
    """Put every element under an ``oss:`` namespace prefix declared on the root."""
    text = re.sub(r"<(/?)([A-Za-z][A-Za-z0-9]*)", r"<\1oss:\2", body.decode())
    return re.sub(r"(<oss:[A-Za-z]+)", rf'\1 xmlns:oss="{NS}"', text, count=1).encode()


# --- percent-encoding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("", ""),
        ("plain/Key-1_2.txt~", "plain/Key-1_2.txt~"),
        ("a b", "a%20b"),
        ("a+b", "a%2Bb"),
        ("100%", "100%25"),
        ("a&b<c>'\"", "a%26b%3Cc%3E%27%22"),
        ("日志", "%E6%97%A5%E5%BF%97"),
        ("\x00\x01\t\n\r\x1f\x7f", "%00%01%09%0A%0D%1F%7F"),
        ("?#=:;,@", "%3F%23%3D%3A%3B%2C%40"),
        ("😀", "%F0%9F%98%80"),
    ],
)
def test_url_encode_table(raw: str, encoded: str) -> None:
    assert url_encode_xml_value(raw) == encoded
    assert url_decode_xml_value(encoded) == raw


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("a+b", "a+b"),  # plain percent-decoding: a plus is a plus, not a space
        ("%e6%97%a5", "日"),  # lower-case hex is accepted
        ("日 志", "日 志"),  # unescaped characters pass through
        ("no-escapes", "no-escapes"),
    ],
)
def test_url_decode_table(encoded: str, decoded: str) -> None:
    assert url_decode_xml_value(encoded) == decoded


@pytest.mark.parametrize("bad", ["%", "a%4", "%ZZ", "%%20", "%FF", "%C3", "%E6%97"])
def test_url_decode_rejects_bad_escapes(bad: str) -> None:
    with pytest.raises(ProtocolError):
        url_decode_xml_value(bad)


# Arbitrary text, biased towards the characters that matter here.
INTERESTING = " +%/&<>\"'\r\n\t\x00\x01\x1b\x1f\x7f~日志é😀\ufffe"
# Keys are UTF-8 on the wire, so lone surrogates (not encodable) are left out.
ANY_TEXT = st.text(
    st.one_of(st.characters(codec="utf-8"), st.sampled_from(INTERESTING)), max_size=30
)
# Characters XML 1.0 cannot carry at all, neither raw nor as character references.
XML_ILLEGAL = [chr(c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)] + ["\ufffe", "\uffff"]
XML_TEXT = st.text(
    st.one_of(
        st.characters(codec="utf-8", exclude_characters=XML_ILLEGAL),
        st.sampled_from([c for c in INTERESTING if c not in XML_ILLEGAL]),
    ),
    max_size=30,
)


def _xml_safe(text: str) -> bool:
    return not any(c in XML_ILLEGAL for c in text)


@given(ANY_TEXT)
def test_url_encode_round_trip(text: str) -> None:
    encoded = url_encode_xml_value(text)
    assert re.fullmatch(r"[A-Za-z0-9\-_.~/%]*", encoded)
    assert url_decode_xml_value(encoded) == text


# Keys that need encoding-type=url: space, plus, percent, CJK, every C0 control character.
URL_KEYS = [
    ("a b", "a%20b"),
    ("a+b", "a%2Bb"),
    ("50%/x%2B", "50%25/x%252B"),
    ("日志/文件.txt", "%E6%97%A5%E5%BF%97/%E6%96%87%E4%BB%B6.txt"),
    ("".join(map(chr, range(1, 0x20))), "".join(f"%{c:02X}" for c in range(1, 0x20))),
]


@pytest.mark.parametrize(("key", "encoded"), URL_KEYS)
def test_url_encoded_keys_in_every_document(key: str, encoded: str) -> None:
    wire_key = f"<Key>{encoded}</Key>".encode()

    initiate = InitiateResult("b", key, "U")
    body = encode_initiate_result(initiate, url_encode=True)
    assert wire_key in body
    assert decode_initiate_result(body) == initiate

    parts = msgspec.structs.replace(SPEC_LIST_PARTS_RESULT, key=key)
    body = encode_list_parts_result(parts, url_encode=True)
    assert wire_key in body
    assert decode_list_parts_result(body) == parts

    complete = CompleteResult("b", key, ETAG1, "http://b.example/x")
    body = encode_complete_result(complete, url_encode=True)
    assert wire_key in body
    assert decode_complete_result(body) == complete

    uploads = msgspec.structs.replace(
        SPEC_LIST_UPLOADS_RESULT,
        prefix=key,
        delimiter=key,
        key_marker=key,
        next_key_marker=key,
        uploads=(UploadSummary(key, "U"),),
        common_prefixes=(key,),
    )
    body = encode_list_uploads_result(uploads, url_encode=True)
    for element in ["Prefix", "Delimiter", "KeyMarker", "NextKeyMarker", "Key"]:
        assert f"<{element}>{encoded}</{element}>".encode() in body
    assert decode_list_uploads_result(body) == uploads


def test_control_characters_need_url_encoding() -> None:
    with pytest.raises(ValueError, match="url_encode=True"):
        encode_initiate_result(InitiateResult("b", "a\x01b", "U"))
    with pytest.raises(ValueError, match="UploadId") as info:
        encode_initiate_result(InitiateResult("b", "k", "U\x1f"), url_encode=True)
    assert "url_encode" not in str(info.value)


# --- InitiateMultipartUpload ---------------------------------------------------------------------

SPEC_INITIATE_RESULT = InitiateResult("examplebucket", SPEC_KEY, UPLOAD_ID)


@pytest.mark.parametrize(
    "body",
    [SPEC_INITIATE, _namespaced(SPEC_INITIATE), _prefixed(SPEC_INITIATE)],
    ids=["spec", "default-ns", "prefixed-ns"],
)
def test_initiate_spec_example(body: bytes) -> None:
    assert decode_initiate_result(body) == SPEC_INITIATE_RESULT


def test_initiate_without_encoding_type_keeps_key_verbatim() -> None:
    body = SPEC_INITIATE.replace(b"<EncodingType>url</EncodingType>", b"")
    assert decode_initiate_result(body).key == "backups/2024/db%20dump%2Bv1.tar.gz"


def test_initiate_encode_exact_bytes() -> None:
    assert (
        encode_initiate_result(SPEC_INITIATE_RESULT, url_encode=True)
        == (
            DECL + "<InitiateMultipartUploadResult><Bucket>examplebucket</Bucket>"
            "<Key>backups/2024/db%20dump%2Bv1.tar.gz</Key>"
            "<UploadId>3D751E14453020993949362ABD92CA52</UploadId>"
            "<EncodingType>url</EncodingType></InitiateMultipartUploadResult>"
        ).encode()
    )
    plain = encode_initiate_result(InitiateResult("b", "a&b <c>\r", "U"))
    assert b"<Key>a&amp;b &lt;c&gt;&#13;</Key>" in plain
    assert b"EncodingType" not in plain
    assert decode_initiate_result(plain).key == "a&b <c>\r"


def test_initiate_with_byte_order_mark() -> None:
    assert decode_initiate_result(b"\xef\xbb\xbf" + SPEC_INITIATE) == SPEC_INITIATE_RESULT


def test_initiate_keeps_whitespace_in_key() -> None:
    body = b"<InitiateMultipartUploadResult><Bucket>b</Bucket><Key> k \t</Key>"
    body += b"<UploadId>U</UploadId></InitiateMultipartUploadResult>"
    assert decode_initiate_result(body).key == " k \t"


# --- ListParts -----------------------------------------------------------------------------------

SPEC_LIST_PARTS_RESULT = ListPartsResult(
    bucket="examplebucket",
    key=SPEC_KEY,
    upload_id=UPLOAD_ID,
    part_number_marker=0,
    next_part_number_marker=2,
    max_parts=1000,
    is_truncated=False,
    parts=(
        PartInfo(1, ETAG1, 102400, 9427277473487083924, "2024-05-20T08:30:00.000Z"),
        PartInfo(2, ETAG2, 10, 2**64 - 1, "2024-05-20T08:30:01.000Z"),
    ),
    storage_class="Standard",
)


@pytest.mark.parametrize(
    "body",
    [SPEC_LIST_PARTS, _namespaced(SPEC_LIST_PARTS), _prefixed(SPEC_LIST_PARTS)],
    ids=["spec", "default-ns", "prefixed-ns"],
)
def test_list_parts_spec_example(body: bytes) -> None:
    assert decode_list_parts_result(body) == SPEC_LIST_PARTS_RESULT


def test_list_parts_oss2_style_page() -> None:
    # No CRC, no StorageClass, truncated, an empty marker, and client-encryption extras.
    body = (
        b"<ListPartsResult><Bucket>b</Bucket><Key>k</Key><UploadId>U</UploadId>"
        b"<PartNumberMarker></PartNumberMarker><NextPartNumberMarker> 7 </NextPartNumberMarker>"
        b"<MaxParts>2</MaxParts><IsTruncated> true </IsTruncated>"
        b"<ClientEncryptionKey>xyz</ClientEncryptionKey>"
        b"<Part><PartNumber>5</PartNumber><ETag>&#34;AA&#34;</ETag><Size>1</Size></Part>"
        b"<Part><PartNumber>7</PartNumber><ETag>BB</ETag><Size>2</Size>"
        b"<HashCrc64ecma></HashCrc64ecma></Part>"
        b"</ListPartsResult>"
    )
    assert decode_list_parts_result(body) == ListPartsResult(
        bucket="b",
        key="k",
        upload_id="U",
        part_number_marker=0,
        next_part_number_marker=7,
        max_parts=2,
        is_truncated=True,
        parts=(PartInfo(5, '"AA"', 1), PartInfo(7, "BB", 2)),
    )


def test_list_parts_empty_page() -> None:
    r = ListPartsResult(
        bucket="b",
        key="k",
        upload_id="U",
        part_number_marker=0,
        next_part_number_marker=0,
        max_parts=1000,
        is_truncated=False,
        parts=(),
    )
    body = encode_list_parts_result(r)
    assert b"<NextPartNumberMarker>0</NextPartNumberMarker>" in body
    assert decode_list_parts_result(body) == r


def test_list_parts_encode_matches_spec_shape() -> None:
    body = encode_list_parts_result(SPEC_LIST_PARTS_RESULT, url_encode=True)
    assert body.startswith(DECL.encode() + b"<ListPartsResult><EncodingType>url</EncodingType>")
    assert b"<Key>backups/2024/db%20dump%2Bv1.tar.gz</Key>" in body
    assert (
        b"<Part><PartNumber>1</PartNumber><LastModified>2024-05-20T08:30:00.000Z</LastModified>"
        b'<ETag>"17FEA6E97583648E493E6D8BCD54C8F4"</ETag>'
        b"<HashCrc64ecma>9427277473487083924</HashCrc64ecma><Size>102400</Size></Part>"
    ) in body
    no_crc = msgspec.structs.replace(SPEC_LIST_PARTS_RESULT, parts=(PartInfo(1, "E", 3),))
    assert b"HashCrc64ecma" not in encode_list_parts_result(no_crc)


# --- CompleteMultipartUpload ---------------------------------------------------------------------


def _sdk_complete_bodies() -> list[str]:
    captures = load_vectors("wire-captures.json")["captures"]
    bodies = [
        c["request"]["body"]
        for c in captures
        if c["vector_id"].endswith("-complete") and c["request"]["body"]
    ]
    assert len(bodies) == 4
    return bodies


def test_complete_request_is_byte_identical_to_the_sdks() -> None:
    ours = encode_complete_request([(1, ETAG1), (2, ETAG2)])
    for body in _sdk_complete_bodies():
        assert ours == body.encode()


@pytest.mark.parametrize(
    "body",
    [
        SPEC_COMPLETE_REQUEST,
        # Go's encoder writes quotes as character references.
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>"
        b"<ETag>&#34;17FEA6E97583648E493E6D8BCD54C8F4&#34;</ETag></Part><Part>"
        b"<PartNumber>2</PartNumber><ETag>&quot;F8219C7D0B101213162EF9566B81B4B5&quot;</ETag>"
        b"</Part></CompleteMultipartUpload>",
        DECL.encode() + SPEC_COMPLETE_REQUEST,
        _namespaced(SPEC_COMPLETE_REQUEST),
        _prefixed(SPEC_COMPLETE_REQUEST),
    ],
    ids=["spec", "go-escaped", "declaration", "default-ns", "prefixed-ns"],
)
def test_complete_request_decode(body: bytes) -> None:
    assert decode_complete_request(body) == [(1, ETAG1), (2, ETAG2)]


def test_complete_request_leaves_semantic_checks_to_the_server() -> None:
    body = (
        b"<CompleteMultipartUpload><Part><PartNumber>3</PartNumber><ETag>x</ETag></Part>"
        b'<Part><PartNumber>-1</PartNumber><ETag> lower "etag" </ETag></Part>'
        b"<Part><PartNumber>0</PartNumber><ETag></ETag><Extra/></Part>"
        b"<Part><PartNumber>3</PartNumber><ETag>x</ETag></Part>"
        b"</CompleteMultipartUpload>"
    )
    assert decode_complete_request(body) == [(3, "x"), (-1, ' lower "etag" '), (0, ""), (3, "x")]
    assert decode_complete_request(b"<CompleteMultipartUpload/>") == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part>"
        b"</CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><ETag>x</ETag></Part></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>one</PartNumber><ETag>x</ETag></Part>"
        b"</CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>1.0</PartNumber><ETag>x</ETag></Part>"
        b"</CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber></PartNumber><ETag>x</ETag></Part>"
        b"</CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber><i>1</i></PartNumber><ETag>x</ETag>"
        b"</Part></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>x</Etag></Part>"
        b"</CompleteMultipartUpload>",
        b"<CompleteMultipartUploadX><Part><PartNumber>1</PartNumber><ETag>x</ETag></Part>"
        b"</CompleteMultipartUploadX>",
    ],
)
def test_complete_request_malformed(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_complete_request(body)


def test_complete_request_encode_rejects_misuse() -> None:
    with pytest.raises(TypeError):
        encode_complete_request([(True, "x")])
    with pytest.raises(ValueError, match=r"XML 1\.0"):
        encode_complete_request([(1, "bad\x00etag")])


SPEC_COMPLETE = CompleteResult(
    bucket="examplebucket",
    key=SPEC_KEY,
    etag='"8C8936CE3CC74536D9A4AC8021B89D01-2"',
    location="http://examplebucket.oss-cn-hangzhou.aliyuncs.com/backups/2024/db%20dump%2Bv1.tar.gz",
)


@pytest.mark.parametrize(
    "body",
    [SPEC_COMPLETE_RESULT, _namespaced(SPEC_COMPLETE_RESULT), _prefixed(SPEC_COMPLETE_RESULT)],
    ids=["spec", "default-ns", "prefixed-ns"],
)
def test_complete_result_spec_example(body: bytes) -> None:
    # Location is a URL: kept verbatim, never percent-decoded.
    assert decode_complete_result(body) == SPEC_COMPLETE


def test_complete_result_location_optional() -> None:
    body = b"<CompleteMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><ETag>E</ETag>"
    body += b"</CompleteMultipartUploadResult>"
    assert decode_complete_result(body) == CompleteResult("b", "k", "E")


# --- ListMultipartUploads ------------------------------------------------------------------------

SPEC_LIST_UPLOADS_RESULT = ListUploadsResult(
    bucket="examplebucket",
    prefix="backups/",
    delimiter="/",
    key_marker="",
    upload_id_marker="",
    next_key_marker=SPEC_KEY,
    next_upload_id_marker=UPLOAD_ID,
    max_uploads=1000,
    is_truncated=False,
    uploads=(UploadSummary(SPEC_KEY, UPLOAD_ID, "2024-05-20T08:30:00.000Z"),),
    common_prefixes=("backups/日志/", "backups/old stuff/"),
)


@pytest.mark.parametrize(
    "body",
    [SPEC_LIST_UPLOADS, _namespaced(SPEC_LIST_UPLOADS), _prefixed(SPEC_LIST_UPLOADS)],
    ids=["spec", "default-ns", "prefixed-ns"],
)
def test_list_uploads_example(body: bytes) -> None:
    assert decode_list_uploads_result(body) == SPEC_LIST_UPLOADS_RESULT


def test_list_uploads_minimal() -> None:
    body = b"<ListMultipartUploadsResult><Bucket>b</Bucket><KeyMarker/><MaxUploads>10</MaxUploads>"
    body += b"<IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"
    assert decode_list_uploads_result(body) == ListUploadsResult(
        bucket="b",
        prefix="",
        delimiter="",
        key_marker="",
        upload_id_marker="",
        next_key_marker="",
        next_upload_id_marker="",
        max_uploads=10,
        is_truncated=False,
        uploads=(),
    )


def test_list_uploads_upload_id_marker_is_not_percent_decoded() -> None:
    r = msgspec.structs.replace(SPEC_LIST_UPLOADS_RESULT, next_upload_id_marker="a%20")
    body = encode_list_uploads_result(r, url_encode=True)
    assert b"<NextUploadIdMarker>a%20</NextUploadIdMarker>" in body
    assert decode_list_uploads_result(body) == r


# --- Error ---------------------------------------------------------------------------------------

SPEC_ERROR_DOC = ErrorDocument(
    code="NoSuchUpload",
    message="The specified upload does not exist.",
    request_id="6650CD3E2B1A4F3C8D9E0A1B",
    host_id="examplebucket.oss-cn-hangzhou.aliyuncs.com",
    ec="0042-00000002",
    details={"UploadId": UPLOAD_ID},
)


@pytest.mark.parametrize(
    "body",
    [SPEC_ERROR, _namespaced(SPEC_ERROR), _prefixed(SPEC_ERROR)],
    ids=["spec", "default-ns", "prefixed-ns"],
)
def test_error_spec_example(body: bytes) -> None:
    assert decode_error(body) == SPEC_ERROR_DOC


def test_error_signature_details() -> None:
    body = (
        b"<Error><Code>SignatureDoesNotMatch</Code><Message>m</Message>"
        b"<RequestId>R</RequestId><HostId>h</HostId><OSSAccessKeyId>AK</OSSAccessKeyId>"
        b"<SignatureProvided>sig=</SignatureProvided>"
        b"<StringToSign>PUT\n\n\nMon, 20 May 2024 08:30:00 GMT\n/b/k</StringToSign>"
        b"<StringToSignBytes>50 55 54</StringToSignBytes><EC>0002-00000040</EC></Error>"
    )
    doc = decode_error(body)
    assert doc.code == "SignatureDoesNotMatch"
    assert doc.ec == "0002-00000040"
    assert doc.details == {
        "OSSAccessKeyId": "AK",
        "SignatureProvided": "sig=",
        "StringToSign": "PUT\n\n\nMon, 20 May 2024 08:30:00 GMT\n/b/k",
        "StringToSignBytes": "50 55 54",
    }


def test_error_only_code_is_required() -> None:
    assert decode_error(b"<Error><Code>SlowDown</Code></Error>") == ErrorDocument("SlowDown")
    with pytest.raises(ProtocolError, match="Code"):
        decode_error(b"<Error><Message>no code</Message></Error>")


def test_error_header() -> None:
    value = base64.b64encode(SPEC_ERROR).decode()
    assert decode_error_header(value) == SPEC_ERROR_DOC
    assert decode_error_header(" " + value.rstrip("=") + " ") == SPEC_ERROR_DOC
    for bad in ["!!!", "é", "QUJDR", base64.b64encode(b"not xml").decode()]:
        with pytest.raises(ProtocolError):
            decode_error_header(bad)


def test_error_encode() -> None:
    body = encode_error(SPEC_ERROR_DOC)
    assert (
        body
        == (
            DECL + "<Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist."
            "</Message><RequestId>6650CD3E2B1A4F3C8D9E0A1B</RequestId>"
            "<HostId>examplebucket.oss-cn-hangzhou.aliyuncs.com</HostId>"
            "<UploadId>3D751E14453020993949362ABD92CA52</UploadId><EC>0042-00000002</EC></Error>"
        ).encode()
    )
    for name in ["Code", "EC", "bad name", "1abc", "a:b", ""]:
        with pytest.raises(ValueError, match="detail"):
            encode_error(ErrorDocument("X", details={name: "v"}))


def test_wrong_root_names_the_error_code() -> None:
    with pytest.raises(ProtocolError, match="NoSuchUpload"):
        decode_list_parts_result(SPEC_ERROR)


# --- hostile and malformed input -----------------------------------------------------------------

Decoder = Callable[[bytes], object]

DECODERS: dict[str, tuple[Decoder, bytes]] = {
    "initiate": (decode_initiate_result, SPEC_INITIATE),
    "list_parts": (decode_list_parts_result, SPEC_LIST_PARTS),
    "complete_request": (decode_complete_request, SPEC_COMPLETE_REQUEST),
    "complete_result": (decode_complete_result, SPEC_COMPLETE_RESULT),
    "list_uploads": (decode_list_uploads_result, SPEC_LIST_UPLOADS),
    "error": (decode_error, SPEC_ERROR),
}
DECODER_IDS = list(DECODERS)

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Error><Code>&lol3;</Code></Error>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE Error [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><Error><Code>&xxe;</Code></Error>"""


@pytest.mark.parametrize("name", DECODER_IDS)
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"not xml at all",
        b"<",
        b"<a></b>",
        b"<Error><Code>x</Code></Error><Error/>",
        b"\xff\xfe<\x00E\x00/\x00>\x00",
        "<Error>".encode("utf-16"),
        b"<Error><Code>caf\xe9</Code></Error>",
        b"<Error><Code>\x00</Code></Error>",
        b"<Error><Code>&undefined;</Code></Error>",
        b"<Unrelated/>",
        BILLION_LAUGHS,
        EXTERNAL_ENTITY,
        b'<!DOCTYPE x SYSTEM "http://example.invalid/x.dtd"><x/>',
    ],
)
def test_garbage_is_a_protocol_error(name: str, body: bytes) -> None:
    decode, _ = DECODERS[name]
    with pytest.raises(ProtocolError):
        decode(body)


@pytest.mark.parametrize("name", DECODER_IDS)
def test_dtd_is_refused_even_when_harmless(name: str) -> None:
    decode, good = DECODERS[name]
    root = re.search(rb"<([A-Za-z]+)>", good)
    assert root is not None
    doctype = b"<!DOCTYPE " + root.group(1) + b">"
    with pytest.raises(ProtocolError, match="DTD"):
        decode(doctype + good.split(b"?>", 1)[-1])


@pytest.mark.parametrize("name", DECODER_IDS)
def test_every_truncation_is_a_protocol_error(name: str) -> None:
    decode, good = DECODERS[name]
    decode(good)
    body = good.rstrip()
    for cut in range(len(body)):
        with pytest.raises(ProtocolError):
            decode(body[:cut])


@pytest.mark.parametrize("name", ["initiate", "list_parts", "complete_result", "list_uploads"])
def test_wrong_root_is_a_protocol_error(name: str) -> None:
    decode, _ = DECODERS[name]
    with pytest.raises(ProtocolError, match="expected a <"):
        decode(SPEC_COMPLETE_REQUEST)


REQUIRED = {
    "initiate": ["Bucket", "Key", "UploadId"],
    "list_parts": [
        "Bucket",
        "Key",
        "UploadId",
        "PartNumberMarker",
        "NextPartNumberMarker",
        "MaxParts",
        "IsTruncated",
        "PartNumber",
        "ETag",
        "Size",
    ],
    "complete_result": ["Bucket", "Key", "ETag"],
    "list_uploads": ["Bucket", "MaxUploads", "IsTruncated", "UploadId"],
    "error": ["Code"],
}


@pytest.mark.parametrize(
    ("name", "element"), [(n, e) for n, elements in REQUIRED.items() for e in elements]
)
def test_missing_required_element(name: str, element: str) -> None:
    decode, good = DECODERS[name]
    pattern = rb"<" + element.encode() + rb">[^<]*</" + element.encode() + rb">"
    body, count = re.subn(pattern, b"", good, count=1)
    assert count == 1
    with pytest.raises(ProtocolError, match=element):
        decode(body)


def test_upload_key_is_required() -> None:
    body = SPEC_LIST_UPLOADS.replace(
        b"<Upload>\n    <Key>backups/2024/db%20dump%2Bv1.tar.gz</Key>", b"<Upload>"
    )
    with pytest.raises(ProtocolError, match=r"Upload\[1\]: missing required element <Key>"):
        decode_list_uploads_result(body)


BAD_INTEGERS = ["", "abc", "1.0", "-1", "+1", "1e3", "0x10", "1_000", "١", "１", "9" * 5000]


@pytest.mark.parametrize(
    ("element", "value"),
    [
        (element, value)
        for element in ["MaxParts", "PartNumber", "Size", "HashCrc64ecma"]
        for value in BAD_INTEGERS
        # An empty CRC element means "no CRC" (test_list_parts_oss2_style_page).
        if (element, value) != ("HashCrc64ecma", "")
    ],
)
def test_list_parts_non_integer(element: str, value: str) -> None:
    pattern = rb"(<" + element.encode() + rb">)[^<]*(</)"
    body = re.sub(pattern, rb"\g<1>" + value.encode() + rb"\g<2>", SPEC_LIST_PARTS, count=1)
    with pytest.raises(ProtocolError, match=element):
        decode_list_parts_result(body)


@pytest.mark.parametrize("value", ["abc", "1.0", "-1", "１"])
def test_bad_markers(value: str) -> None:
    body = SPEC_LIST_PARTS.replace(
        b"<NextPartNumberMarker>2<", b"<NextPartNumberMarker>" + value.encode() + b"<"
    )
    with pytest.raises(ProtocolError, match="NextPartNumberMarker"):
        decode_list_parts_result(body)
    upload_body = SPEC_LIST_UPLOADS.replace(b">1000<", b">" + value.encode() + b"<")
    with pytest.raises(ProtocolError, match="MaxUploads"):
        decode_list_uploads_result(upload_body)


def test_crc_out_of_range() -> None:
    body = SPEC_LIST_PARTS.replace(b"18446744073709551615", b"18446744073709551616")
    with pytest.raises(ProtocolError, match="64 bits"):
        decode_list_parts_result(body)


@pytest.mark.parametrize("value", ["yes", "1", "", "truee"])
def test_bad_boolean(value: str) -> None:
    body = SPEC_LIST_PARTS.replace(b">false<", b">" + value.encode() + b"<")
    with pytest.raises(ProtocolError, match="IsTruncated"):
        decode_list_parts_result(body)


def test_boolean_is_case_insensitive() -> None:
    body = SPEC_LIST_PARTS.replace(b">false<", b">True<")
    assert decode_list_parts_result(body).is_truncated is True


def test_unknown_encoding_type() -> None:
    body = SPEC_INITIATE.replace(b">url<", b">base64<")
    with pytest.raises(ProtocolError, match="EncodingType"):
        decode_initiate_result(body)


def test_bad_percent_escape_in_encoded_key() -> None:
    body = SPEC_INITIATE.replace(b"%20dump", b"%2")
    with pytest.raises(ProtocolError, match="Key"):
        decode_initiate_result(body)
    body = SPEC_LIST_UPLOADS.replace(b"%E6%97%A5", b"%E6%97")
    with pytest.raises(ProtocolError, match="Prefix"):
        decode_list_uploads_result(body)


def test_markup_where_text_belongs() -> None:
    body = SPEC_INITIATE.replace(b"<Bucket>examplebucket", b"<Bucket><b>examplebucket</b>")
    with pytest.raises(ProtocolError, match="Bucket"):
        decode_initiate_result(body)


def test_duplicate_elements_first_wins() -> None:
    body = SPEC_INITIATE.replace(b"<Bucket>", b"<Bucket>first</Bucket><Bucket>", 1)
    assert decode_initiate_result(body).bucket == "first"


@pytest.mark.parametrize("name", DECODER_IDS)
@given(data=st.binary(max_size=200))
def test_random_bytes_never_escape_as_other_errors(name: str, data: bytes) -> None:
    decode, _ = DECODERS[name]
    with contextlib.suppress(ProtocolError):
        decode(data)


@pytest.mark.parametrize("name", DECODER_IDS)
@given(data=st.data())
def test_mutated_documents_never_escape_as_other_errors(name: str, data: st.DataObject) -> None:
    decode, good = DECODERS[name]
    body = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body) - 1))
        action = data.draw(st.sampled_from(["delete", "replace", "insert"]))
        byte = data.draw(st.sampled_from(b"<>/&;%\"'0-9aZ \x00\xff\xc3"))
        if action == "delete":
            del body[at]
        elif action == "replace":
            body[at] = byte
        else:
            body.insert(at, byte)
    with contextlib.suppress(ProtocolError):
        decode(bytes(body))


# --- round trips ---------------------------------------------------------------------------------

PART_NUMBERS = st.integers(0, 10**6)
SIZES = st.integers(0, 2**62)
CRCS = st.none() | st.integers(0, 2**64 - 1)
BOOLS = st.booleans()


def parts_of(text: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[PartInfo, ...]]:
    part = st.builds(PartInfo, PART_NUMBERS, text, SIZES, CRCS, text)
    return st.lists(part, max_size=4).map(tuple)


@given(r=st.builds(InitiateResult, XML_TEXT, XML_TEXT, XML_TEXT), url_encode=BOOLS)
def test_initiate_round_trip(r: InitiateResult, url_encode: bool) -> None:
    assert decode_initiate_result(encode_initiate_result(r, url_encode=url_encode)) == r


@given(r=st.builds(InitiateResult, XML_TEXT, ANY_TEXT, XML_TEXT))
def test_initiate_round_trip_any_key_url_encoded(r: InitiateResult) -> None:
    assert decode_initiate_result(encode_initiate_result(r, url_encode=True)) == r


@given(key=ANY_TEXT)
def test_initiate_raw_key_round_trips_or_is_refused(key: str) -> None:
    r = InitiateResult("b", key, "U")
    if _xml_safe(key):
        assert decode_initiate_result(encode_initiate_result(r)) == r
    else:
        with pytest.raises(ValueError, match=r"XML 1\.0"):
            encode_initiate_result(r)


def list_parts_results(key: st.SearchStrategy[str]) -> st.SearchStrategy[ListPartsResult]:
    return st.builds(
        ListPartsResult,
        bucket=XML_TEXT,
        key=key,
        upload_id=XML_TEXT,
        part_number_marker=PART_NUMBERS,
        next_part_number_marker=PART_NUMBERS,
        max_parts=PART_NUMBERS,
        is_truncated=BOOLS,
        parts=parts_of(XML_TEXT),
        storage_class=XML_TEXT,
    )


@given(r=list_parts_results(XML_TEXT), url_encode=BOOLS)
def test_list_parts_round_trip(r: ListPartsResult, url_encode: bool) -> None:
    assert decode_list_parts_result(encode_list_parts_result(r, url_encode=url_encode)) == r


@given(r=list_parts_results(ANY_TEXT))
def test_list_parts_round_trip_any_key_url_encoded(r: ListPartsResult) -> None:
    assert decode_list_parts_result(encode_list_parts_result(r, url_encode=True)) == r


@given(parts=st.lists(st.tuples(st.integers(-(10**6), 10**6), XML_TEXT), max_size=6))
def test_complete_request_round_trip(parts: list[tuple[int, str]]) -> None:
    body = encode_complete_request(parts)
    assert body.startswith(b"<CompleteMultipartUpload>")
    assert decode_complete_request(body) == parts


@given(
    parts=st.lists(st.tuples(st.integers(1, 10_000), XML_TEXT), max_size=12),
    cuts=st.lists(st.integers(0, 12), max_size=4),
)
def test_complete_request_encoded_in_slices_is_the_same_document(
    parts: list[tuple[int, str]], cuts: list[int]
) -> None:
    # The client encodes 10,000 parts in slices, yielding to the loop between them.
    bounds = [0, *sorted(min(c, len(parts)) for c in cuts), len(parts)]
    sliced = b"".join(encode_complete_parts(parts[a:b]) for a, b in itertools.pairwise(bounds))
    assert COMPLETE_REQUEST_OPEN + sliced + COMPLETE_REQUEST_CLOSE == encode_complete_request(parts)


@given(r=st.builds(CompleteResult, XML_TEXT, XML_TEXT, XML_TEXT, XML_TEXT), url_encode=BOOLS)
def test_complete_result_round_trip(r: CompleteResult, url_encode: bool) -> None:
    assert decode_complete_result(encode_complete_result(r, url_encode=url_encode)) == r


@given(r=st.builds(CompleteResult, XML_TEXT, ANY_TEXT, XML_TEXT, XML_TEXT))
def test_complete_result_round_trip_any_key_url_encoded(r: CompleteResult) -> None:
    assert decode_complete_result(encode_complete_result(r, url_encode=True)) == r


def list_uploads_results(key: st.SearchStrategy[str]) -> st.SearchStrategy[ListUploadsResult]:
    return st.builds(
        ListUploadsResult,
        bucket=XML_TEXT,
        prefix=key,
        delimiter=key,
        key_marker=key,
        upload_id_marker=XML_TEXT,
        next_key_marker=key,
        next_upload_id_marker=XML_TEXT,
        max_uploads=PART_NUMBERS,
        is_truncated=BOOLS,
        uploads=st.lists(st.builds(UploadSummary, key, XML_TEXT, XML_TEXT), max_size=3).map(tuple),
        common_prefixes=st.lists(key, max_size=3).map(tuple),
    )


@given(r=list_uploads_results(XML_TEXT), url_encode=BOOLS)
def test_list_uploads_round_trip(r: ListUploadsResult, url_encode: bool) -> None:
    assert decode_list_uploads_result(encode_list_uploads_result(r, url_encode=url_encode)) == r


@given(r=list_uploads_results(ANY_TEXT))
def test_list_uploads_round_trip_any_key_url_encoded(r: ListUploadsResult) -> None:
    assert decode_list_uploads_result(encode_list_uploads_result(r, url_encode=True)) == r


DETAIL_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,12}", fullmatch=True).filter(
    lambda n: n not in ("Code", "Message", "RequestId", "HostId", "EC")
)


@given(
    doc=st.builds(
        ErrorDocument,
        code=XML_TEXT,
        message=XML_TEXT,
        request_id=XML_TEXT,
        host_id=XML_TEXT,
        ec=XML_TEXT,
        details=st.dictionaries(DETAIL_NAMES, XML_TEXT, max_size=4),
    )
)
def test_error_round_trip(doc: ErrorDocument) -> None:
    body = encode_error(doc)
    assert decode_error(body) == doc
    assert decode_error_header(base64.b64encode(body).decode("ascii")) == doc
