"""CI smoke of the upload benchmark over TLS: it must run and write its JSON (issue 13).

Benchmarks are not timed tests: nothing here asserts a speed. A tiny upload (4 MiB in 1 MiB
parts, 2 routines) by every client against the emulator and the sink over HTTPS proves the
``--tls`` plumbing (run-time certificate, each client trusting its CA) end to end.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(
    command: list[str], tmp_path: Path, *, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a benchmark command from the repository's root with its scratch files under
    ``tmp_path``; it must exit 0 (its stderr's tail is the failure message)."""
    proc = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "BENCH_TMPDIR": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.sdk
@pytest.mark.timeout(240)
@pytest.mark.parametrize("server", ["emulator", "sink"])
def test_upload_benchmark_tls_smoke(tmp_path: Path, server: str) -> None:
    command = [sys.executable, "-m", "benchmarks", "upload", "--size", "4MiB"]
    command += ["--part-sizes", "1", "--routines", "2", "--key-repeat", "1", "--tls"]
    command += ["--server", server, "--results-dir", str(tmp_path)]
    proc = run_benchmark(command, tmp_path, timeout=200)
    suffix = "" if server == "emulator" else "-sink"
    doc = json.loads((tmp_path / f"upload-4MiB{suffix}-tls.json").read_text())
    assert doc["tls"] is True
    assert doc["server"] == server
    assert sorted(cell["client"] for cell in doc["cells"]) == ["oss2", "ours", "v2"]
    for cell in doc["cells"]:
        assert (cell["part_size"], cell["routines"], cell["n"]) == (1024 * 1024, 2, 1)
        assert cell["runs"][0]["seconds"] > 0
    assert "over TLS" in proc.stdout
    assert not list((ROOT / "benchmarks" / "results").glob("upload-4MiB*"))


@pytest.mark.timeout(240)
def test_stream_benchmark_smoke(tmp_path: Path) -> None:
    """``python -m benchmarks stream`` at a tiny size: it runs every mode and writes its JSON
    (RSS figures and the load average included); no speed or memory figure is asserted."""
    command = [sys.executable, "-m", "benchmarks", "stream", "--size", "4MiB"]
    command += ["--part-size", "1MiB", "--routines", "2", "--repeat", "1"]
    command += ["--results-dir", str(tmp_path)]
    run_benchmark(command, tmp_path, timeout=200)
    doc = json.loads((tmp_path / "stream-4MiB-1MiBx2.json").read_text())
    assert [cell["mode"] for cell in doc["cells"]] == ["stream-64KiB", "stream-16MiB", "file"]
    assert doc["bound_mib"] == (2 + 2) * 1 + 32
    assert len(doc["loadavg_start"]) == 3
    for cell in doc["cells"]:
        (run,) = cell["runs"]
        assert run["seconds"] > 0 and run["rss_peak"] > 0 and len(run["loadavg_before"]) == 3
    assert not list((ROOT / "benchmarks" / "results").glob("stream-4MiB*"))


@pytest.mark.sdk
@pytest.mark.timeout(240)
def test_download_benchmark_smoke(tmp_path: Path) -> None:
    """The download benchmark (issue 12.4) runs every client and writes its JSON."""
    command = [sys.executable, "-m", "benchmarks", "download", "--size", "4MiB"]
    command += ["--part-size", "1", "--routines", "2", "--repeat", "1"]
    command += ["--memory-part-sizes", "2", "--results-dir", str(tmp_path)]
    command += ["--clients", "ours,oss2,v2,ours-direct,ours-nowrite,ours-discard"]
    proc = run_benchmark(command, tmp_path, timeout=200)
    doc = json.loads((tmp_path / "download-4MiB.json").read_text())
    clients = sorted(cell["client"] for cell in doc["cells"])
    assert clients == ["oss2", "ours", "ours-direct", "ours-discard", "ours-nowrite", "v2"]
    for cell in doc["cells"]:
        assert (cell["part_size"], cell["routines"], cell["n"]) == (1024 * 1024, 2, 1)
        assert cell["runs"][0]["seconds"] > 0
        assert len(cell["loadavg1"]) == 1
        assert cell["lateness_own_max_ms"] >= 0
    assert doc["memory"][0]["part_size"] == 2 * 1024 * 1024
    assert "Ratios (same run)" in proc.stdout
    assert not list((ROOT / "benchmarks" / "results").glob("download-4MiB*"))


