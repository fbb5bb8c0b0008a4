"""kill -9 at random moments, then resume until success (issue 6, reliability suite).

A subprocess (``tests/reliability_worker.py``) uploads a file with ``checkpoint=True`` to an
in-process emulator; the test SIGKILLs it at a seeded-random point, chosen among:

* ``part``: when the n-th UploadPart request of the run reaches the server;
* ``timer``: a random delay after the worker is ready (anywhere: Initiate, parts, Complete);
* ``cp-write``: halfway through writing the n-th checkpoint's temporary file;
* ``cp-replace``: after the n-th checkpoint is fsynced, just before its rename;
* ``complete-done``: when Complete reaches the server, which then completes the object
  (the client dies before it learns of it);
* ``complete-lost``: when Complete reaches the server, which then refuses it;
* ``listparts``: when the resuming run's ListParts reaches the server;
* ``initiate``: when Initiate reaches the server, which then creates the upload.

Each iteration kills 1-3 runs, then resumes (in-process, or in a last subprocess) until
success. Asserted every time:

* every checkpoint left behind decodes, and records only parts the server holds (same
  ETag, size and CRC);
* the final object is byte-identical (CRC-64 and a full compare), the checkpoint is gone;
* no part the server stored is ever sent again to the same upload, and the parts re-sent
  after each kill are at most ``routines`` (the ones in flight);
* no unfinished upload is left, except empty ones whose Initiate reached the server in a
  run killed before its checkpoint could name them (unavoidable; the test checks each).
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

from aiooss_resume import _uploader
from aiooss_resume.testing import Fault, FaultContext, OssServer, RequestRecord

from .reliability_helpers import (
    BUCKET,
    KIB,
    MIB,
    WriteTracker,
    assert_checkpoint_consistent,
    assert_checkpoint_gone,
    assert_object,
    make_client,
    make_file,
    open_upload_ids,
    read_checkpoint,
    wait_until,
)

pytestmark = pytest.mark.anyio

WORKER = Path(__file__).with_name("reliability_worker.py")
MODES = (
    "part",
    "part",
    "timer",
    "timer",
    "cp-write",
    "cp-replace",
    "complete-done",
    "complete-lost",
    "listparts",
    "initiate",
)


@dataclass
class Killer:
    """What the server-side dispatcher does to the current run's requests."""

    key: str = ""
    pid: int = 0
    mode: str = ""
    nth: int = 0
    seen_parts: int = 0
    fired: bool = False
    fired_on: str = ""

    def kill(self, why: str) -> None:
        if not self.fired and self.pid:
            self.fired = True
            self.fired_on = why
            with contextlib.suppress(ProcessLookupError):  # it may have just exited
                os.kill(self.pid, signal.SIGKILL)


@dataclass
class Run:
    mode: str
    killed: bool
    records: list[RequestRecord]
    output: str = ""
    cp_parts: int | None = None  # parts in the checkpoint left by the kill


@dataclass
class Stats:
    kills: int = 0
    by_mode: dict[str, int] = field(default_factory=dict)
    resent: int = 0
    orphans: int = 0
    tmp_left: int = 0


def _dispatcher(killer: Killer):  # type: ignore[no-untyped-def]
    async def hook(ctx: FaultContext) -> web.StreamResponse | None:
        if ctx.key != killer.key or killer.fired or not killer.pid:
            return None
        op, mode = ctx.operation, killer.mode
        if mode == "part" and op == "UploadPart":
            killer.seen_parts += 1
            if killer.seen_parts == killer.nth:
                killer.kill(f"UploadPart #{killer.nth} (part {ctx.part_number})")
        elif mode in ("complete-done", "complete-lost") and op == "CompleteMultipartUpload":
            killer.kill(mode)
            # Let the (small) request body arrive fully before deciding its fate.
            await asyncio.sleep(0.02)
            if mode == "complete-lost":
                return web.Response(
                    status=503,
                    body=b"<Error><Code>SlowDown</Code></Error>",
                    headers={"x-oss-request-id": ctx.request_id},
                )
        elif mode == "listparts" and op == "ListParts":
            killer.kill("ListParts")
        elif mode == "initiate" and op == "InitiateMultipartUpload":
            killer.kill("Initiate")
            await asyncio.sleep(0.02)
        return None

    return hook


