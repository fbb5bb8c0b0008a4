"""The emulator refuses an ``x-oss-traffic-limit`` OSS refuses (400 InvalidArgument), and its
range is the one ``ObjectOptions.traffic_limit`` accepts. Real sockets on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

import aiooss_resume as oss
from aiooss_resume._headers import MAX_TRAFFIC_LIMIT, MIN_TRAFFIC_LIMIT
from aiooss_resume.testing import OssServer

from .emulator_helpers import BUCKET, initiate, oss_request

pytestmark = pytest.mark.anyio

LOW, HIGH = MIN_TRAFFIC_LIMIT, MAX_TRAFFIC_LIMIT


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "srv") as srv:
        yield srv


@pytest.mark.parametrize(
    "raw",
    [str(LOW - 1), str(HIGH + 1), "0", "-819200", "abc", "", "1e6", "819200.0"],
)
async def test_a_bad_traffic_limit_is_invalid_argument_and_stores_nothing(
    server: OssServer, raw: str
) -> None:
    async with aiohttp.ClientSession() as session:
        put = await oss_request(
            session, server, "PUT", "k", body=b"data", headers={"x-oss-traffic-limit": raw}
        )
        assert put.status == 400, put.body
        assert put.code == "InvalidArgument" and put.error.ec == "0004-00000502"
        assert "x-oss-traffic-limit" in put.error.message
        assert server.object_info(BUCKET, "k") is None

        upload_id = await initiate(session, server, "m")
        part = await oss_request(
            session, server, "PUT", "m", body=b"data",
            query=[("partNumber", "1"), ("uploadId", upload_id)],
            headers={"x-oss-traffic-limit": raw},
        )  # fmt: skip
        assert part.status == 400 and part.code == "InvalidArgument"
        assert server.list_parts(BUCKET, upload_id) == []


async def test_in_a_query_parameter_too_and_not_in_both(server: OssServer) -> None:
    async with aiohttp.ClientSession() as session:
        put = await oss_request(session, server, "PUT", "k", body=b"x", query=[
            ("x-oss-traffic-limit", str(LOW - 1))
        ])  # fmt: skip
        assert put.status == 400 and put.error.ec == "0004-00000502"
        both = await oss_request(
            session, server, "PUT", "k", body=b"x",
            query=[("x-oss-traffic-limit", str(LOW))], headers={"x-oss-traffic-limit": str(LOW)},
        )  # fmt: skip
        assert both.status == 400 and both.code == "InvalidArgument"
        assert both.error.ec == "0004-00000501"
        ok = await oss_request(
            session, server, "PUT", "k", body=b"x", query=[("x-oss-traffic-limit", str(HIGH))]
        )
        assert ok.status == 200, ok.body
    assert server.read_object(BUCKET, "k") == b"x"


@pytest.mark.parametrize("value", [LOW - 1, LOW, LOW + 1, HIGH - 1, HIGH, HIGH + 1])
async def test_object_options_range_is_the_emulators(server: OssServer, value: int) -> None:
    """ObjectOptions accepts exactly the values the emulator accepts as a raw header."""
    try:
        oss.ObjectOptions(traffic_limit=value)
    except ValueError:
        library_accepts = False
    else:
        library_accepts = True
    async with aiohttp.ClientSession() as session:
        reply = await oss_request(
            session, server, "PUT", "k", body=b"x", headers={"x-oss-traffic-limit": str(value)}
        )
    assert reply.status in (200, 400), reply.body
    assert (reply.status == 200) == library_accepts == (LOW <= value <= HIGH)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 64 * 1024):
        yield data[start : start + 64 * 1024]


async def test_the_library_with_the_extreme_limits_and_a_raw_header_beyond(
    server: OssServer,
) -> None:
    data = bytes(range(256)) * 1000  # 3 parts of 100 KiB: Initiate, UploadPart, Complete
    creds = server.credentials
    async with oss.Client(
        server.endpoint,
        credentials=oss.Credentials(creds.access_key_id, creds.access_key_secret),
        region=server.region,
        retry=oss.RetryPolicy(max_attempts=1),
    ) as client:
        bucket = client.bucket(BUCKET)
        for value in (LOW, HIGH):
            options = oss.ObjectOptions(traffic_limit=value)
            await bucket.upload_stream(f"k{value}", _chunks(data), 100 * 1024, options=options)
        with pytest.raises(oss.ServiceError) as info:  # the raw header is not checked locally
            await bucket.upload_stream(
                "raw", _chunks(data), 100 * 1024, headers={"x-oss-traffic-limit": str(LOW - 1)}
            )
    assert info.value.status == 400 and info.value.code == "InvalidArgument"
    assert server.read_object(BUCKET, f"k{LOW}") == data
    assert server.read_object(BUCKET, f"k{HIGH}") == data
    assert server.object_info(BUCKET, "raw") is None and server.list_uploads(BUCKET) == []