@pytest.mark.sdk
@pytest.mark.timeout(180)
def test_many_benchmark_smoke(tmp_path: Path) -> None:
    """``benchmarks many`` (issue 11.2) at toy scale: it runs both clients and writes its JSON."""
    command = [sys.executable, "-m", "benchmarks", "many", "--small", "40", "--large", "2"]
    command += ["--large-size", "300KiB", "--part-size", "100KiB", "--repeat", "1"]
    command += ["--small-counts", "20", "--results-dir", str(tmp_path)]
    command += ["--idle-seconds", "0.2", "--ab-oneshot", "--encode-ab", "0.3"]
    run_benchmark(command, tmp_path, timeout=150)
    doc = json.loads((tmp_path / "many.json").read_text())
    cells = {(c["tree"], c["client"]): c for c in doc["cells"]}
    assert set(cells) == {
        ("small-40", "ours"),
        ("small-40", "oss2"),
        ("large-2", "ours"),
        ("large-2", "oss2"),
        ("small-20", "ours"),
        ("small-40", "ours-1shot"),
    }
    assert cells[("small-40", "ours")]["files"] == 40
    assert cells[("small-40", "ours-1shot")]["files"] == 40
    run = cells[("small-40", "ours")]["runs"][0]
    assert run["loop_steps"] > 0 and run["loop_step_cpu_max_ms"] > 0  # StepProbe installed
    assert run["idle"]["lateness_max_ms"] >= 0  # the idle probe ran before the upload
    assert [r["variant"] for r in doc["encode_ab"]] == ["one-shot", "incremental"]
    assert all(r["encodes"] > 0 for r in doc["encode_ab"])
    assert cells[("large-2", "oss2")]["bytes"] == 2 * 300 * 1024
    assert all(len(c["runs"][0]["loadavg"]) == 3 for c in doc["cells"])


@pytest.mark.timeout(180)
def test_scaling_benchmark_smoke(tmp_path: Path) -> None:
    """``python -m benchmarks scaling`` runs and writes its JSON (no speed is asserted):
    a tiny table, with the idle probe, the socket ceiling, two engine variants, the
    library at a git revision (extracted and run side by side) and, if
    uvloop is installed, both event loops, as the full run has them."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        loops = ["asyncio"]
    else:
        loops = ["asyncio", "uvloop"]
    command = [sys.executable, "-m", "benchmarks", "scaling", "--size", "4MiB"]
    command += ["--part-sizes", "1", "--routines", "2", "--loops", ",".join(loops)]
    variants = "on:stagger=true;off:stagger=false;head:rev=HEAD"  # a knob A/B, a git revision
    command += ["--variants", variants, "--idle-seconds", "0.2"]
    command += ["--results-dir", str(tmp_path), "--plot", str(tmp_path / "scaling.png")]
    proc = run_benchmark(command, tmp_path, timeout=160)
    doc = json.loads((tmp_path / "scaling-4MiB.json").read_text())
    assert doc["ceiling_socket_x1_mib_s"] > 0
    assert doc["idle"]["lateness_max_ms"] >= 0
    assert len(doc["machine"]["loadavg_at_save"]) == 3
    cells = {(c["variant"], c["loop"], c["routines"]) for c in doc["cells"]}
    assert cells == {(v, lp, 2) for v in ("on", "off", "head") for lp in loops}
    assert re.fullmatch("[0-9a-f]{40}", doc["variant_revisions"]["head"])
    for cell in doc["cells"]:
        assert cell["n"] == 1 and cell["part_size"] == 1024 * 1024
        run = cell["runs"][0]
        assert run["seconds"] > 0 and run["loop"] == cell["loop"]
        if cell["loop"] == "asyncio":
            assert run["loop_steps"] > 0  # the step probe ran
    plot_written = (tmp_path / "scaling.png").exists()
    assert plot_written or "matplotlib is not installed" in proc.stdout
    assert not list((ROOT / "benchmarks" / "results").glob("scaling-4MiB*"))


def test_pagecache_floor_smoke(tmp_path: Path) -> None:
    """The new-file write floor (download follow-up) runs and writes its JSON."""
    command = [sys.executable, "-m", "benchmarks.pagecache_floor", "--size", "4MiB"]
    command += ["--threads", "1,2", "--gap", "0", "--repeat", "1"]
    command += ["--results-dir", str(tmp_path)]
    run_benchmark(command, tmp_path, timeout=60)
    doc = json.loads((tmp_path / "pagecache-floor.json").read_text())
    cells = {(c["threads"], c["state"]): c for c in doc["cells"]}
    assert sorted(cells) == [(1, "cold"), (1, "hot"), (2, "cold"), (2, "hot")]
    for cell in cells.values():
        assert cell["n"] == 1
        assert cell["runs"][0]["pwrite_s"] > 0
        assert "loadavg1" in cell["runs"][0]
    assert not list(tmp_path.glob("pagecache-*/floor.bin"))
