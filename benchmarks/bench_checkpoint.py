"""Checkpoint overhead at 10,000 parts: ``python -m benchmarks checkpoint``.

aiooss_resume uploads a file of ``--parts`` parts of ``--part-size`` (default 10,000 x 100 KiB,
about 1 GB) with and without a checkpoint, alternating the two so drift hits both alike, for
each routines value; the overhead is median(with) / median(without) - 1. Also reported: the
bytes the process wrote to files (``wchar``: the checkpoint rewrites), CPU and loop lateness.
``--server sink`` measures against the minimal sink instead of the emulator (the emulator's
per-request cost dilutes the overhead; the sink shows it undiluted).
"""

from __future__ import annotations

import argparse
from typing import Any

from ._common import (
    KiB,
    MiB,
    emulator,
    make_data_file,
    median,
    parse_ints,
    parse_size,
    print_table,
    save_results,
    temp_dir,
)
from .bench_upload import run_one


def run(args: argparse.Namespace) -> dict[str, Any]:
    part_size = parse_size(args.part_size)
    size = part_size * args.parts
    cells = []
    with temp_dir() as tmp:
        path = make_data_file(tmp / "data.bin", size)
        with emulator(tmp / "server", args.server) as server:
            for routines in parse_ints(args.routines):
                runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
                for rep in range(args.repeat):
                    for checkpoint in (False, True) if rep % 2 == 0 else (True, False):
                        r = run_one(
                            server,
                            tmp,
                            path,
                            size,
                            "ours",
                            part_size,
                            routines,
                            key=f"cp/{routines}/{rep}/{checkpoint}",
                            checkpoint=checkpoint,
                            timeout=args.timeout,
                        )
                        runs[checkpoint].append(r)
                        print(
                            f"  routines {routines:>2} checkpoint {'on ' if checkpoint else 'off'}"
                            f" rep {rep + 1}/{args.repeat}: {r['seconds']:6.2f} s "
                            f"{size / MiB / r['seconds']:7.1f} MiB/s, file writes "
                            f"{r['wchar'] / MiB:7.1f} MiB, late {r['lateness_max_ms']:6.1f} ms",
                            flush=True,
                        )
                on, off = runs[True], runs[False]
                t_on = median([r["seconds"] for r in on])
                t_off = median([r["seconds"] for r in off])
                cells.append(
                    {
                        "routines": routines,
                        "seconds_with": t_on,
                        "seconds_without": t_off,
                        "overhead_pct": 100 * (t_on / t_off - 1),
                        "mib_s_with": size / MiB / t_on,
                        "mib_s_without": size / MiB / t_off,
                        "cpu_s_with": median([r["cpu_user"] + r["cpu_sys"] for r in on]),
                        "cpu_s_without": median([r["cpu_user"] + r["cpu_sys"] for r in off]),
                        "file_writes_mib_with": median([r["wchar"] / MiB for r in on]),
                        "lateness_max_ms_with": max(r["lateness_max_ms"] for r in on),
                        "lateness_max_ms_without": max(r["lateness_max_ms"] for r in off),
                        "lateness_own_max_ms_with": max(
                            r.get("lateness_own_max_ms", float("nan")) for r in on
                        ),
                        "lateness_own_max_ms_without": max(
                            r.get("lateness_own_max_ms", float("nan")) for r in off
                        ),
                        "runs_with": on,
                        "runs_without": off,
                    }
                )
    return {
        "server": args.server,
        "parts": args.parts,
        "part_size": part_size,
        "size": size,
        "repeat": args.repeat,
        "cells": cells,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks checkpoint", description=__doc__)
    parser.add_argument("--parts", type=int, default=10_000)
    parser.add_argument("--part-size", default="100KiB")
    parser.add_argument("--routines", default="4,1")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--server", default="emulator", choices=["emulator", "sink"])
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    doc = run(args)
    print(
        f"\nCheckpoint overhead: {doc['parts']:,} parts of {doc['part_size'] // KiB} KiB "
        f"to the {doc['server']} (medians of {doc['repeat']})\n"
    )
    print_table(
        [
            "routines",
            "s without",
            "s with",
            "overhead %",
            "MiB/s with",
            "CPU s without",
            "CPU s with",
            "checkpoint writes MiB",
            "loop late max ms (with)",
            "(without)",
            "own ms (with)",
            "(without)",
        ],
        [
            [
                c["routines"],
                c["seconds_without"],
                c["seconds_with"],
                c["overhead_pct"],
                c["mib_s_with"],
                c["cpu_s_without"],
                c["cpu_s_with"],
                c["file_writes_mib_with"],
                c["lateness_max_ms_with"],
                c["lateness_max_ms_without"],
                c["lateness_own_max_ms_with"],
                c["lateness_own_max_ms_without"],
            ]
            for c in doc["cells"]
        ],
    )
    suffix = "" if args.server == "emulator" else f"-{args.server}"
    print(f"\nsaved {save_results('checkpoint' + suffix, doc)}")
