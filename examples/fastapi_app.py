"""A FastAPI service that accepts files and uploads them to OSS in the background, resumably.

The recommended shape for an async web service:

* **One ``Client`` for the whole app**, created in the lifespan and closed at shutdown. It
  holds the connection pool and is safe to share between any number of concurrent uploads.
* **POST /uploads** spools the request's file to a *named* file in the data directory
  (fsync'ed, then renamed into place), writes a small job record next to it, starts the upload
  as an asyncio task tracked by the app, and answers ``202`` with the job id at once.
* **GET /uploads/{id}** reports the state and the bytes done/total from the typed progress
  events; **GET /uploads/{id}/events** streams those events as server-sent events.
* **DELETE /uploads/{id}** cancels a running upload: the library flushes its acknowledged
  parts to the checkpoint while the task unwinds, the job's state becomes ``cancelled``
  (persisted: a restart does not resume it) and the spooled file, the checkpoint and the
  upload on OSS are kept. Its parts stay on OSS (and are billed) until the upload is
  aborted, e.g. ``aiooss-resume abort oss://BUCKET/KEY --upload-id ID``.
* **Shutdown** first ends the open event streams, then cancels the running uploads: the
  library flushes every acknowledged part to the checkpoint while it unwinds, so nothing is
  lost. The streams must end first because uvicorn waits for open connections *before* it
  runs the lifespan shutdown, and an event stream only ends when its upload does: left open,
  one watching browser would hold the shutdown until the upload finished (or until the
  orchestrator's SIGKILL, which skips the flush). The app notices uvicorn's exit request
  (``Server.should_exit``, set by its SIGINT/SIGTERM handler) and ends the streams at once.
* **PUT /relay/{key}** is the other shape: the request body is relayed to OSS as it arrives
  (``Bucket.upload_stream`` over ``request.stream()``), with no temporary file and memory
  bounded by ``routines + 1`` parts of ``part_size``: a body larger than
  ``UPLOAD_RELAY_MAX_BYTES`` (by default 10,000 parts, the most that needs no larger part) is
  answered 413, whatever its ``Content-Length`` claims; the answer comes once the object is
  stored. Nothing
  is spooled, so nothing survives a restart: an interrupted relay is aborted on OSS.
* **Startup** resumes every unfinished job found in the data directory: its spooled file and
  its checkpoint (``checkpoint_dir=``) are still there, so only the missing parts are sent.

The library never blocks the event loop and never uses anyio's default thread limiter (which
FastAPI uses for sync endpoints and file reads): its file I/O runs on its own small limiter.

Configuration (environment variables):

``OSS_ENDPOINT``          the OSS endpoint (required), e.g. ``https://oss-cn-hangzhou.aliyuncs.com``
``UPLOAD_BUCKET``         the bucket uploads go to (required)
``UPLOAD_DATA_DIR``       spooled files, job records and checkpoints (default ``./upload-data``)
``UPLOAD_PART_SIZE``      part size in bytes (default 8 MiB)
``UPLOAD_ROUTINES``       parts in flight per upload (default 4)
``UPLOAD_RELAY_MAX_BYTES`` the largest body PUT /relay takes, 413 beyond (default 10,000 parts)
``OSS_REGION``, ``OSS_ACCESS_KEY_ID``, ``OSS_ACCESS_KEY_SECRET``: read by ``Client``.

Run it::

    pip install fastapi uvicorn python-multipart
    OSS_ENDPOINT=... UPLOAD_BUCKET=... uvicorn examples.fastapi_app:app
    curl -F file=@big.iso 'http://127.0.0.1:8000/uploads?key=isos/big.iso'
    curl http://127.0.0.1:8000/uploads/<id>
    curl -X DELETE http://127.0.0.1:8000/uploads/<id>
    curl -T big.iso http://127.0.0.1:8000/relay/isos/big.iso   # relayed, no temporary file
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import msgspec
from fastapi import FastAPI, HTTPException, Request, UploadFile
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

import aiooss_resume as oss

State = Literal["uploading", "done", "failed", "cancelled"]


@dataclass(frozen=True)
class Settings:
    """The app's configuration; ``from_env()`` reads it from the environment."""

    endpoint: str
    bucket: str
    data_dir: Path
    part_size: int = 8 * 1024 * 1024
    routines: int = 4
    relay_max_bytes: int | None = None  # None: 10,000 parts of part_size (78 GiB at 8 MiB)

    @property
    def relay_limit(self) -> int:
        """The largest body PUT /relay takes (413 beyond it). Up to 10,000 parts of
        ``part_size`` the part size never grows, so memory stays ``(routines + 1) x
        part_size``; a larger limit lets parts grow to ``limit / 10,000``."""
        if self.relay_max_bytes is not None:
            return self.relay_max_bytes
        return self.part_size * 10_000

    @classmethod
    def from_env(cls) -> Settings:
        try:
            endpoint, bucket = os.environ["OSS_ENDPOINT"], os.environ["UPLOAD_BUCKET"]
        except KeyError as exc:
            raise RuntimeError(f"set the environment variable {exc.args[0]}") from None
        return cls(
            endpoint=endpoint,
            bucket=bucket,
            data_dir=Path(os.environ.get("UPLOAD_DATA_DIR", "upload-data")).resolve(),
            part_size=int(os.environ.get("UPLOAD_PART_SIZE", 8 * 1024 * 1024)),
            routines=int(os.environ.get("UPLOAD_ROUTINES", 4)),
            relay_max_bytes=(
                int(os.environ["UPLOAD_RELAY_MAX_BYTES"])
                if os.environ.get("UPLOAD_RELAY_MAX_BYTES")
                else None
            ),
        )


