"""Download: aiooss_resume vs oss2.resumable_download vs the alibabacloud-oss-v2 Downloader.

``python -m benchmarks download [--size 1GiB] [--part-size 8] [--routines 4] [--repeat 3]
[--clients ours,oss2,v2]``

One emulator process with a *disk* store (a download needs the bytes: the object is uploaded
once, then every client downloads the same object), each download in a fresh child process
(``benchmarks._download_worker``) so CPU, peak RSS and loop lateness belong to that download
alone. Clients are interleaved within each repetition so drift hits them alike. Every client
checks CRC-64 (its default) and keeps a checkpoint. The files go to the same scratch
directory (``$BENCH_TMPDIR`` or the system temp), removed after each run. Medians reported;
``os.getloadavg()`` is recorded before and after every run (the machine may be shared).
``--memory-part-sizes 8,64`` adds our peak RSS at other part sizes (memory bounded
regardless of part size).

``ours`` is ``download_file`` as shipped (the temp file through the page cache);
``ours-direct`` is ``download_file(direct_io=True)`` (``O_DIRECT``, ``aiooss_resume.
_direct_io``): the A/B of that option.
Two *ceilings* can be added to ``--clients`` (not clients: our HTTP path without the file,
``benchmarks._download_worker._ours_ceiling``): ``ours-nowrite`` fetches every range as
``download_file`` does and computes its CRC-64 in the IoRunner but writes nothing (what the
file costs: ``ours`` minus this), ``ours-discard`` drops every body on the loop (what the
emulator and aiohttp allow at all on this machine, at that moment). Loop lateness (1 ms
ticker) is recorded per run, split into run-queue wait (the OS gave the CPU to another
process) and the rest (``lateness_own_max_ms``: the client's own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._common import (
    BUCKET,
    Emulator,
    GiB,
    MiB,
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
CEILINGS = ("ours-direct", "ours-nowrite", "ours-discard")  # and a variant: see above
KEY = "bench/download.bin"


@contextlib.contextmanager
def disk_emulator(root: Path) -> Iterator[Emulator]:
    """The emulator in its own process, storing objects on disk (``--store disk``)."""
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._serve", "--root", str(root), "--store", "disk"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the emulator process exited before printing its endpoint")
        yield Emulator(proc=proc, **json.loads(line))
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _upload(server: Emulator, path: Path) -> None:
    import aiooss_resume

    async with aiooss_resume.Client(
        server.endpoint,
        credentials=aiooss_resume.Credentials(server.access_key_id, server.access_key_secret),
        region=server.region,
    ) as client:
        await client.bucket(BUCKET).upload_file(KEY, path, 64 * MiB, routines=4)


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
        "lateness_p99_ms": median([r["lateness_p99_ms"] for r in runs]),
        "lateness_own_max_ms": max(r.get("lateness_own_max_ms", 0.0) for r in runs),
        "loadavg1": [round(r["loadavg_before"], 2) for r in runs],
    }


def run_one(
    server: Emulator,
    tmp: Path,
    size: int,
    client: str,
    part_size: int,
    routines: int,
    timeout: float,
) -> dict[str, Any]:
    cp_dir = tmp / f"cp-{client}"
    cp_dir.mkdir(exist_ok=True)
    job = {
        **server.conn(),
        "client": client,
        "bucket": BUCKET,
        "key": KEY,
        "path": str(tmp / f"out-{client}.bin"),
        "size": size,
        "part_size": part_size,
        "routines": routines,
        "checkpoint_dir": str(cp_dir),
    }
    load = os.getloadavg()[0]
    cpu0 = server.cpu_seconds()
    result = run_child("benchmarks._download_worker", job, timeout)
    result["server_cpu"] = server.cpu_seconds() - cpu0
    result["loadavg_before"] = load
    result["part_size"] = part_size
    result["routines"] = routines
    cpu = (result["cpu_user"] + result["cpu_sys"]) / (size / GiB)
    print(
        f"  {client:>4} part {fmt_size(part_size):>6} x{routines:<3}: "
        f"{size / MiB / result['seconds']:8.1f} MiB/s cpu {cpu:5.2f} s/GiB "
        f"rss +{(result['rss_peak'] - result['rss_before']) / MiB:6.1f} MiB, "
        f"late {result['lateness_max_ms']:5.1f} (own {result['lateness_own_max_ms']:5.1f}) ms, "
        f"load {load:.2f}",
        flush=True,
    )
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = parse_size(args.size)
    part_size = args.part_size * MiB
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    for c in clients:
        if c not in CLIENTS + CEILINGS:
            raise SystemExit(f"unknown client {c!r}; choose from {', '.join(CLIENTS + CEILINGS)}")
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
    memory: list[dict[str, Any]] = []
    with temp_dir() as tmp:
        path = make_data_file(tmp / "data.bin", size)
        with disk_emulator(tmp / "server") as server:
            asyncio.run(_upload(server, path))
            path.unlink()  # the emulator holds its own copy
            for rep in range(args.repeat):
                print(f"repetition {rep + 1}/{args.repeat}", flush=True)
                for client in clients:
                    runs[client].append(
                        run_one(server, tmp, size, client, part_size, args.routines, args.timeout)
                    )
            for mib in parse_ints(args.memory_part_sizes):
                result = run_one(server, tmp, size, "ours", mib * MiB, args.routines, args.timeout)
                memory.append(
                    {
                        "part_size": mib * MiB,
                        "routines": args.routines,
                        "rss_growth_mib": (result["rss_peak"] - result["rss_before"]) / MiB,
                        "mib_s": size / MiB / result["seconds"],
                    }
                )
    cells = [
        {
            "client": c,
            "part_size": part_size,
            "routines": args.routines,
            **summarize(runs[c], size),
            "runs": runs[c],
        }
        for c in clients
    ]
    return {"size": size, "server": "emulator (disk store)", "cells": cells, "memory": memory}


def report(doc: dict[str, Any]) -> None:
    cells = doc["cells"]
    print(f"\nDownload of {fmt_size(doc['size'])} from the {doc['server']} (medians)\n")
    print_table(
        ["client", "part", "routines", "n", "MiB/s", "CPU s/GiB", "server CPU s/GiB",
         "peak RSS MiB", "RSS growth MiB", "loop late max ms", "own max ms"],
        [
            [c["client"], fmt_size(c["part_size"]), c["routines"], c["n"], c["mib_s"],
             c["cpu_s_per_gib"], c["server_cpu_s_per_gib"], c["rss_peak_mib"],
             c["rss_growth_mib"], c["lateness_max_ms"], c["lateness_own_max_ms"]]
            for c in cells
        ],
    )  # fmt: skip
    by = {c["client"]: c for c in cells}
    if "ours" in by:
        ours = by["ours"]
        rows = []
        for peer in ("oss2", "v2"):
            if peer in by:
                other = by[peer]
                rows.append(
                    [
                        peer,
                        ours["mib_s"] / other["mib_s"],
                        other["cpu_s_per_gib"] / ours["cpu_s_per_gib"],
                    ]
                )
        if rows:
            print("\nRatios (same run): ours MiB/s / peer's, peer's CPU s/GiB / ours\n")
            print_table(["peer", "x MiB/s", "x less CPU"], rows)
    if doc["memory"]:
        print("\nOur RSS growth by part size\n")
        print_table(
            ["part", "routines", "RSS growth MiB", "MiB/s"],
            [
                [fmt_size(m["part_size"]), m["routines"], m["rss_growth_mib"], m["mib_s"]]
                for m in doc["memory"]
            ],
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks download", description=__doc__)
    parser.add_argument("--size", default="1GiB", help="object size (default 1GiB)")
    parser.add_argument("--part-size", type=int, default=8, help="MiB (default 8)")
    parser.add_argument("--routines", type=int, default=4, help="default 4")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument(
        "--memory-part-sizes", default="", help="MiB, comma separated: our RSS at these too"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per download")
    parser.add_argument("--name", default=None, help="results file name (default download-SIZE)")
    parser.add_argument(
        "--results-dir",
        default=None,
        help="write the JSON there instead of benchmarks/results (the CI smoke does)",
    )
    args = parser.parse_args(argv)
    doc = run(args)
    report(doc)
    name = args.name or f"download-{fmt_size(doc['size'])}"
    directory = Path(args.results_dir) if args.results_dir else None
    print(f"\nsaved {save_results(name, doc, directory)}")
