"""The emulator's pure parts: target parsing, routing, the signature verifier, fault specs.

The verifier replays every SDK capture in tests/vectors/wire-captures.json (and every signing
vector of signing.json) with the server clock pinned to the vectors' instant: all must be
accepted, and a one-byte change to any signed input must be rejected.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aiooss_resume._signing import (
    v1_signature,
    v1_string_to_sign,
    v4_canonical_request,
    v4_signature,
    v4_signing_key,
    v4_string_to_sign,
)
from aiooss_resume.testing import ChaosSpec, Fault, parse_fault_spec
from aiooss_resume.testing._auth import AuthConfig, headers_for_signing, verify_request
from aiooss_resume.testing._faults import FaultPlan
from aiooss_resume.testing._protocol import (
    OssHttpError,
    parse_target,
    route,
    validate_bucket_name,
    validate_key,
)

from .conftest import load_vectors

CAPTURES: list[dict[str, Any]] = load_vectors("wire-captures.json")["captures"]
VECTORS: dict[str, dict[str, Any]] = {v["id"]: v for v in load_vectors("signing.json")["vectors"]}
PINNED = datetime(2024, 5, 20, 8, 30, tzinfo=UTC)


# ---------------------------------------------------------------- parsing and routing


def test_path_style_key_decoding() -> None:
    raw = (
        "/examplebucket/%E6%B5%8B%E8%AF%95%E7%9B%AE%E5%BD%95%2F%E6%96%87%E4%BB%B6"
        "%20%E5%90%8D%281%29%2B%26%3D%3F%23%25~.bin?uploads="
    )
    target = parse_target(raw)
    assert target.bucket == "examplebucket"
    assert target.key == "测试目录/文件 名(1)+&=?#%~.bin"
    assert target.query == [("uploads", "")]


def test_plus_in_path_is_literal_and_slashes_are_kept() -> None:
    target = parse_target("/b-1/a+b//./../c?uploadId=X&partNumber=2&uploads")
    assert target.key == "a+b//./../c"
    assert target.query_map == {"uploadId": "X", "partNumber": "2", "uploads": ""}


def test_bucket_level_and_service_level_targets() -> None:
    assert parse_target("/bucket").key is None
    assert parse_target("/bucket/").key is None
    assert parse_target("/").bucket is None


def test_virtual_host_routing() -> None:
    target = parse_target("/dir/file.txt", "mybucket.localhost:8080", "localhost")
    assert (target.bucket, target.key) == ("mybucket", "dir/file.txt")
    target = parse_target("/mybucket/file.txt", "localhost:8080", "localhost")
    assert (target.bucket, target.key) == ("mybucket", "file.txt")


def test_invalid_utf8_is_invalid_uri() -> None:
    with pytest.raises(OssHttpError) as info:
        parse_target("/bucket/%FF%FE")
    assert info.value.code == "InvalidURI"


@pytest.mark.parametrize(
    ("method", "raw", "operation"),
    [
        ("POST", "/b-1/k?uploads=", "InitiateMultipartUpload"),
        ("PUT", "/b-1/k?partNumber=1&uploadId=X", "UploadPart"),
        ("GET", "/b-1/k?uploadId=X", "ListParts"),
        ("POST", "/b-1/k?uploadId=X", "CompleteMultipartUpload"),
        ("DELETE", "/b-1/k?uploadId=X", "AbortMultipartUpload"),
        ("GET", "/b-1/?uploads", "ListMultipartUploads"),
        ("PUT", "/b-1/k", "PutObject"),
        ("HEAD", "/b-1/k", "HeadObject"),
        ("GET", "/b-1/k", "GetObject"),
        ("DELETE", "/b-1/k", "DeleteObject"),
        ("PUT", "/b-1", "PutBucket"),
    ],
)
def test_dispatch_table(method: str, raw: str, operation: str) -> None:
    assert route(method, parse_target(raw)) == operation


@pytest.mark.parametrize("name", ["ab", "-abc", "abc-", "ABC", "a_b", "a" * 64, "a.b"])
def test_invalid_bucket_names(name: str) -> None:
    with pytest.raises(OssHttpError) as info:
        validate_bucket_name(name)
    assert info.value.code == "InvalidBucketName"


@pytest.mark.parametrize("key", ["/abs", "\\back", "x" * 1024, "é" * 512])
def test_invalid_keys(key: str) -> None:
    with pytest.raises(OssHttpError) as info:
        validate_key(key)
    assert info.value.code == "InvalidObjectName"


def test_valid_keys() -> None:
    validate_key("x" * 1023)
    validate_key("a/../b\x01 c")


# ---------------------------------------------------------------- the verifier


def _config(inputs: dict[str, Any], **overrides: Any) -> AuthConfig:
    fields: dict[str, Any] = {
        "access_key_id": inputs["access_key_id"],
        "access_key_secret": inputs["access_key_secret"],
        "region": inputs.get("region") or "cn-hangzhou",
        "security_token": inputs["security_token"],
    }
    fields.update(overrides)
    return AuthConfig(**fields)


def _verify_capture(capture: dict[str, Any], config: AuthConfig, now: datetime = PINNED) -> None:
    request = capture["request"]
    target = parse_target(request["raw_target"])
    verify_request(
        method=request["method"],
        bucket=target.bucket,
        key=target.key,
        query=target.query,
        headers=headers_for_signing(request["headers"]),
        config=config,
        now=now,
    )


ARABIC_DATE = "٢٠٢٤٠٥٢٠"  # 20240520 in Arabic-Indic digits: int() reads it, OSS does not


def test_v1_date_with_non_ascii_digits_is_refused() -> None:
    config = AuthConfig("AK", "SK", "cn-hangzhou")
    date = "Mon, ٢٠ May ٢٠٢٤ 08:30:00 GMT"
    headers = {"date": date}
    signature = v1_signature("SK", v1_string_to_sign("GET", "b-1", "k", [], headers, date))
    headers["authorization"] = f"OSS AK:{signature}"
    with pytest.raises(OssHttpError) as info:
        verify_request(
            method="GET", bucket="b-1", key="k", query=[], headers=headers, config=config,
            now=PINNED,
        )  # fmt: skip
    assert (info.value.code, info.value.message) == (
        "AccessDenied",
        "Invalid date format of the request.",
    )


def test_v4_dates_with_non_ascii_digits_are_refused_not_a_crash() -> None:
    """A client consistent with itself, in the wrong digits: OSS's answer, never a 500."""
    config = AuthConfig("AK", "SK", "cn-hangzhou")
    timestamp = ARABIC_DATE + "T083000Z"
    headers = {"x-oss-date": timestamp, "x-oss-content-sha256": "UNSIGNED-PAYLOAD"}
    canonical = v4_canonical_request("GET", "b-1", "k", [], headers, ())
    string_to_sign = v4_string_to_sign(canonical, timestamp, "cn-hangzhou")
    key = v4_signing_key("SK", ARABIC_DATE, "cn-hangzhou")
    headers["authorization"] = (
        f"OSS4-HMAC-SHA256 Credential=AK/{ARABIC_DATE}/cn-hangzhou/oss/aliyun_v4_request,"
        f"Signature={v4_signature(key, string_to_sign)}"
    )
    with pytest.raises(OssHttpError) as info:
        verify_request(
            method="GET", bucket="b-1", key="k", query=[], headers=headers, config=config,
            now=PINNED,
        )  # fmt: skip
    assert (info.value.code, info.value.message) == (
        "InvalidArgument",
        "Invalid signing date in Authorization header.",
    )


