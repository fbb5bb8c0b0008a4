"""examples/fastapi_app.py's PUT /relay/{key}: a request body relayed to OSS as it arrives,
through a real uvicorn server on 127.0.0.1, uploading to the emulator."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from aiooss_resume._crc64 import crc64
from aiooss_resume.testing import Fault, OssServer, ThreadedOssServer

from .test_fastapi_app import EXAMPLE, RunningApp, load_example

MiB = 1024 * 1024
KiB = 1024


@pytest.fixture
async def oss_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "oss") as server:
        creds = server.credentials
        monkeypatch.setenv("OSS_ACCESS_KEY_ID", creds.access_key_id)
        monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", creds.access_key_secret)
        monkeypatch.setenv("OSS_REGION", server.region)
        yield server


def settings_for(server: OssServer, tmp_path: Path) -> object:
    module = load_example()
    return module.Settings(
        endpoint=server.endpoint,
        bucket="bkt",
        data_dir=tmp_path / "data",
        part_size=100 * KiB,
        routines=2,
    )


def http_client(running: RunningApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=running.url, timeout=30)


@pytest.mark.anyio
async def test_relay_stores_the_body_with_or_without_its_length(
    oss_server: OssServer, tmp_path: Path
) -> None:
    module = load_example()
    data = os.urandom(450 * KiB + 11)

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 64 * KiB):
            yield data[start : start + 64 * KiB]

    app = module.create_app(settings_for(oss_server, tmp_path))
    async with RunningApp(app) as running, http_client(running) as http:
        sized = await http.put("/relay/a/sized.bin", content=data)
        chunked = await http.put("/relay/a/chunked.bin", content=body())
        empty = await http.put("/relay/a/empty.bin", content=b"")
    assert sized.status_code == chunked.status_code == empty.status_code == 200
    for name, answer in (("sized", sized), ("chunked", chunked)):
        assert oss_server.read_object("bkt", f"a/{name}.bin") == data
        assert answer.json()["crc64"] == crc64(data) and answer.json()["size"] == len(data)
    assert oss_server.read_object("bkt", "a/empty.bin") == b""
    assert not (tmp_path / "data" / "jobs").exists() or not any(
        (tmp_path / "data" / "jobs").iterdir()
    )  # nothing spooled


@pytest.mark.anyio
async def test_a_failed_relay_is_a_502_and_leaves_no_upload(
    oss_server: OssServer, tmp_path: Path
) -> None:
    module = load_example()
    oss_server.faults.add(Fault(operation="UploadPart", part_number=2, status=403, times=None))
    app = module.create_app(settings_for(oss_server, tmp_path))
    async with RunningApp(app) as running, http_client(running) as http:
        answer = await http.put("/relay/k", content=os.urandom(350 * KiB))
    assert answer.status_code == 502
    assert "403" in answer.json()["detail"]
    assert oss_server.list_uploads("bkt") == []


def _body(total: int, chunk: int) -> Iterator[bytes]:
    seed = os.urandom(chunk)
    for n in range(total // chunk):
        yield n.to_bytes(8, "big") + seed[8:]  # every chunk differs


def _status_bytes(pid: int, field: str) -> int:
    """A size field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``: the peak) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _peak_rss(pid: int) -> int:
    return _status_bytes(pid, "VmHWM")


