"""examples/fastapi_app.py served by a real uvicorn server, uploading to the emulator."""

from __future__ import annotations

import asyncio
import importlib.util
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

from aiooss_resume.testing import Fault, OssServer  # noqa: E402

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

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await self.task
        self.sock.close()


@pytest.fixture
async def oss_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "oss") as server:
        creds = server.credentials
        monkeypatch.setenv("OSS_ACCESS_KEY_ID", creds.access_key_id)
        monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", creds.access_key_secret)
        monkeypatch.setenv("OSS_REGION", server.region)
        yield server


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

        # A second, small upload watched through server-sent events.
        resp = await http.post("/uploads", files={"file": ("s.txt", b"x" * 300 * KiB)})
        small_id = resp.json()["id"]
        events: list[dict[str, Any]] = []
        async with http.stream("GET", f"/uploads/{small_id}/events") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        assert events[-1]["state"] == "done"
        assert resp.json()["key"].endswith("/s.txt")

    assert oss_server.read_object("bkt", "in/data.bin") == data
    assert not list((tmp_path / "data" / "checkpoints").glob("*.cp"))
    assert not (tmp_path / "data" / "jobs" / f"{job_id}.data").exists()
