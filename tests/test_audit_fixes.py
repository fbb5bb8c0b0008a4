"""Regression tests for the audit of issue 10 and issue 11 part 1 (notes/audit-10-11a.md):
the emulator over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import aiooss_resume as oss
from aiooss_resume._crc64 import crc64
from aiooss_resume.testing import Fault, OssServer

pytestmark = pytest.mark.anyio

KIB = 1024
PART = 100 * KIB
BUCKET = "bkt"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "srv") as srv:
        yield srv


def client_for(server: OssServer, attempts: int = 3) -> oss.Client:
    creds = server.credentials
    return oss.Client(
        server.endpoint,
        credentials=oss.Credentials(creds.access_key_id, creds.access_key_secret),
        region=server.region,
        retry=oss.RetryPolicy(max_attempts=attempts, base_delay=0.0),
    )


def open_uploads(server: OssServer) -> list[str]:
    return [u.upload_id for u in server.list_uploads(BUCKET)]


def operations(server: OssServer) -> list[str]:
    return [r.operation for r in server.requests]


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# ------------------------------------------- item 2: forbid-overwrite and a lost PutObject answer


async def test_upload_file_forbid_overwrite_after_a_lost_put_answer(
    server: OssServer, tmp_path: Path
) -> None:
    data = os.urandom(1000)
    src = tmp_path / "a.bin"
    src.write_bytes(data)
    server.faults.add(Fault(operation="PutObject", times=1, drop_response=True))
    options = oss.ObjectOptions(forbid_overwrite=True)
    async with client_for(server) as client:
        result = await client.bucket(BUCKET).upload_file("a", src, options=options)
    assert operations(server).count("PutObject") == 2  # the answer was lost, the retry got 409
    assert server.read_object(BUCKET, "a") == data
    assert result.size == 1000 and result.crc64 == crc64(data)
    assert result.etag


async def test_upload_stream_forbid_overwrite_after_a_lost_put_answer(server: OssServer) -> None:
    data = os.urandom(1000)
    server.faults.add(Fault(operation="PutObject", times=1, drop_response=True))
    headers = {"x-oss-forbid-overwrite": "true"}
    async with client_for(server) as client:
        result = await client.bucket(BUCKET).upload_stream(
            "c", chunks(data, 300), PART, headers=headers
        )
    assert operations(server).count("PutObject") == 2
    assert server.read_object(BUCKET, "c") == data
    assert result.size == 1000 and result.crc64 == crc64(data)


async def test_forbid_overwrite_still_refuses_someone_elses_object(
    server: OssServer, tmp_path: Path
) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(1000))
    other = os.urandom(1000)  # same size, other bytes: stored before
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        await bucket.upload_stream("a", chunks(other, 1000), PART)
        # The first attempt gets no answer (a reset: nothing of ours is stored), the retry
        # is refused: the object there is not ours, and is said to be so.
        server.faults.add(Fault(operation="PutObject", times=1, reset_after_bytes=100))
        options = oss.ObjectOptions(forbid_overwrite=True)
        with pytest.raises(oss.ServiceError) as info:
            await bucket.upload_file("a", src, options=options)
    assert operations(server).count("PutObject") == 3
    assert info.value.code == "FileAlreadyExists"
    assert "someone else's" in "".join(getattr(info.value, "__notes__", []))
    assert server.read_object(BUCKET, "a") == other


async def test_forbid_overwrite_without_a_lost_answer_is_a_plain_409(
    server: OssServer, tmp_path: Path
) -> None:
    data = os.urandom(1000)
    src = tmp_path / "a.bin"
    src.write_bytes(data)
    options = oss.ObjectOptions(forbid_overwrite=True)
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        await bucket.upload_file("a", src, options=options)
        with pytest.raises(oss.ServiceError) as info:  # the same bytes, but no attempt was lost
            await bucket.upload_file("a", src, options=options)
    assert info.value.code == "FileAlreadyExists"
    assert "HeadObject" not in operations(server)


# ---------------------------------------------- item 3: read(n) returning None is not the end


async def test_a_non_blocking_pipe_is_a_type_error_not_a_truncated_object(
    server: OssServer,
) -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.write(w, b"p" * 5000)  # the rest never comes while the upload reads: read() -> None
    try:
        with os.fdopen(r, "rb", buffering=0) as source:
            async with client_for(server) as client:
                with pytest.raises(TypeError, match="returned None"):
                    await client.bucket(BUCKET).upload_stream("p", source, PART)
    finally:
        os.close(w)
    assert "PutObject" not in operations(server)
    assert open_uploads(server) == []


class _AsyncNoneAfter:
    """An async read(n) that gives ``parts`` parts of bytes, then None."""

    def __init__(self, parts: int) -> None:
        self.left = parts

    async def read(self, n: int) -> bytes | None:
        if not self.left:
            return None
        self.left -= 1
        return b"x" * PART


async def test_an_async_read_returning_none_aborts_the_upload(server: OssServer) -> None:
    async with client_for(server) as client:
        with pytest.raises(TypeError, match="returned None") as info:
            await client.bucket(BUCKET).upload_stream("n", _AsyncNoneAfter(3), PART)
    assert "InitiateMultipartUpload" in operations(server)  # multipart had started
    assert "was aborted" in "".join(getattr(info.value, "__notes__", []))
    assert open_uploads(server) == []
    assert "CompleteMultipartUpload" not in operations(server)


async def test_an_empty_chunk_still_ends_a_read_source(server: OssServer) -> None:
    class Reader:
        def __init__(self) -> None:
            self.data = [b"a" * 10, bytearray(b"b" * 5), b""]

        async def read(self, n: int) -> bytes | bytearray:
            return self.data.pop(0)

    async with client_for(server) as client:
        result = await client.bucket(BUCKET).upload_stream("e", Reader(), PART)
    assert result.size == 15
    assert server.read_object(BUCKET, "e") == b"a" * 10 + b"b" * 5


# ------------------------------------- item 9: a plain def read() that returns a coroutine


class _Inner:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    async def read(self, n: int) -> bytes:
        chunk = self.data[self.at : self.at + n]
        self.at += len(chunk)
        return chunk


class _Delegating:
    """A wrapper whose plain ``def read`` returns the inner reader's coroutine."""

    def __init__(self, data: bytes) -> None:
        self.inner = _Inner(data)
        self.threads: set[int] = set()

    def read(self, n: int) -> Any:
        self.threads.add(threading.get_ident())
        return self.inner.read(n)


