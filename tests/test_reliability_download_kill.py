"""kill -9 of a download at random moments, then resume until success (issue 12.3).

A subprocess (``tests/reliability_download_worker.py``) downloads an object with
``checkpoint=True`` from an in-process emulator; the test SIGKILLs it at a seeded-random
point, chosen among:

* ``range``: when the n-th GetObject of the run reaches the server (other ranges mid-body);
* ``timer``: a random delay after the worker is ready (anywhere: HEAD, ranges, the rename);
* ``head``: when the HEAD reaches the server;
* ``cp-write``: halfway through writing the n-th checkpoint's temporary file;
* ``cp-replace``: after the n-th checkpoint is fsynced, just before its rename;
* ``rename``: just before the complete temp file is renamed over the destination;
* ``renamed``: just after it, before the checkpoint's deletion (the next run must then
  finish from the file in place, without a GetObject).

Each iteration kills 1-3 runs, then resumes (in-process, or in a last subprocess) until
success. Asserted after every kill:

* nothing at the destination path (a kill after the rename leaves the whole, exact file);
* the checkpoint, if any, decodes, names this object, and every range it records holds the
  object's bytes in the temp file (a recorded range is a written range); the one exception
  is a stale checkpoint over a new, empty temp file (a kill between a run's rename and its
  checkpoint's deletion, then a kill of the next run before its first checkpoint write),
  whose ranges a resume ignores since they end beyond the temp file;
* no file in the directory but the destination, ``FILE.tmp``, ``FILE.dcp``,
  ``FILE.dcp.lock`` and the temporary file of a checkpoint write the kill cut short
  (``.FILE.dcp.<pid>.<hex>.tmp``, never read again; counted).

And after the final run: the destination is byte-exact, no ``.tmp``, ``.dcp`` or lock file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import random
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from aiooss_resume._checkpoint import decode_download_checkpoint
from aiooss_resume._crc64 import crc64
from aiooss_resume.testing import Fault, FaultContext, OssServer

from .reliability_helpers import BUCKET, KIB, MIB, make_client, make_file, wait_until

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("reliability_download_worker.py")
MODES = (
    "range", "range", "range", "timer", "timer", "head", "cp-write", "cp-replace", "rename",
    "renamed",
)  # fmt: skip


@dataclass
class Killer:
    """What the server-side dispatcher does to the current run's requests."""

    key: str = ""
    pid: int = 0
    mode: str = ""
    nth: int = 0
    seen: int = 0
    fired: bool = False

    def kill(self) -> None:
        if not self.fired and self.pid:
            self.fired = True
            with contextlib.suppress(ProcessLookupError):  # it may have just exited
                os.kill(self.pid, signal.SIGKILL)


@dataclass
class Stats:
    kills: int = 0
    iterations: int = 0
    by_mode: dict[str, int] = field(default_factory=dict)
    refetched: int = 0  # ranges fetched again after a kill (written, not yet recorded)
    finished_in_place: int = 0  # resumes after a "renamed" kill: no GetObject at all
    cp_tmp_left: int = 0
    locks_left: int = 0  # a kill between the checkpoint's and the lock's removal


def _dispatcher(killer: Killer):  # type: ignore[no-untyped-def]
    async def hook(ctx: FaultContext) -> web.StreamResponse | None:
        if ctx.key != killer.key or killer.fired or not killer.pid:
            return None
        if killer.mode == "range" and ctx.operation == "GetObject":
            killer.seen += 1
            if killer.seen == killer.nth:
                killer.kill()
        elif killer.mode == "head" and ctx.operation == "HeadObject":
            killer.kill()
        return None

    return hook


