"""One part's request body (``_Body``): read ahead in the IoRunner, CRC'd, checked.

Moved out of ``_upload_resume`` (which keeps the engine's state and resume phases) so that
each module stays within the size rule; the body knows its upload only through
``_BodyOwner``, the few things it asks of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

from ._errors import FileChangedError, IntegrityError
from ._fileio import CHUNK_SIZE, SourceFile
from ._http import Chunk, HttpResponse
from ._transfer import _Progress, _response_crc

__all__ = ["READ_AHEAD", "_Body", "_BodyOwner"]


class _BodyOwner(Protocol):
    """What a body needs of its upload (``_upload_resume._UploadBase`` is one)."""

    @property
    def bucket(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def src(self) -> SourceFile: ...
    @property
    def progress(self) -> _Progress: ...

    async def _source_change(self) -> str | None: ...

    def _file_changed(self, detail: str) -> FileChangedError: ...


READ_AHEAD = True
"""Read a part's next chunk while the current one is sent (``_Body``); a knob only so that
the benchmarks can measure it against not doing so."""


class _Body:
    """A part's body: a fresh chunk iterator per attempt, with the CRC of what was sent.

    Chunks are read (and CRC'd) in a worker thread one ahead of the socket: while chunk k
    is written, chunk k + 1 is read, so at most two chunks per part are in memory. They are
    read into the source's ``ChunkPool`` buffers, each given back once the transport has
    asked for the next chunk.

    An error that must end the request (the progress hook's, a source that shrank or
    changed) is kept in ``failure`` before it is raised through the transport, which would
    report it as a broken connection; the request raises ``failure`` instead of retrying.
    A ``whole_object`` body (PutObject) stat's the source before its last chunk is handed
    over, so OSS never receives the whole body of a file that changed while it was read.
    """

    def __init__(
        self, job: _BodyOwner, number: int, offset: int, size: int, *, whole_object: bool = False
    ) -> None:
        self.job = job
        self.number = number
        self.offset = offset
        self.size = size
        self.whole_object = whole_object
        self.crc = 0
        self.failure: Exception | None = None
        self.sent_whole = False  # some attempt handed over every byte

    def __call__(self) -> AsyncIterator[Chunk]:
        return self._chunks()

    def fatal(self) -> Exception | None:
        return self.failure

    def _fail(self, exc: Exception) -> Exception:
        if self.failure is None:
            self.failure = exc
        return self.failure

    async def _chunks(self) -> AsyncIterator[Chunk]:
        self.crc = 0
        position = 0
        ahead: asyncio.Future[tuple[Chunk, int]] | None = None
        try:
            while position < self.size:
                n = min(CHUNK_SIZE, self.size - position)
                if ahead is None:
                    ahead = asyncio.ensure_future(self._read(position, n, self.crc))
                try:
                    data, self.crc = await ahead
                except EOFError:
                    raise self._fail(self._changed("it became shorter")) from None
                ahead = None
                following = position + n
                if following < self.size and READ_AHEAD:
                    # The next chunk is read (and CRC'd) in its thread while this one goes
                    # out: the socket no longer idles during each read (routines x 2 x
                    # CHUNK_SIZE bytes at most in memory).
                    m = min(CHUNK_SIZE, self.size - following)
                    ahead = asyncio.ensure_future(self._read(following, m, self.crc))
                if self.whole_object and following == self.size:
                    await self._check_source()
                yield data
                # The transport asked for the next chunk: this one's buffer may be reused
                # (once nothing else refers to it: ``ChunkPool``).
                self.job.src.pool.give(data)
                del data
                position = following
                if position == self.size:
                    self.sent_whole = True
                try:
                    await self.job.progress.sent(self.number, position)
                except Exception as exc:
                    if position < self.size:
                        raise self._fail(exc) from None  # stop sending: the upload has failed
                    self._fail(exc)  # every byte is out: let OSS answer, then fail
        finally:
            if ahead is not None:
                # A read left pending by an error or a cancel: its wait stops at once (the
                # read goes on in its thread, its result dropped); waiting for that one
                # step means no task outlives the body. An EOFError it ended with is
                # retrieved, so it is not reported as never retrieved.
                if not ahead.done():
                    ahead.cancel()
                    await asyncio.wait([ahead])
                if not ahead.cancelled():
                    ahead.exception()

    async def _read(self, position: int, n: int, crc: int) -> tuple[Chunk, int]:
        return await self.job.src.read(self.offset + position, n, crc)

    async def _check_source(self) -> None:
        change = await self.job._source_change()
        if change is not None:
            raise self._fail(self._changed(change))

    def _changed(self, detail: str) -> FileChangedError:
        if not self.whole_object:
            return self.job._file_changed(detail)  # a part: the multipart upload is aborted
        where = f"oss://{self.job.bucket}/{self.job.key}"
        if self.sent_whole:
            outcome = (
                f"an earlier attempt, whose answer was lost, had sent the whole file as it was "
                f"before the change, so {where} may hold that version"
            )
        else:
            outcome = f"it was not stored ({where} was left as it was)"
        return FileChangedError(
            f"{self.job.path!r} changed while it was being uploaded ({detail}); {outcome}; "
            "run the upload again"
        )

    def check(self, resp: HttpResponse) -> None:
        reported = _response_crc(resp)
        if reported is not None and reported != self.crc:
            raise IntegrityError(
                f"part {self.number}: CRC-64 mismatch (sent {self.crc}, OSS stored {reported})",
                expected=self.crc,
                actual=reported,
            )
