"""One directory upload in a fresh process: ``python -m benchmarks._many_worker '<json job>'``.

Prints one JSON line: wall seconds, files and bytes uploaded, CPU seconds, the RSS before
and the peak RSS during the upload, and the lateness of a 1 ms ticker on the event loop
(``benchmarks._worker.Ticker``). ``ours`` runs ``Bucket.upload_dir`` on that loop; ``oss2``
runs a ``ThreadPoolExecutor`` of ``routines`` threads (PutObject for small files,
``resumable_upload`` with one thread per file for large ones) in ``asyncio.to_thread``, as
an asyncio application would call it, so its lateness is GIL contention.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import os
import resource
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from ._worker import GcWatch, StepProbe, Ticker, _peak_rss, _reset_peak_rss, _rss_now

_ENCODER = msgspec.json.Encoder()


async def _ours(job: dict[str, Any]) -> dict[str, Any]:
    import aiooss_resume
    import aiooss_resume._many_dir

    if job.get("oneshot"):  # the A of the A/B: every record re-encoded by each rewrite
        aiooss_resume._many_dir.ManifestEncoder = OneShotEncoder  # type: ignore[misc]

    async with aiooss_resume.Client(
        job["endpoint"],
        credentials=aiooss_resume.Credentials(job["access_key_id"], job["access_key_secret"]),
        region=job["region"],
    ) as client:
        result = await client.bucket(job["bucket"]).upload_dir(
            job["prefix"],
            job["dir"],
            job["part_size"],
            routines=job["routines"],
            files_in_flight=job["files_in_flight"],
            checkpoint_dir=job["checkpoint_dir"],
            keep_outcomes=job["keep_outcomes"],
        )
    if not result.ok:
        raise RuntimeError(f"{len(result.failed)} files failed: {result.failed[:3]}")
    return {
        "files": result.count("uploaded"),
        "bytes": result.bytes_uploaded,
        "outcomes_kept": len(result.outcomes),
    }


def _oss2(job: dict[str, Any]) -> dict[str, Any]:
    import oss2

    bucket = oss2.Bucket(
        oss2.AuthV4(job["access_key_id"], job["access_key_secret"]),
        job["endpoint"],
        job["bucket"],
        region=job["region"],
    )
    store = oss2.ResumableStore(root=job["checkpoint_dir"])
    root = job["dir"]
    part_size = job["part_size"]

    def one(path: str) -> int:
        key = job["prefix"] + os.path.relpath(path, root).replace(os.sep, "/")
        size = os.path.getsize(path)
        if size < part_size:
            bucket.put_object_from_file(key, path)
        else:
            oss2.resumable_upload(
                bucket,
                key,
                path,
                store=store,
                multipart_threshold=part_size,
                part_size=part_size,
                num_threads=1,
            )
        return size

    def paths() -> Any:
        for directory, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                yield os.path.join(directory, name)

    files = total = 0
    with ThreadPoolExecutor(max_workers=job["routines"]) as pool:
        for size in pool.map(one, paths()):
            files += 1
            total += size
    return {"files": files, "bytes": total}


class OneShotEncoder:
    """The manifest encoder as it was before it became incremental (the A of the A/B):
    the whole manifest re-encoded by one msgspec call per rewrite, in a reused buffer."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def encode(self, manifest: Any) -> bytearray:
        from aiooss_resume import _manifest

        head = _manifest.ManifestEncoder._HEAD
        fields = (_manifest.MANIFEST_FORMAT.encode(), _manifest.MANIFEST_VERSION)
        head_length = len(head % (*fields, b"0" * 64))
        with contextlib.suppress(BufferError):  # as the library's: a held view, a new buffer
            self._buffer.append(0)
            del self._buffer[-1]
            _ENCODER.encode_into(manifest, self._buffer, head_length)
            digest = hashlib.sha256(memoryview(self._buffer)[head_length:]).hexdigest()
            self._buffer[:head_length] = head % (*fields, digest.encode())
            self._buffer += b"}\n"
            return self._buffer
        self._buffer = bytearray()
        return self.encode(manifest)


def _encode_loop(job: dict[str, Any]) -> dict[str, Any]:
    """The manifest writer's CPU part alone, in this worker thread: a manifest of
    ``records`` records gains 8 records and is encoded again, over and over, for
    ``seconds`` (``oneshot``: by ``OneShotEncoder``, else by the library's encoder)."""
    from aiooss_resume._manifest import Manifest, ManifestEncoder, ManifestEntry

    def entry(i: int) -> ManifestEntry:
        return ManifestEntry(i, f"{job['prefix']}d{i // 500:03}/f{i:05}.bin", 4096, i, i, i)

    manifest = Manifest(endpoint="http://127.0.0.1:1", bucket="b", options_fingerprint="f" * 32)
    manifest.files = [entry(i) for i in range(job["records"])]
    encoder = OneShotEncoder() if job["oneshot"] else ManifestEncoder()
    encoder.encode(manifest)  # the first write encodes every record in either variant
    encodes, longest, total = 0, 0.0, 0.0
    deadline = time.perf_counter() + job["seconds"]
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        encoder.encode(manifest)
        took = time.perf_counter() - start
        longest, total = max(longest, took), total + took
        encodes += 1
        n = len(manifest.files)
        manifest.files = manifest.files + [entry(i) for i in range(n, n + 8)]
        time.sleep(0.002)  # the writer's gap, shortened: many encodes per second
    return {
        "files": 0,
        "bytes": 0,
        "encodes": encodes,
        "encode_max_ms": longest * 1000,
        "encode_mean_ms": total / max(1, encodes) * 1000,
    }


