"""Issue 10, item 4: an endpoint with user-info is refused, without echoing the password."""

from __future__ import annotations

import pytest

import aiooss_resume as oss


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://user:s3cr3t-pw@127.0.0.1:9000",
        "https://user:s3cr3t-pw@oss-cn-hangzhou.aliyuncs.com",
        "user:s3cr3t-pw@oss-cn-hangzhou.aliyuncs.com",
        "http://:s3cr3t-pw@127.0.0.1",
        "http://s3cr3t-pw@127.0.0.1",
        "http://user:s3cr3t-pw@127.0.0.1/with/path",
    ],
)
def test_endpoint_with_user_info_is_rejected_without_echoing_it(endpoint: str) -> None:
    with pytest.raises(ValueError, match="user-info") as info:
        oss.Client(endpoint, credentials=oss.Credentials("ak", "sk"), region="cn-hangzhou")
    assert "s3cr3t-pw" not in str(info.value)


def test_endpoint_without_user_info_still_accepted() -> None:
    client = oss.Client(
        "http://127.0.0.1:9000", credentials=oss.Credentials("ak", "sk"), region="cn-hangzhou"
    )
    assert client.endpoint == "http://127.0.0.1:9000"