class JobRecord(msgspec.Struct, kw_only=True):
    """What is persisted next to the spooled file: enough to resume after a restart."""

    id: str
    bucket: str
    key: str
    size: int
    state: State = "uploading"
    error: str = ""
    etag: str = ""
    crc64: int = 0


class JobStatus(msgspec.Struct, kw_only=True):
    """What GET /uploads/{id} answers."""

    id: str
    key: str
    state: State
    bytes_done: int
    total_bytes: int
    resumed_bytes: int
    error: str
    etag: str


class Job:
    """One upload: its record, live progress, and the subscribers of its events."""

    def __init__(self, record: JobRecord, data: Path) -> None:
        self.record = record
        self.data = data
        self.bytes_done = 0
        self.resumed_bytes = 0
        self.task: asyncio.Task[None] | None = None
        self.cancel_requested = False  # DELETE, as opposed to the shutdown's cancellation
        self.subscribers: set[asyncio.Queue[bytes | None]] = set()

    def status(self) -> JobStatus:
        return JobStatus(
            id=self.record.id,
            key=self.record.key,
            state=self.record.state,
            bytes_done=self.record.size if self.record.state == "done" else self.bytes_done,
            total_bytes=self.record.size,
            resumed_bytes=self.resumed_bytes,
            error=self.record.error,
            etag=self.record.etag,
        )

    def publish(self, payload: bytes | None) -> None:
        for queue in self.subscribers:
            queue.put_nowait(payload)


