"""One upload in a fresh process: ``python -m benchmarks._worker '<json job>'``.

Prints one JSON line: wall seconds, the process's user+sys CPU seconds spent during the upload
(all threads), its RSS just before the upload and its peak RSS during the upload (VmHWM, reset
through ``/proc/self/clear_refs`` just before it; else ``ru_maxrss``), and the worst
lateness of a 1 ms ticker on an asyncio event loop in the main thread while the upload runs.
aiooss_resume runs on that loop; the synchronous SDKs run in ``asyncio.to_thread`` next to
it, as an asyncio application would call them, so their lateness is GIL contention.

Job options beyond the upload's: ``"loop": "uvloop"`` runs the event loop on uvloop (if
installed); ``"client": "idle"`` uploads nothing and only runs the ticker for
``idle_seconds`` (the machine's noise floor, measured in the same run as the uploads);
``"knobs"`` sets the engine's tuning constants (``KNOBS``) for an A/B comparison.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

TICK = 0.001

KNOBS = {
    # knob: (module, attribute) of a tuning constant the engine reads at call time
    "chunk_size": ("aiooss_resume._upload_body", "CHUNK_SIZE"),
    "stagger": ("aiooss_resume._transfer", "STAGGER_STARTS"),
    "read_ahead": ("aiooss_resume._upload_body", "READ_AHEAD"),
    "tls_write_slice": ("aiooss_resume._http", "WRITE_SLICE"),
}


def _apply_knobs(knobs: dict[str, Any]) -> None:
    import importlib

    for name, value in knobs.items():
        if name not in KNOBS:
            raise SystemExit(f"unknown knob {name!r}; choose from {', '.join(KNOBS)}")
        module, attribute = KNOBS[name]
        target = importlib.import_module(module)
        if not hasattr(target, attribute):
            raise SystemExit(f"{module}.{attribute} does not exist (knob {name!r})")
        setattr(target, attribute, value)


def _wchar() -> int:
    """Bytes this process passed to write()/pwrite() (file writes: the checkpoint; not sockets)."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS (VmHWM) so the peak measured is the upload's, not import's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _schedstat_reader() -> Any:
    """Per-thread ``(run ns, run-queue wait ns)`` of the calling thread, or None (no procfs)."""
    try:
        fd = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)
    except OSError:
        return None

    def read() -> tuple[int, int]:
        fields = os.pread(fd, 128, 0).split()
        return int(fields[0]), int(fields[1])

    return read


class GcWatch:
    """Records the garbage collections that could explain a late tick: every full
    (generation 2) one, and any other over 1 ms, as (seconds since start, generation, ms)."""

    def __init__(self) -> None:
        self.origin = time.perf_counter()
        self.events: list[tuple[float, int, float]] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._start = now
            return
        ms = (now - self._start) * 1000
        if (info["generation"] == 2 or ms > 1.0) and len(self.events) < 50:
            self.events.append(
                (round(self._start - self.origin, 4), info["generation"], round(ms, 2))
            )


class Ticker:
    """Sleeps 1 ms in a loop and records how late each wake-up was.

    Each tick also reads the loop thread's schedstat, so a late tick can be split into the
    time the thread sat *runnable* in the kernel's run queue (the OS gave the CPU to another
    thread or process: with client and server on two cores, no client code can avoid that)
    and the rest (the thread ran, or waited for the GIL: that part is the client's own).
    """

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self.own: list[float] = []  # lateness minus run-queue wait, per tick
        # (seconds since start, lateness ms, run-queue wait ms, loop-thread CPU ms)
        self.late_events: list[tuple[float, float, float, float]] = []
        self.origin = time.perf_counter()
        self._stop = False

    async def run(self) -> None:
        clock = time.perf_counter
        sched = _schedstat_reader()
        ran0, waited0 = sched() if sched else (0, 0)
        while not self._stop:
            start = clock()
            await asyncio.sleep(TICK)
            late = clock() - start - TICK
            ran, waited = sched() if sched else (0, 0)
            runq = (waited - waited0) / 1e9
            cpu = (ran - ran0) / 1e9
            ran0, waited0 = ran, waited
            self.lateness.append(late)
            self.own.append(max(0.0, late - runq))
            if late > 0.010 and len(self.late_events) < 50:
                self.late_events.append(
                    (
                        round(start - self.origin, 4),
                        round(late * 1000, 2),
                        round(runq * 1000, 2),
                        round(cpu * 1000, 2),
                    )
                )

    def stop(self) -> None:
        self._stop = True

    def summary(self) -> dict[str, Any]:
        values = sorted(self.lateness) or [0.0]
        own = sorted(self.own) or [0.0]
        return {
            "lateness_max_ms": values[-1] * 1000,
            "lateness_p99_ms": values[int(0.99 * (len(values) - 1))] * 1000,
            "lateness_own_max_ms": own[-1] * 1000,
            "ticks": len(self.lateness),
            "ticks_over_20ms": sum(1 for v in values if v > 0.020),
            "late_events": self.late_events,
        }