async def _run_worker(
    server: OssServer,
    killer: Killer,
    rng: random.Random,
    *,
    key: str,
    src: Path,
    part_size: int,
    routines: int,
    mode: str | None,
    num_parts: int,
) -> Run:
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
        "--file", str(src),
        "--part-size", str(part_size),
        "--routines", str(routines),
    ]  # fmt: skip
    if mode == "cp-write":
        args += ["--trap", f"write:{rng.randint(1, 6)}"]
    elif mode == "cp-replace":
        args += ["--trap", f"replace:{rng.randint(1, 6)}"]
    start = len(server.requests)
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    killer.__init__(key=key, pid=proc.pid, mode=mode or "", nth=rng.randint(1, num_parts))  # type: ignore[misc]
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
                    delay = rng.uniform(0.0, 0.12)
                    timer = asyncio.get_running_loop().call_later(
                        delay, killer.kill, f"timer {delay:.3f}s"
                    )
                elif line.startswith("TRAP"):
                    killer.kill(line)
            _, err = await proc.communicate()
    finally:
        if timer is not None:
            timer.cancel()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    killer.pid = 0
    # The dead client's requests finish on the server shortly after: wait for them, so the
    # request log can be split by run.
    assert await wait_until(lambda: sum(server.stats.in_flight.values()) == 0, limit=10)
    output = "\n".join(lines) + "\n" + err.decode(errors="replace")
    finished = any(line.startswith("DONE") for line in lines)
    killed = proc.returncode == -signal.SIGKILL and not finished  # a kill after DONE is moot
    if not killed:
        assert finished or proc.returncode == 0, f"worker failed ({proc.returncode}):\n{output}"
        assert lines[-1].startswith("DONE"), output
    return Run(mode or "none", killed, list(server.requests[start:]), output)


def _check_resends(runs: list[Run], routines: int, num_parts: int) -> int:
    """No stored part re-sent to its upload; at most ``routines`` re-sent per kill."""
    stored: set[tuple[str | None, int | None]] = set()
    resent_total = 0
    for i, run in enumerate(runs):
        parts = [r for r in run.records if r.operation == "UploadPart"]
        for r in parts:
            assert (r.upload_id, r.part_number) not in stored, (
                f"run {i} re-sent part {r.part_number}, which the server had stored in an "
                "earlier run (an acknowledged part must be recovered, not re-sent)"
            )
        stored |= {(r.upload_id, r.part_number) for r in parts if r.status == 200}
        if not run.killed:
            continue
        mine = {r.part_number for r in parts}
        later = {
            r.part_number
            for other in runs[i + 1 :]
            for r in other.records
            if r.operation == "UploadPart"
        }
        resent = mine & later
        assert len(resent) <= routines, (
            f"kill {i} ({run.mode}) cost {len(resent)} re-sent parts > routines={routines}: "
            f"{sorted(resent)}\n{_describe(runs)}"
        )
        resent_total += len(resent)
    sent = sum(1 for run in runs for r in run.records if r.operation == "UploadPart")
    assert sent >= num_parts
    return resent_total


def _describe(runs: list[Run]) -> str:
    lines = []
    for n, run in enumerate(runs):
        ops = [
            f"{r.operation}:{r.status}{r.code and '/' + r.code}:{(r.upload_id or '-')[:6]}"
            for r in run.records
            if r.operation != "UploadPart" or r.status != 200
        ]
        lines.append(f"run {n} {run.mode} killed={run.killed} cp_parts={run.cp_parts} {ops}")
        lines.append("   " + run.output.strip().replace("\n", "\n   ")[-1500:])
    return "\n".join(lines)


async def _settle() -> None:
    tracker = _uploader._encode_and_write
    if isinstance(tracker, WriteTracker):
        await tracker.settle()  # see test_reliability_writer.py


def _explain_orphans(server: OssServer, key: str, runs: list[Run]) -> int:
    """Unfinished uploads left: only empty ones initiated by a killed run."""
    leftover = open_upload_ids(server, key)
    for upload_id in leftover:
        assert not server.list_parts(BUCKET, upload_id), f"orphan {upload_id} holds parts"
        initiators = [
            run
            for run in runs
            for r in run.records
            if r.operation == "InitiateMultipartUpload"
            and r.status == 200
            and r.upload_id is None
            and run.killed
        ]
        assert initiators, f"unexplained unfinished upload {upload_id}"
    return len(leftover)