def _capture_ids() -> list[str]:
    return [c["vector_id"] for c in CAPTURES]


def test_every_capture_is_present() -> None:
    assert len(CAPTURES) == 40


@pytest.mark.parametrize("capture", CAPTURES, ids=_capture_ids())
def test_wire_capture_is_accepted(capture: dict[str, Any]) -> None:
    _verify_capture(capture, _config(VECTORS[capture["vector_id"]]["inputs"]))


def _mutations(capture: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One-byte changes to each signed input of a capture."""
    request = capture["request"]
    version = capture["signature_version"]
    out: list[tuple[str, dict[str, Any]]] = []

    def variant(label: str, **changes: Any) -> None:
        changed = {**request, **changes}
        out.append((label, {**capture, "request": changed}))

    variant("method", method="PATCH" if request["method"] != "PATCH" else "PUT")
    path, _, query = request["raw_target"].partition("?")
    # the last byte of the key (or bucket), so the target stays parseable
    variant(
        "key", raw_target=path[:-1] + ("X" if path[-1] != "X" else "Y") + "?" * bool(query) + query
    )
    for index, (name, value) in enumerate(request["headers"]):
        lowered = name.lower()
        signed = lowered.startswith("x-oss-") or lowered in ("content-md5", "content-type")
        if version == "v1":
            signed = signed or (lowered == "date" and not any(
                n.lower() == "x-oss-date" for n, _ in request["headers"]
            ))  # fmt: skip
        if lowered == "x-oss-content-sha256" or not signed:
            continue
        if lowered in ("date", "x-oss-date"):
            continue  # covered below: a date change is caught by the signature too
        headers = [list(h) for h in request["headers"]]
        headers[index] = [name, value[:-1] + ("X" if value[-1:] != "X" else "Y")]
        variant(f"header:{lowered}", headers=headers)
    for index, (name, value) in enumerate(request["headers"]):
        if name.lower() in ("date", "x-oss-date") and (
            version == "v1" or name.lower() == "x-oss-date"
        ):
            headers = [list(h) for h in request["headers"]]
            headers[index] = [
                name,
                value.replace("08:30:00", "08:30:01").replace("083000", "083001"),
            ]
            variant(f"header:{name.lower()}", headers=headers)
    if query:
        # change one byte of a (signed) query value
        variant("query", raw_target=path + "?" + query.replace("1", "2", 1) if "1" in query
                else request["raw_target"] + "&uploads")  # fmt: skip
    return out


@pytest.mark.parametrize("capture", CAPTURES, ids=_capture_ids())
def test_one_byte_change_is_rejected(capture: dict[str, Any]) -> None:
    config = _config(VECTORS[capture["vector_id"]]["inputs"])
    mutations = _mutations(capture)
    assert len(mutations) >= 3
    for label, mutated in mutations:
        with pytest.raises(OssHttpError) as info:
            _verify_capture(mutated, config)
        assert info.value.code in ("SignatureDoesNotMatch", "InvalidSecurityToken"), label


@pytest.mark.parametrize("vector", list(VECTORS.values()), ids=list(VECTORS))
def test_signing_vector_inputs_are_accepted(vector: dict[str, Any]) -> None:
    inputs = vector["inputs"]
    headers = dict(inputs["headers"])
    headers["Authorization"] = vector["expected"]["authorization"]
    if inputs["security_token"] and not any(
        n.lower() in ("x-oss-security-token", "security-token") for n in headers
    ):
        headers["x-oss-security-token"] = inputs["security_token"]
    if vector["signature_version"] == "v1":
        if not any(n.lower() == "date" for n in headers):
            headers["Date"] = inputs["date"]
        now = PINNED
    else:
        now = datetime.strptime(inputs["datetime"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    verify: dict[str, Any] = {
        "method": inputs["method"],
        "bucket": inputs["bucket"],
        "key": inputs["key"],
        "query": [tuple(q) for q in inputs["query"]],
        "headers": headers_for_signing(headers.items()),
        "config": _config(inputs),
        "now": now,
    }
    verify_request(**verify)
    wrong = _config(inputs, access_key_secret=inputs["access_key_secret"] + "x")
    with pytest.raises(OssHttpError) as info:
        verify_request(**{**verify, "config": wrong})
    assert info.value.code == "SignatureDoesNotMatch"


def _capture(vector_id: str) -> dict[str, Any]:
    return next(c for c in CAPTURES if c["vector_id"] == vector_id)


def test_skew_is_checked_both_ways() -> None:
    capture = _capture("oss2-v4-upload-part")
    config = _config(VECTORS["oss2-v4-upload-part"]["inputs"])
    _verify_capture(capture, config, PINNED + timedelta(minutes=14))
    for delta in (timedelta(minutes=16), -timedelta(minutes=16)):
        with pytest.raises(OssHttpError) as info:
            _verify_capture(capture, config, PINNED + delta)
        assert info.value.code == "RequestTimeTooSkewed"
        assert info.value.status == 403


def test_wrong_region_is_invalid_argument() -> None:
    capture = _capture("v2sdk-v4-upload-part")
    config = _config(VECTORS["v2sdk-v4-upload-part"]["inputs"], region="cn-beijing")
    with pytest.raises(OssHttpError) as info:
        _verify_capture(capture, config)
    assert (info.value.status, info.value.code) == (400, "InvalidArgument")
    assert info.value.message == "Invalid signing region in Authorization header."
    assert info.value.ec == "0002-00000226"


def test_unknown_access_key_and_missing_auth() -> None:
    capture = _capture("oss2-v1-upload-part")
    config = _config(VECTORS["oss2-v1-upload-part"]["inputs"], access_key_id="OTHER")
    with pytest.raises(OssHttpError) as info:
        _verify_capture(capture, config)
    assert info.value.code == "InvalidAccessKeyId"
    stripped = {
        **capture,
        "request": {
            **capture["request"],
            "headers": [
                h for h in capture["request"]["headers"] if h[0].lower() != "authorization"
            ],
        },
    }
    with pytest.raises(OssHttpError) as info:
        _verify_capture(stripped, _config(VECTORS["oss2-v1-upload-part"]["inputs"]))
    assert (info.value.status, info.value.code) == (403, "AccessDenied")


def test_v1_mismatch_carries_string_to_sign() -> None:
    capture = _capture("oss2-v1-upload-part")
    config = _config(VECTORS["oss2-v1-upload-part"]["inputs"], access_key_secret="wrong")
    with pytest.raises(OssHttpError) as info:
        _verify_capture(capture, config)
    assert (
        info.value.details["StringToSign"]
        == VECTORS["oss2-v1-upload-part"]["expected"]["string_to_sign"]
    )


def test_sts_token_is_required_when_configured() -> None:
    capture = _capture("oss2-v4-upload-part")
    config = _config(VECTORS["oss2-v4-upload-part"]["inputs"], security_token="needed")
    with pytest.raises(OssHttpError) as info:
        _verify_capture(capture, config)
    assert info.value.code == "InvalidSecurityToken"
    # the Python v2 SDK's unsigned V1 fallback header is accepted
    _verify_capture(
        _capture("v2sdk-v1-sts-upload-part"),
        _config(VECTORS["v2sdk-v1-sts-upload-part"]["inputs"]),
    )


# ---------------------------------------------------------------- fault specs


def test_fault_spec_parsing() -> None:
    fault = Fault.parse("UploadPart:part=3:times=2:status=503:code=SlowDown")
    assert (fault.operation, fault.part_number, fault.times, fault.error) == (
        "UploadPart",
        3,
        2,
        (503, "SlowDown"),
    )
    assert Fault.parse("UploadPart:nth=2:reset_after_bytes=65536").reset_after_bytes == 65536
    assert Fault.parse("CompleteMultipartUpload:drop_response").drop_response
    assert Fault.parse("*:delay=0.5:times=inf").times is None
    assert Fault.parse("PutObject:status=500").error == (500, "InternalError")
    assert Fault.parse("ListParts:code=NoSuchUpload").error == (404, "NoSuchUpload")
    assert Fault.parse("UploadPart:throttle=1000").throttle_bytes_per_sec == 1000
    chaos = parse_fault_spec("chaos:probability=0.5:seed=3:kinds=error+reset")
    assert chaos == (0.5, 3, ("error", "reset"), ("UploadPart",))
    assert isinstance(chaos, ChaosSpec)
    for spec in ("Nope:status=500", "UploadPart:bogus=1", "UploadPart:status", "UploadPart:nth=0"):
        with pytest.raises(ValueError, match="fault spec"):
            parse_fault_spec(spec)


def test_truncate_response_spec_and_chaos_kind() -> None:
    fault = Fault.parse("UploadPart:part=2:truncate_response")
    assert (fault.part_number, fault.truncate_response) == (2, True)
    assert not Fault.parse("UploadPart:truncate_response=false").truncate_response
    assert fault.describe() == "UploadPart:part=2:truncate_response"
    assert Fault.parse(fault.describe()) == fault
    chaos = parse_fault_spec("chaos:probability=1:seed=0:kinds=truncate")
    assert chaos == (1.0, 0, ("truncate",), ("UploadPart",))
    plan = FaultPlan()
    plan.chaos(1.0, seed=0, kinds=("truncate",))
    effect = plan.evaluate("UploadPart", 1, "R1")
    assert effect is not None and effect.truncate_response
    assert plan.fired[0].fault == "UploadPart:truncate_response"


def test_fault_window_and_part_filter() -> None:
    plan = FaultPlan()
    handle = plan.add(Fault(operation="UploadPart", part_number=2, nth=2, times=2, status=500))
    fired = []
    for i in range(6):
        for part in (1, 2):
            effect = plan.evaluate("UploadPart", part, f"R{i}{part}")
            fired.append(effect is not None)
    # part 2 requests are the 2nd, 4th, ... evaluations; its 2nd and 3rd occurrences fire
    assert fired == [
        False,
        False,
        False,
        True,
        False,
        True,
        False,
        False,
        False,
        False,
        False,
        False,
    ]
    assert handle.fired == 2
    assert handle.exhausted
    assert [r.request_id for r in plan.fired] == ["R12", "R22"]


def test_chaos_is_reproducible() -> None:
    def run() -> list[bool]:
        plan = FaultPlan()
        plan.chaos(0.3, seed=42)
        return [plan.evaluate("UploadPart", i, str(i)) is not None for i in range(200)]

    first = run()
    assert first == run()
    assert 30 < sum(first) < 90