class StepProbe:
    """The event loop's own CPU per iteration (``BaseEventLoop._run_once``, thread CPU time).

    Unlike the ticker's lateness, which also counts the time the OS or the GIL kept the loop
    thread waiting (on a shared 2-core machine, mostly other processes), this is the work
    the loop itself did in one go: what the client can make smaller. asyncio's own loop
    only (uvloop's is C); it adds two clock reads per iteration.
    """

    def __init__(self) -> None:
        self.steps: list[float] = []
        self._original: Any = None

    def install(self) -> bool:
        import asyncio.base_events as base_events

        if not isinstance(asyncio.get_running_loop(), base_events.BaseEventLoop):
            return False
        original = self._original = base_events.BaseEventLoop._run_once
        steps = self.steps
        clock = time.thread_time

        def run_once(loop: Any) -> None:
            start = clock()
            original(loop)
            steps.append(clock() - start)

        base_events.BaseEventLoop._run_once = run_once  # type: ignore[method-assign]
        return True

    def remove(self) -> None:
        import asyncio.base_events as base_events

        if self._original is not None:
            base_events.BaseEventLoop._run_once = self._original  # type: ignore[method-assign]

    def summary(self) -> dict[str, Any]:
        values = sorted(self.steps)
        if not values:
            return {}
        return {
            "loop_step_cpu_max_ms": values[-1] * 1000,
            "loop_step_cpu_p999_ms": values[int(0.999 * (len(values) - 1))] * 1000,
            "loop_steps": len(values),
            "loop_steps_over_5ms": sum(1 for v in values if v > 0.005),
        }


# ---------------------------------------------------------------------------- clients


def _trust(job: dict[str, Any]) -> None:
    """Over TLS, make this process's SDKs trust the benchmark server's CA (verification on).

    Both SDKs use requests, which takes REQUESTS_CA_BUNDLE (v2 passes ``verify=True`` on
    every request, so a session's ``verify`` would be ignored; the variable is not).
    """
    if job.get("ca_file"):
        os.environ["REQUESTS_CA_BUNDLE"] = job["ca_file"]
        os.environ.pop("CURL_CA_BUNDLE", None)


async def _ours(job: dict[str, Any]) -> None:
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
        cp: dict[str, Any] = {"checkpoint": None}
        if job["checkpoint"]:
            cp = {"checkpoint": True, "checkpoint_dir": job["checkpoint_dir"]}
        result = await client.bucket(job["bucket"]).upload_file(
            job["key"], job["path"], job["part_size"], routines=job["routines"], **cp
        )
        if result.size != job["size"]:
            raise RuntimeError(f"uploaded {result.size} bytes, expected {job['size']}")


def oss2_bucket(job: dict[str, Any]) -> Any:
    """oss2's Bucket for the job's emulator (V4, path style), shared by the workers."""
    import oss2

    bucket = oss2.Bucket(
        oss2.AuthV4(job["access_key_id"], job["access_key_secret"]),
        job["endpoint"],
        job["bucket"],
        region=job["region"],
    )
    return bucket


