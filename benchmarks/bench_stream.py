"""Stream uploads: ``python -m benchmarks stream [--size 1GiB] [--part-size 64MiB] [--routines 4]``.

Each run is one upload in a fresh child process against the emulator (its own process,
discard store): ``upload_stream`` fed by an async generator in small chunks (64 KiB, what a
web server hands over) and in big ones (16 MiB), and ``upload_file`` of a file of the same
size for comparison, side by side in one run. Measured per run: wall seconds, MiB/s, the
child's RSS just before the upload (after a warm-up upload, so imports and first-request
caches are in it) and its peak RSS during the upload (VmHWM reset through
``/proc/self/clear_refs``), the lateness of a 1 ms ticker on the child's event loop during
the upload (``_worker.Ticker``: max, p99, and "own", less the run-queue wait), and the load
average before and after (the machine is shared).

``--modes`` adds A/B variants (see ``MODES``): ``-copy`` copies the source's chunks into
fresh 1 MiB blocks (``_stream_parts.KEEP_CHUNKS = False``, the behaviour before chunks
were held by reference), ``-fresh`` makes every chunk a new ``bytes`` object in the source
(as a socket reader does) instead of a view of one reused block, ``-old`` is the reader as
it was before (copying, and not yielding to the loop while it cuts a part:
``YIELD_PER_MIB = False``). ``cpu_seconds`` is the child's process CPU time (all threads)
during the upload.

Issue 11's memory bound for a stream is ``(routines + 2) x part_size + 32 MiB`` of growth:
the library holds at most ``routines + 1`` parts. The bound is reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ._common import (
    MiB,
    emulator,
    fmt_size,
    make_data_file,
    median,
    parse_size,
    print_table,
    run_child,
    save_results,
    temp_dir,
)

MODES = {
    "stream-64KiB": 64 * 1024,
    "stream-16MiB": 16 * MiB,
    "file": 0,
    # A/B (not run by default; pass --modes): the same sources with the source's chunks
    # copied into fresh 1 MiB blocks, as before parts held them by reference (KEEP_CHUNKS);
    # and "fresh" sources, whose every chunk is a new bytes object (as a socket reader's
    # are) instead of a view of one reused block.
    "stream-64KiB-copy": 64 * 1024,
    "stream-16MiB-copy": 16 * MiB,
    "stream-64KiB-fresh": 64 * 1024,
    "stream-64KiB-fresh-copy": 64 * 1024,
    # Before this follow-up: copied, and the reader not yielding to the loop while it cut
    # a part from a source that never suspends (YIELD_PER_MIB = False).
    "stream-64KiB-old": 64 * 1024,
    "stream-16MiB-old": 16 * MiB,
}
DEFAULT_MODES = ("stream-64KiB", "stream-16MiB", "file")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


async def _child(job: dict[str, Any]) -> dict[str, Any]:
    import aiooss_resume
    from aiooss_resume import _stream_parts

    from ._worker import Ticker

    mode = job.get("mode", "")
    _stream_parts.KEEP_CHUNKS = not mode.endswith(("-copy", "-old"))
    _stream_parts.YIELD_PER_MIB = not mode.endswith("-old")
    fresh = "-fresh" in mode
    size = job["size"]
    chunk = job["chunk"] or 64 * 1024  # the warm-up's, in file mode
    block = os.urandom(chunk)

    async def stream(total: int) -> Any:
        view = memoryview(block)
        sent = 0
        while sent < total:
            n = min(chunk, total - sent)
            yield bytes(view[:n]) if fresh else view[:n]
            sent += n

    async with aiooss_resume.Client(
        job["endpoint"],
        credentials=aiooss_resume.Credentials(job["access_key_id"], job["access_key_secret"]),
        region=job["region"],
    ) as client:
        bucket = client.bucket(job["bucket"])
        # Warm-up: imports, the connection pool, the IoRunner's threads.
        await bucket.upload_stream(job["key"] + ".warm", stream(3 * 1024 * 1024), 1024 * 1024)
        rss_before = _status("VmRSS")
        reset = _reset_peak()
        load_before = os.getloadavg()
        ticker = Ticker()
        ticking = asyncio.create_task(ticker.run())
        start = time.perf_counter()
        cpu_start = time.process_time()
        if job["chunk"]:
            result = await bucket.upload_stream(
                job["key"], stream(size), job["part_size"], routines=job["routines"]
            )
        else:
            result = await bucket.upload_file(
                job["key"], job["path"], job["part_size"], routines=job["routines"]
            )
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        peak = _status("VmHWM")
        ticker.stop()
        await ticking
        late = ticker.summary()
    if result.size != size:
        raise RuntimeError(f"uploaded {result.size} bytes, expected {size}")
    return {
        "seconds": seconds,
        "rss_before": rss_before,
        "rss_peak": peak,
        "peak_reset": reset,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "keep_chunks": _stream_parts.KEEP_CHUNKS,
        "yield_per_mib": _stream_parts.YIELD_PER_MIB,
        "cpu_seconds": cpu,
        "lateness_max_ms": late["lateness_max_ms"],
        "lateness_p99_ms": late["lateness_p99_ms"],
        "lateness_own_max_ms": late["lateness_own_max_ms"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = parse_size(args.size)
    part_size = parse_size(args.part_size)
    routines = args.routines
    modes = [m for m in args.modes.split(",") if m]
    for mode in modes:
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
    bound = (routines + 2) * part_size + 32 * MiB
    load_start = [round(x, 2) for x in os.getloadavg()]
    cells = []
    with temp_dir() as tmp:
        path = make_data_file(tmp / "data.bin", size) if "file" in modes else None
        with emulator(tmp / "server") as server:
            runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
            for rep in range(args.repeat):
                for mode in modes:  # interleaved, so that load changes hit every mode alike
                    job = {
                        **server.conn(),
                        "bucket": "bench",
                        "key": f"stream/{mode}/{rep}",
                        "mode": mode,
                        "size": size,
                        "part_size": part_size,
                        "routines": routines,
                        "chunk": MODES[mode],
                        "path": str(path) if path else None,
                    }
                    r = run_child("benchmarks.bench_stream", job, args.timeout)
                    runs[mode].append(r)
                    print(
                        f"  {mode:>13}: RSS {r['rss_before'] / MiB:6.1f} -> "
                        f"{r['rss_peak'] / MiB:7.1f} MiB, {size / MiB / r['seconds']:6.0f} MiB/s "
                        f"loop late p99 {r['lateness_p99_ms']:.1f} max {r['lateness_max_ms']:.1f} "
                        f"ms (load {r['loadavg_before'][0]})",
                        flush=True,
                    )
    for mode in modes:
        mode_runs = runs[mode]
        growth = median([(r["rss_peak"] - r["rss_before"]) / MiB for r in mode_runs])
        cells.append(
            {
                "mode": mode,
                "chunk": MODES[mode],
                "rss_before_mib": median([r["rss_before"] / MiB for r in mode_runs]),
                "rss_peak_mib": median([r["rss_peak"] / MiB for r in mode_runs]),
                "rss_growth_mib": growth,
                "rss_growth_max_mib": max(
                    (r["rss_peak"] - r["rss_before"]) / MiB for r in mode_runs
                ),
                "mib_s": median([size / MiB / r["seconds"] for r in mode_runs]),
                "cpu_seconds": median([r["cpu_seconds"] for r in mode_runs]),
                "lateness_p99_ms": median([r["lateness_p99_ms"] for r in mode_runs]),
                "lateness_max_ms": median([r["lateness_max_ms"] for r in mode_runs]),
                "runs": mode_runs,
            }
        )
    _add_ratios(cells)
    return {
        "size": size,
        "part_size": part_size,
        "routines": routines,
        "repeat": args.repeat,
        "bound_mib": bound / MiB,
        "loadavg_start": load_start,
        "shared_loaded_machine": True,
        "cells": cells,
    }


def _add_ratios(cells: list[dict[str, Any]]) -> None:
    """Speed relative to ``upload_file`` in the same repetition (side by side), median."""
    files = next((c["runs"] for c in cells if c["mode"] == "file"), None)
    for cell in cells:
        if files is None:
            cell["speed_vs_file"] = None
            continue
        ratios = [f["seconds"] / r["seconds"] for r, f in zip(cell["runs"], files, strict=True)]
        cell["speed_vs_file_runs"] = ratios
        cell["speed_vs_file"] = median(ratios)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks stream", description=__doc__)
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--part-size", default="64MiB")
    parser.add_argument("--routines", type=int, default=4)
    parser.add_argument("--modes", default=",".join(DEFAULT_MODES), help=", ".join(MODES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    doc = run(args)
    print(
        f"\n{fmt_size(doc['size'])} in {fmt_size(doc['part_size'])} parts, {doc['routines']} "
        f"routines, median of {doc['repeat']} (bound on growth: {doc['bound_mib']:.0f} MiB; "
        f"load average at start {doc['loadavg_start']})\n"
    )
    print_table(
        [
            "mode",
            "RSS before MiB",
            "peak RSS MiB",
            "growth MiB",
            "max growth MiB",
            "MiB/s",
            "vs file",
            "CPU s",
            "late p99 ms",
            "late max ms",
        ],
        [
            [
                c["mode"],
                c["rss_before_mib"],
                c["rss_peak_mib"],
                c["rss_growth_mib"],
                c["rss_growth_max_mib"],
                c["mib_s"],
                c["speed_vs_file"] if c["speed_vs_file"] is not None else "-",
                c["cpu_seconds"],
                c["lateness_p99_ms"],
                c["lateness_max_ms"],
            ]
            for c in doc["cells"]
        ],
    )
    name = f"stream-{fmt_size(doc['size'])}-{fmt_size(doc['part_size'])}x{doc['routines']}"
    print(f"\nsaved {save_results(name, doc, args.results_dir)}")


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_child(json.loads(sys.argv[1])))))