class ThreadWatch:
    """Opt-in diagnostic (``"thread_watch": true``): a thread that wakes every 1 ms and reads
    every thread's schedstat (run ns, run-queue wait ns). When it wakes more than 15 ms late
    it records, per thread, what that thread did during the gap: ran (CPU ms) or sat
    runnable in the run queue (ms). A stall of the loop while another thread of the process
    *ran* points at that thread holding the GIL; one while another thread sat in the run
    queue at a GIL holder preempted by the OS. The watcher needs the GIL too, so it also
    stalls then; it perturbs the run, so never with the figures."""

    def __init__(self) -> None:
        self.gaps: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thread-watch", daemon=True)
        self.loop_tid = threading.get_native_id()

    def _sample(self) -> dict[int, tuple[int, int]]:
        out = {}
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/self/task/{tid}/schedstat", "rb") as f:
                    fields = f.read().split()
                out[int(tid)] = (int(fields[0]), int(fields[1]))
        return out

    def _run(self) -> None:
        me = threading.get_native_id()
        last, t0 = self._sample(), time.perf_counter()
        while not self._stop.wait(0.001):
            now, t1 = self._sample(), time.perf_counter()
            if t1 - t0 > 0.015 and len(self.gaps) < 50:
                threads = {}
                for tid, (ran, waited) in now.items():
                    ran0, waited0 = last.get(tid, (ran, waited))
                    role = "loop" if tid == self.loop_tid else "watch" if tid == me else "other"
                    ms = ((ran - ran0) / 1e6, (waited - waited0) / 1e6)
                    if ms[0] > 0.5 or ms[1] > 0.5:
                        threads[f"{role}-{tid}"] = [round(ms[0], 2), round(ms[1], 2)]
                self.gaps.append({"gap_ms": round((t1 - t0) * 1000, 2), "threads": threads})
            last, t0 = now, t1

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class _LoopProfiler:
    """``cProfile`` of the event loop's thread only (``"profile": N`` in the job: the N
    functions with the most own time on the loop), to find what runs on the loop per file.
    Off by default: it slows the loop down several times, so never with the figures."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.profile: Any = None
        self.rows: list[tuple[str, int, float, float]] = []

    def __enter__(self) -> None:
        if self.top:
            import cProfile

            self.profile = cProfile.Profile()
            self.profile.enable()  # this thread only: worker threads are not profiled

    def __exit__(self, *exc: object) -> None:
        if self.profile is None:
            return
        self.profile.disable()
        import pstats

        stats: Any = pstats.Stats(self.profile).stats
        ranked = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[: self.top]
        for (filename, line, name), (_cc, calls, own, total, _callers) in ranked:
            where = f"{os.path.basename(filename)}:{line}({name})"
            self.rows.append((where, calls, round(own * 1000, 1), round(total * 1000, 1)))

    def summary(self) -> dict[str, Any]:
        return {"profile": self.rows} if self.profile is not None else {}


async def _main(job: dict[str, Any]) -> dict[str, Any]:
    # Import before the ticker starts: an import is not the upload's lateness.
    if job["client"] in ("ours", "encode"):
        import aiooss_resume  # noqa: F401
    else:
        import oss2  # noqa: F401
    ticker = Ticker()
    tick_task = asyncio.create_task(ticker.run())
    await asyncio.sleep(0.05)
    gc.collect()
    await asyncio.sleep(0.01)  # let the tick that spanned gc.collect() land before clearing
    ticker.lateness.clear()
    ticker.late_events.clear()
    ticker.own.clear()
    ticker.origin = time.perf_counter()
    gc_watch = GcWatch()
    gc_watch.origin = ticker.origin
    gc.callbacks.append(gc_watch)
    probe = StepProbe()  # the loop's own CPU per iteration (ours only: oss2 runs in threads)
    if job["client"] == "ours":
        probe.install()
    profiler = _LoopProfiler(job.get("profile", 0))
    watch = ThreadWatch() if job.get("thread_watch") else None
    rss_before = _rss_now()
    peak_reset = _reset_peak_rss()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if job["client"] == "ours":
        with profiler, watch or contextlib.nullcontext():
            counts = await _ours(job)
    elif job["client"] == "encode":
        counts = await asyncio.to_thread(_encode_loop, job)
    else:
        counts = await asyncio.to_thread(_oss2, job)
    seconds = time.perf_counter() - start
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    probe.remove()
    ticker.stop()
    await tick_task
    gc.callbacks.remove(gc_watch)
    return {
        "client": job["client"],
        "seconds": seconds,
        **counts,
        "cpu_seconds": (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime),
        "rss_before": rss_before,
        "rss_peak": _peak_rss(),
        "peak_reset": peak_reset,
        **ticker.summary(),
        **probe.summary(),
        "gc_events": gc_watch.events,
        **profiler.summary(),
        **({"thread_watch": watch.gaps} if watch else {}),
    }


def main() -> None:
    job = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(_main(job))))


if __name__ == "__main__":
    main()
