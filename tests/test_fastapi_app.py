"""examples/fastapi_app.py served by a real uvicorn server, uploading to the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

# Imported, not importorskip'd: these are test dependencies, and a broken install must fail
# the run instead of turning these tests into silent skips.
import fastapi  # noqa: F401
import httpx
import pytest
import python_multipart  # noqa: F401
import uvicorn

from aiooss_resume._checkpoint import decode_checkpoint
from aiooss_resume.testing import Fault, FaultContext, OssServer, ThreadedOssServer

KiB = 1024
EXAMPLE = Path(__file__).parent.parent / "examples" / "fastapi_app.py"


def load_example() -> ModuleType:
    name = "fastapi_app_example"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # msgspec and dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


class RunningApp:
    """The app under uvicorn on 127.0.0.1:<free port>, in a task of the test's loop."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, lifespan="on", log_level="warning")
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunningApp:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        for _ in range(500):
            if self.server.started:
                return self
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        raise AssertionError("uvicorn did not start")

    async def stop(self, bound: float = 15.0) -> None:
        """Ask uvicorn to exit, as its SIGTERM handler does; fail if that takes over ``bound``."""
        self.server.should_exit = True
        assert self.task is not None
        try:
            async with asyncio.timeout(bound):
                await asyncio.shield(self.task)
        except TimeoutError:
            self.server.force_exit = True  # what an orchestrator's SIGKILL would cut short
            await self.task
            raise AssertionError(f"uvicorn's graceful shutdown did not end in {bound} s") from None
        finally:
            self.sock.close()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@pytest.fixture
async def oss_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "oss") as server:
        creds = server.credentials
        monkeypatch.setenv("OSS_ACCESS_KEY_ID", creds.access_key_id)
        monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", creds.access_key_secret)
        monkeypatch.setenv("OSS_REGION", server.region)
        yield server


def hold_until(event: asyncio.Event) -> Fault:
    """Hold InitiateMultipartUpload until ``event``: no progress happens before it is set."""

    async def hook(ctx: FaultContext) -> None:
        await event.wait()

    return Fault(operation="InitiateMultipartUpload", hook=hook)