@pytest.mark.timeout(240)
def test_relay_of_256_mib_through_uvicorn_keeps_the_server_rss_bounded(tmp_path: Path) -> None:
    """The uvicorn command in its own process relays a 256 MiB chunked body (size unknown)
    in 8 MiB parts, 4 routines; its RSS growth stays under (routines + 2) x part + 32 MiB,
    far below the body's size, and the object's CRC-64 is the body's."""
    total, part_size, routines = 256 * MiB, 8 * MiB, 4
    bound = (routines + 2) * part_size + 32 * MiB
    with ThreadedOssServer(root=tmp_path / "oss", store="discard") as oss_server:
        creds = oss_server.credentials
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OSS_", "ALIBABA_"))}
        env |= {
            "OSS_ENDPOINT": oss_server.endpoint,
            "OSS_REGION": oss_server.region,
            "OSS_ACCESS_KEY_ID": creds.access_key_id,
            "OSS_ACCESS_KEY_SECRET": creds.access_key_secret,
            "UPLOAD_BUCKET": "bkt",
            "UPLOAD_DATA_DIR": str(tmp_path / "data"),
            "UPLOAD_PART_SIZE": str(part_size),
            "UPLOAD_ROUTINES": str(routines),
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
            with httpx.Client(base_url=url, timeout=120) as http:
                for _ in range(300):
                    with contextlib.suppress(httpx.TransportError):
                        http.get("/docs")
                        break
                    assert proc.poll() is None, proc.communicate()[0]
                    time.sleep(0.05)
                # A warm-up relay, so that what the first request imports or caches is
                # in the baseline, then the peak is reset (Linux: clear_refs 5).
                assert http.put("/relay/warm", content=os.urandom(KiB)).status_code == 200
                before = _status_bytes(proc.pid, "VmRSS")
                Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
                crc = 0
                sent = 0

                def body() -> Iterator[bytes]:
                    nonlocal crc, sent
                    for chunk in _body(total, MiB):
                        crc = crc64(chunk, crc)
                        sent += len(chunk)
                        yield chunk

                answer = http.put("/relay/big.bin", content=body())
                peak = _peak_rss(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            output = proc.communicate()[0]
        assert answer.status_code == 200, (answer.text, output)
        assert sent == total
        assert answer.json() == {
            "key": "big.bin",
            "size": total,
            "etag": answer.json()["etag"],
            "crc64": crc,
        }
        uploads = [r for r in oss_server.requests if r.operation == "UploadPart"]
        assert len(uploads) == total // part_size
    growth = peak - before
    print(f"relay of {total // MiB} MiB: server RSS {before / MiB:.1f} MiB, peak growth "
          f"{growth / MiB:.1f} MiB (bound {bound / MiB:.0f} MiB)")  # fmt: skip
    assert growth < bound, f"RSS grew by {growth / MiB:.1f} MiB"


# ----------------------------------------- audit of 11.1, item 4: the relay's body size bound


@pytest.mark.anyio
async def test_relay_refuses_a_body_over_its_limit_with_413(
    oss_server: OssServer, tmp_path: Path
) -> None:
    module = load_example()
    settings = module.Settings(
        endpoint=oss_server.endpoint, bucket="bkt", data_dir=tmp_path / "data",
        part_size=100 * KiB, routines=2, relay_max_bytes=300 * KiB,
    )  # fmt: skip
    data = os.urandom(350 * KiB)

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 64 * KiB):
            yield data[start : start + 64 * KiB]

    app = module.create_app(settings)
    async with RunningApp(app) as running, http_client(running) as http:
        sized = await http.put("/relay/sized", content=data)
        chunked = await http.put("/relay/chunked", content=body())
        within = await http.put("/relay/within", content=data[: 300 * KiB])
    assert sized.status_code == chunked.status_code == 413, (sized.text, chunked.text)
    assert "300" in sized.json()["detail"] or str(300 * KiB) in sized.json()["detail"]
    assert oss_server.object_info("bkt", "sized") is None
    assert oss_server.object_info("bkt", "chunked") is None
    assert oss_server.list_uploads("bkt") == []  # the chunked one was started, then aborted
    assert (
        within.status_code == 200 and oss_server.read_object("bkt", "within") == data[: 300 * KiB]
    )
    sizes = [r.bytes_received for r in oss_server.requests if r.operation == "UploadPart"]
    assert sizes and max(sizes) == 100 * KiB  # the parts never grew past part_size


@pytest.mark.anyio
async def test_relay_answers_413_to_a_huge_content_length_before_reading(
    oss_server: OssServer, tmp_path: Path
) -> None:
    """A client declaring 10 TB and sending nothing: refused at once, nothing initiated
    (before, size= took the claim and grew the parts held in memory to 1 GiB each)."""
    import asyncio

    module = load_example()
    app = module.create_app(settings_for(oss_server, tmp_path))  # limit: 10,000 x 100 KiB
    async with RunningApp(app) as running:
        url = httpx.URL(running.url)
        reader, writer = await asyncio.open_connection(url.host, url.port)
        try:
            writer.write(
                b"PUT /relay/huge HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000000\r\n\r\n"
            )
            await writer.drain()
            async with asyncio.timeout(20):
                status = await reader.readline()
        finally:
            writer.close()
    assert status.startswith(b"HTTP/1.1 413"), status
    assert "InitiateMultipartUpload" not in [r.operation for r in oss_server.requests]
