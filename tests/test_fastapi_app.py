"""examples/fastapi_app.py served by a real uvicorn server, uploading to the emulator."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from aiooss_resume.testing import Fault, FaultContext, OssServer  # noqa: E402

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
