"""Upload matrix: aiooss_resume vs oss2.resumable_upload vs the alibabacloud-oss-v2 Uploader.

``python -m benchmarks upload [--size 1GiB] [--part-sizes 1,8,64] [--routines 1,4,16]
[--repeat 3] [--key-repeat N] [--clients ours,oss2,v2] [--tls]``

One emulator process (discard store: it keeps size/CRC, no bytes), one data file created
once in a temp dir and page-cached, and each upload in a fresh child process
(``benchmarks._worker``) so CPU, peak RSS and loop lateness belong to that upload alone.
Clients are interleaved within each repetition so drift hits them alike. CRC checking is on
(every client's default) and so is checkpointing. Medians are reported.

``--tls``: the server (emulator or sink) speaks HTTPS with a certificate made at start, and
every client trusts its CA explicitly (certificate and host name verified), so all three pay
for the same TLS. Results go to ``upload-SIZE[-sink]-tls.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import (
    BUCKET,
    Emulator,
    GiB,
    MiB,
    emulator,
    fmt_size,
    make_data_file,
    median,
    parse_ints,
    parse_size,
    print_table,
    run_child,
    save_results,
    temp_dir,
)

CLIENTS = ("ours", "oss2", "v2")
KEY_CELL = (8 * MiB, 4)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", default="1GiB", help="file size (default 1GiB)")
    parser.add_argument("--part-sizes", default="1,8,64", help="MiB, comma separated")
    parser.add_argument("--routines", default="1,4,16", help="comma separated")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions per cell")
    parser.add_argument(
        "--key-repeat", type=int, default=3, help="repetitions of the 8 MiB x 4 cell (min)"
    )
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument(
        "--server",
        default="emulator",
        choices=["emulator", "sink"],
        help="the OSS emulator in discard mode (default) or the minimal sink (ceiling)",
    )
    parser.add_argument("--no-checkpoint", action="store_true", help="checkpointing off")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per upload")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="HTTPS with a run-time certificate the clients trust explicitly (needs trustme)",
    )
    parser.add_argument("--name", default=None, help="results file name (default upload-SIZE)")
    parser.add_argument(
        "--results-dir",
        default=None,
        help="write the JSON there instead of benchmarks/results (the CI smoke does)",
    )


def summarize(runs: list[dict[str, Any]], size: int) -> dict[str, Any]:
    gib = size / GiB
    return {
        "n": len(runs),
        "mib_s": median([size / MiB / r["seconds"] for r in runs]),
        "mib_s_all": [round(size / MiB / r["seconds"], 1) for r in runs],
        "cpu_s_per_gib": median([(r["cpu_user"] + r["cpu_sys"]) / gib for r in runs]),
        "server_cpu_s_per_gib": median([r["server_cpu"] / gib for r in runs]),
        "rss_peak_mib": median([r["rss_peak"] / MiB for r in runs]),
        "rss_growth_mib": median([(r["rss_peak"] - r["rss_before"]) / MiB for r in runs]),
        "lateness_max_ms": max(r["lateness_max_ms"] for r in runs),
        "lateness_max_ms_median": median([r["lateness_max_ms"] for r in runs]),
        "lateness_p99_ms": median([r["lateness_p99_ms"] for r in runs]),
        # the worst tick less its run-queue wait (see _worker.Ticker): the client's own part
        "lateness_own_max_ms": max(r.get("lateness_own_max_ms", float("nan")) for r in runs),
    }


def run_one(
    server: Emulator,
    tmp: Path,
    path: Path,
    size: int,
    client: str,
    part_size: int,
    routines: int,
    *,
    key: str,
    checkpoint: bool,
    timeout: float,
    extra: dict[str, Any] | None = None,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """One upload in a fresh child process; adds the server's CPU seconds meanwhile.

    ``extra``: more job fields for the worker (``loop``, ``knobs``: see ``_worker``);
    ``cwd``: run the worker (and so the library) of another checkout (``bench_scaling``)."""
    cp_dir = tmp / f"cp-{client}"
    cp_dir.mkdir(exist_ok=True)
    job = {
        **server.conn(),
        "client": client,
        "bucket": BUCKET,
        "key": key,
        "path": str(path),
        "size": size,
        "part_size": part_size,
        "routines": routines,
        "checkpoint": checkpoint,
        "checkpoint_dir": str(cp_dir),
        **(extra or {}),
    }
    cpu0 = server.cpu_seconds()
    result = run_child("benchmarks._worker", job, timeout, cwd=cwd)
    result["server_cpu"] = server.cpu_seconds() - cpu0
    return result


def _progress(
    result: dict[str, Any], part_size: int, routines: int, rep: int, repeat: int, size: int
) -> None:
    cpu = (result["cpu_user"] + result["cpu_sys"]) / (size / GiB)
    print(
        f"  {result['client']:>4} part {fmt_size(part_size):>6} x{routines:<3}"
        f" rep {rep + 1}/{repeat}: {size / MiB / result['seconds']:8.1f} MiB/s "
        f"cpu {cpu:5.2f} s/GiB, late {result['lateness_max_ms']:6.1f} ms",
        flush=True,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = parse_size(args.size)
    part_sizes = [p * MiB for p in parse_ints(args.part_sizes)]
    routines_list = parse_ints(args.routines)
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    for c in clients:
        if c not in CLIENTS:
            raise SystemExit(f"unknown client {c!r}; choose from {', '.join(CLIENTS)}")
    cells: list[dict[str, Any]] = []
    with temp_dir() as tmp:
        path = make_data_file(tmp / "data.bin", size)
        with emulator(tmp / "server", args.server, tls=args.tls) as server:
            for part_size in part_sizes:
                for routines in routines_list:
                    repeat = args.repeat
                    if (part_size, routines) == KEY_CELL:
                        repeat = max(repeat, args.key_repeat)
                    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
                    for rep in range(repeat):
                        for client in clients:
                            result = run_one(
                                server,
                                tmp,
                                path,
                                size,
                                client,
                                part_size,
                                routines,
                                key=f"{client}/{part_size}/{routines}/{rep}",
                                checkpoint=not args.no_checkpoint,
                                timeout=args.timeout,
                            )
                            runs[client].append(result)
                            _progress(result, part_size, routines, rep, repeat, size)
                    for client in clients:
                        cells.append(
                            {
                                "client": client,
                                "part_size": part_size,
                                "routines": routines,
                                **summarize(runs[client], size),
                                "runs": runs[client],
                            }
                        )
    return {
        "size": size,
        "server": args.server,
        "tls": args.tls,
        "checkpoint": not args.no_checkpoint,
        "cells": cells,
    }


def report(doc: dict[str, Any]) -> None:
    size = doc["size"]
    cells = doc["cells"]
    print(
        f"\nUpload of {fmt_size(size)} to the {doc['server']}"
        f"{' over TLS' if doc.get('tls') else ''} "
        "(medians; lateness = worst over the runs)\n"
    )
    print_table(
        [
            "client",
            "part",
            "routines",
            "n",
            "MiB/s",
            "CPU s/GiB",
            "server CPU s/GiB",
            "peak RSS MiB",
            "RSS growth MiB",
            "loop late max ms",
            "own ms",
        ],
        [
            [
                c["client"],
                fmt_size(c["part_size"]),
                c["routines"],
                c["n"],
                c["mib_s"],
                c["cpu_s_per_gib"],
                c["server_cpu_s_per_gib"],
                c["rss_peak_mib"],
                c["rss_growth_mib"],
                c["lateness_max_ms"],
                c["lateness_own_max_ms"],
            ]
            for c in cells
        ],
    )
    by = {(c["client"], c["part_size"], c["routines"]): c for c in cells}
    rows = []
    for c in cells:
        if c["client"] != "ours":
            continue
        row: list[object] = [fmt_size(c["part_size"]), c["routines"], c["mib_s"]]
        for peer in ("oss2", "v2"):
            other = by.get((peer, c["part_size"], c["routines"]))
            row.append(c["mib_s"] / other["mib_s"] if other else float("nan"))
        rows.append(row)
    if rows:
        print("\nRatios (ours / peer, same run)\n")
        print_table(["part", "routines", "ours MiB/s", "x oss2", "x v2"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks upload", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    doc = run(args)
    report(doc)
    suffix = "" if args.server == "emulator" else f"-{args.server}"
    suffix += "-tls" if args.tls else ""
    name = args.name or f"upload-{fmt_size(doc['size'])}{suffix}"
    directory = Path(args.results_dir) if args.results_dir else None
    print(f"\nsaved {save_results(name, doc, directory)}")
