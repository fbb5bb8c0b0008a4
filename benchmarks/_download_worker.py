"""One download in a fresh process: ``python -m benchmarks._download_worker '<json job>'``.

The download twin of ``benchmarks._worker`` (same measurements: wall seconds, user+sys CPU
of the whole process during the download, RSS before and peak during, the lateness of a
1 ms ticker on the main thread's event loop). aiooss_resume runs on that loop; the
synchronous SDKs run in ``asyncio.to_thread`` next to it. Every client checks CRC-64 (its
default) and keeps a checkpoint. The file written is checked for its size, then removed.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from ._worker import (
    GcWatch,
    Ticker,
    _peak_rss,
    _reset_peak_rss,
    _rss_now,
    _trust,
    oss2_bucket,
    v2_client,
)


async def _ours(job: dict[str, Any], *, direct_io: bool = False) -> None:
    import ssl

    import aiooss_resume

    context = ssl.create_default_context(cafile=job["ca_file"]) if job.get("ca_file") else None
    async with aiooss_resume.Client(
        job["endpoint"],
        credentials=aiooss_resume.Credentials(job["access_key_id"], job["access_key_secret"]),
        region=job["region"],
        signature_version="v4",
        ssl=context,
    ) as client:
        await client.bucket(job["bucket"]).download_file(
            job["key"],
            job["path"],
            job["part_size"],
            routines=job["routines"],
            checkpoint=True,
            checkpoint_dir=job["checkpoint_dir"],
            direct_io=direct_io,
        )


async def _ours_ceiling(job: dict[str, Any], *, crc: bool) -> int:
    """Our HTTP path without the file: the ranges fetched as ``download_file`` does (same
    part size, routines, If-Match), each body's CRC-64 computed in the IoRunner and nothing
    written (``crc``: ``fetch_range(write=False)``, the repair's read pass), or every body
    dropped on the loop (not ``crc``). Ceilings, not clients: what the file costs, and what
    the emulator and aiohttp allow at all. Returns the bytes received."""
    import aiooss_resume
    from aiooss_resume._download_range import fetch_range
    from aiooss_resume._planner import plan_parts

    async with aiooss_resume.Client(
        job["endpoint"],
        credentials=aiooss_resume.Credentials(job["access_key_id"], job["access_key_secret"]),
        region=job["region"],
        signature_version="v4",
    ) as client:
        head = await client._request("HEAD", job["bucket"], job["key"])
        etag = head.header("etag")
        plan = plan_parts(int(head.header("content-length")), job["part_size"])
        gate = asyncio.Semaphore(job["routines"])
        received = [0] * (len(plan) + 1)

        def drop(number: int) -> Callable[[], Callable[[bytes], Any]]:
            def factory() -> Callable[[bytes], Any]:
                received[number] = 0  # a retried range starts over

                async def take(data: bytes) -> None:
                    received[number] += len(data)

                return take

            return factory

        async def one(part: Any) -> None:
            async with gate:
                if crc:
                    _, received[part.number] = await fetch_range(
                        client, job["bucket"], job["key"], etag, part, -1, write=False
                    )
                else:
                    await client._get_range(
                        job["bucket"], job["key"], part.offset, part.offset + part.size - 1,
                        {"If-Match": etag}, drop(part.number), lambda resp: None, None,
                    )  # fmt: skip

        await asyncio.gather(*(one(p) for p in plan))
        return sum(received)


def _oss2(job: dict[str, Any]) -> Callable[[], None]:
    import oss2

    bucket = oss2_bucket(job)

    def run() -> None:
        oss2.resumable_download(
            bucket,
            job["key"],
            job["path"],
            multiget_threshold=job["part_size"],
            part_size=job["part_size"],
            num_threads=job["routines"],
            store=oss2.ResumableDownloadStore(root=job["checkpoint_dir"]),
        )

    return run


def _v2(job: dict[str, Any]) -> Callable[[], None]:
    import alibabacloud_oss_v2 as oss

    client = v2_client(job)

    def run() -> None:
        downloader = client.downloader(
            part_size=job["part_size"],
            parallel_num=job["routines"],
            enable_checkpoint=True,
            checkpoint_dir=job["checkpoint_dir"],
        )
        downloader.download_file(
            oss.GetObjectRequest(bucket=job["bucket"], key=job["key"]), filepath=job["path"]
        )

    return run


def _remove(path: str) -> int:
    size = os.path.getsize(path)
    os.unlink(path)
    return size


async def _main(job: dict[str, Any]) -> dict[str, Any]:
    client = job["client"]
    _trust(job)
    sync_run: Callable[[], None] | None = None
    if client == "oss2":
        sync_run = _oss2(job)
    elif client == "v2":
        sync_run = _v2(job)
    elif client in ("ours", "ours-direct", "ours-nowrite", "ours-discard"):
        import aiooss_resume  # noqa: F401  (imported before the baseline is taken)
    else:
        raise SystemExit(f"unknown client {client!r}")
    ticker = Ticker()
    tick_task = asyncio.create_task(ticker.run())
    await asyncio.sleep(0.05)
    ticker.lateness.clear()
    ticker.late_events.clear()
    ticker.own.clear()
    ticker.origin = time.perf_counter()
    gc_watch = GcWatch()
    gc_watch.origin = ticker.origin
    gc.callbacks.append(gc_watch)
    peak_reset = _reset_peak_rss()
    rss_before = _rss_now()
    t0 = os.times()
    w0 = time.perf_counter()
    received = None
    if sync_run is not None:
        await asyncio.to_thread(sync_run)
    elif client in ("ours", "ours-direct"):
        await _ours(job, direct_io=client == "ours-direct")
    else:
        received = await _ours_ceiling(job, crc=client == "ours-nowrite")
    wall = time.perf_counter() - w0
    t1 = os.times()
    ticker.stop()
    gc.callbacks.remove(gc_watch)
    await tick_task
    peak = _peak_rss()
    # A ceiling writes no file: the bytes it received are checked instead.
    size = received if received is not None else await asyncio.to_thread(_remove, job["path"])
    if size != job["size"]:
        raise RuntimeError(f"{client} wrote {size} bytes, expected {job['size']}")
    return {
        "client": client,
        "seconds": wall,
        "cpu_user": t1.user - t0.user,
        "cpu_sys": t1.system - t0.system,
        "rss_before": rss_before,
        "rss_peak": peak,
        "rss_peak_reset": peak_reset,
        "loadavg1": os.getloadavg()[0],
        **ticker.summary(),
        "gc_events": gc_watch.events,
    }


def main() -> None:
    job = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(_main(job))), flush=True)


if __name__ == "__main__":
    main()