@pytest.mark.parametrize("size", [300_000, 10, 0])
async def test_a_read_returning_a_coroutine_is_awaited(server: OssServer, size: int) -> None:
    data = os.urandom(size)
    source = _Delegating(data)
    async with client_for(server) as client:
        result = await client.bucket(BUCKET).upload_stream("w", source, PART)
    assert result.size == size
    assert server.read_object(BUCKET, "w") == data
    await asyncio.sleep(0)


# ----------------------------------- item 1: a failed or cancelled Initiate leaves no orphan

KEY = "k"
HINT = f"aiooss-resume uploads oss://{BUCKET}/{KEY}"


async def _start(server: OssServer, client: oss.Client, tmp_path: Path, how: str) -> Any:
    bucket = client.bucket(BUCKET)
    if how == "file":
        src = tmp_path / "f.bin"
        src.write_bytes(os.urandom(3 * PART))
        return await bucket.upload_file(KEY, src, PART, checkpoint=tmp_path / "f.cp")
    return await bucket.upload_stream(KEY, chunks(os.urandom(3 * PART), PART), PART)


async def _when(condition: Any, limit: float = 20.0) -> None:
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("how", ["file", "stream"])
async def test_initiate_whose_every_answer_is_lost_leaves_no_upload(
    server: OssServer, tmp_path: Path, how: str
) -> None:
    server.faults.add(Fault(operation="InitiateMultipartUpload", times=None, drop_response=True))
    async with client_for(server, attempts=3) as client:
        with pytest.raises(oss.TransportError):
            await _start(server, client, tmp_path, how)
    assert operations(server).count("InitiateMultipartUpload") == 3  # 3 uploads created
    assert open_uploads(server) == []  # all swept
    assert operations(server).count("AbortMultipartUpload") == 3


