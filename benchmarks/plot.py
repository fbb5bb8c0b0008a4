"""Plot throughput vs routines: ``python -m benchmarks plot [--input ...] [--output ...]``.

One panel per part size, one line per client (median MiB/s), from an upload results file
(default ``benchmarks/results/upload-1GiB.json``). If the matching ``-sink`` results file
exists, ours against the minimal sink is drawn dashed, and the ceilings from
``results/ceiling.json`` (loopback socket over 1 and 4 connections) as horizontal lines.
Needs matplotlib (not in the ``bench`` extra: ``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._common import RESULTS_DIR, fmt_size

ROOT = Path(__file__).resolve().parent.parent
LABELS = {
    "ours": "aiooss_resume",
    "oss2": "oss2.resumable_upload",
    "v2": "alibabacloud-oss-v2 Uploader",
}
COLORS = {"ours": "tab:blue", "oss2": "tab:orange", "v2": "tab:green"}


def _series(doc: dict[str, Any], client: str, part: int) -> tuple[list[int], list[float]]:
    cells = sorted(
        (c for c in doc["cells"] if c["client"] == client and c["part_size"] == part),
        key=lambda c: c["routines"],
    )
    return [c["routines"] for c in cells], [c["mib_s"] for c in cells]


def plot(input_path: Path, output: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads(input_path.read_text())
    sink_path = input_path.with_name(input_path.stem + "-sink.json")
    sink = json.loads(sink_path.read_text()) if sink_path.exists() else None
    ceiling_path = input_path.with_name("ceiling.json")
    ceilings = json.loads(ceiling_path.read_text())["ceilings"] if ceiling_path.exists() else {}
    parts = sorted({c["part_size"] for c in doc["cells"]})
    clients = [c for c in LABELS if any(x["client"] == c for x in doc["cells"])]
    fig, axes = plt.subplots(1, len(parts), figsize=(4.6 * len(parts), 4.2), sharey=True)
    if len(parts) == 1:
        axes = [axes]
    for ax, part in zip(axes, parts, strict=True):
        for client in clients:
            x, y = _series(doc, client, part)
            ax.plot(x, y, marker="o", color=COLORS[client], label=LABELS[client])
        if sink is not None:
            x, y = _series(sink, "ours", part)
            if x:
                ax.plot(
                    x, y, marker="o", ls="--", color=COLORS["ours"], label="aiooss_resume → sink"
                )
        for name, style in (("socket x1", ":"), ("socket x4", "-.")):
            for key, value in ceilings.items():
                if key.startswith(name):
                    label = f"loopback {name} (pread+sendall)"
                    ax.axhline(value["mib_s"], color="grey", ls=style, lw=1, label=label)
        ax.axhline(1024, color="tab:red", ls="--", lw=0.8, label="target: 1 GiB/s")
        ax.set_xscale("log", base=2)
        routines = sorted({c["routines"] for c in doc["cells"]})
        ax.set_xticks(routines, [str(r) for r in routines])
        ax.set_title(f"{fmt_size(part)} parts")
        ax.set_xlabel("routines (parallel parts)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("MiB/s (median)")
    axes[0].set_ylim(bottom=0)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(
        f"Upload of {fmt_size(doc['size'])} over loopback to the OSS emulator (discard store; "
        f"dashed: to the minimal sink), {doc['machine']['nproc']} cores shared by client "
        "and server",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.13, 1, 0.95))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks plot", description=__doc__)
    parser.add_argument("--input", type=Path, default=RESULTS_DIR / "upload-1GiB.json")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "img" / "throughput.png")
    args = parser.parse_args(argv)
    print(f"wrote {plot(args.input, args.output)}")
