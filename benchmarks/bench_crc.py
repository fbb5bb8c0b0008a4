"""CRC-64/XZ libraries: ``python -m benchmarks crc [--total 256MiB]``.

For fastcrc, anycrc, crcmod (whichever of crcmod/crcmod-plus owns the ``crcmod`` folder; both
are listed by version) and the library's own ``aiooss_resume._crc64.crc64``:

* the check value ``0x995DC9BBDF1939FA`` of ``b"123456789"`` is asserted, and incremental
  use (CRC of A then B continued) must equal the CRC of A+B;
* MiB/s on 1 MiB and 8 MiB buffers (median of 5 timed passes);
* whether the GIL is released: a worker thread makes one long CRC call (~100 ms of data, at
  most 1 GiB) while the main thread counts loop iterations and records its longest gap;
  "main progress" is its iteration rate as a share of its rate next to a sleeping thread.
  A gap of a few ms (the switch interval) = released; a gap as long as the call = held;
* combine: ``_crc64.crc64_combine`` (pure Python; cached and uncached part lengths) vs
  anycrc's ``combine`` vs oss2's ``crc64_combine`` (pure Python, what oss2 uses), and the
  time to fold 10,000 part CRCs with ``crc64_fold`` (done at Complete, in a worker thread).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from ._common import MiB, parse_size, print_table, save_results

CHECK = 0x995DC9BBDF1939FA
Crc = Callable[[bytes, int], int]


def candidates() -> dict[str, Crc]:
    from aiooss_resume import _crc64

    libs: dict[str, Crc] = {"aiooss_resume._crc64.crc64": _crc64.crc64}
    try:
        from fastcrc import crc64 as fc

        def fastcrc_xz(data: bytes, crc: int = 0) -> int:
            return fc.xz(data, crc) if crc else fc.xz(data)

        libs["fastcrc crc64.xz"] = fastcrc_xz
    except ImportError:
        pass
    try:
        import anycrc

        model = anycrc.Model("CRC64-XZ")

        def anycrc_xz(data: bytes, crc: int = 0) -> int:
            return model.calc(data, crc) if crc else model.calc(data)

        libs["anycrc CRC64-XZ"] = anycrc_xz
    except ImportError:
        pass
    try:
        import crcmod

        fn = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)

        def crcmod_xz(data: bytes, crc: int = 0) -> int:
            return fn(data, crc)

        libs["crcmod (C ext)" if crcmod.crcmod._usingExtension else "crcmod (pure)"] = crcmod_xz
    except ImportError:
        pass
    return libs


def check(name: str, fn: Crc) -> None:
    value = fn(b"123456789", 0)
    assert value == CHECK, f"{name}: check value {value:#x} != {CHECK:#x}"
    a, b = os.urandom(1000), os.urandom(777)
    assert fn(b, fn(a, 0)) == fn(a + b, 0), f"{name}: incremental CRC differs"


def throughput(fn: Crc, size: int, total: int) -> float:
    buf = os.urandom(size)
    fn(buf, 0)
    n = max(1, total // size)
    passes = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn(buf, 0)
        passes.append(n * size / MiB / (time.perf_counter() - t0))
    return statistics.median(passes)


def _spin_while(work: Callable[[], None]) -> tuple[float, float, float]:
    """Run ``work`` in a thread; count main-thread iterations until it ends.

    Returns (iterations per second, longest gap between iterations, duration of ``work``).
    """
    done = threading.Event()
    elapsed: list[float] = []

    def worker() -> None:
        t0 = time.perf_counter()
        work()
        elapsed.append(time.perf_counter() - t0)
        done.set()

    thread = threading.Thread(target=worker)
    clock = time.perf_counter
    count = 0
    worst = 0.0
    start = prev = clock()
    thread.start()
    while not done.is_set():
        now = clock()
        worst = max(worst, now - prev)
        prev = now
        count += 1
    wall = clock() - start
    thread.join()
    return count / wall, worst, elapsed[0]


def gil(fn: Crc, mib_s: float) -> dict[str, Any]:
    """One long CRC call in a worker thread; does the main thread keep running meanwhile?"""
    size = min(1024 * MiB, max(8 * MiB, int(mib_s * 0.1) * MiB))  # ~100 ms (<= 1 GiB)
    buf = b"\x5a" * size
    idle_rate, _, _ = _spin_while(lambda: time.sleep(0.1))
    busy_rate, worst, call = _spin_while(lambda: fn(buf, 0))
    return {
        "gil_call_mib": size // MiB,
        "gil_call_ms": call * 1000,
        "main_progress_pct": 100 * busy_rate / idle_rate,
        "main_max_gap_ms": worst * 1000,
        "released": worst < call / 3,
    }


def _time_per_call(fn: Callable[[int], object], n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n


def combine_costs() -> dict[str, float]:
    from aiooss_resume import _crc64

    a, b = os.urandom(3000), os.urandom(8 * MiB)
    ca, cb = _crc64.crc64(a), _crc64.crc64(b)
    whole = _crc64.crc64(a + b)
    out: dict[str, float] = {}
    assert _crc64.crc64_combine(ca, cb, len(b)) == whole
    out["aiooss_resume crc64_combine, same length (cached) us"] = 1e6 * _time_per_call(
        lambda i: _crc64.crc64_combine(ca, cb, 8 * MiB), 2000
    )
    out["aiooss_resume crc64_combine, new length each call us"] = 1e6 * _time_per_call(
        lambda i: _crc64.crc64_combine(ca, cb, 8 * MiB + 1 + i * 997), 500
    )
    parts = [(_crc64.crc64(os.urandom(64)), 100 * 1024) for _ in range(10_000)]
    t0 = time.perf_counter()
    _crc64.crc64_fold(parts)
    out["aiooss_resume crc64_fold of 10,000 parts ms"] = 1000 * (time.perf_counter() - t0)
    try:
        import anycrc

        model = anycrc.Model("CRC64-XZ")
        assert model.combine(ca, cb, len(b)) == whole
        out["anycrc combine us"] = 1e6 * _time_per_call(
            lambda i: model.combine(ca, cb, 8 * MiB + i), 2000
        )
    except ImportError:
        pass
    try:
        from oss2.crc64_combine import mkCombineFun

        combine = mkCombineFun(0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=(1 << 64) - 1)
        assert combine(ca, cb, len(b)) == whole
        out["oss2 crc64_combine (pure Python) us"] = 1e6 * _time_per_call(
            lambda i: combine(ca, cb, 8 * MiB + i), 50
        )
    except ImportError:
        pass
    return out


def run(total: int) -> dict[str, Any]:
    libs = candidates()
    rows: dict[str, Any] = {}
    for name, fn in libs.items():
        check(name, fn)
        slow = "crcmod" in name
        budget = total // 16 if slow else total
        rows[name] = {
            "check_value_ok": True,
            "mib_s_1mib": throughput(fn, MiB, budget),
            "mib_s_8mib": throughput(fn, 8 * MiB, budget),
        }
        rows[name].update(gil(fn, rows[name]["mib_s_8mib"]))
    return {"total": total, "libraries": rows, "combine": combine_costs()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks crc", description=__doc__)
    parser.add_argument("--total", default="256MiB", help="bytes per timed pass (fast libs)")
    args = parser.parse_args(argv)
    doc = run(parse_size(args.total))
    print("\nCRC-64/XZ libraries (check value 0x995DC9BBDF1939FA asserted for each)\n")
    print_table(
        [
            "library",
            "MiB/s 1 MiB",
            "MiB/s 8 MiB",
            "GIL test call",
            "main progress %",
            "main max gap ms",
            "GIL",
        ],
        [
            [
                name,
                r["mib_s_1mib"],
                r["mib_s_8mib"],
                f"{r['gil_call_mib']} MiB, {r['gil_call_ms']:.1f} ms",
                r["main_progress_pct"],
                r["main_max_gap_ms"],
                "released" if r["released"] else "held",
            ]
            for name, r in doc["libraries"].items()
        ],
    )
    print("\nCombine\n")
    print_table(["what", "cost"], [[k, v] for k, v in doc["combine"].items()])
    print(f"\nsaved {save_results('crc', doc)}")
