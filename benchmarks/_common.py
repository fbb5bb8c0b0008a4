"""Shared plumbing: sizes, the temp data file, the emulator process, child runs, results."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BUCKET = "bench"

_UNITS = {"": 1, "b": 1, "k": KiB, "kib": KiB, "m": MiB, "mib": MiB, "g": GiB, "gib": GiB}


def parse_size(text: str) -> int:
    """``"1GiB"``, ``"256MiB"``, ``"100KiB"``, ``"64m"``, ``"12345"`` -> bytes."""
    s = text.strip().lower()
    digits = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(digits) :]
    if unit not in _UNITS or not digits:
        raise ValueError(f"bad size {text!r} (use e.g. 256MiB, 1GiB, 100KiB)")
    return int(float(digits) * _UNITS[unit])


def fmt_size(n: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n}B"


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@contextlib.contextmanager
def temp_dir(prefix: str = "aiooss-bench-") -> Iterator[Path]:
    """A scratch directory outside the repository (``$BENCH_TMPDIR`` or the system temp)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("BENCH_TMPDIR")))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_data_file(path: Path, size: int, seed: int = 20240601) -> Path:
    """Write ``size`` pseudo-random (incompressible, deterministic) bytes; leave them cached."""
    block = random.Random(seed).randbytes(16 * MiB + 4099)
    step = 1 * MiB
    with open(path, "wb") as f:
        written = 0
        turn = 0
        while written < size:
            n = min(step, size - written)
            start = (turn * 7919) % (len(block) - step)  # vary the content from chunk to chunk
            f.write(block[start : start + n])
            written += n
            turn += 1
    warm_cache(path)
    return path


def warm_cache(path: Path) -> None:
    """Read the file once so every client reads it from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = 0
        while chunk := os.pread(fd, 8 * MiB, offset):
            offset += len(chunk)
    finally:
        os.close(fd)


@dataclass
class Emulator:
    """The OSS emulator running in a separate process (``benchmarks._serve``)."""

    proc: subprocess.Popen[bytes]
    endpoint: str
    access_key_id: str
    access_key_secret: str
    region: str
    ca_file: str | None = None
    """The CA to trust when the server speaks HTTPS (``emulator(..., tls=True)``)."""

    def cpu_seconds(self) -> float:
        """User+sys CPU of the server process so far (for 'is the server the bottleneck')."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def conn(self) -> dict[str, str]:
        return {
            "endpoint": self.endpoint,
            "access_key_id": self.access_key_id,
            "access_key_secret": self.access_key_secret,
            "region": self.region,
            "ca_file": self.ca_file,
        }


@contextlib.contextmanager
def emulator(root: Path, server: str = "emulator", *, tls: bool = False) -> Iterator[Emulator]:
    """Start ``server`` in its own process: the OSS emulator (discard store) or the sink.

    ``tls``: it serves HTTPS with a certificate made at start; ``Emulator.ca_file`` is the CA.
    """
    root.mkdir(parents=True, exist_ok=True)
    if server == "emulator":
        cmd = ["-m", "benchmarks._serve", "--root", str(root), "--store", "discard"]
    elif server == "sink":
        cmd = ["-m", "benchmarks._sink"]
    else:
        raise ValueError(f"unknown server {server!r} (emulator or sink)")
    if tls:
        cmd += ["--tls-ca-file", str(root / "tls-ca.pem")]
    proc = subprocess.Popen(
        [sys.executable, *cmd],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the emulator process exited before printing its endpoint")
        info = json.loads(line)
        yield Emulator(proc=proc, **info)
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_child(
    module: str, job: dict[str, Any], timeout: float, *, cwd: Path | None = None
) -> dict[str, Any]:
    """Run ``python -m <module> <json job>`` and return the JSON it prints last.

    ``cwd``: the checkout to run it in (its ``aiooss_resume`` comes first on ``sys.path``)."""
    proc = subprocess.run(
        [sys.executable, "-m", module, json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(cwd or Path(__file__).resolve().parent.parent),
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{module} failed ({proc.returncode}) for {job.get('client')}:\n{proc.stderr[-3000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_at_save": [round(x, 2) for x in os.getloadavg()],
        "versions": {
            d: _version(d)
            for d in (
                "aiooss_resume",
                "aiohttp",
                "oss2",
                "alibabacloud-oss-v2",
                "fastcrc",
                "anycrc",
                "crcmod",
                "crcmod-plus",
                "psutil",
            )
        },
    }


def git_revision() -> str:
    """The commit measured, with ``+dirty`` when the package has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=10
        )
        return proc.stdout.strip() if proc.returncode == 0 else ""

    head = git("rev-parse", "--short=12", "HEAD")
    if not head:
        return "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--", "aiooss_resume") else "")


def save_results(name: str, payload: dict[str, Any], directory: Path | None = None) -> Path:
    """Write ``benchmarks/results/<name>.json`` (with the machine description and a timestamp).

    ``directory`` replaces ``benchmarks/results`` (the CI smoke writes to a temp dir).
    """
    directory = RESULTS_DIR if directory is None else directory
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    doc = {
        "benchmark": name,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python", "-m", "benchmarks", *sys.argv[1:]]),
        "git_revision": git_revision(),
        "machine": machine_info(),
        **payload,
    }
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table (so it can be pasted into docs/benchmarks.md as is)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)