class EventStream:
    """GET /uploads/{id}/events read in a task: (event name, JSON data) per server event."""

    def __init__(self, http: Any, job_id: str) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.subscribed = asyncio.Event()  # the first status event arrived
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._read(http, job_id))

    async def _read(self, http: Any, job_id: str) -> None:
        name = "message"
        async with http.stream("GET", f"/uploads/{job_id}/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    self.events.append((name, json.loads(line[6:])))
                    name = "message"
                    self.subscribed.set()
                    self.changed.set()

    async def wait_for(self, until: Any) -> None:
        async with asyncio.timeout(20):
            while not any(until(name, data) for name, data in self.events):
                self.changed.clear()
                await self.changed.wait()

    async def finished(self) -> list[tuple[str, dict[str, Any]]]:
        async with asyncio.timeout(10):
            await self.task
        return self.events


def assert_progress_events(events: list[tuple[str, dict[str, Any]]], total: int) -> None:
    """Typed progress events between the opening and closing status: bytes growing to total."""
    assert events[0][0] == "status" and events[-1][0] == "status", events
    progress = [data for name, data in events[1:-1]]
    assert all(name == "message" for name, _ in events[1:-1]), events
    types = [data["type"] for data in progress]
    assert types[0] == "UploadStarted" and types[-1] == "UploadCompleted", types
    sent = [data["bytes_done"] for data in progress if data["type"] == "BytesSent"]
    assert len(sent) >= 2, types
    assert all(a < b for a, b in itertools.pairwise(sent)), sent
    assert sent[-1] == total
    parts = [data["parts_done"] for data in progress if data["type"] == "PartDone"]
    part_count = progress[0]["part_count"]
    assert part_count > 1 and parts == list(range(1, part_count + 1)), parts


async def poll(client: Any, url: str, until: Any) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            status: dict[str, Any] = (await client.get(url)).json()
            if until(status):
                return status
            await asyncio.sleep(0.05)


@pytest.mark.anyio
async def test_upload_progress_shutdown_and_resume_on_restart(
    oss_server: OssServer, tmp_path: Path
) -> None:
    example = load_example()
    settings = example.Settings(
        endpoint=oss_server.endpoint,
        bucket="bkt",
        data_dir=tmp_path / "data",
        part_size=100 * KiB,
        routines=2,
    )
    data = os.urandom(2000 * KiB)  # 20 parts
    # Every part is held 0.25 s by the server: the upload takes ~2.5 s, long enough to watch.
    slow = oss_server.faults.add(Fault(operation="UploadPart", times=None, delay=0.25))

    running = RunningApp(example.create_app(settings))
    async with running, httpx.AsyncClient(base_url=running.url, timeout=10) as http:
        resp = await http.post(
            "/uploads", params={"key": "in/data.bin"}, files={"file": ("d.bin", data)}
        )
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["id"]
        assert resp.json()["size"] == len(data)
        url = f"/uploads/{job_id}"
        first = await poll(http, url, lambda s: s["bytes_done"] > 0)
        assert first["state"] == "uploading" and first["total_bytes"] == len(data)
        later = await poll(http, url, lambda s: s["bytes_done"] > first["bytes_done"])
        assert later["bytes_done"] < len(data)
        await poll(http, url, lambda s: s["bytes_done"] >= 600 * KiB)
        # Leaving the block shuts the app down mid-upload: lifespan cancels the task.

    record = json.loads((tmp_path / "data" / "jobs" / f"{job_id}.json").read_text())
    assert record["state"] == "uploading"
    assert list((tmp_path / "data" / "checkpoints").glob("*.cp"))
    with pytest.raises(FileNotFoundError):
        oss_server.read_object("bkt", "in/data.bin")

    slow.remove()
    running = RunningApp(example.create_app(settings))
    async with running, httpx.AsyncClient(base_url=running.url, timeout=10) as http:
        done = await poll(http, f"/uploads/{job_id}", lambda s: s["state"] != "uploading")
        assert done["state"] == "done", done
        assert done["resumed_bytes"] > 0
        assert done["bytes_done"] == len(data)

        # A second, small upload watched through server-sent events. The emulator holds its
        # Initiate until the stream is open, so every progress event is there to be seen.
        subscribed = asyncio.Event()
        oss_server.faults.add(hold_until(subscribed))
        resp = await http.post("/uploads", files={"file": ("s.txt", b"x" * 300 * KiB)})
        assert resp.json()["key"].endswith("/s.txt")
        watch = EventStream(http, resp.json()["id"])
        async with asyncio.timeout(10):
            await watch.subscribed.wait()
        subscribed.set()
        events = await watch.finished()
        assert events[0][1]["state"] == "uploading" and events[0][1]["bytes_done"] == 0
        assert_progress_events(events, 300 * KiB)
        assert events[-1][1]["state"] == "done" and events[-1][1]["bytes_done"] == 300 * KiB

    assert oss_server.read_object("bkt", "in/data.bin") == data
    assert not list((tmp_path / "data" / "checkpoints").glob("*.cp"))
    assert not (tmp_path / "data" / "jobs" / f"{job_id}.data").exists()


@pytest.mark.anyio
async def test_open_event_stream_does_not_hold_up_shutdown(
    oss_server: OssServer, tmp_path: Path
) -> None:
    """uvicorn waits for open connections before the lifespan shutdown that cancels uploads.

    An event stream that only ended with its upload would hold the shutdown until the upload
    finished (here: never, part 4 is held by the server), and the orchestrator's SIGKILL
    would skip the checkpoint flush. The app ends its streams as soon as uvicorn is told to
    exit; the upload is then cancelled and checkpointed, and the restart completes it.
    """
    example = load_example()
    settings = example.Settings(
        endpoint=oss_server.endpoint,
        bucket="bkt",
        data_dir=tmp_path / "data",
        part_size=100 * KiB,
        routines=1,
    )
    data = os.urandom(1000 * KiB)  # 10 parts
    subscribed = asyncio.Event()
    oss_server.faults.add(hold_until(subscribed))
    held = oss_server.faults.add(Fault(operation="UploadPart", part_number=4, stall=120.0))

    running = RunningApp(example.create_app(settings))
    await running.__aenter__()
    try:
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as http:
            resp = await http.post("/uploads", params={"key": "k"}, files={"file": ("d", data)})
            job_id = resp.json()["id"]
            watch = EventStream(http, job_id)
            async with asyncio.timeout(10):
                await watch.subscribed.wait()
            subscribed.set()
            await watch.wait_for(lambda n, d: d.get("type") == "PartDone" and d["parts_done"] == 3)
            assert not watch.task.done()  # the stream is open; the upload waits on part 4

            await running.stop(bound=15.0)  # fails if the open stream holds the shutdown

            events = await watch.finished()  # ended by the server, not by the test
    finally:
        if not running.server.should_exit:
            await running.stop()
    name, last = events[-1]
    assert name == "status" and last["state"] == "uploading" and last["bytes_done"] >= 300 * KiB

    record = json.loads((tmp_path / "data" / "jobs" / f"{job_id}.json").read_text())
    assert record["state"] == "uploading"
    (cp_file,) = (tmp_path / "data" / "checkpoints").glob("*.cp")
    kept = decode_checkpoint(cp_file.read_bytes())
    assert sorted(p.number for p in kept.parts) == [1, 2, 3]  # flushed by the lifespan shutdown
    with pytest.raises(FileNotFoundError):
        oss_server.read_object("bkt", "k")

    held.remove()
    running = RunningApp(example.create_app(settings))
    async with running, httpx.AsyncClient(base_url=running.url, timeout=10) as http:
        done = await poll(http, f"/uploads/{job_id}", lambda s: s["state"] != "uploading")
    assert done["state"] == "done", done
    assert done["resumed_bytes"] == 300 * KiB and done["bytes_done"] == len(data)
    assert oss_server.read_object("bkt", "k") == data
    assert not list((tmp_path / "data" / "checkpoints").glob("*.cp"))


def test_sigterm_to_the_uvicorn_command_with_an_event_stream_open(tmp_path: Path) -> None:
    """The orchestrator's path: ``uvicorn examples.fastapi_app:app`` in its own process, an
    event stream open mid-upload, SIGTERM. The stream ends, the process exits by itself
    (uvicorn re-raises the SIGTERM once its graceful shutdown is done) and the checkpoint is
    kept."""
    subscribed = threading.Event()

    async def hook(ctx: FaultContext) -> None:
        await asyncio.to_thread(subscribed.wait, 30)

    with ThreadedOssServer(root=tmp_path / "oss") as oss_server:
        oss_server.faults.add(Fault(operation="InitiateMultipartUpload", hook=hook))
        oss_server.faults.add(Fault(operation="UploadPart", part_number=4, stall=120.0))
        creds = oss_server.credentials
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OSS_", "ALIBABA_"))}
        env |= {
            "OSS_ENDPOINT": oss_server.endpoint,
            "OSS_REGION": oss_server.region,
            "OSS_ACCESS_KEY_ID": creds.access_key_id,
            "OSS_ACCESS_KEY_SECRET": creds.access_key_secret,
            "UPLOAD_BUCKET": "bkt",
            "UPLOAD_DATA_DIR": str(tmp_path / "data"),
            "UPLOAD_PART_SIZE": str(100 * KiB),
            "UPLOAD_ROUTINES": "1",
        }
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        command = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app"]
        proc = subprocess.Popen(
            [*command, "--fd", str(sock.fileno()), "--log-level", "warning"],
            cwd=EXAMPLE.parent.parent,
            env=env,
            pass_fds=(sock.fileno(),),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        sock.close()
        try:
            with httpx.Client(base_url=url, timeout=30) as http:
                for _ in range(300):
                    with contextlib.suppress(httpx.TransportError):
                        http.get("/docs")
                        break
                    assert proc.poll() is None, proc.communicate()[0]
                    time.sleep(0.05)
                files = {"file": ("d", os.urandom(1000 * KiB))}
                job_id = http.post("/uploads", params={"key": "k"}, files=files).json()["id"]
                lines: list[str] = []
                with http.stream("GET", f"/uploads/{job_id}/events") as stream:
                    for line in stream.iter_lines():
                        lines.append(line)
                        subscribed.set()
                        if '"parts_done":3' in line:
                            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=15)  # a stream holding the shutdown would time out here
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            output = proc.communicate()[0]
        assert code in (0, -signal.SIGTERM), output
        assert "Traceback" not in output, output
        assert any('"parts_done":3' in line for line in lines), lines
        last = json.loads(next(line for line in reversed(lines) if line.startswith("data: "))[6:])
        assert last["state"] == "uploading", lines
        (cp_file,) = (tmp_path / "data" / "checkpoints").glob("*.cp")
        assert len(decode_checkpoint(cp_file.read_bytes()).parts) == 3
        record = json.loads((tmp_path / "data" / "jobs" / f"{job_id}.json").read_text())
        assert record["state"] == "uploading"


@pytest.mark.anyio
async def test_delete_cancels_the_upload_and_keeps_its_checkpoint(
    oss_server: OssServer, tmp_path: Path
) -> None:
    example = load_example()
    settings = example.Settings(
        endpoint=oss_server.endpoint,
        bucket="bkt",
        data_dir=tmp_path / "data",
        part_size=100 * KiB,
        routines=1,
    )
    data = os.urandom(500 * KiB)  # 5 parts; part 3 is held by the server
    subscribed = asyncio.Event()
    oss_server.faults.add(hold_until(subscribed))
    held = oss_server.faults.add(Fault(operation="UploadPart", part_number=3, stall=120.0))

    running = RunningApp(example.create_app(settings))
    async with running, httpx.AsyncClient(base_url=running.url, timeout=30) as http:
        resp = await http.post("/uploads", params={"key": "c"}, files={"file": ("d", data)})
        job_id = resp.json()["id"]
        watch = EventStream(http, job_id)
        async with asyncio.timeout(10):
            await watch.subscribed.wait()
        subscribed.set()
        await watch.wait_for(lambda n, d: d.get("type") == "PartDone" and d["parts_done"] == 2)

        resp = await http.delete(f"/uploads/{job_id}")
        assert resp.status_code == 200, resp.text
        assert resp.json()["state"] == "cancelled"
        events = await watch.finished()  # the stream ends with the upload
        assert events[-1] == ("status", resp.json())
        status = (await http.get(f"/uploads/{job_id}")).json()
        assert status["state"] == "cancelled" and status["total_bytes"] == len(data)
        again = await http.delete(f"/uploads/{job_id}")  # idempotent
        assert again.status_code == 200 and again.json()["state"] == "cancelled"
        assert (await http.delete("/uploads/nope")).status_code == 404

        # A finished upload cannot be cancelled.
        resp = await http.post("/uploads", params={"key": "small"}, files={"file": ("s", b"x")})
        small = resp.json()["id"]
        await poll(http, f"/uploads/{small}", lambda s: s["state"] == "done")
        conflict = await http.delete(f"/uploads/{small}")
        assert conflict.status_code == 409 and "done" in conflict.json()["detail"]

    # What was kept: the record says cancelled, the checkpoint holds the acknowledged parts,
    # the spooled file and the upload on OSS are still there, nothing was completed.
    record = json.loads((tmp_path / "data" / "jobs" / f"{job_id}.json").read_text())
    assert record["state"] == "cancelled"
    (cp_file,) = (tmp_path / "data" / "checkpoints").glob("*.cp")
    kept = decode_checkpoint(cp_file.read_bytes())
    assert sorted(p.number for p in kept.parts) == [1, 2]
    assert (tmp_path / "data" / "jobs" / f"{job_id}.data").exists()
    assert [u.upload_id for u in oss_server.list_uploads("bkt")] == [kept.upload_id]
    with pytest.raises(FileNotFoundError):
        oss_server.read_object("bkt", "c")

    # A restart leaves the cancelled job alone (only "uploading" jobs are resumed).
    held.remove()
    running = RunningApp(example.create_app(settings))
    async with running, httpx.AsyncClient(base_url=running.url, timeout=10) as http:
        status = (await http.get(f"/uploads/{job_id}")).json()
        assert status["state"] == "cancelled"
        assert (await http.delete(f"/uploads/{job_id}")).json()["state"] == "cancelled"
    with pytest.raises(FileNotFoundError):
        oss_server.read_object("bkt", "c")
    assert decode_checkpoint(cp_file.read_bytes()).upload_id == kept.upload_id