class Uploads:
    """The app's background uploads: started, tracked, cancelled at shutdown, resumed."""

    def __init__(self, client: oss.Client, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.jobs_dir = settings.data_dir / "jobs"
        self.checkpoint_dir = settings.data_dir / "checkpoints"
        self.jobs: dict[str, Job] = {}
        self.streams_ended = False

    # -- files (blocking helpers, always run in a worker thread)

    def _record_path(self, job_id: str) -> Path:
        return self.jobs_dir / f"{job_id}.json"

    def _data_path(self, job_id: str) -> Path:
        return self.jobs_dir / f"{job_id}.data"

    def _prepare_dirs(self) -> None:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)

    def _save_record(self, record: JobRecord) -> None:
        path = self._record_path(record.id)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_bytes(msgspec.json.encode(record))
        os.replace(tmp, path)  # atomic: a crash never leaves half a record

    def _spool(self, source: IO[bytes], job_id: str) -> int:
        final = self._data_path(job_id)
        tmp = final.with_suffix(".data.tmp")
        with tmp.open("wb") as out:
            shutil.copyfileobj(source, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())  # the file must outlive a crash to be resumable
            size = out.tell()
        os.replace(tmp, final)
        return size

    def _load_records(self) -> list[JobRecord]:
        records = []
        for path in sorted(self.jobs_dir.glob("*.json")):
            with contextlib.suppress(msgspec.DecodeError, OSError):
                records.append(msgspec.json.decode(path.read_bytes(), type=JobRecord))
        return records

    # -- lifecycle

    async def start(self) -> None:
        """Create the directories and resume every unfinished job."""
        await asyncio.to_thread(self._prepare_dirs)
        for record in await asyncio.to_thread(self._load_records):
            job = Job(record, self._data_path(record.id))
            self.jobs[record.id] = job
            if record.state == "uploading":
                self._launch(job)

    def end_streams(self) -> None:
        """End every open event stream now, and any opened later at once (server stopping)."""
        self.streams_ended = True
        for job in self.jobs.values():
            job.publish(None)

    async def aclose(self) -> None:
        """Cancel the running uploads; each flushes its checkpoint as it unwinds."""
        tasks = [job.task for job in self.jobs.values() if job.task and not job.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- jobs

    async def cancel(self, job: Job) -> None:
        """Cancel ``job``'s running upload and wait until it is checkpointed and recorded."""
        if job.task is None or job.task.done() or job.record.state != "uploading":
            return
        job.cancel_requested = True
        job.task.cancel()
        # Not cancelled with this request if the client goes away: the library bounds the
        # flush of the checkpoint itself (a few seconds at most).
        await asyncio.wait([job.task])

    async def submit(self, file: UploadFile, key: str | None) -> Job:
        job_id = uuid.uuid4().hex
        key = key or f"uploads/{job_id}/{file.filename or 'file'}"
        size = await asyncio.to_thread(self._spool, file.file, job_id)
        record = JobRecord(id=job_id, bucket=self.settings.bucket, key=key, size=size)
        await asyncio.to_thread(self._save_record, record)
        job = Job(record, self._data_path(job_id))
        self.jobs[job_id] = job
        self._launch(job)
        return job

    def _launch(self, job: Job) -> None:
        job.task = asyncio.get_running_loop().create_task(self._run(job))

    async def _run(self, job: Job) -> None:
        def on_progress(event: oss.ProgressEvent) -> None:
            if isinstance(event, oss.UploadStarted):
                job.bytes_done = job.resumed_bytes = event.resumed_bytes
            elif isinstance(event, oss.BytesSent):
                job.bytes_done = event.bytes_done
            job.publish(msgspec.json.encode(event))

        record = job.record
        try:
            result = await self.client.bucket(record.bucket).upload_file(
                record.key,
                job.data,
                self.settings.part_size,
                routines=self.settings.routines,
                checkpoint_dir=self.checkpoint_dir,
                on_progress=on_progress,
            )
        except asyncio.CancelledError:
            # Shutdown: the record stays "uploading" and the checkpoint was flushed, so the
            # next start resumes this job. DELETE: the same, but recorded as "cancelled",
            # which the next start leaves alone.
            if job.cancel_requested:
                record.state = "cancelled"
                await asyncio.to_thread(self._save_record, record)
            job.publish(None)
            raise
        except (oss.OssError, OSError) as exc:
            record.state, record.error = "failed", str(exc)
        else:
            record.state, record.etag, record.crc64 = "done", result.etag, result.crc64
            job.resumed_bytes = result.bytes_resumed
            await asyncio.to_thread(job.data.unlink, True)  # uploaded: the spool is not needed
        await asyncio.to_thread(self._save_record, record)
        job.publish(None)


def server_exit_flag() -> Callable[[], bool] | None:
    """A way to ask whether the server was told to stop, or None if it cannot be known.

    The ASGI lifespan says "shutdown" only once every connection has closed, too late for a
    long-lived response. uvicorn installs its ``Server.handle_exit`` as the SIGINT/SIGTERM
    handler (in the main thread, before the app starts) and it sets ``should_exit``, which
    is also what code embedding uvicorn sets: read it from there, as sse-starlette does.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        server: Any = getattr(signal.getsignal(sig), "__self__", None)
        if isinstance(getattr(server, "should_exit", None), bool):
            return lambda: bool(server.should_exit)
    return None


async def end_streams_on_server_exit(uploads: Uploads, should_exit: Callable[[], bool]) -> None:
    # A plain attribute, no event to wait on: poll it, as uvicorn's own main loop does.
    while not should_exit():  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    uploads.end_streams()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = getattr(app.state, "settings", None) or Settings.from_env()
    async with oss.Client(settings.endpoint) as client:
        uploads = Uploads(client, settings)
        app.state.uploads = uploads
        await uploads.start()
        should_exit = server_exit_flag()
        watcher = None
        if should_exit is not None:
            watcher = asyncio.create_task(end_streams_on_server_exit(uploads, should_exit))
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            uploads.end_streams()
            await uploads.aclose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; ``settings`` defaults to ``Settings.from_env()`` (read at startup)."""
    app = FastAPI(title="aiooss_resume upload service", lifespan=lifespan)
    app.state.settings = settings

    def uploads_of(request: Request) -> Uploads:
        uploads: Uploads = request.app.state.uploads
        return uploads

    def job_of(request: Request, job_id: str) -> Job:
        job = uploads_of(request).jobs.get(job_id)
        if job is None:
            raise HTTPException(status_code=404, detail="no such upload")
        return job

    @app.post("/uploads", status_code=202)
    async def create_upload(
        request: Request, file: UploadFile, key: str | None = None
    ) -> dict[str, Any]:
        job = await uploads_of(request).submit(file, key)
        return {"id": job.record.id, "key": job.record.key, "size": job.record.size}

    @app.get("/uploads/{job_id}")
    async def upload_status(request: Request, job_id: str) -> dict[str, Any]:
        return msgspec.structs.asdict(job_of(request, job_id).status())

    @app.delete("/uploads/{job_id}")
    async def cancel_upload(request: Request, job_id: str) -> dict[str, Any]:
        """Cancel a running upload (answers its status, state ``cancelled``); 409 if it ended."""
        job = job_of(request, job_id)
        await uploads_of(request).cancel(job)
        if job.record.state != "cancelled":
            raise HTTPException(status_code=409, detail=f"the upload is {job.record.state}")
        return msgspec.structs.asdict(job.status())

    @app.get("/uploads/{job_id}/events")
    async def upload_events(request: Request, job_id: str) -> StreamingResponse:
        uploads = uploads_of(request)
        job = job_of(request, job_id)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def stream() -> AsyncIterator[bytes]:
            # Ends with a status event when the upload ends, or at once when the server is
            # stopping (state still "uploading": an EventSource reconnects after the restart).
            job.subscribers.add(queue)
            try:
                yield b"event: status\ndata: " + msgspec.json.encode(job.status()) + b"\n\n"
                while not uploads.streams_ended and job.task is not None and not job.task.done():
                    payload = await queue.get()
                    if payload is None:
                        break
                    yield b"data: " + payload + b"\n\n"
                yield b"event: status\ndata: " + msgspec.json.encode(job.status()) + b"\n\n"
            finally:
                job.subscribers.discard(queue)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.put("/relay/{key:path}")
    async def relay(request: Request, key: str) -> dict[str, Any]:
        """Relay the request body straight to OSS as it arrives: no temporary file, memory
        bounded by ``routines + 1`` parts. Answers when the object is stored; on failure,
        nothing is left on OSS (the stream cannot be read again, so the upload is aborted).
        """
        uploads = uploads_of(request)
        limit = uploads.settings.relay_limit
        size = _declared_length(request.headers.get("content-length"), limit)
        content_type = request.headers.get("content-type")
        options = oss.ObjectOptions(content_type=content_type) if content_type else None
        try:
            result = await uploads.client.bucket(uploads.settings.bucket).upload_stream(
                key,
                _capped(request.stream(), limit),  # Content-Length is the client's word only
                uploads.settings.part_size,
                routines=uploads.settings.routines,
                size=size,
                options=options,
            )
        except ClientDisconnect:
            return {"key": key, "state": "client disconnected"}  # nobody reads this answer
        except _TooLarge as exc:
            raise HTTPException(status_code=413, detail=str(exc)) from None
        except oss.StreamLengthError as exc:
            status = 413 if exc.expected is None else 400  # None: outgrew 10,000 parts
            raise HTTPException(status_code=status, detail=str(exc)) from None
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        except oss.OssError as exc:
            raise HTTPException(status_code=502, detail=str(exc)) from None
        return {"key": key, "size": result.size, "etag": result.etag, "crc64": result.crc64}

    return app


class _TooLarge(Exception):
    """A relayed body longer than ``Settings.relay_limit``."""


def _declared_length(header: str | None, limit: int) -> int | None:
    """The body's ``Content-Length`` as ``size=``; 400 if unreadable, 413 above ``limit``
    (refused before a byte is read: a huge claim would otherwise grow the parts held)."""
    if header is None:
        return None
    if not header.isdigit():
        raise HTTPException(status_code=400, detail="Content-Length is not a byte count")
    if int(header) > limit:
        raise HTTPException(
            status_code=413, detail=f"the body is {header} bytes; at most {limit} are taken"
        )
    return int(header)


async def _capped(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """``chunks``, failing with ``_TooLarge`` once more than ``limit`` bytes came (a chunked
    body has no length to refuse up front)."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > limit:
            raise _TooLarge(f"the body is longer than {limit} bytes, the most taken")
        yield chunk


app = create_app()