def v2_client(job: dict[str, Any]) -> Any:
    """The v2 SDK's Client for the job's emulator (V4, path style), shared by the workers."""
    import alibabacloud_oss_v2 as oss

    cfg = oss.config.load_default()
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(
        job["access_key_id"], job["access_key_secret"]
    )
    cfg.region = job["region"]
    cfg.endpoint = job["endpoint"]
    cfg.use_path_style = True
    cfg.signature_version = "v4"
    client = oss.Client(cfg)
    return client


def _oss2(job: dict[str, Any]) -> Callable[[], None]:
    import oss2

    bucket = oss2_bucket(job)

    def run() -> None:
        store = oss2.ResumableStore(root=job["checkpoint_dir"]) if job["checkpoint"] else None
        kwargs: dict[str, Any] = {"store": store} if store is not None else {}
        oss2.resumable_upload(
            bucket,
            job["key"],
            job["path"],
            part_size=job["part_size"],
            num_threads=job["routines"],
            multipart_threshold=job["part_size"],
            **kwargs,
        )

    return run


def _v2(job: dict[str, Any]) -> Callable[[], None]:
    import alibabacloud_oss_v2 as oss

    client = v2_client(job)

    def run() -> None:
        uploader = client.uploader(
            part_size=job["part_size"],
            parallel_num=job["routines"],
            enable_checkpoint=bool(job["checkpoint"]),
            checkpoint_dir=job["checkpoint_dir"],
        )
        uploader.upload_file(
            oss.PutObjectRequest(bucket=job["bucket"], key=job["key"]), filepath=job["path"]
        )

    return run


async def _main(job: dict[str, Any]) -> dict[str, Any]:
    client = job["client"]
    _trust(job)
    sync_run: Callable[[], None] | None = None
    if client == "oss2":
        sync_run = _oss2(job)
    elif client == "v2":
        sync_run = _v2(job)
    elif client == "ours":
        import aiooss_resume  # noqa: F401  (imported before the baseline is taken)

        _apply_knobs(job.get("knobs") or {})
    elif client != "idle":
        raise SystemExit(f"unknown client {client!r}")
    ticker = Ticker()
    if job.get("ticker", True):
        tick_task = asyncio.create_task(ticker.run())
    else:  # measure without the observer (its 1,000 wake-ups a second cost the loop)
        tick_task = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.05)  # the ticker runs before the upload starts
    ticker.lateness.clear()
    ticker.late_events.clear()
    ticker.own.clear()
    ticker.origin = time.perf_counter()
    probe = StepProbe()
    if client == "ours" and job.get("step_probe", True):
        probe.install()
    gc_watch = GcWatch()
    gc_watch.origin = ticker.origin
    gc.callbacks.append(gc_watch)
    peak_reset = _reset_peak_rss()
    rss_before = _rss_now()
    wchar0 = _wchar()
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = os.times()
    w0 = time.perf_counter()
    if sync_run is not None:
        await asyncio.to_thread(sync_run)
    elif client == "idle":
        await asyncio.sleep(float(job.get("idle_seconds", 1.0)))
    else:
        await _ours(job)
    wall = time.perf_counter() - w0
    t1 = os.times()
    probe.remove()
    ticker.stop()
    gc.callbacks.remove(gc_watch)
    await tick_task
    wchar = _wchar() - wchar0
    peak = _peak_rss()
    return {
        "client": client,
        "seconds": wall,
        "cpu_user": t1.user - t0.user,
        "cpu_sys": t1.system - t0.system,
        "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0,
        "rss_before": rss_before,
        "rss_peak": peak,
        "rss_peak_reset": peak_reset,
        "wchar": wchar,
        "loadavg1": os.getloadavg()[0],
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        **ticker.summary(),
        **probe.summary(),
        "gc_events": gc_watch.events,
    }


def main() -> None:
    job = json.loads(sys.argv[1])
    if job.get("loop", "asyncio") == "uvloop":
        import uvloop

        result = uvloop.run(_main(job))
    else:
        result = asyncio.run(_main(job))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