async def _run_worker(
    server: OssServer,
    killer: Killer,
    rng: random.Random,
    *,
    key: str,
    dest: Path,
    part_size: int,
    routines: int,
    mode: str | None,
    ranges: int,
) -> tuple[bool, int]:
    """One worker run; returns (killed, GetObject requests it made)."""
    creds = server.credentials
    args = [
        sys.executable,
        str(WORKER),
        "--endpoint", server.endpoint,
        "--access-key-id", creds.access_key_id,
        "--access-key-secret", creds.access_key_secret,
        "--region", server.region,
        "--bucket", BUCKET,
        "--key", key,
        "--file", str(dest),
        "--part-size", str(part_size),
        "--routines", str(routines),
    ]  # fmt: skip
    if mode == "cp-write":
        args += ["--trap", f"write:{rng.randint(1, 4)}"]
    elif mode == "cp-replace":
        args += ["--trap", f"replace:{rng.randint(1, 4)}"]
    elif mode in ("rename", "renamed"):
        args += ["--trap", mode]
    start = len(server.requests)
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    killer.__init__(key=key, pid=proc.pid, mode=mode or "", nth=rng.randint(1, ranges))  # type: ignore[misc]
    lines: list[str] = []
    timer: asyncio.TimerHandle | None = None
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    break
                line = raw.decode().rstrip()
                lines.append(line)
                if line == "READY" and mode == "timer":
                    delay = rng.uniform(0.0, 0.15)
                    timer = asyncio.get_running_loop().call_later(delay, killer.kill)
                elif line.startswith("TRAP"):
                    killer.kill()
            _, err = await proc.communicate()
    finally:
        if timer is not None:
            timer.cancel()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    killer.pid = 0
    assert await wait_until(lambda: sum(server.stats.in_flight.values()) == 0, limit=10)
    output = "\n".join(lines) + "\n" + err.decode(errors="replace")
    finished = any(line.startswith("DONE") for line in lines)
    killed = proc.returncode == -signal.SIGKILL and not finished
    if not killed:
        assert finished, f"worker failed ({proc.returncode}):\n{output}"
    gets = sum(1 for r in server.requests[start:] if r.operation == "GetObject" and r.key == key)
    return killed, gets


def _assert_state_after_kill(dest: Path, data: bytes, key: str, stats: Stats) -> None:
    directory = dest.parent
    name = dest.name
    allowed = {name, f"{name}.tmp", f"{name}.dcp", f"{name}.dcp.lock"}
    for path in directory.iterdir():
        if path.name.startswith("src-") or path.name == "server":
            continue
        if path.name.startswith(f".{name}.dcp.") and path.name.endswith(".tmp"):
            continue  # a checkpoint write cut short by the kill (never read again)
        assert path.name in allowed, f"stray file {path.name} after a kill"
    if dest.exists():  # only a kill after the rename: then it is the whole object
        assert dest.read_bytes() == data, "a partial or wrong file at the destination"
    dcp = Path(f"{dest}.dcp")
    if not dcp.exists():
        return
    cp = decode_download_checkpoint(dcp.read_bytes())  # a checkpoint left behind decodes
    assert (cp.bucket, cp.key, cp.size) == (BUCKET, key, len(data))
    tmp_path = Path(f"{dest}.tmp")
    if not tmp_path.exists():
        # Killed between the rename and the checkpoint's removal: the file is in place.
        assert dest.exists(), "a checkpoint without its temp file, and no destination"
        return
    tmp = tmp_path.read_bytes()
    for part in cp.parts:
        start = (part.number - 1) * cp.part_size
        chunk = tmp[start : start + part.size]
        if not tmp and dest.exists():
            # The checkpoint of a run killed between its rename and the checkpoint's
            # deletion, and a new run killed before its first checkpoint write: its temp
            # file is new (empty), and a resume ignores ranges beyond the temp file's end.
            continue
        assert len(chunk) == part.size, f"range {part.number} recorded beyond the temp file"
        assert crc64(chunk) == part.crc64, f"range {part.number}: recorded CRC over other bytes"
        assert chunk == data[start : start + part.size], f"range {part.number} bytes differ"


