"""Issue 10 item 15: typed object options (``ObjectOptions``) instead of raw header names.

The value itself (rendering, validation, the conflict rule with raw ``headers=``), then
uploads and downloads against the emulator over real sockets: what the stored object
carries (checked with oss2's ``head_object`` too), which request each header rides on, and
what the checkpoint's fingerprint makes of a changed option.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import oss2
import pytest
from aiohttp import web

import aiooss_resume as oss
from aiooss_resume.testing import Fault, FaultContext, ThreadedOssServer

KIB = 1024
BUCKET = "bkt"

FULL = oss.ObjectOptions(
    acl="public-read",
    storage_class="IA",
    server_side_encryption="KMS",
    kms_key_id="key-1",
    kms_data_encryption="SM4",
    metadata={"Owner": "ops", "build-id": "42"},
    content_type="text/csv",
    content_disposition='attachment; filename="a.csv"',
    cache_control="max-age=3600",
    content_encoding="gzip",
    tagging={"project": "a b", "k&=": "v/1"},
    forbid_overwrite=False,
    traffic_limit=819_200,
)


# ---------------------------------------------------------------------- the value


def test_every_field_renders_to_its_header() -> None:
    assert FULL.to_headers() == {
        "Content-Type": "text/csv",
        "Content-Disposition": 'attachment; filename="a.csv"',
        "Cache-Control": "max-age=3600",
        "Content-Encoding": "gzip",
        "x-oss-object-acl": "public-read",
        "x-oss-storage-class": "IA",
        "x-oss-server-side-encryption": "KMS",
        "x-oss-server-side-data-encryption": "SM4",
        "x-oss-server-side-encryption-key-id": "key-1",
        "x-oss-meta-owner": "ops",
        "x-oss-meta-build-id": "42",
        "x-oss-tagging": "project=a%20b&k%26%3D=v%2F1",
        "x-oss-forbid-overwrite": "false",
        "x-oss-traffic-limit": "819200",
    }


def test_nothing_set_renders_nothing_and_the_value_is_frozen() -> None:
    assert oss.ObjectOptions().to_headers() == {}
    assert oss.ObjectOptions(forbid_overwrite=True).to_headers() == {
        "x-oss-forbid-overwrite": "true"
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        FULL.acl = "private"  # type: ignore[misc]


def test_the_mappings_are_copied_so_the_value_stays_as_validated() -> None:
    metadata = {"owner": "ops"}
    options = oss.ObjectOptions(metadata=metadata, tagging={"a": "b"})
    metadata["bad name"] = "x"  # after validation: must not reach the headers
    assert options.to_headers() == {"x-oss-meta-owner": "ops", "x-oss-tagging": "a=b"}
    with pytest.raises(TypeError):
        options.metadata["x"] = "y"  # type: ignore[index]


@pytest.mark.parametrize("limit", [819_200, 838_860_800])
def test_traffic_limit_accepts_the_documented_range(limit: int) -> None:
    assert oss.ObjectOptions(traffic_limit=limit).to_headers() == {
        "x-oss-traffic-limit": str(limit)
    }


BAD_VALUES: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"traffic_limit": 819_199}, ValueError, "819200 to 838860800 bit/s"),
    ({"traffic_limit": 838_860_801}, ValueError, "819200 to 838860800 bit/s"),
    ({"traffic_limit": True}, TypeError, "traffic_limit must be an int"),
    ({"traffic_limit": 1e6}, TypeError, "traffic_limit must be an int"),
    ({"acl": "public"}, ValueError, "acl must be one of"),
    ({"acl": 1}, TypeError, "acl must be a str"),
    ({"storage_class": "standard"}, ValueError, "storage_class must be one of"),
    ({"server_side_encryption": "aes256"}, ValueError, "server_side_encryption must be one of"),
    ({"kms_key_id": "k"}, ValueError, "kms_key_id needs server_side_encryption='KMS'"),
    (
        {"server_side_encryption": "AES256", "kms_data_encryption": "SM4"},
        ValueError,
        "kms_data_encryption needs server_side_encryption='KMS'",
    ),
    ({"server_side_encryption": "KMS", "kms_key_id": ""}, ValueError, "must not be empty"),
    ({"metadata": {"x-oss-meta-owner": "a"}}, ValueError, "without the 'x-oss-meta-' prefix"),
    ({"metadata": {"own er": "a"}}, ValueError, "letters, digits and '-'"),
    ({"metadata": {"": "a"}}, ValueError, "letters, digits and '-'"),
    ({"metadata": {"Owner": "a", "owner": "b"}}, ValueError, "given twice"),
    ({"metadata": {"owner": "é"}}, ValueError, "printable ASCII"),
    ({"metadata": {"owner": "a\nb"}}, ValueError, "printable ASCII"),
    ({"metadata": {"owner": " a"}}, ValueError, "leading or trailing spaces"),
    ({"metadata": {"big": "x" * 8200}}, ValueError, "at most 8 KiB"),
    ({"metadata": {"owner": 1}}, TypeError, "metadata must map str to str"),
    ({"metadata": ["owner"]}, TypeError, "metadata must be a mapping"),
    ({"tagging": {f"k{i}": "v" for i in range(11)}}, ValueError, "at most 10"),
    ({"tagging": {"": "v"}}, ValueError, "1 to 128 characters"),
    ({"tagging": {"k" * 129: "v"}}, ValueError, "1 to 128 characters"),
    ({"tagging": {"k": "v" * 257}}, ValueError, "at most 256 characters"),
    ({"content_type": "text"}, ValueError, "MIME type"),
    ({"content_type": "text/plain\r\nX-Evil: 1"}, ValueError, "printable ASCII"),
    ({"cache_control": ""}, ValueError, "must not be empty"),
    ({"content_disposition": b"attachment"}, TypeError, "must be a str"),
    ({"forbid_overwrite": "true"}, TypeError, "forbid_overwrite must be a bool"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_VALUES)
def test_bad_values_are_refused_when_built(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        oss.ObjectOptions(**kwargs)


def test_tags_up_to_the_limits_are_accepted() -> None:
    tags = {f"k{i}": "v" * 256 for i in range(9)} | {"k" * 128: ""}
    assert oss.ObjectOptions(tagging=tags).to_headers()["x-oss-tagging"].count("&") == 9


# ---------------------------------------------------------------------- against the emulator


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadedOssServer]:
    with ThreadedOssServer(root=tmp_path / "oss") as s:
        yield s
        assert s.stats.internal_errors == 0


def client_for(server: ThreadedOssServer) -> oss.Client:
    ak, sk, token = server.credentials
    return oss.Client(
        server.endpoint,
        credentials=oss.Credentials(ak, sk, token),
        region=server.region,
        retry=oss.RetryPolicy(max_attempts=2, base_delay=0.0),
    )


def oss2_bucket(server: ThreadedOssServer) -> Any:
    ak, sk, _ = server.credentials
    return oss2.Bucket(oss2.AuthV4(ak, sk), server.endpoint, BUCKET, region=server.region)


def make_file(tmp_path: Path, size: int, name: str = "src.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


class Captured:
    """Every request's headers, by operation, through the emulator's fault-hook seam."""

    def __init__(self, server: ThreadedOssServer) -> None:
        self.headers: list[tuple[str, dict[str, str]]] = []
        server.faults.add(Fault(hook=self._hook, times=None))

    async def _hook(self, ctx: FaultContext) -> web.StreamResponse | None:
        self.headers.append((ctx.operation, {k.lower(): v for k, v in ctx.request.headers.items()}))
        return None

    def of(self, operation: str) -> list[dict[str, str]]:
        return [h for op, h in self.headers if op == operation]


@pytest.mark.anyio
@pytest.mark.parametrize("size", [50 * KIB, 250 * KIB], ids=["PutObject", "multipart"])
async def test_the_stored_object_carries_the_options(
    server: ThreadedOssServer, tmp_path: Path, size: int
) -> None:
    src = make_file(tmp_path, size)
    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_file("a.bin", src, 100 * KIB, options=FULL)
    stored = server.object_info(BUCKET, "a.bin")
    assert stored is not None
    expected = {k.lower(): v for k, v in FULL.to_headers().items()}
    del expected["x-oss-traffic-limit"]  # a throttle, not metadata
    del expected["x-oss-forbid-overwrite"]
    assert {k: stored.headers.get(k) for k in expected} == expected
    # An independent client reads the same back.
    head = await asyncio.to_thread(oss2_bucket(server).head_object, "a.bin")
    assert head.headers["Content-Type"] == "text/csv"
    assert head.headers["x-oss-meta-owner"] == "ops"
    assert head.headers["x-oss-meta-build-id"] == "42"
    assert head.headers["x-oss-storage-class"] == "IA"
    assert head.headers["x-oss-server-side-encryption"] == "KMS"
    assert head.headers["x-oss-server-side-encryption-key-id"] == "key-1"
    assert head.headers["x-oss-tagging-count"] == "2"
    assert head.headers["Cache-Control"] == "max-age=3600"
    assert head.headers["Content-Disposition"] == 'attachment; filename="a.csv"'
    assert head.headers["Content-Encoding"] == "gzip"


@pytest.mark.anyio
async def test_each_header_rides_on_the_request_oss_reads_it_from(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    src = make_file(tmp_path, 250 * KIB)
    captured = Captured(server)
    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_file("a.bin", src, 100 * KIB, options=FULL)
    (initiate,) = captured.of("InitiateMultipartUpload")
    parts = captured.of("UploadPart")
    (complete,) = captured.of("CompleteMultipartUpload")
    assert len(parts) == 3
    assert all(p["x-oss-traffic-limit"] == "819200" for p in parts)
    assert "x-oss-traffic-limit" not in initiate and "x-oss-traffic-limit" not in complete
    assert complete["x-oss-object-acl"] == "public-read"
    assert "x-oss-object-acl" not in initiate
    assert initiate["x-oss-meta-owner"] == "ops" and "x-oss-meta-owner" not in parts[0]
    assert initiate["x-oss-storage-class"] == "IA"
    assert initiate["x-oss-forbid-overwrite"] == complete["x-oss-forbid-overwrite"] == "false"


@pytest.mark.anyio
async def test_options_combine_with_raw_headers_and_a_conflict_is_an_error(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    src = make_file(tmp_path, 50 * KIB)
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(ValueError, match="'content-type' is given twice"):
            await bucket.upload_file(
                "a.bin",
                src,
                options=oss.ObjectOptions(content_type="text/csv"),
                headers={"content-type": "text/plain"},
            )
        with pytest.raises(TypeError, match="options must be an ObjectOptions"):
            await bucket.upload_file("a.bin", src, options={"acl": "private"})  # type: ignore[arg-type]
        assert server.requests == []  # refused before any request
        await bucket.upload_file(
            "a.bin",
            src,
            options=oss.ObjectOptions(content_type="text/csv"),
            headers={"x-oss-meta-raw": "1", "Content-Language": "en"},
        )
    stored = server.object_info(BUCKET, "a.bin")
    assert stored is not None
    assert stored.headers["content-type"] == "text/csv"
    assert stored.headers["x-oss-meta-raw"] == "1"
    assert stored.headers["content-language"] == "en"


@pytest.mark.anyio
async def test_forbid_overwrite_refuses_an_existing_object(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    src = make_file(tmp_path, 250 * KIB)
    forbid = oss.ObjectOptions(forbid_overwrite=True)
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        await bucket.upload_file("a.bin", src, 100 * KIB, options=forbid)
        with pytest.raises(oss.ServiceError) as info:
            await bucket.upload_file("a.bin", src, 100 * KIB, options=forbid)
    assert info.value.status == 409 and info.value.code == "FileAlreadyExists"


async def _failed_run(server: ThreadedOssServer, src: Path, options: oss.ObjectOptions) -> None:
    """A checkpointed upload of 4 parts that fails at part 3, leaving its checkpoint."""
    server.faults.add(
        Fault(operation="UploadPart", part_number=3, times=1, status=403, code="AccessDenied")
    )
    async with client_for(server) as client:
        with pytest.raises(oss.ServiceError):
            await client.bucket(BUCKET).upload_file(
                "a.bin", src, 100 * KIB, checkpoint=True, options=options
            )


@pytest.mark.anyio
async def test_a_changed_traffic_limit_still_resumes(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    src = make_file(tmp_path, 400 * KIB)
    await _failed_run(server, src, oss.ObjectOptions(metadata={"a": "1"}, traffic_limit=819_200))
    async with client_for(server) as client:
        result = await client.bucket(BUCKET).upload_file(
            "a.bin",
            src,
            100 * KIB,
            checkpoint=True,
            options=oss.ObjectOptions(metadata={"a": "1"}, traffic_limit=8_192_000),
        )
    assert result.parts_resumed == 2
    assert server.read_object(BUCKET, "a.bin") == src.read_bytes()


@pytest.mark.anyio
async def test_changed_metadata_starts_over(server: ThreadedOssServer, tmp_path: Path) -> None:
    src = make_file(tmp_path, 400 * KIB)
    await _failed_run(server, src, oss.ObjectOptions(metadata={"a": "1"}))
    async with client_for(server) as client:
        result = await client.bucket(BUCKET).upload_file(
            "a.bin", src, 100 * KIB, checkpoint=True, options=oss.ObjectOptions(metadata={"a": "2"})
        )
    assert result.parts_resumed == 0
    stored = server.object_info(BUCKET, "a.bin")
    assert stored is not None and stored.headers["x-oss-meta-a"] == "2"
    assert server.list_uploads(BUCKET) == []  # the stale upload was aborted


@pytest.mark.anyio
async def test_download_takes_a_traffic_limit_and_nothing_else(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    src = make_file(tmp_path, 250 * KIB)
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        await bucket.upload_file("a.bin", src, 100 * KIB)
        captured = Captured(server)
        dest = tmp_path / "out.bin"
        with pytest.raises(ValueError, match="acl cannot apply here; only traffic_limit can"):
            await bucket.download_file(
                "a.bin", dest, options=oss.ObjectOptions(acl="private", traffic_limit=819_200)
            )
        assert captured.headers == []  # refused before any request
        await bucket.download_file(
            "a.bin", dest, 100 * KIB, options=oss.ObjectOptions(traffic_limit=819_200)
        )
    assert dest.read_bytes() == src.read_bytes()
    gets = captured.of("GetObject")
    assert len(gets) == 3 and all(g["x-oss-traffic-limit"] == "819200" for g in gets)


# ---------------------------------------------------------------- audit of issue 10 (items 5, 8)


@pytest.mark.parametrize(
    ("options", "raw"),
    [
        # Spelled exactly as options render them: only the conflict rule can refuse these
        # (route_headers accepts each header alone).
        (oss.ObjectOptions(acl="private"), {"x-oss-object-acl": "public-read"}),
        (oss.ObjectOptions(metadata={"owner": "ops"}), {"x-oss-meta-owner": "someone"}),
        (oss.ObjectOptions(content_type="text/csv"), {"Content-Type": "text/plain"}),
        (oss.ObjectOptions(forbid_overwrite=True), {"X-OSS-Forbid-Overwrite": "false"}),
    ],
)
def test_a_header_given_both_ways_spelled_alike_is_an_error(
    options: oss.ObjectOptions, raw: dict[str, str]
) -> None:
    from aiooss_resume._headers import merge_headers

    with pytest.raises(ValueError, match="given twice"):
        merge_headers(options, raw)
    assert merge_headers(None, raw) == raw  # alone, the raw header is fine


@pytest.mark.anyio
async def test_an_acl_given_both_ways_refuses_the_upload(
    server: ThreadedOssServer, tmp_path: Path
) -> None:
    src = make_file(tmp_path, 50 * KIB)
    async with client_for(server) as client:
        with pytest.raises(ValueError, match="'x-oss-object-acl' is given twice"):
            await client.bucket(BUCKET).upload_file(
                "a.bin",
                src,
                options=oss.ObjectOptions(acl="private"),
                headers={"x-oss-object-acl": "public-read"},
            )
    assert server.requests == []  # refused before any request: never stored public


def test_object_options_are_hashable_and_shown_as_plain_dicts() -> None:
    a = oss.ObjectOptions(metadata={"owner": "ops"}, tagging={"k": "v"}, acl="private")
    b = oss.ObjectOptions(metadata={"owner": "ops"}, tagging={"k": "v"}, acl="private")
    c = oss.ObjectOptions(metadata={"owner": "dev"}, tagging={"k": "v"}, acl="private")
    assert hash(a) == hash(b) and a == b and len({a, b, c}) == 2
    assert "metadata={'owner': 'ops'}" in repr(a) and "mappingproxy" not in repr(a)
    assert a.metadata == {"owner": "ops"} and a.tagging == {"k": "v"}
    with pytest.raises(TypeError):
        a.metadata["owner"] = "x"  # type: ignore[index]
