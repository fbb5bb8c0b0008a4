"""Many concurrent uploads in one event loop sharing one Client (issue 6, reliability suite).

All complete byte-identical; no socket or file descriptor is leaked (``/proc/self/fd``
counted before and after, once the client is closed), no task outlives the uploads, no
checkpoint or unfinished upload is left, and the server never sees more than
``uploads x routines`` parts at once. CI: 16 files of 2 MiB; soak: 50 files of 8 MiB.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from aiooss_resume.testing import ThreadedOssServer

from .reliability_helpers import (
    BUCKET,
    KIB,
    MIB,
    assert_checkpoint_gone,
    assert_object,
    count_fds,
    make_client,
    make_file,
    open_upload_ids,
    wait_until,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd"),
]


async def _many(tmp_path: Path, files: int, size: int, part_size: int, routines: int) -> None:
    sources = []
    for i in range(files):
        src = tmp_path / f"src-{i}.bin"
        sources.append((src, make_file(src, size + i * 4099, 900 + i)))
    with ThreadedOssServer(root=tmp_path / "server") as server:
        fds_before = count_fds()
        tasks_before = asyncio.all_tasks()
        async with make_client(server) as client:
            bucket = client.bucket(BUCKET)
            results = await asyncio.gather(
                *(
                    bucket.upload_file(
                        f"many/{i}.bin", src, part_size, routines=routines, checkpoint=i % 2 == 0
                    )
                    for i, (src, _) in enumerate(sources)
                )
            )
        assert asyncio.all_tasks() == tasks_before, "tasks outlived the uploads"
        for i, ((src, data), result) in enumerate(zip(sources, results, strict=True)):
            assert result.size == len(data)
            assert_object(server, f"many/{i}.bin", data)
            assert_checkpoint_gone(Path(str(src) + ".cp"), result.upload_id)
        assert not open_upload_ids(server)
        peak = server.stats.peak_in_flight["UploadPart"]
        assert routines <= peak <= files * routines, peak
        # The server closes its side of the connections asynchronously: allow it a moment.
        leaked = await wait_until(lambda: count_fds() <= fds_before, limit=5)
        assert leaked, f"fds: {fds_before} before, {count_fds()} after closing the client"


async def test_many_concurrent_uploads_share_one_client(tmp_path: Path) -> None:
    await _many(tmp_path, files=16, size=2 * MIB, part_size=100 * KIB, routines=4)


@pytest.mark.soak
@pytest.mark.timeout(1800)
async def test_many_concurrent_uploads_soak(tmp_path: Path) -> None:
    await _many(tmp_path, files=50, size=8 * MIB, part_size=256 * KIB, routines=4)
