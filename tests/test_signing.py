"""Signing is pinned by the 43 vectors the official SDKs produced (tests/vectors/signing.json)."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiooss_resume._signing import (
    canonical_query_v4,
    encode_query,
    format_http_date,
    format_iso8601_basic,
    is_ip_endpoint_host,
    parse_v4_authorization,
    request_path,
    sign_request,
    uri_encode,
    v1_authorization,
    v1_signature,
    v1_string_to_sign,
    v4_authorization,
    v4_canonical_request,
    v4_signature,
    v4_signing_key,
    v4_string_to_sign,
)

from .conftest import load_vectors

VECTORS: list[dict[str, Any]] = load_vectors("signing.json")["vectors"]
V1 = [v for v in VECTORS if v["signature_version"] == "v1"]
V4 = [v for v in VECTORS if v["signature_version"] == "v4"]


def test_all_vectors_are_loaded() -> None:
    assert len(VECTORS) == 43
    assert len(V1) + len(V4) == 43


def _query(inputs: dict[str, Any]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in inputs["query"]]


@pytest.mark.parametrize("vector", V1, ids=[v["id"] for v in V1])
def test_v1_vector(vector: dict[str, Any]) -> None:
    inputs, expected = vector["inputs"], vector["expected"]
    sts = v1_string_to_sign(
        inputs["method"],
        inputs["bucket"],
        inputs["key"],
        _query(inputs),
        inputs["headers"],
        inputs["date"],
    )
    assert sts == expected["string_to_sign"]
    sig = v1_signature(inputs["access_key_secret"], sts)
    assert v1_authorization(inputs["access_key_id"], sig) == expected["authorization"]


def _v4_expected_signature(authorization: str) -> str:
    match = re.search(r"Signature=([0-9a-f]{64})", authorization)
    assert match is not None
    return match.group(1)


@pytest.mark.parametrize("vector", V4, ids=[v["id"] for v in V4])
def test_v4_vector(vector: dict[str, Any]) -> None:
    inputs, expected = vector["inputs"], vector["expected"]
    canonical = v4_canonical_request(
        inputs["method"],
        inputs["bucket"],
        inputs["key"],
        _query(inputs),
        inputs["headers"],
        inputs.get("additional_headers", ()),
    )
    assert canonical == expected["canonical_request"]
    sts = v4_string_to_sign(canonical, inputs["datetime"], inputs["region"], inputs["product"])
    assert sts == expected["string_to_sign"]
    key = v4_signing_key(
        inputs["access_key_secret"], inputs["datetime"][:8], inputs["region"], inputs["product"]
    )
    if "signing_key_hex" in expected:
        assert key.hex() == expected["signing_key_hex"]
    signature = v4_signature(key, sts)
    assert signature == _v4_expected_signature(expected["authorization"])
    # Whatever layout the SDK used, our parser reads it and finds the same fields.
    parsed = parse_v4_authorization(expected["authorization"])
    assert parsed is not None
    assert parsed.signature == signature
    assert parsed.access_key_id == inputs["access_key_id"]
    assert parsed.region == inputs["region"]


def test_v4_authorization_documented_layout_round_trips() -> None:
    value = v4_authorization("AK", "20240520", "cn-hangzhou", "ab" * 32, ("abc", "zabc"))
    assert value == (
        "OSS4-HMAC-SHA256 Credential=AK/20240520/cn-hangzhou/oss/aliyun_v4_request, "
        "AdditionalHeaders=abc;zabc, Signature=" + "ab" * 32
    )
    parsed = parse_v4_authorization(value)
    assert parsed is not None
    assert parsed.additional_headers == ("abc", "zabc")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "OSS AK:sig",
        "OSS4-HMAC-SHA256 Credential=AK/20240520/cn-hangzhou/oss, Signature=x",
        "OSS4-HMAC-SHA256 Credential=AK/20240520/cn-hangzhou/oss/aliyun_v4_request",
        "OSS4-HMAC-SHA256 garbage",
    ],
)
def test_parse_v4_authorization_rejects_malformed(value: str) -> None:
    assert parse_v4_authorization(value) is None


WHEN = datetime(2024, 5, 20, 8, 30, tzinfo=UTC)


def _vector(vector_id: str) -> dict[str, Any]:
    return next(v for v in VECTORS if v["id"] == vector_id)


def test_sign_request_v1_matches_oss2_upload_part() -> None:
    inputs = _vector("oss2-v1-upload-part")["inputs"]
    headers = sign_request(
        method="PUT",
        bucket=inputs["bucket"],
        key=inputs["key"],
        query=_query(inputs),
        headers={},
        access_key_id=inputs["access_key_id"],
        access_key_secret=inputs["access_key_secret"],
        security_token=None,
        version="v1",
        region=None,
        now=WHEN,
    )
    assert headers["Date"] == "Mon, 20 May 2024 08:30:00 GMT"
    assert headers["Authorization"] == _vector("oss2-v1-upload-part")["expected"]["authorization"]
    assert "x-oss-date" not in headers  # never sent with V1 (spec 2.3)


@pytest.mark.parametrize("vector_id", ["oss2-v4-upload-part", "oss2-v4-sts-upload-part"])
def test_sign_request_v4_matches_oss2(vector_id: str) -> None:
    vector = _vector(vector_id)
    inputs = vector["inputs"]
    headers = sign_request(
        method=inputs["method"],
        bucket=inputs["bucket"],
        key=inputs["key"],
        query=_query(inputs),
        headers={},
        access_key_id=inputs["access_key_id"],
        access_key_secret=inputs["access_key_secret"],
        security_token=inputs["security_token"],
        version="v4",
        region=inputs["region"],
        now=WHEN,
    )
    assert headers["x-oss-date"] == "20240520T083000Z"
    assert headers["x-oss-content-sha256"] == "UNSIGNED-PAYLOAD"
    expected = _v4_expected_signature(vector["expected"]["authorization"])
    assert headers["Authorization"].endswith(f"Signature={expected}")
    if inputs["security_token"]:
        assert headers["x-oss-security-token"] == inputs["security_token"]


def test_sign_request_v1_sts_signs_the_token_header() -> None:
    vector = _vector("oss2-v1-sts-upload-part")
    inputs = vector["inputs"]
    headers = sign_request(
        method="PUT",
        bucket=inputs["bucket"],
        key=inputs["key"],
        query=_query(inputs),
        headers={},
        access_key_id=inputs["access_key_id"],
        access_key_secret=inputs["access_key_secret"],
        security_token=inputs["security_token"],
        version="v1",
        region=None,
        now=WHEN,
    )
    assert headers["Authorization"] == vector["expected"]["authorization"]
    assert "security-token" not in headers  # the v2 SDK's unsigned quirk is not imitated


def test_sign_request_v4_needs_region() -> None:
    with pytest.raises(ValueError, match="region"):
        sign_request(
            method="GET",
            bucket="b",
            key="k",
            query=[],
            headers={},
            access_key_id="ak",
            access_key_secret="sk",
            security_token=None,
            version="v4",
            region=None,
            now=WHEN,
        )


def test_uri_encode_rules() -> None:
    key = "测试目录/文件 名(1)+&=?#%~.bin"
    assert uri_encode(key, keep_slash=True) == (
        "%E6%B5%8B%E8%AF%95%E7%9B%AE%E5%BD%95/%E6%96%87%E4%BB%B6%20%E5%90%8D%281%29%2B%26%3D"
        "%3F%23%25~.bin"
    )
    assert uri_encode("a/b c+d", keep_slash=False) == "a%2Fb%20c%2Bd"


def test_request_path_and_query() -> None:
    assert request_path("b", "a b/c+d", path_style=True) == "/b/a%20b/c%2Bd"
    assert request_path("b", "a b/c+d", path_style=False) == "/a%20b/c%2Bd"
    assert request_path("b", None, path_style=True) == "/b/"
    assert encode_query([("uploads", "")]) == "uploads"
    assert encode_query([("partNumber", "1"), ("uploadId", "a+b/c")]) == (
        "partNumber=1&uploadId=a%2Bb%2Fc"
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.0.0.1:9000", True),
        ("[::1]:9000", True),
        ("[::1]", True),
        ("localhost:8080", True),
        ("LOCALHOST", True),
        ("oss-cn-hangzhou.aliyuncs.com", False),
        ("files.example.com:443", False),
    ],
)
def test_ip_endpoint_detection(host: str, expected: bool) -> None:
    assert is_ip_endpoint_host(host) is expected


def test_date_formats() -> None:
    assert format_http_date(WHEN) == "Mon, 20 May 2024 08:30:00 GMT"
    assert format_iso8601_basic(WHEN) == "20240520T083000Z"


_header_names = st.sampled_from(
    ["x-oss-meta-a", "x-oss-meta-b", "Content-Type", "x-oss-storage-class", "User-Agent", "abc"]
)


@given(
    headers=st.dictionaries(_header_names, st.text("abcXYZ 019-", min_size=1), max_size=6),
    seed=st.integers(0, 2**32),
)
def test_v4_canonical_request_independent_of_header_order_and_case(
    headers: dict[str, str], seed: int
) -> None:
    # Header values are normalised the way HTTP parsers deliver them (no outer spaces).
    headers = {n: v.strip() or "v" for n, v in headers.items()}
    items = list(headers.items())
    random.Random(seed).shuffle(items)
    shuffled = {(n.upper() if i % 2 else n.lower()): v for i, (n, v) in enumerate(items)}
    query = [("uploadId", "X"), ("partNumber", "2")]
    assert v4_canonical_request("PUT", "b", "k", query, headers) == v4_canonical_request(
        "PUT", "b", "k", list(reversed(query)), shuffled
    )


@given(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=6))
def test_canonical_query_is_order_independent(query: list[tuple[str, str]]) -> None:
    assert canonical_query_v4(query) == canonical_query_v4(list(reversed(query)))
    assert "+" not in canonical_query_v4(query).replace("%2B", "")


@given(key=st.text(min_size=1, max_size=40))
def test_v1_and_v4_change_when_key_changes(key: str) -> None:
    base = v4_canonical_request("PUT", "b", key, [], {})
    assert base != v4_canonical_request("PUT", "b", key + "x", [], {})
    assert v1_string_to_sign("PUT", "b", key, [], {}, "d") != v1_string_to_sign(
        "PUT", "b", key + "x", [], {}, "d"
    )
