"""Scaling table: ``python -m benchmarks scaling [--quick] [options]`` (issue 13.1, 13.2, 13.4).

aiooss_resume alone, routines x part size (default 1, 2, 4, 8, 16, 64 x 1, 8, 64 MiB of a 1 GiB
file), each upload in a fresh child process (``benchmarks._worker``): MiB/s, client CPU
s/GiB, peak RSS growth and event-loop lateness (a 1 ms ticker on the upload's own loop; the
worst tick, its p99, and the worst tick less the loop thread's run-queue wait, which is the
part the client itself causes). Measured in the same run, interleaved with the uploads:

* ``idle``: the ticker alone in a child process, no upload: the machine's lateness noise
  floor at that moment (other processes on a shared machine delay any thread);
* ``socket x1``: ``pread`` + ``sendall`` of the file over one loopback connection to a
  discarding server (``bench_ceiling.socket_transfer``): the one-connection ceiling;
* ``--loops asyncio,uvloop``: every cell on both event loops (uvloop: ``pip install
  aiooss_resume[uvloop]``);
* ``--servers emulator,sink``: against the OSS emulator (discard store) and the minimal sink;
* ``--variants "name:knob=value,...;name2:..."``: engine tuning variants side by side (the
  A/B of a change; knobs in ``_worker.KNOBS``), e.g.
  ``--variants "on:stagger=true;off:stagger=false"``. A variant ``rev=COMMIT`` runs that
  git revision of the library (and of its worker), extracted with ``git archive``, so a
  change is measured against the code before it in the same run:
  ``--variants "before:rev=05224b7;after:"``.

Repetitions are interleaved (every cell once, then again), medians reported. Results go to
``results/scaling-SIZE[-suffix].json`` and the plot to ``docs/img/scaling.png`` (``--plot``).
``--quick``: 512 MiB, part sizes 8 and 64 MiB, routines 1, 4, 16, 64 (about a minute).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import itertools
import json
import os
import subprocess
import tarfile
from math import nan
from pathlib import Path
from typing import Any

from ._common import (
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
from .bench_ceiling import socket_transfer
from .bench_upload import run_one

ROOT = Path(__file__).resolve().parent.parent
LATENESS_GOAL_MS = 10.0


def parse_variants(text: str) -> dict[str, dict[str, Any]]:
    """``"base:;big=chunk_size=4194304,write_slice=0"`` -> {name: knobs}."""
    variants: dict[str, dict[str, Any]] = {}
    for item in filter(None, (x.strip() for x in text.split(";"))):
        name, _, rest = item.partition(":") if ":" in item else item.partition("=")
        knobs: dict[str, Any] = {}
        for pair in filter(None, (x.strip() for x in rest.split(","))):
            key, eq, value = pair.partition("=")
            if not eq:
                raise SystemExit(f"bad knob {pair!r} in variant {name!r} (use knob=value)")
            literal = key != "rev" and value[:1] in "-0123456789tfn[{"  # a rev is a name
            knobs[key] = json.loads(value) if literal else value
        variants[name.strip()] = knobs
    if not variants:
        raise SystemExit("--variants names no variant")
    return variants


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="512MiB, parts 8,64, routines 1,4,16,64"
    )
    parser.add_argument("--size", default=None, help="file size (default 1GiB)")
    parser.add_argument("--part-sizes", default=None, help="MiB, comma separated (1,8,64)")
    parser.add_argument("--routines", default=None, help="comma separated (1,2,4,8,16,64)")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved repetitions")
    parser.add_argument("--loops", default="asyncio", help="asyncio,uvloop")
    parser.add_argument("--servers", default="emulator", help="emulator,sink")
    parser.add_argument(
        "--variants",
        default="default:",
        help="engine knob variants, 'name:knob=value,...;name2:...' (see _worker.KNOBS)",
    )
    parser.add_argument("--tls", action="store_true", help="HTTPS with a run-time certificate")
    parser.add_argument("--no-checkpoint", action="store_true", help="checkpointing off")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the socket ceiling")
    parser.add_argument("--idle-seconds", type=float, default=1.0, help="idle probe duration")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per upload")
    parser.add_argument("--name", default=None, help="results file name (default scaling-SIZE)")
    parser.add_argument("--results-dir", default=None, help="write the JSON there instead")
    parser.add_argument(
        "--plot",
        default=None,
        help="write the plot there (default docs/img/scaling.png for a full run into "
        "benchmarks/results; 'none' to skip; needs matplotlib)",
    )


def _settings(args: argparse.Namespace) -> tuple[int, list[int], list[int]]:
    quick = args.quick
    size = parse_size(args.size or ("512MiB" if quick else "1GiB"))
    parts = parse_ints(args.part_sizes or ("8,64" if quick else "1,8,64"))
    routines = parse_ints(args.routines or ("1,4,16,64" if quick else "1,2,4,8,16,64"))
    return size, [p * MiB for p in parts], routines


def _summarize(runs: list[dict[str, Any]], size: int) -> dict[str, Any]:
    gib = size / GiB
    return {
        "n": len(runs),
        "mib_s": median([size / MiB / r["seconds"] for r in runs]),
        "mib_s_all": [round(size / MiB / r["seconds"], 1) for r in runs],
        "cpu_s_per_gib": median([(r["cpu_user"] + r["cpu_sys"]) / gib for r in runs]),
        "server_cpu_s_per_gib": median([r["server_cpu"] / gib for r in runs]),
        "rss_growth_mib": median([(r["rss_peak"] - r["rss_before"]) / MiB for r in runs]),
        "lateness_max_ms": median([r["lateness_max_ms"] for r in runs]),
        "lateness_max_ms_worst": max(r["lateness_max_ms"] for r in runs),
        "lateness_p99_ms": median([r["lateness_p99_ms"] for r in runs]),
        "lateness_own_max_ms": median([r["lateness_own_max_ms"] for r in runs]),
        "lateness_own_max_ms_worst": max(r["lateness_own_max_ms"] for r in runs),
        "loadavg1": median([r["loadavg1"] for r in runs]),
        # the loop's own CPU per iteration (asyncio only; NaN on uvloop): see _worker.StepProbe
        "loop_step_cpu_max_ms": median([r.get("loop_step_cpu_max_ms", nan) for r in runs]),
        "loop_step_cpu_p999_ms": median([r.get("loop_step_cpu_p999_ms", nan) for r in runs]),
        "minor_faults_per_gib": median([r.get("minor_faults", nan) / gib for r in runs]),
    }


def checkout(rev: str, dest: Path) -> tuple[Path, str]:
    """Extract git revision ``rev`` of this repository into ``dest``; return it and the commit."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if commit.returncode != 0:
        raise SystemExit(f"unknown git revision {rev!r}: {commit.stderr.strip()}")
    sha = commit.stdout.strip()
    tar = subprocess.run(
        ["git", "archive", "--format=tar", sha],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    target = dest / f"rev-{sha[:12]}"
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(target, filter="data")
    return target, sha


def run(args: argparse.Namespace) -> dict[str, Any]:
    size, part_sizes, routines_list = _settings(args)
    loops = [x.strip() for x in args.loops.split(",") if x.strip()]
    servers = [x.strip() for x in args.servers.split(",") if x.strip()]
    variants = parse_variants(args.variants)
    revisions: dict[str, tuple[Path, str]] = {}  # variant -> (checkout, commit)
    for loop in loops:
        if loop not in ("asyncio", "uvloop"):
            raise SystemExit(f"unknown loop {loop!r} (asyncio or uvloop)")
        if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
            raise SystemExit("uvloop is not installed: pip install aiooss_resume[uvloop]")
    cells = list(
        itertools.product(servers, variants, loops, part_sizes, routines_list)
    )  # (server, variant, loop, part, routines)
    runs: dict[tuple[Any, ...], list[dict[str, Any]]] = {c: [] for c in cells}
    idle: list[dict[str, Any]] = []
    ceiling: list[float] = []
    with temp_dir() as tmp:
        for name, knobs in variants.items():
            if "rev" in knobs:
                revisions[name] = checkout(str(knobs["rev"]), tmp)
                print(f"  variant {name}: library at {revisions[name][1][:12]}", flush=True)
        path = make_data_file(tmp / "data.bin", size)
        for rep in range(args.repeat):
            if not args.no_ceiling:
                ceiling.append(socket_transfer(path, size, 1))
                print(f"  rep {rep + 1}: socket x1 ceiling {ceiling[-1]:8.1f} MiB/s", flush=True)
            idle.append(
                run_child(
                    "benchmarks._worker",
                    {"client": "idle", "idle_seconds": args.idle_seconds},
                    args.timeout,
                )
            )
            print(
                f"  rep {rep + 1}: idle probe, late max {idle[-1]['lateness_max_ms']:6.1f} ms "
                f"(own {idle[-1]['lateness_own_max_ms']:5.1f})",
                flush=True,
            )
            for server_name in servers:
                with emulator(tmp / f"server-{server_name}", server_name, tls=args.tls) as server:
                    for cell in cells:
                        if cell[0] != server_name:
                            continue
                        _, variant, loop, part_size, routines = cell
                        result = _one(args, server, tmp, path, size, cell, variants, rep, revisions)
                        runs[cell].append(result)
                        cpu = (result["cpu_user"] + result["cpu_sys"]) / (size / GiB)
                        print(
                            f"  rep {rep + 1} {server_name} {variant} {loop:>7} "
                            f"part {fmt_size(part_size):>6} x{routines:<3}: "
                            f"{size / MiB / result['seconds']:8.1f} MiB/s cpu {cpu:5.2f} s/GiB "
                            f"late {result['lateness_max_ms']:6.1f} ms "
                            f"(own {result['lateness_own_max_ms']:5.1f}, "
                            f"step CPU {result.get('loop_step_cpu_max_ms', nan):4.1f})",
                            flush=True,
                        )
    return {
        "size": size,
        "tls": args.tls,
        "checkpoint": not args.no_checkpoint,
        "repeat": args.repeat,
        "loadavg_at_start_and_end": None,
        "variants": variants,
        "variant_revisions": {name: sha for name, (_, sha) in revisions.items()},
        "ceiling_socket_x1_mib_s": median(ceiling) if ceiling else None,
        "ceiling_socket_x1_all": [round(x, 1) for x in ceiling],
        "idle": {
            "lateness_max_ms": median([r["lateness_max_ms"] for r in idle]),
            "lateness_max_ms_all": [round(r["lateness_max_ms"], 2) for r in idle],
            "lateness_own_max_ms": median([r["lateness_own_max_ms"] for r in idle]),
            "lateness_p99_ms": median([r["lateness_p99_ms"] for r in idle]),
            "loadavg1": [r["loadavg1"] for r in idle],
        },
        "cells": [
            {
                "server": server_name,
                "variant": variant,
                "loop": loop,
                "part_size": part_size,
                "routines": routines,
                **_summarize(runs[(server_name, variant, loop, part_size, routines)], size),
                "runs": runs[(server_name, variant, loop, part_size, routines)],
            }
            for server_name, variant, loop, part_size, routines in cells
        ],
    }


def _one(
    args: argparse.Namespace,
    server: Any,
    tmp: Path,
    path: Path,
    size: int,
    cell: tuple[Any, ...],
    variants: dict[str, dict[str, Any]],
    rep: int,
    revisions: dict[str, tuple[Path, str]],
) -> dict[str, Any]:
    server_name, variant, loop, part_size, routines = cell
    knobs = {k: v for k, v in variants[variant].items() if k != "rev"}
    job_extra = {"loop": loop, "knobs": knobs}
    return run_one(
        server,
        tmp,
        path,
        size,
        "ours",
        part_size,
        routines,
        key=f"scaling/{server_name}/{variant}/{loop}/{part_size}/{routines}/{rep}",
        checkpoint=not args.no_checkpoint,
        timeout=args.timeout,
        extra=job_extra,
        cwd=revisions[variant][0] if variant in revisions else None,
    )


def report(doc: dict[str, Any]) -> None:
    size = doc["size"]
    ceiling = doc["ceiling_socket_x1_mib_s"]
    print(
        f"\nScaling, {fmt_size(size)}{' over TLS' if doc['tls'] else ''} (medians of "
        f"{doc['repeat']}; lateness: max tick of a 1 ms probe, 'own' = less run-queue wait)\n"
    )
    idle = doc["idle"]
    print(
        f"idle probe (no upload): late max {idle['lateness_max_ms']:.1f} ms, own "
        f"{idle['lateness_own_max_ms']:.1f} ms; socket x1 ceiling: "
        + (f"{ceiling:,.0f} MiB/s" if ceiling else "not measured")
        + "\n"
    )
    print_table(
        [
            "server",
            "variant",
            "loop",
            "part",
            "routines",
            "MiB/s",
            "% of socket x1",
            "CPU s/GiB",
            "RSS growth MiB",
            "late max ms",
            "late p99 ms",
            "own max ms",
            "step CPU max ms",
            "faults k/GiB",
        ],
        [
            [
                c["server"],
                c["variant"],
                c["loop"],
                fmt_size(c["part_size"]),
                c["routines"],
                c["mib_s"],
                100 * c["mib_s"] / ceiling if ceiling else float("nan"),
                c["cpu_s_per_gib"],
                c["rss_growth_mib"],
                c["lateness_max_ms"],
                c["lateness_p99_ms"],
                c["lateness_own_max_ms"],
                c["loop_step_cpu_max_ms"],
                c.get("minor_faults_per_gib", float("nan")) / 1000,
            ]
            for c in doc["cells"]
        ],
    )


def plot(doc: dict[str, Any], output: Path) -> Path:
    """Four panels against routines: MiB/s, CPU s/GiB, RSS growth, loop lateness."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.6))
    series = sorted({(c["server"], c["variant"], c["loop"], c["part_size"]) for c in doc["cells"]})
    styles = {"asyncio": "-", "uvloop": "--"}
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    parts = sorted({c["part_size"] for c in doc["cells"]})
    others = sorted({(c["server"], c["variant"]) for c in doc["cells"]})
    panels = [
        ("mib_s", "MiB/s (median)"),
        ("cpu_s_per_gib", "client CPU s/GiB"),
        ("rss_growth_mib", "peak RSS growth MiB"),
        ("lateness_own_max_ms", "loop lateness: own part of the worst tick, ms"),
    ]
    for server, variant, loop, part in series:
        cells = sorted(
            (
                c
                for c in doc["cells"]
                if (c["server"], c["variant"], c["loop"], c["part_size"])
                == (server, variant, loop, part)
            ),
            key=lambda c: c["routines"],
        )
        color = colors[(parts.index(part) + 3 * others.index((server, variant))) % len(colors)]
        label = f"{fmt_size(part)} parts, {loop}"
        if len(others) > 1:
            label += f", {server}/{variant}"
        x = [c["routines"] for c in cells]
        for ax, (field, _) in zip(axes, panels, strict=True):
            ax.plot(
                x, [c[field] for c in cells], marker="o", ls=styles[loop], color=color, label=label
            )
        if loop == "asyncio":
            axes[3].plot(
                x, [c["loop_step_cpu_max_ms"] for c in cells], marker=".", ls=":", color=color
            )
    if doc.get("ceiling_socket_x1_mib_s"):
        axes[0].axhline(
            doc["ceiling_socket_x1_mib_s"], color="grey", ls=":", lw=1, label="socket x1 ceiling"
        )
        axes[0].axhline(
            0.6 * doc["ceiling_socket_x1_mib_s"], color="grey", ls="-.", lw=0.8, label="60% of it"
        )
    axes[3].axhline(LATENESS_GOAL_MS, color="tab:red", ls="--", lw=0.8, label="goal 10 ms")
    axes[3].axhline(
        doc["idle"]["lateness_max_ms"],
        color="grey",
        ls=":",
        lw=1,
        label="idle probe's worst tick (no upload)",
    )
    routines = sorted({c["routines"] for c in doc["cells"]})
    for ax, (_, title) in zip(axes, panels, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(routines, [str(r) for r in routines])
        ax.set_xlabel("routines")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[3].text(
        0.02,
        0.97,
        "own = worst tick less run-queue wait; dotted: longest loop step's CPU (asyncio)",
        transform=axes[3].transAxes,
        fontsize=7,
        va="top",
    )
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=8, frameon=False)
    load = doc["machine"]["loadavg_at_save"]
    fig.suptitle(
        f"aiooss_resume upload of {fmt_size(doc['size'])}{' over TLS' if doc['tls'] else ''}, "
        f"loopback, {doc['machine']['nproc']} cores shared with the server "
        f"(1-min load when saved {load[0]:.1f}); {doc['command']}",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.1, 1, 0.94))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks scaling", description=__doc__)
    add_arguments(parser)
    parser.add_argument("--replot", default=None, help="only plot this results JSON (to --plot)")
    args = parser.parse_args(argv)
    if args.replot:
        source = Path(args.replot)
        target = Path(args.plot or ROOT / "docs" / "img" / f"{source.stem}.png")
        print(f"plot {plot(json.loads(source.read_text()), target)}")
        return
    load0 = [round(x, 2) for x in os.getloadavg()]
    doc = run(args)
    doc["loadavg_at_start_and_end"] = [load0, [round(x, 2) for x in os.getloadavg()]]
    report(doc)
    suffix = "-quick" if args.quick else ""
    suffix += "-tls" if args.tls else ""
    name = args.name or f"scaling-{fmt_size(doc['size'])}{suffix}"
    directory = Path(args.results_dir) if args.results_dir else None
    saved = save_results(name, doc, directory)
    print(f"\nsaved {saved}")
    target = args.plot
    if target is None:
        target = str(ROOT / "docs" / "img" / f"{name}.png") if directory is None else "none"
    if target != "none":
        try:
            written = plot(json.loads(saved.read_text()), Path(target))
        except ImportError:
            print("matplotlib is not installed: no plot (pip install matplotlib)")
        else:
            print(f"plot {written}")
