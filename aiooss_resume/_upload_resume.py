"""The upload engine's state and its resume logic (``_uploader`` drives the phases).

``_UploadBase`` holds one ``upload_file`` call's state and the small helpers every phase
uses (retry events, source checks, aborting a stale upload). ``_Resume`` adds what a rerun
needs: loading and validating the checkpoint, reconciling it with ListParts, recognising a
run killed after Complete, starting a new upload, and Complete itself with its CRC check.
A part's request body is ``_upload_body._Body``. See ``_uploader`` for the theory of operation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import anyio.lowlevel

from ._checkpoint import (
    STREAM_SOURCE,
    Checkpoint,
    CheckpointPart,
    SourceIdentity,
    decode_checkpoint,
    options_fingerprint,
    peek_source_path,
    peek_upload_target,
)
from ._errors import (
    CheckpointError,
    FileChangedError,
    IntegrityError,
    NoSuchUploadError,
    OssError,
    ProtocolError,
)
from ._events import PartRetried, ProgressHook, UploadCompleted, UploadStarted
from ._fileio import SourceFile, read_optional, remove_quietly, stat_identity
from ._foreign import Adoption
from ._initiate import InitiateAttempt
from ._models import InitiateResult, PartInfo
from ._planner import PartPlan
from ._session import Session
from ._transfer import (
    _CheckpointWriter,
    _fold_crcs,
    _head_matches,
    _identity_difference,
    _Progress,
    _response_crc,
    _same_etag,
    clean_up_after_cancel,
)
from ._upload_plan import _NOT_SHAPING, UploadResult, _HeaderPlan

__all__ = ["_Resume", "_UploadBase"]

logger = logging.getLogger("aiooss_resume")


class _UploadBase:
    """One call of ``upload_file``: its state, and helpers every phase uses."""

    adoption: Adoption | None = None  # another tool's record of this upload (_foreign)

    def __init__(
        self,
        client: Session,
        bucket: str,
        key: str,
        path: str,
        part_size: int,
        routines: int,
        cp_path: str | None,
        headers: _HeaderPlan,
        on_progress: ProgressHook | None,
    ) -> None:
        self.client = client
        self.io = client._io
        self.bucket = bucket
        self.key = key
        self.path = path
        self.requested_part_size = part_size
        self.routines = routines
        self.cp_path = cp_path
        self.headers = headers
        self.hook = on_progress
        self.src: SourceFile
        self.identity: SourceIdentity
        self.progress: _Progress
        self.writer: _CheckpointWriter[Checkpoint, CheckpointPart] | None = None
        self.upload_id: str | None = None
        self.resumed: set[int] = set()
        self.completing = False
        self.on_disk = False  # True once a checkpoint file names self.upload_id

    # ------------------------------------------------------------------ events, source

    async def _on_retry(self, number: int, failures: int, error: OssError, delay: float) -> None:
        await self.progress.emit(
            PartRetried(
                key=self.key, part_number=number, attempt=failures, error=str(error), delay=delay
            )
        )

    def _retry_hook(self, number: int) -> Callable[[int, OssError, float], Awaitable[None]]:
        async def hook(failures: int, error: OssError, delay: float) -> None:
            await self._on_retry(number, failures, error, delay)

        return hook

    def _file_changed(self, detail: str) -> FileChangedError:
        return FileChangedError(
            f"{self.path!r} changed while it was being uploaded ({detail}); the multipart "
            "upload was not completed, run the upload again"
        )

    async def _source_change(self) -> str | None:
        """How the source differs from the identity taken at the start, or None."""
        try:
            current = await self.io.run(stat_identity, self.path)
        except FileNotFoundError:
            return "it was removed"
        return None if current == self.identity else _identity_difference(self.identity, current)

    async def _check_source_unchanged(self) -> None:
        change = await self._source_change()
        if change is not None:
            raise self._file_changed(change)

    async def _emit_completed(self, result: UploadResult) -> None:
        await self.progress.finish()
        await self.progress.emit(
            UploadCompleted(
                key=self.key,
                total_bytes=result.size,
                etag=result.etag,
                crc64=result.crc64,
                upload_id=result.upload_id,
                parts_uploaded=result.parts_uploaded,
                parts_resumed=result.parts_resumed,
            )
        )

    # ------------------------------------------------------------------ checkpoint

    def _fingerprint(self, part_size: int) -> str:
        # Only what shapes the object: a throttle (x-oss-traffic-limit) or who pays for the
        # requests may change between runs without costing the parts already uploaded.
        def shaping(headers: Mapping[str, str]) -> dict[str, str]:
            return {k: v for k, v in headers.items() if k.lower() not in _NOT_SHAPING}

        return options_fingerprint(
            part_size=part_size,
            initiate_headers=shaping(self.headers.initiate),
            complete_headers=shaping(self.headers.complete),
        )

    async def _abort_quietly(self, bucket: str, key: str, upload_id: str, why: str) -> None:
        try:
            await self.client._abort(bucket, key, upload_id, self.headers.other)
            logger.info("aborted upload %s of %s (%s)", upload_id, key, why)
        except OssError as exc:
            # NoSuchUpload: already gone. Anything else: the caller's upload still proceeds;
            # OSS lifecycle rules or `aiooss-resume uploads` can clean up the leftover.
            logger.warning("could not abort upload %s of %s: %s", upload_id, key, exc)

    def _owns(self, endpoint: str, bucket: str, key: str, source_path: str | None) -> bool:
        """Whether an upload a checkpoint names is this call's to abort.

        A checkpoint is data from disk, not a command: only an upload of this very file to
        this very target (endpoint, bucket, key, source path) is ours. Its content may have
        changed since (size, mtime): that makes it stale, not someone else's, and the Abort
        goes to this call's own bucket and key, where OSS binds the upload id.
        """
        return (endpoint, bucket, key, source_path) == (
            self.client.endpoint,
            self.bucket,
            self.key,
            self.path,
        )

    def _leave_upload(self, endpoint: str, bucket: str, key: str, upload_id: str, why: str) -> None:
        logger.warning(
            "leaving upload %s of oss://%s/%s (endpoint %s) untouched: %s; it is not this "
            "upload's to abort. Find it with `aiooss-resume uploads oss://%s/%s`, abort it "
            "with `aiooss-resume abort oss://%s/%s --upload-id %s` if nobody will resume it",
            upload_id, bucket, key, endpoint, why, bucket, key, bucket, key, upload_id,
        )  # fmt: skip

    async def _drop_stale(
        self, endpoint: str, bucket: str, key: str, upload_id: str, source: str | None, why: str
    ) -> None:
        """Abort a stale upload a checkpoint names if this call owns it, else name it."""
        if self._owns(endpoint, bucket, key, source):
            await self._abort_quietly(bucket, key, upload_id, why)
        else:
            self._leave_upload(endpoint, bucket, key, upload_id, why)


class _Resume(_UploadBase):
    """The phases of a rerun: checkpoint, reconciliation, Initiate, Complete."""

    async def _discard_checkpoint_file(self, why: str) -> None:
        assert self.cp_path is not None
        data = await self.io.run(read_optional, self.cp_path)
        if data is None:
            return
        target = peek_upload_target(data)
        if target is not None:
            endpoint, bucket, key, upload_id = target
            if (endpoint, bucket, key) != (self.client.endpoint, self.bucket, self.key):
                # Another target's record (an explicit checkpoint= path): this call writes no
                # checkpoint, so it leaves that file, and its upload, as they are.
                self._leave_upload(endpoint, bucket, key, upload_id, why)
                logger.warning("checkpoint %s is kept: it records another target", self.cp_path)
                return
            await self._drop_stale(endpoint, bucket, key, upload_id, peek_source_path(data), why)
        await self.io.run(remove_quietly, self.cp_path)

    async def _load_checkpoint(self, part_size: int) -> Checkpoint | None:
        assert self.cp_path is not None
        data = await self.io.run(read_optional, self.cp_path)
        if self.adoption is not None:
            adopted = self.adoption.take(data, self.identity, self._fingerprint(part_size))
            if adopted is not None:
                return adopted
        if data is None:
            return None
        try:
            cp = decode_checkpoint(data)
        except CheckpointError as exc:
            logger.warning(
                "checkpoint %s is damaged (%s): uploading all parts again", self.cp_path, exc
            )
            # Nothing of a damaged file is verified: its upload is aborted only when what can
            # be read of it names this very target and file, so the Abort goes to our own
            # bucket and key (an upload id is bound to them on OSS) and at worst ends an
            # upload of this same file to this same object. Anything else is named, not
            # touched.
            target = peek_upload_target(data)
            if target is not None:
                await self._drop_stale(*target, peek_source_path(data), "its checkpoint is damaged")
            return None
        if (cp.endpoint, cp.bucket, cp.key) != (self.client.endpoint, self.bucket, self.key):
            # checkpoint=True never gets here (checkpoint_path_for picks a name of our own);
            # an explicit path does: overwriting it would lose that upload's parts.
            raise CheckpointError(
                f"checkpoint {self.cp_path!r} records upload {cp.upload_id} of "
                f"oss://{cp.bucket}/{cp.key} at {cp.endpoint}, not of oss://{self.bucket}/"
                f"{self.key}: pass another checkpoint path (or resume or abort that upload "
                "first); nothing was uploaded"
            )
        reason = ""
        if cp.source != self.identity:
            reason = _source_change(cp.source, self.identity)
        elif cp.part_size != part_size or cp.options_fingerprint != self._fingerprint(part_size):
            reason = "the part size or object options differ"
        if reason:
            logger.warning(
                "not resuming from checkpoint %s: %s; uploading the whole object again",
                self.cp_path,
                reason,
            )
            await self._drop_stale(
                cp.endpoint, cp.bucket, cp.key, cp.upload_id, cp.source.path, reason
            )
            return None
        return cp

    # ------------------------------------------------------------------ Initiate

    async def _initiate(self, part_size: int) -> Checkpoint:
        attempt = InitiateAttempt(
            self.client,
            self.bucket,
            self.key,
            self.headers.initiate,
            self.headers.other,
            self._retry_hook(0),
        )

        def keep(upload_id: str) -> None:
            self.upload_id = upload_id

        result = await _initiate_swept(attempt, keep)
        return Checkpoint(
            endpoint=self.client.endpoint,
            bucket=self.bucket,
            key=self.key,
            upload_id=result.upload_id,
            part_size=part_size,
            options_fingerprint=self._fingerprint(part_size),
            source=self.identity,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    async def _reconcile(
        self, plan: list[PartPlan], checkpoint: Checkpoint, server_parts: list[PartInfo]
    ) -> dict[int, CheckpointPart]:
        server = {p.part_number: p for p in server_parts}
        recorded = {p.number: p for p in checkpoint.parts}
        done: dict[int, CheckpointPart] = {}
        for planned in plan:
            listed = server.get(planned.number)
            if listed is None or listed.size != planned.size:
                continue
            local = await self.src.crc_range(planned.offset, planned.size)
            mine = recorded.get(planned.number)
            if listed.crc64 is not None:
                ok = listed.crc64 == local
            else:  # no CRC from the server: fall back on the recorded ETag and CRC
                ok = mine is not None and _same_etag(mine.etag, listed.etag) and mine.crc64 == local
            if ok:
                done[planned.number] = CheckpointPart(
                    planned.number, planned.size, listed.etag, local
                )
        logger.info(
            "resuming upload %s: %d of %d parts already on OSS",
            checkpoint.upload_id,
            len(done),
            len(plan),
        )
        return done

    async def _already_completed(
        self, plan: list[PartPlan], checkpoint: Checkpoint
    ) -> UploadResult | None:
        """A run killed after Complete: OSS already holds exactly this file under the key.

        Decided by HEAD (size and CRC-64) against the whole local file, so it holds even
        when the last checkpoint write before the kill did not list every part.
        """
        head = await self.client._head(self.bucket, self.key, self.headers.other)
        if head is None:
            return None
        try:
            reported = _response_crc(head)
            length = int(head.header("content-length", "-1"))
        except (ValueError, ProtocolError):
            return None
        if reported is None or length != self.identity.size:
            return None
        if await self.src.crc_range(0, self.identity.size) != reported:
            return None
        self.upload_id = checkpoint.upload_id
        assert self.cp_path is not None
        await self.io.run(remove_quietly, self.cp_path)
        for p in plan:
            self.progress.resume(p.number, p.size)
        await self.progress.emit(
            UploadStarted(
                key=self.key,
                total_bytes=self.identity.size,
                part_count=len(plan),
                part_size=checkpoint.part_size,
                upload_id=checkpoint.upload_id,
                resumed=True,
                resumed_bytes=self.identity.size,
                resumed_parts=len(plan),
            )
        )
        result = UploadResult(
            bucket=self.bucket,
            key=self.key,
            etag=head.header("etag"),
            crc64=reported,
            size=self.identity.size,
            upload_id=checkpoint.upload_id,
            part_size=checkpoint.part_size,
            parts_uploaded=0,
            parts_resumed=len(plan),
            bytes_resumed=self.identity.size,
            request_id=head.header("x-oss-request-id"),
        )
        await self._emit_completed(result)
        return result

    async def _complete(
        self,
        plan: list[PartPlan],
        part_size: int,
        done: dict[int, CheckpointPart],
    ) -> UploadResult:
        assert self.upload_id is not None
        parts = [done[p.number] for p in plan]
        expected = await _fold_crcs(parts)
        # A cancel that arrived during the final flush must stop us here, before Complete
        # makes the object real.
        await anyio.lowlevel.checkpoint_if_cancelled()
        self.completing = True
        try:
            result, resp = await self.client._complete(
                self.bucket,
                self.key,
                self.upload_id,
                ((p.number, p.etag) for p in parts),  # lazily: see _client._encode_complete
                self.headers.complete,
                self._retry_hook(0),
            )
        except NoSuchUploadError as exc:
            # Spec 10.3: Complete may have succeeded and its answer been lost.
            head = await self.client._head(self.bucket, self.key, self.headers.other)
            if head is None or not _head_matches(head, self.identity.size, expected):
                exc.add_note(
                    f"upload {self.upload_id} is gone and oss://{self.bucket}/{self.key} does "
                    "not hold this file"
                )
                raise
            etag, request_id = head.header("etag"), head.header("x-oss-request-id")
        else:
            etag, request_id = result.etag or resp.header("etag"), resp.header("x-oss-request-id")
            reported = _response_crc(resp)
            if reported is None:
                head = await self.client._head(self.bucket, self.key, self.headers.other)
                reported = _response_crc(head) if head is not None else None
            if reported is not None and reported != expected:
                if self.cp_path is not None:
                    await self.io.run(remove_quietly, self.cp_path)
                raise IntegrityError(
                    f"oss://{self.bucket}/{self.key} exists but its CRC-64 ({reported}) differs "
                    f"from the uploaded parts' ({expected}); the object is corrupt, upload again",
                    expected=expected,
                    actual=reported,
                )
        if self.cp_path is not None:
            await self.io.run(remove_quietly, self.cp_path)
        result_obj = UploadResult(
            bucket=self.bucket,
            key=self.key,
            etag=etag,
            crc64=expected,
            size=self.identity.size,
            upload_id=self.upload_id,
            part_size=part_size,
            parts_uploaded=len(parts) - len(self.resumed),
            parts_resumed=len(self.resumed),
            bytes_resumed=sum(p.size for p in parts if p.number in self.resumed),
            request_id=request_id,
        )
        await self._emit_completed(result_obj)
        return result_obj


async def _initiate_swept(attempt: InitiateAttempt, keep: Callable[[str], None]) -> InitiateResult:
    """Initiate; ``keep(upload_id)``; then the sweep of what lost answers left (issue 10.3,
    see ``_initiate``): after a failed or cancelled Initiate too, a cancelled sweep
    shielded and bounded in time."""
    try:
        result = await attempt.initiate()
    except asyncio.CancelledError:
        await _sweep_after_cancel(attempt, attempt.key)
        raise
    except Exception:
        await attempt.clean_up()
        raise
    keep(result.upload_id)  # recorded before the sweep, so that a cancel cannot lose it
    try:
        await attempt.clean_up()
    except asyncio.CancelledError:
        await _sweep_after_cancel(attempt, attempt.key)
        raise
    return result


async def _sweep_after_cancel(attempt: InitiateAttempt, key: str) -> None:
    """A cancelled Initiate (or its cleanup): the sweep, shielded and bounded in time."""
    if not attempt.failures:
        return
    aborted: list[str] = []

    async def sweep() -> None:
        aborted.extend(await attempt.clean_up())

    detail = "aborting what the Initiate attempts without an answer created; " + attempt.hint()
    await clean_up_after_cancel(sweep(), f"Initiate of {key}", detail)
    if attempt.kept is None and len(aborted) < attempt.failures:
        logger.warning(
            "Initiate of oss://%s/%s was cancelled: an attempt in flight may still create an "
            "upload that nobody knows of; %s",
            attempt.bucket,
            attempt.key,
            attempt.hint(),
        )


def _source_change(old: SourceIdentity, new: SourceIdentity) -> str:
    """Why a checkpoint's source is not this call's, in a file's terms or a stream's."""
    if old.path == new.path == STREAM_SOURCE:  # upload_stream: only size= can differ

        def known(size: int) -> str:
            return "unknown" if size < 0 else str(size)

        return f"size= changed from {known(old.size)} to {known(new.size)}"
    return "the source file changed since: " + _identity_difference(old, new)
