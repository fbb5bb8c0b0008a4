"""Many files: ``python -m benchmarks many [--small 10000] [--large 100] [--large-size 8MiB]``.

Two trees, uploaded by each client in turn (fresh child process each, ``_many_worker``) to
the same emulator process (discard store) in the same run: ``--small`` files of
``--small-size`` (10,000 x 4 KiB) and ``--large`` files of ``--large-size`` (100 x 8 MiB,
multipart in ``--part-size`` parts). ``ours`` is ``Bucket.upload_dir`` with one budget of
``--routines`` requests and a checkpoint directory (the manifest is written as it goes);
``oss2`` is a ``ThreadPoolExecutor`` of ``--routines`` threads. Ours keeps only the
outcomes that are problems (``keep_outcomes=False``, as the CLI does) unless
``--keep-outcomes``. Reported: files/s, MiB/s, the event loop's lateness (1 ms ticker) and
the peak RSS growth. ``--small-counts`` adds runs of ours with other numbers of small files,
to show how memory grows with the count; ``--control`` adds runs of ours without a
checkpoint directory (``ours-nocp``: no manifest) on the small trees.

Lateness is split as in ``bench_scaling``: ``own`` is a late tick less the loop thread's
run-queue wait (schedstat), ``step CPU`` the longest event-loop iteration's own CPU time
(``_worker.StepProbe``, ours only), and an **idle probe** (the ticker alone in a child
process, ``--idle-seconds``, no upload) runs just before every upload: the machine's own
lateness at that moment. ``--ab-oneshot`` adds ``ours-1shot`` on the main small tree: ours with
every manifest record re-encoded by each rewrite (as before the encoder became
incremental), the A of an A/B; all clients' runs are interleaved, repeat by repeat. ``--profile N``
adds a run of ours on the main small tree under ``cProfile`` of the loop thread and prints
its N most expensive functions (not timed). ``--encode-ab S`` measures the loop's lateness
while a worker thread does nothing but encode a growing manifest of ``--small`` records for
S seconds, re-encoded whole vs incrementally (alternated, ``--repeat`` times).
``--thread-watch`` adds a run of ours with ``_many_worker.ThreadWatch`` (what each thread
did while the process stalled), a diagnostic that perturbs the run.
The load average is recorded: on a shared machine, compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import os
from math import nan
from pathlib import Path
from typing import Any

from ._common import (
    MiB,
    emulator,
    median,
    parse_ints,
    parse_size,
    print_table,
    run_child,
    save_results,
    temp_dir,
)

BUCKET = "bench"
CLIENTS = ("ours", "oss2")


def _make_tree(root: Path, count: int, size: int, seed: int) -> None:
    block = os.urandom(min(size, 1 * MiB))
    for i in range(count):
        directory = root / f"d{i // 500:03}"
        if i % 500 == 0:
            directory.mkdir(parents=True, exist_ok=True)
        with open(directory / f"f{i:05}.bin", "wb") as f:
            written = 0
            head = (seed * 1_000_003 + i).to_bytes(8, "little")
            while written < size:
                chunk = (head + block)[: size - written]
                f.write(chunk)
                written += len(chunk)


def _run(
    server: Any, tmp: Path, client: str, tree: Path, args: argparse.Namespace, tag: str
) -> dict[str, Any]:
    cp = tmp / f"cp-{client}-{tag}"
    job = {
        **server.conn(),
        "client": "oss2" if client == "oss2" else "ours",
        "bucket": BUCKET,
        "prefix": f"{client}/{tag}/",
        "dir": str(tree),
        "part_size": parse_size(args.part_size),
        "routines": args.routines,
        "files_in_flight": args.files_in_flight,
        "checkpoint_dir": None if client == "ours-nocp" else str(cp),
        "keep_outcomes": args.keep_outcomes,
        # ours-1shot: every record re-encoded by each manifest rewrite (the A of the A/B)
        "oneshot": client == "ours-1shot",
    }
    idle = run_child(
        "benchmarks._worker", {"client": "idle", "idle_seconds": args.idle_seconds}, 60
    )
    cpu0 = server.cpu_seconds()
    result = run_child("benchmarks._many_worker", job, args.timeout)
    result["idle"] = {
        k: idle[k]
        for k in ("lateness_max_ms", "lateness_own_max_ms", "lateness_p99_ms", "loadavg1")
    }
    result["server_cpu"] = server.cpu_seconds() - cpu0
    result["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    result["files_per_second"] = result["files"] / result["seconds"]
    result["mib_per_second"] = result["bytes"] / MiB / result["seconds"]
    result["rss_growth"] = result["rss_peak"] - result["rss_before"]
    print(
        f"  {client:>4} {tag:<14}: {result['files_per_second']:8.0f} files/s "
        f"{result['mib_per_second']:7.1f} MiB/s, late max {result['lateness_max_ms']:6.1f} ms "
        f"p99 {result['lateness_p99_ms']:5.1f} ms own {result['lateness_own_max_ms']:5.1f} ms "
        f"step CPU {result.get('loop_step_cpu_max_ms', nan):5.1f} ms "
        f"(idle probe {idle['lateness_max_ms']:5.1f}/{idle['lateness_own_max_ms']:4.1f} ms), "
        f"RSS +{result['rss_growth'] / MiB:6.1f} MiB, "
        f"load {result['loadavg'][0]}",
        flush=True,
    )
    return result


def _encode_ab(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The loop's lateness while a worker thread only encodes a growing manifest (no
    upload): every record re-encoded per rewrite (A, as before) vs incrementally (B),
    alternated ``--repeat`` times in one invocation."""
    rows = []
    for rep in range(args.repeat):
        for label, oneshot in (("one-shot", True), ("incremental", False)):
            job = {"client": "encode", "records": args.small, "oneshot": oneshot}
            job |= {"seconds": args.encode_ab, "prefix": "ours/small-10000-0/"}
            result = run_child("benchmarks._many_worker", job, args.timeout)
            result |= {"variant": label, "rep": rep, "loadavg": list(os.getloadavg())}
            print(
                f"  encode A/B {label:>14} ({args.small} records): {result['encodes']:4d} "
                f"encodes, mean {result['encode_mean_ms']:4.2f} longest "
                f"{result['encode_max_ms']:5.1f} ms; loop late max "
                f"{result['lateness_max_ms']:5.1f} ms own {result['lateness_own_max_ms']:5.1f} "
                f"ms p99 {result['lateness_p99_ms']:4.1f} ms, load {result['loadavg'][0]:.2f}",
                flush=True,
            )
            rows.append(result)
    return rows