def _cut_short(caplog: pytest.LogCaptureFixture) -> bool:
    """Whether a cancelled sweep ran out of its time bound (a loaded machine), and said so
    naming the command that finds what is left."""
    return any("cut short" in r.getMessage() and HINT in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("how", ["file", "stream"])
async def test_a_cancel_during_the_cleanup_sweep_still_sweeps(
    server: OssServer, tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.faults.add(Fault(operation="InitiateMultipartUpload", times=1, drop_response=True))
    server.faults.add(Fault(operation="ListMultipartUploads", times=1, stall=30.0))
    async with client_for(server) as client:
        task = asyncio.create_task(_start(server, client, tmp_path, how))
        await _when(lambda: server.stats.in_flight["ListMultipartUploads"])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert operations(server).count("InitiateMultipartUpload") == 2
    # The lost attempt's by the sweep, the kept one by Abort; or, on a machine so loaded
    # that the shielded sweep overran its bound, a warning naming the uploads command.
    if not _cut_short(caplog):
        assert open_uploads(server) == []


async def test_a_sweep_cut_short_after_a_cancel_names_the_uploads_command(
    server: OssServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.faults.add(Fault(operation="InitiateMultipartUpload", times=1, drop_response=True))
    server.faults.add(Fault(operation="ListMultipartUploads", times=None, stall=30.0))
    async with client_for(server) as client:
        task = asyncio.create_task(_start(server, client, tmp_path, "stream"))
        await _when(lambda: server.stats.in_flight["ListMultipartUploads"])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(open_uploads(server)) == 1  # the lost attempt's: it could not be found
    assert any(HINT in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


async def test_a_cancel_while_a_retried_initiate_is_in_flight(
    server: OssServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.faults.add(Fault(operation="InitiateMultipartUpload", times=1, drop_response=True))
    server.faults.add(Fault(operation="InitiateMultipartUpload", nth=2, times=1, delay=2.0))
    async with client_for(server) as client:
        task = asyncio.create_task(_start(server, client, tmp_path, "file"))
        await _when(
            lambda: (
                server.stats.in_flight["InitiateMultipartUpload"]
                and "InitiateMultipartUpload" in operations(server)
            )
        )
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _when(lambda: not server.stats.in_flight["InitiateMultipartUpload"])
    # The first attempt's upload was swept; the delayed one may be created after the sweep
    # (the server goes on after the client left), which the warning says is possible.
    assert operations(server).count("AbortMultipartUpload") == 1 or _cut_short(caplog)
    assert len(open_uploads(server)) <= 1 or _cut_short(caplog)
    assert any(HINT in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


# ------------------------------------------------------- item 6: upload_stream(options=...)

OPTIONS = oss.ObjectOptions(
    content_type="text/csv", metadata={"owner": "ops"}, acl="public-read", storage_class="IA"
)


@pytest.mark.parametrize("size", [10 * KIB, 3 * PART + 5])  # PutObject, multipart
async def test_upload_stream_takes_typed_options(server: OssServer, size: int) -> None:
    data = os.urandom(size)
    async with client_for(server) as client:
        await client.bucket(BUCKET).upload_stream(
            "o.csv", chunks(data, 7 * KIB), PART, options=OPTIONS, headers={"x-oss-meta-raw": "1"}
        )
    info = server.object_info(BUCKET, "o.csv")
    assert info is not None and server.read_object(BUCKET, "o.csv") == data
    assert info.headers["content-type"] == "text/csv"
    assert info.headers["x-oss-meta-owner"] == "ops" and info.headers["x-oss-meta-raw"] == "1"
    assert info.headers["x-oss-object-acl"] == "public-read"
    assert info.headers["x-oss-storage-class"] == "IA"


async def test_upload_stream_options_conflict_and_type_errors_come_first(
    server: OssServer,
) -> None:
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(ValueError, match="'x-oss-object-acl' is given twice"):
            await bucket.upload_stream(
                "o", chunks(b"x", 1), PART, options=OPTIONS, headers={"x-oss-object-acl": "private"}
            )
        with pytest.raises(TypeError, match="options must be an ObjectOptions"):
            await bucket.upload_stream("o", chunks(b"x", 1), PART, options={"acl": "private"})  # type: ignore[arg-type]
    assert server.requests == []


async def test_changed_stream_options_start_a_fresh_upload(
    server: OssServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = os.urandom(3 * PART)
    cp = tmp_path / "s.cp"

    def reopen(offset: int) -> AsyncIterator[bytes]:
        return chunks(data[offset:], PART)

    async def failing() -> AsyncIterator[bytes]:
        yield data[:PART]
        yield data[PART : 2 * PART]
        raise OSError("source broke")

    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(OSError, match="source broke"):
            await bucket.upload_stream(
                "o", failing(), PART, checkpoint=cp, reopen=reopen, options=OPTIONS
            )
        (stale,) = open_uploads(server)
        other = oss.ObjectOptions(content_type="text/plain")
        result = await bucket.upload_stream(
            "o", None, PART, checkpoint=cp, reopen=reopen, options=other
        )
    assert result.parts_resumed == 0  # the options differ: nothing of the old upload kept
    assert open_uploads(server) == [] and stale != result.upload_id
    info = server.object_info(BUCKET, "o")
    assert info is not None and info.headers["content-type"] == "text/plain"
    assert server.read_object(BUCKET, "o") == data


# ------------------- item 7: a reopened stream shorter than what was read before is refused


async def _breaking(data: bytes, at: int) -> AsyncIterator[bytes]:
    for start in range(0, at, PART):
        yield data[start : min(start + PART, at)]
    raise OSError("source broke")


@pytest.mark.parametrize("short_by", [PART - 10, 1])
async def test_a_shorter_reopened_stream_without_size_is_refused(
    server: OssServer, tmp_path: Path, short_by: int
) -> None:
    data = os.urandom(5 * PART + 123)
    cp = tmp_path / "m.cp"
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(OSError, match="source broke"):
            await bucket.upload_stream(
                "m", _breaking(data, 3 * PART), PART, checkpoint=cp, reopen=lambda o: None
            )
        assert cp.exists()
        read_before = 3 * PART
        with pytest.raises(oss.FileChangedError, match=f"{read_before} bytes"):
            await bucket.upload_stream(
                "m",
                None,
                PART,
                checkpoint=cp,
                reopen=lambda offset: chunks(data[offset : read_before - short_by], PART),
            )
    assert server.object_info(BUCKET, "m") is None  # never stored truncated
    assert open_uploads(server) == [] and not cp.exists()


async def test_bytes_read_after_the_last_full_part_count_too(
    server: OssServer, tmp_path: Path
) -> None:
    """The source fails halfway through part 3: its first half was read, so a reopened
    stream that ends after part 2 plus a few bytes is shorter than the stream was."""
    data = os.urandom(5 * PART)
    cp = tmp_path / "h.cp"

    async def half_then_break() -> AsyncIterator[bytes]:
        yield data[:PART]
        yield data[PART : 2 * PART]
        yield data[2 * PART : 2 * PART + PART // 2]
        raise OSError("source broke")

    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(OSError, match="source broke"):
            await bucket.upload_stream(
                "h", half_then_break(), PART, checkpoint=cp, reopen=lambda o: None
            )
        with pytest.raises(oss.FileChangedError, match=f"{2 * PART + PART // 2} bytes"):
            await bucket.upload_stream(
                "h",
                None,
                PART,
                checkpoint=cp,
                reopen=lambda offset: chunks(data[offset : 2 * PART + 10], PART),
            )
    assert server.object_info(BUCKET, "h") is None and open_uploads(server) == []


async def test_a_reopened_stream_as_long_as_read_before_completes(
    server: OssServer, tmp_path: Path
) -> None:
    data = os.urandom(3 * PART)  # exactly what the first run read: not shorter
    cp = tmp_path / "m.cp"
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(OSError, match="source broke"):
            await bucket.upload_stream(
                "m", _breaking(data, 3 * PART), PART, checkpoint=cp, reopen=lambda o: None
            )
        result = await bucket.upload_stream(
            "m", None, PART, checkpoint=cp, reopen=lambda offset: chunks(data[offset:], PART)
        )
    assert result.parts_resumed >= 1 and server.read_object(BUCKET, "m") == data


# ------------------------------------------ item 11: a stream checkpoint's warning wording


async def test_a_changed_size_is_named_in_stream_terms(
    server: OssServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = os.urandom(3 * PART + 7)
    cp = tmp_path / "s.cp"
    async with client_for(server) as client:
        bucket = client.bucket(BUCKET)
        with pytest.raises(OSError, match="source broke"):
            await bucket.upload_stream(
                "s", _breaking(data, 2 * PART), PART, checkpoint=cp, reopen=lambda o: None
            )
        result = await bucket.upload_stream(
            "s",
            None,
            PART,
            size=len(data),
            checkpoint=cp,
            reopen=lambda offset: chunks(data[offset:], PART),
        )
    assert result.parts_resumed == 0 and server.read_object(BUCKET, "s") == data
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"size= changed from unknown to {len(data)}" in m for m in warnings), warnings
    assert not any("source file" in m for m in warnings), warnings


# ------------------------------------------- item 12: the CLI names env vars, not credentials=


def test_cli_user_info_endpoint_points_to_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiooss_resume._cli import EXIT_USAGE, main

    monkeypatch.delenv("OSS_ENDPOINT", raising=False)
    src = tmp_path / "f"
    src.write_bytes(b"x")
    endpoint = "http://u:s3cret@127.0.0.1:9"
    code = main(["upload", str(src), "oss://bkt/k", "--endpoint", endpoint, "--region", "x"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "user-info" in err and "OSS_ACCESS_KEY_ID" in err and "OSS_ACCESS_KEY_SECRET" in err
    assert "credentials=" not in err and "s3cret" not in err and "Traceback" not in err


# --------------------------------------- item 10: the types public signatures name are exported


def test_types_named_by_public_signatures_and_docs_are_exported() -> None:
    import inspect
    import re

    from aiooss_resume._headers import ObjectOptions

    signature = inspect.signature(oss.Bucket.upload_stream)
    named = {
        word
        for p in signature.parameters.values()
        if isinstance(p.annotation, str)  # the annotations as written (future annotations)
        for word in re.findall(r"[A-Za-z_]\w*", p.annotation)
    }
    assert {"StreamSource", "Reopen", "ObjectOptions"} <= named
    for name in named - {"None", "int", "str", "PathLike", "Mapping"}:
        assert name in oss.__all__, name
    assert signature.parameters["part_size"].default == oss.DEFAULT_STREAM_PART_SIZE
    assert oss.MIN_TRAFFIC_LIMIT == 819_200 and oss.MAX_TRAFFIC_LIMIT == 838_860_800
    assert "IA" in typing_args(oss.StorageClass) and "KMS" in typing_args(oss.ServerSideEncryption)
    assert "public-read" in typing_args(oss.Acl)
    assert oss.ObjectOptions is ObjectOptions


def typing_args(alias: object) -> tuple[object, ...]:
    import typing

    return typing.get_args(alias)
