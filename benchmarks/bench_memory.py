"""Peak RSS growth: ``python -m benchmarks memory [--size 1GiB] [--part-size 256MiB]``.

Each client uploads the file in 256 MiB parts in a fresh child process; the growth is the
peak RSS (``ru_maxrss``) minus the RSS just before the upload (after every import). The target
for aiooss_resume is under 64 MiB: it streams parts in 1 MiB chunks, so memory does not
scale with the part size. The official SDKs are shown for comparison.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._common import (
    MiB,
    emulator,
    fmt_size,
    make_data_file,
    median,
    parse_ints,
    parse_size,
    print_table,
    save_results,
    temp_dir,
)
from .bench_upload import CLIENTS, run_one

TARGET_MIB = 64


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = parse_size(args.size)
    part_size = parse_size(args.part_size)
    clients = [c for c in args.clients.split(",") if c]
    for c in clients:
        if c not in CLIENTS:
            raise SystemExit(f"unknown client {c!r}")
    cells = []
    with temp_dir() as tmp:
        path = make_data_file(tmp / "data.bin", size)
        with emulator(tmp / "server") as server:
            for routines in parse_ints(args.routines):
                for client in clients:
                    runs = []
                    for rep in range(args.repeat):
                        r = run_one(
                            server,
                            tmp,
                            path,
                            size,
                            client,
                            part_size,
                            routines,
                            key=f"mem/{client}/{routines}/{rep}",
                            checkpoint=True,
                            timeout=args.timeout,
                        )
                        runs.append(r)
                        print(
                            f"  {client:>4} x{routines}: RSS {r['rss_before'] / MiB:6.1f} -> "
                            f"{r['rss_peak'] / MiB:7.1f} MiB "
                            f"({size / MiB / r['seconds']:.0f} MiB/s)",
                            flush=True,
                        )
                    cells.append(
                        {
                            "client": client,
                            "routines": routines,
                            "rss_before_mib": median([r["rss_before"] / MiB for r in runs]),
                            "rss_peak_mib": median([r["rss_peak"] / MiB for r in runs]),
                            "rss_growth_mib": median(
                                [(r["rss_peak"] - r["rss_before"]) / MiB for r in runs]
                            ),
                            "mib_s": median([size / MiB / r["seconds"] for r in runs]),
                            "runs": runs,
                        }
                    )
    return {"size": size, "part_size": part_size, "target_mib": TARGET_MIB, "cells": cells}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks memory", description=__doc__)
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--part-size", default="256MiB")
    parser.add_argument("--routines", default="4")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    doc = run(args)
    print(
        f"\nPeak RSS, {fmt_size(doc['size'])} in {fmt_size(doc['part_size'])} parts "
        f"(target for ours: growth < {TARGET_MIB} MiB)\n"
    )
    print_table(
        ["client", "routines", "RSS before MiB", "peak RSS MiB", "growth MiB", "MiB/s"],
        [
            [
                c["client"],
                c["routines"],
                c["rss_before_mib"],
                c["rss_peak_mib"],
                c["rss_growth_mib"],
                c["mib_s"],
            ]
            for c in doc["cells"]
        ],
    )
    print(f"\nsaved {save_results('memory', doc)}")
