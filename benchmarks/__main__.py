"""``python -m benchmarks <name> [options]``: run one benchmark (``--help`` on each)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "crc": ("bench_crc", "CRC-64 libraries: speed, GIL, combine"),
    "upload": ("bench_upload", "the upload matrix: ours vs oss2 vs the v2 Uploader"),
    "ceiling": ("bench_ceiling", "loopback socket and CRC ceilings of this machine"),
    "checkpoint": ("bench_checkpoint", "checkpoint overhead at 10,000 parts"),
    "memory": ("bench_memory", "peak RSS growth, 1 GiB in 256 MiB parts"),
    "read": ("bench_read", "reading parts off the loop: pread on our limiter vs aiofiles"),
    "stream": ("bench_stream", "upload_stream: RSS growth and speed, 64 MiB parts x 4"),
    "download": ("bench_download", "download: ours vs oss2 resumable_download vs v2 Downloader"),
    "many": ("bench_many", "many files: 10,000 x 4 KiB and 100 large, ours vs oss2 threads"),
    "scaling": ("bench_scaling", "routines x part size: MiB/s, CPU, RSS, loop lateness (+plot)"),
    "plot": ("plot", "plot results/upload-*.json to docs/img/throughput.png"),
}


def usage() -> None:
    print("usage: python -m benchmarks <name> [options]\n")
    for name, (_, text) in BENCHMARKS.items():
        print(f"  {name:<11} {text}")


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        usage()
        raise SystemExit(0 if len(sys.argv) >= 2 else 2)
    name = sys.argv[1]
    if name not in BENCHMARKS:
        usage()
        raise SystemExit(f"unknown benchmark {name!r}")
    module = importlib.import_module(f"benchmarks.{BENCHMARKS[name][0]}")
    module.main(sys.argv[2:])


if __name__ == "__main__":
    main()
