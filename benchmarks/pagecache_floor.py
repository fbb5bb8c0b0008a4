"""The machine's floor for writing a new file: ``python -m benchmarks.pagecache_floor``.

``[--size 1GiB] [--threads 1,4] [--gap 8] [--repeat 2]``

No library, no network: 1 MiB ``os.pwrite`` calls filling a new file of ``--size`` (with
``--threads`` threads each writing whole 8 MiB ranges, as a download does), then ``fsync``
and ``unlink``, timed (wall and this process's user/sys CPU). Each configuration is run
twice in a row: *cold*, after ``--gap`` seconds with nothing written (the memory the
previous file used has been free for a while), then *hot*, right after the previous file
was freed. On the virtual machine this project is benchmarked on, the cold write costs
several times the hot one in system time (see docs/benchmarks.md, "Download"): that cost is
paid by every download client alike, and bounds them all. ``os.getloadavg()`` is recorded
per run. Results: ``benchmarks/results/pagecache-floor.json`` (or ``--results-dir``).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ._common import MiB, fmt_size, median, parse_ints, parse_size, print_table, save_results

CHUNK = MiB
RANGE = 8 * MiB


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def write_once(path: Path, size: int, threads: int) -> dict[str, float]:
    """Fill a new file at ``path`` with ``threads`` writers; time pwrite, fsync, unlink."""
    data = os.urandom(CHUNK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    ranges = list(range(0, size, RANGE))
    lock = threading.Lock()

    def writer() -> None:
        while True:
            with lock:
                if not ranges:
                    return
                start = ranges.pop(0)
            for offset in range(start, min(start + RANGE, size), CHUNK):
                os.pwrite(fd, data[: min(CHUNK, size - offset)], offset)

    load = os.getloadavg()[0]
    u0, s0 = _cpu()
    t0 = time.perf_counter()
    workers = [threading.Thread(target=writer) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    u1, s1 = _cpu()
    t1 = time.perf_counter()
    os.fsync(fd)
    os.close(fd)
    _, s2 = _cpu()
    t2 = time.perf_counter()
    os.unlink(path)
    return {
        "pwrite_s": t1 - t0,
        "pwrite_user_s": u1 - u0,
        "pwrite_sys_s": s1 - s0,
        "fsync_s": t2 - t1,
        "fsync_sys_s": s2 - s1,
        "mib_s": size / MiB / (t1 - t0),
        "loadavg1": load,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = parse_size(args.size)
    cells = []
    base = os.environ.get("BENCH_TMPDIR") or None
    with tempfile.TemporaryDirectory(prefix="pagecache-", dir=base) as tmp:
        path = Path(tmp) / "floor.bin"
        for threads in parse_ints(args.threads):
            runs: dict[str, list[dict[str, float]]] = {"cold": [], "hot": []}
            for _ in range(args.repeat):
                time.sleep(args.gap)
                for state in ("cold", "hot"):
                    result = write_once(path, size, threads)
                    runs[state].append(result)
                    print(
                        f"  {threads} thread(s) {state}: {result['mib_s']:7.0f} MiB/s, "
                        f"sys {result['pwrite_sys_s']:.2f} s, fsync {result['fsync_s']:.2f} s, "
                        f"load {result['loadavg1']:.2f}",
                        flush=True,
                    )
            for state, results in runs.items():
                cells.append(
                    {
                        "threads": threads,
                        "state": state,
                        "n": len(results),
                        "mib_s": median([r["mib_s"] for r in results]),
                        "pwrite_sys_s_per_gib": median(
                            [r["pwrite_sys_s"] / (size / (1024 * MiB)) for r in results]
                        ),
                        "fsync_s": median([r["fsync_s"] for r in results]),
                        "runs": results,
                    }
                )
    return {"size": size, "gap_s": args.gap, "cells": cells}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pagecache_floor", description=__doc__
    )
    parser.add_argument("--size", default="1GiB", help="file size (default 1GiB)")
    parser.add_argument("--threads", default="1,4", help="writer threads, comma separated")
    parser.add_argument("--gap", type=float, default=8.0, help="idle seconds before a cold run")
    parser.add_argument("--repeat", type=int, default=2, help="cold+hot pairs (default 2)")
    parser.add_argument("--results-dir", default=None, help="instead of benchmarks/results")
    args = parser.parse_args(argv)
    doc = run(args)
    print(f"\nWriting a new {fmt_size(doc['size'])} file (medians)\n")
    print_table(
        ["threads", "state", "n", "MiB/s", "pwrite sys s/GiB", "fsync s"],
        [
            [c["threads"], c["state"], c["n"], c["mib_s"], c["pwrite_sys_s_per_gib"],
             c["fsync_s"]]
            for c in doc["cells"]
        ],
    )  # fmt: skip
    directory = Path(args.results_dir) if args.results_dir else None
    print(f"\nsaved {save_results('pagecache-floor', doc, directory)}")


if __name__ == "__main__":
    main()