def _thread_watch(server: Any, tmp: Path, args: argparse.Namespace) -> list[Any]:
    """One run of ours with ``_many_worker.ThreadWatch``: what every thread did during each
    stall of the process's threads over 15 ms (a diagnostic, not a figure)."""
    job = {
        **server.conn(),
        "client": "ours",
        "bucket": BUCKET,
        "prefix": "ours/watch/",
        "dir": str(tmp / f"small-{args.small}"),
        "part_size": parse_size(args.part_size),
        "routines": args.routines,
        "files_in_flight": args.files_in_flight,
        "checkpoint_dir": str(tmp / "cp-watch"),
        "keep_outcomes": args.keep_outcomes,
        "thread_watch": True,
    }
    result = run_child("benchmarks._many_worker", job, args.timeout)
    print(
        f"thread watch ({args.small} files): late max {result['lateness_max_ms']:.1f} ms, own "
        f"{result['lateness_own_max_ms']:.1f} ms; late ticks: {result['late_events'][:8]}"
    )
    for gap in result["thread_watch"]:
        print(f"  stall {gap['gap_ms']:6.1f} ms: [CPU ms, run-queue ms] {gap['threads']}")
    return [result]


def _profile(server: Any, tmp: Path, args: argparse.Namespace) -> list[Any]:
    """One run of ours under cProfile of the loop thread: what the loop does per file."""
    job = {
        **server.conn(),
        "client": "ours",
        "bucket": BUCKET,
        "prefix": "ours/profile/",
        "dir": str(tmp / f"small-{args.small}"),
        "part_size": parse_size(args.part_size),
        "routines": args.routines,
        "files_in_flight": args.files_in_flight,
        "checkpoint_dir": str(tmp / "cp-profile"),
        "keep_outcomes": args.keep_outcomes,
        "profile": args.profile,
    }
    rows: list[Any] = run_child("benchmarks._many_worker", job, args.timeout)["profile"]
    print(f"loop thread profile ({args.small} files; own ms, cumulative ms, calls):")
    for where, calls, own, total in rows:
        print(f"  {own:9.1f} {total:9.1f} {calls:8d}  {where}")
    return rows


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "files": runs[0]["files"],
        "bytes": runs[0]["bytes"],
        "files_per_second": median([r["files_per_second"] for r in runs]),
        "mib_per_second": median([r["mib_per_second"] for r in runs]),
        "lateness_max_ms": max(r["lateness_max_ms"] for r in runs),
        "lateness_p99_ms": median([r["lateness_p99_ms"] for r in runs]),
        "lateness_own_max_ms": max(r["lateness_own_max_ms"] for r in runs),
        "ticks_over_20ms": sum(r["ticks_over_20ms"] for r in runs),
        "loop_step_cpu_max_ms": max(r.get("loop_step_cpu_max_ms", nan) for r in runs),
        "loop_step_cpu_p999_ms": median([r.get("loop_step_cpu_p999_ms", nan) for r in runs]),
        "loop_steps_over_5ms": sum(r.get("loop_steps_over_5ms", 0) for r in runs),
        "idle_lateness_max_ms": max(r["idle"]["lateness_max_ms"] for r in runs),
        "idle_lateness_own_max_ms": max(r["idle"]["lateness_own_max_ms"] for r in runs),
        "idle_lateness_p99_ms": median([r["idle"]["lateness_p99_ms"] for r in runs]),
        "rss_growth": median([r["rss_growth"] for r in runs]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    small_size = parse_size(args.small_size)
    large_size = parse_size(args.large_size)
    cells: list[dict[str, Any]] = []
    encode_ab = _encode_ab(args) if args.encode_ab else None
    with temp_dir() as tmp:
        trees = {f"small-{args.small}": (args.small, small_size)}
        if args.large:
            trees[f"large-{args.large}"] = (args.large, large_size)
        for extra in parse_ints(args.small_counts) if args.small_counts else []:
            trees.setdefault(f"small-{extra}", (extra, small_size))
        for n, (name, (count, size)) in enumerate(trees.items()):
            _make_tree(tmp / name, count, size, n)
        with emulator(tmp / "server") as server:
            for name, (count, size) in trees.items():
                extra_count = name != f"small-{args.small}" and name.startswith("small-")
                clients: tuple[str, ...] = ("ours",) if extra_count else CLIENTS
                if args.control and name.startswith("small-"):
                    clients += ("ours-nocp",)
                if args.ab_oneshot and not extra_count and name.startswith("small-"):
                    clients += ("ours-1shot",)
                runs: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
                for rep in range(args.repeat):  # clients interleaved: A/B under one load
                    for client in clients:
                        tag = f"{name}-{rep}"
                        runs[client].append(_run(server, tmp, client, tmp / name, args, tag))
                for client in clients:
                    cells.append(
                        {"tree": name, "count": count, "file_size": size, "client": client}
                        | _summarise(runs[client])
                        | {"runs": runs[client]}
                    )
            profile = _profile(server, tmp, args) if args.profile else None
            watch = _thread_watch(server, tmp, args) if args.thread_watch else None
    rows = [
        (
            c["tree"],
            c["client"],
            c["files_per_second"],
            c["mib_per_second"],
            c["lateness_max_ms"],
            c["lateness_p99_ms"],
            c["lateness_own_max_ms"],
            c["loop_step_cpu_max_ms"],
            c["idle_lateness_max_ms"],
            c["rss_growth"] / MiB,
        )
        for c in cells
    ]
    print_table(
        [
            "tree",
            "client",
            "files/s",
            "MiB/s",
            "late max",
            "p99",
            "own max",
            "step CPU max",
            "idle max",
            "RSS + MiB",
        ],
        rows,
    )
    for name in {c["tree"] for c in cells}:
        pair = {c["client"]: c for c in cells if c["tree"] == name}
        if "ours" in pair and "oss2" in pair:
            ratio = pair["ours"]["files_per_second"] / pair["oss2"]["files_per_second"]
            print(f"{name}: ours / oss2 = {ratio:.2f}x files/s")
    return {
        "config": {
            "small": args.small,
            "small_size": small_size,
            "large": args.large,
            "large_size": large_size,
            "part_size": parse_size(args.part_size),
            "routines": args.routines,
            "files_in_flight": args.files_in_flight,
            "repeat": args.repeat,
            "small_counts": args.small_counts,
            "keep_outcomes": args.keep_outcomes,
            "control": args.control,
            "ab_oneshot": args.ab_oneshot,
            "idle_seconds": args.idle_seconds,
        },
        "note": "shared 2-core machine, loaded by other engineers' test runs: see loadavg",
        "cells": cells,
        "profile": profile,
        "thread_watch": watch,
        "encode_ab": encode_ab,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks many", description=__doc__)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--small-size", default="4KiB")
    parser.add_argument("--large", type=int, default=100)
    parser.add_argument("--large-size", default="8MiB")
    parser.add_argument("--part-size", default="2MiB")
    parser.add_argument("--routines", type=int, default=8)
    parser.add_argument("--files-in-flight", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--small-counts", default="", help="e.g. 2000: ours only, for memory")
    parser.add_argument(
        "--keep-outcomes",
        action="store_true",
        help="ours keeps every FileOutcome (default: only the problems, as the CLI does)",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="also run ours without a checkpoint directory (no manifest) on the small trees",
    )
    parser.add_argument(
        "--ab-oneshot",
        action="store_true",
        help="also run ours re-encoding every manifest record per rewrite (before the fix)",
    )
    parser.add_argument(
        "--encode-ab",
        type=float,
        default=0,
        metavar="SECONDS",
        help="also measure the loop while a thread only encodes a --small-record manifest",
    )
    parser.add_argument(
        "--thread-watch",
        action="store_true",
        help="also run ours with a per-thread schedstat watcher (diagnostic of stalls)",
    )
    parser.add_argument("--idle-seconds", type=float, default=2.0, help="idle probe duration")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also profile ours' loop thread on the small tree; print the top N functions",
    )
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--name", default="many")
    args = parser.parse_args(argv)
    payload = run(args)
    path = save_results(args.name, payload, args.results_dir)
    print(f"saved {path}")