async def _iteration(server: OssServer, killer: Killer, tmp: Path, seed: int, stats: Stats) -> None:
    rng = random.Random(seed)
    key = f"dkill/{seed}.bin"
    size = 2 * MIB + rng.randint(0, 150 * KIB)
    part_size = rng.choice([100 * KIB, 128 * KIB, 256 * KIB])
    routines = rng.choice([4, 4, 3, 2])
    ranges = -(-size // part_size)
    src = tmp / f"src-{seed}.bin"
    data = make_file(src, size, seed)
    async with make_client(server) as client:
        await client.bucket(BUCKET).upload_file(key, src, 1 * MIB, routines=2)
    work = tmp / f"d-{seed}"
    work.mkdir()
    dest = work / "out.bin"
    total_gets = 0
    last_killed = False
    mode = ""
    for attempt in range(rng.randint(1, 3)):
        mode = rng.choice([m for m in MODES if attempt == 0 or m != "head"])
        killed, gets = await _run_worker(
            server, killer, rng, key=key, dest=dest, part_size=part_size, routines=routines,
            mode=mode, ranges=ranges,
        )  # fmt: skip
        total_gets += gets
        last_killed = killed
        if not killed:
            break
        stats.kills += 1
        stats.by_mode[mode] = stats.by_mode.get(mode, 0) + 1
        _assert_state_after_kill(dest, data, key, stats)
        if dest.exists() and not Path(f"{dest}.dcp").exists():
            # Killed after the rename and the checkpoint's removal: nothing to resume. The
            # kill may also have beaten the lock file's removal: a leftover must not be
            # held (flock dies with its process), and is harmless.
            last_killed = False
            lock = Path(f"{dest}.dcp.lock")
            if lock.exists():
                with lock.open("rb+") as f:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if held
                lock.unlink()
                stats.locks_left += 1
            break
    if last_killed:
        if rng.random() < 0.25:  # resume in another process
            killed, gets = await _run_worker(
                server, killer, rng, key=key, dest=dest, part_size=part_size,
                routines=routines, mode=None, ranges=ranges,
            )  # fmt: skip
            total_gets += gets
        else:
            start = len(server.requests)
            async with make_client(server) as client:
                result = await client.bucket(BUCKET).download_file(
                    key, dest, part_size, routines=routines, checkpoint=True
                )
            assert result.size == size
            gets = sum(
                1 for r in server.requests[start:] if r.operation == "GetObject" and r.key == key
            )
            if mode == "renamed":  # the file was in place: recognised, not fetched again
                assert (gets, result.parts_downloaded) == (0, 0)
                stats.finished_in_place += 1
            total_gets += gets
    assert dest.read_bytes() == data
    left = sorted(p.name for p in work.iterdir())
    stray = [n for n in left if not (n.startswith(".out.bin.dcp.") and n.endswith(".tmp"))]
    assert stray == ["out.bin"], f"left after success: {left}"
    stats.cp_tmp_left += len(left) - 1
    stats.refetched += total_gets - ranges
    stats.iterations += 1
    assert server.stats.internal_errors == 0


async def _kill_suite(tmp_path: Path, kills: int, base_seed: int) -> Stats:
    """Iterate (each with a fresh object) until ``kills`` processes were killed."""
    stats = Stats()
    killer = Killer()
    async with OssServer(root=tmp_path / "server") as server:
        server.faults.add(Fault(times=None, hook=_dispatcher(killer)))
        i = 0
        while stats.kills < kills:
            seed = base_seed + i
            i += 1
            try:
                await _iteration(server, killer, tmp_path, seed, stats)
            except BaseException as exc:
                exc.add_note(f"download kill -9 iteration {i}, seed={seed}")
                raise
    print(f"download kill -9 suite: {stats}")
    return stats


@pytest.mark.timeout(120)
async def test_download_kill9_random_moments_ci(tmp_path: Path) -> None:
    stats = await _kill_suite(tmp_path, kills=10, base_seed=80_000)
    assert stats.iterations >= 4, stats
    # The deterministic windows were exercised.
    for mode in ("range", "rename"):
        assert stats.by_mode.get(mode, 0) > 0, stats


@pytest.mark.soak
@pytest.mark.timeout(3600)
async def test_download_kill9_random_moments_soak(tmp_path: Path) -> None:
    stats = await _kill_suite(tmp_path, kills=120, base_seed=90_000)
    for mode in ("range", "timer", "head", "cp-write", "cp-replace", "rename", "renamed"):
        assert stats.by_mode.get(mode, 0) > 0, stats
    assert stats.finished_in_place > 0, stats
