"""How to read part data off the loop: ``python -m benchmarks read [--size 1GiB] [--repeat 5]``.

The design card named aiofiles as a dependency; the library reads with ``os.preadv`` into
reused buffers in ``anyio.to_thread`` jobs on its own ``CapacityLimiter`` instead
(``aiooss_resume._fileio``, ``aiooss_resume._buffers``).
This benchmark is the measurement behind that choice. It streams one file from the page
cache as ``--parts`` concurrent parts (one coroutine each, 1 MiB chunks, CRC-64 of every
chunk), the way the upload engine does, with no network, so only the read path is timed:

* ``ours``: ``SourceFile.read``: ``preadv`` into a pooled buffer + CRC in one thread job,
  dedicated limiter; each chunk is given back to the pool once used, as the engine does;
* ``aiofiles``: one aiofiles handle per part (it has no ``pread``, so concurrent parts on one
  handle would need a lock around seek+read), ``seek`` once then ``read``; CRC on the loop
  (fastcrc, ~20 us per MiB);
* ``aiofiles+crc-thread``: the same, with the CRC in a second thread hand-off
  (``asyncio.to_thread``), as a library that wants no CPU work on the loop would do.

Reported per variant (median over ``--repeat`` runs, variants interleaved): MiB/s, CPU
seconds per GiB, the loop's worst and p99 lateness (a 1 ms ticker), and which thread pool
did the work: aiofiles always uses the event loop's *default* executor, the one the host
application's ``asyncio.to_thread`` and ``run_in_executor(None)`` calls share.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

from ._common import (
    MiB,
    fmt_size,
    make_data_file,
    median,
    parse_size,
    print_table,
    save_results,
    temp_dir,
)

CHUNK = 1 * MiB


async def _ticker(stop: asyncio.Event, late: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(0.001)
        late.append(max(0.0, loop.time() - start - 0.001))


async def _ours(path: Path, size: int, parts: int) -> int:
    from aiooss_resume._fileio import IoRunner, SourceFile

    io = IoRunner(parts)
    src = await SourceFile.open(str(path), io, keep=2 * parts + 2)
    part = -(-size // parts)

    async def one(offset: int, length: int) -> int:
        crc, position = 0, 0
        while position < length:
            n = min(CHUNK, length - position)
            data, crc = await src.read(offset + position, n, crc)
            src.pool.give(data)  # as the upload body does once the transport has it
            del data
            position += n
        return crc

    try:
        crcs = await asyncio.gather(
            *(one(i * part, min(part, size - i * part)) for i in range(parts))
        )
    finally:
        await src.aclose()
    return len(crcs)


async def _aiofiles(path: Path, size: int, parts: int, crc_in_thread: bool) -> int:
    import aiofiles
    from fastcrc import crc64

    part = -(-size // parts)

    async def one(offset: int, length: int) -> int:
        crc, position = 0, 0
        async with aiofiles.open(path, "rb") as f:
            await f.seek(offset)
            while position < length:
                data = await f.read(min(CHUNK, length - position))
                if crc_in_thread:
                    crc = await asyncio.to_thread(crc64.xz, data, crc)
                else:
                    crc = crc64.xz(data, crc)
                position += len(data)
        return crc

    crcs = await asyncio.gather(*(one(i * part, min(part, size - i * part)) for i in range(parts)))
    return len(crcs)


def _run(variant: str, path: Path, size: int, parts: int) -> dict[str, Any]:
    # Import before the ticker starts: a first import inside the timed region is not I/O.
    import aiofiles  # noqa: F401
    import fastcrc  # noqa: F401

    import aiooss_resume._fileio  # noqa: F401

    async def main() -> dict[str, Any]:
        stop, late = asyncio.Event(), []
        tick = asyncio.create_task(_ticker(stop, late))
        await asyncio.sleep(0.01)
        before = set(threading.enumerate())
        cpu0, t0 = time.process_time(), time.perf_counter()
        if variant == "ours":
            await _ours(path, size, parts)
        else:
            await _aiofiles(path, size, parts, crc_in_thread=variant.endswith("crc-thread"))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        pools = sorted({t.name.rsplit("_", 1)[0] for t in set(threading.enumerate()) - before})
        stop.set()
        await tick
        late.sort()
        return {
            "variant": variant,
            "mib_s": size / MiB / wall,
            "cpu_s_per_gib": cpu / (size / 1024 / MiB),
            "late_max_ms": late[-1] * 1000,
            "late_p99_ms": late[int(len(late) * 0.99)] * 1000,
            "threads": pools,
        }

    return asyncio.run(main())


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks read", description=__doc__)
    ap.add_argument("--size", default="1GiB", help="file size (default 1GiB)")
    ap.add_argument("--parts", type=int, default=4, help="concurrent parts (default 4)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--name", default="read")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    variants = ["ours", "aiofiles", "aiofiles+crc-thread"]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with temp_dir() as tmp:
        path = make_data_file(tmp / "data.bin", size)
        for _ in range(args.repeat):
            for v in variants:  # interleaved, so drift hits every variant alike
                runs[v].append(_run(v, path, size, args.parts))
        os.sync()
    rows, summary = [], []
    for v in variants:
        r = runs[v]
        cell = {
            "variant": v,
            "mib_s": median([x["mib_s"] for x in r]),
            "mib_s_all": [round(x["mib_s"], 1) for x in r],
            "cpu_s_per_gib": median([x["cpu_s_per_gib"] for x in r]),
            "late_max_ms": max(x["late_max_ms"] for x in r),
            "late_p99_ms": median([x["late_p99_ms"] for x in r]),
            "threads": r[0]["threads"],
        }
        summary.append(cell)
        rows.append(
            [
                v,
                cell["mib_s"],
                cell["cpu_s_per_gib"],
                cell["late_max_ms"],
                cell["late_p99_ms"],
                ", ".join(cell["threads"]) or "-",
            ]
        )
    print(f"read {fmt_size(size)} as {args.parts} concurrent parts, medians of {args.repeat}")
    print_table(
        ["variant", "MiB/s", "CPU s/GiB", "loop late max ms", "p99 ms", "worker threads"], rows
    )
    out = save_results(
        args.name,
        {"size": size, "parts": args.parts, "repeat": args.repeat, "results": summary},
    )
    print(f"saved {out}")