def _assert_unlocked_and_remove(lock_path: Path) -> None:
    if not lock_path.exists():
        return
    with lock_path.open("rb+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still held
    lock_path.unlink()


async def _iteration(server: OssServer, killer: Killer, tmp: Path, seed: int, stats: Stats) -> None:
    rng = random.Random(seed)
    key = f"kill/{seed}.bin"
    src = tmp / f"src-{seed}.bin"
    cp_path = Path(str(src) + ".cp")
    size = 2 * MIB + rng.randint(0, 150 * KIB)
    part_size = rng.choice([100 * KIB, 128 * KIB, 256 * KIB])
    routines = rng.choice([4, 4, 3, 2])
    data = make_file(src, size, seed)
    num_parts = -(-size // part_size)
    runs: list[Run] = []
    kills = rng.randint(1, 3)
    for attempt in range(kills):
        # ListParts only happens when resuming.
        mode = rng.choice([m for m in MODES if attempt or m != "listparts"])
        run = await _run_worker(
            server, killer, rng, key=key, src=src, part_size=part_size, routines=routines,
            mode=mode, num_parts=num_parts,
        )  # fmt: skip
        runs.append(run)
        if not run.killed:
            break
        cp = read_checkpoint(cp_path)  # every checkpoint left behind decodes
        if cp is None and any(
            r.operation == "CompleteMultipartUpload" and r.status == 200 for r in run.records
        ):
            # The kill landed after success: Complete took effect and the checkpoint was
            # already deleted, only the worker's DONE line was lost. There is nothing left to
            # resume (a re-run would be a new upload), so this run counts as finished.
            assert_object(server, key, data)
            run.killed = False
            # The kill may also have beaten the lock file's removal: a leftover must not be
            # held (flock dies with its process), and is harmless garbage.
            _assert_unlocked_and_remove(Path(str(cp_path) + ".lock"))
            break
        stats.kills += 1
        stats.by_mode[run.mode] = stats.by_mode.get(run.mode, 0) + 1
        run.cp_parts = len(cp.parts) if cp is not None else None
        if cp is not None:
            assert cp.key == key
            if cp.upload_id in open_upload_ids(server, key):
                assert_checkpoint_consistent(server, cp)
            else:  # only a Complete that took effect consumes the upload id
                assert_object(server, key, data)
    if runs[-1].killed:
        if rng.random() < 0.25:  # resume in another process
            run = await _run_worker(
                server, killer, rng, key=key, src=src, part_size=part_size,
                routines=routines, mode=None, num_parts=num_parts,
            )  # fmt: skip
            runs.append(run)
        else:  # resume in-process
            start = len(server.requests)
            async with make_client(server) as client:
                result = await client.bucket(BUCKET).upload_file(
                    key, src, part_size, routines=routines, checkpoint=True
                )
            assert result.size == size
            await _settle()
            assert_checkpoint_gone(cp_path, result.upload_id)
            runs.append(Run("in-process", False, list(server.requests[start:])))
    assert_object(server, key, data)
    completed = [
        r.upload_id
        for run in runs
        for r in run.records
        if r.operation == "CompleteMultipartUpload" and r.status == 200
    ]
    assert_checkpoint_gone(cp_path, completed[-1] if completed else None)
    assert not Path(str(cp_path) + ".lock").exists(), "lock file left after success"
    stats.resent += _check_resends(runs, routines, num_parts)
    stats.orphans += _explain_orphans(server, key, runs)
    # Temporary files of a killed checkpoint write stay behind (never read, never reused).
    stats.tmp_left += len(list(tmp.glob(f".{src.name}.cp.*.tmp")))
    assert server.stats.internal_errors == 0


@pytest.fixture(autouse=True)
def tracker(monkeypatch: pytest.MonkeyPatch) -> WriteTracker:
    return WriteTracker().install(monkeypatch)


async def _kill_suite(tmp_path: Path, kills: int, base_seed: int) -> Stats:
    """Iterate (each with a fresh file and key) until ``kills`` processes were killed."""
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
                exc.add_note(f"kill -9 iteration {i}, seed={seed}")
                raise
    print(f"kill -9 suite: {i} iterations, {stats}")
    return stats


@pytest.mark.timeout(120)
async def test_kill9_random_moments_ci(tmp_path: Path) -> None:
    stats = await _kill_suite(tmp_path, kills=50, base_seed=60_000)
    # The deterministic windows were all exercised.
    for mode in ("cp-write", "complete-done", "complete-lost", "part"):
        assert stats.by_mode.get(mode, 0) > 0, stats


@pytest.mark.soak
@pytest.mark.timeout(3600)
async def test_kill9_random_moments_soak(tmp_path: Path) -> None:
    await _kill_suite(tmp_path, kills=500, base_seed=70_000)
