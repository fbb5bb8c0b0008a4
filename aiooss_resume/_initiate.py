"""InitiateMultipartUpload without orphans: after a retried Initiate, abort the extra uploads
that the attempts whose answers were lost created (issue 10, item 3).

Theory of operation
-------------------
Initiate is not idempotent on OSS: every request that reaches the server creates an upload,
answered or not. When an answer is lost (a reset, a timeout after the server acted) and the
request is retried, the answer kept names one upload and the others are orphaned: nobody
knows their ids, so nobody completes or aborts them, and OSS keeps them until a lifecycle
rule removes them.

Only when an attempt got no answer and Initiate was retried (``failures`` > 0: a transport
or protocol error; an error answer from OSS means it created nothing),
``InitiateAttempt.clean_up`` lists the open uploads of this exact key (ListMultipartUploads
with the key as prefix, every page, entries of longer keys ignored) and aborts those that

1. are not the upload kept;
2. were initiated inside this call's window, in server time: from just before the first
   attempt was sent to just after the answer kept arrived. Local times are turned into server
   times with the offset bounded by the listing's own ``Date`` header (one-second
   resolution, and the request's round trip, widen the bounds), and the window's ends are
   rounded outwards to whole seconds, OSS's resolution for ``Initiated``;
3. hold no parts (ListParts): our lost attempts' uploads never got one (nobody knew their
   ids), so an upload with parts is someone else's work in progress;
4. are no more than the attempts that got no answer: each created at most one upload,
   so more empty candidates than that means another client is initiating the same key at
   the same moment, and none of them can be told apart from ours: all are left alone.

When Initiate fails in the end (its last attempt unanswered too, retries exhausted) or is
cancelled, no upload is kept, yet every unanswered attempt (a cancelled one in flight
included) may have created one: ``clean_up`` sweeps then too, with no upload kept, over the
window from the first attempt to the sweep itself. The caller runs it on an exception, and
on a cancel shielded and bounded in time (``_upload_resume``); what it cannot rule out (a
sweep cut short, a request in flight that OSS acts on after the sweep) is logged as a warning
naming ``aiooss-resume uploads oss://bucket/key``.

The kept upload must itself appear inside the window; if it does not, the clock reasoning is
wrong somehow and nothing is aborted. Anything outside the window is never touched (another
process may be uploading the same key). A cleanup that fails (a refused listing, a network
error) is logged as a warning naming what is left, and never fails the upload.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime

from ._errors import NoSuchUploadError, OssError, ProtocolError, ServiceError
from ._models import InitiateResult, ListUploadsResult, UploadSummary
from ._retry import parse_http_date
from ._session import RetryHook, Session
from ._xml import decode_list_uploads_result

__all__ = ["InitiateAttempt"]

logger = logging.getLogger("aiooss_resume")


def _now() -> float:
    return datetime.now(UTC).timestamp()


def _initiated(upload: UploadSummary) -> float | None:
    """An upload's ``Initiated`` (ISO 8601) as a POSIX timestamp, or None if unreadable."""
    try:
        when = datetime.fromisoformat(upload.initiated)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


class InitiateAttempt:
    """One Initiate of ``upload_file``: ``initiate()``, then ``clean_up()`` once the caller
    has recorded the upload id (so that a cancel during the cleanup cannot lose it)."""

    def __init__(
        self,
        client: Session,
        bucket: str,
        key: str,
        headers: Mapping[str, str],
        other_headers: Mapping[str, str],
        on_retry: RetryHook | None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.headers = headers
        self.other_headers = other_headers  # e.g. x-oss-request-payer, for List/Abort
        self.on_retry = on_retry
        self.failures = 0  # attempts that got no answer: each may have created an upload
        self.started = 0.0
        self.ended = 0.0
        self.kept: str | None = None

    async def _hook(self, failures: int, error: OssError, delay: float) -> None:
        if not isinstance(error, ServiceError):
            # No answer (or a garbled one): OSS may have acted. An error answer from OSS
            # means it created nothing.
            self.failures += 1
        if self.on_retry is not None:
            result = self.on_retry(failures, error, delay)
            if result is not None:
                await result

    async def initiate(self) -> InitiateResult:
        """InitiateMultipartUpload, retried as every request is; notes when it was retried.

        When it fails (or is cancelled) without an error answer from OSS, its last attempt
        counts as one more that may have created an upload: ``clean_up`` then looks for it.
        """
        self.started = _now()
        try:
            result = await self.client._initiate(self.bucket, self.key, self.headers, self._hook)
        except ServiceError:
            self.ended = _now()
            raise
        except BaseException:  # a lost answer, or a cancel while a request was in flight
            self.failures += 1
            self.ended = _now()
            raise
        self.ended = _now()
        self.kept = result.upload_id
        return result

    def hint(self) -> str:
        """Where to look for what a lost Initiate answer may have left (for warnings)."""
        return f"look for them with `aiooss-resume uploads oss://{self.bucket}/{self.key}`"

    async def clean_up(self) -> list[str]:
        """After a retried or failed Initiate, abort the uploads of the attempts that got no
        answer (all but the one kept, if any); the ids aborted.

        Never raises an ``OssError``: what cannot be cleaned up is logged and left.
        """
        if not self.failures:
            return []
        if self.kept is None:
            # Initiate failed or was cancelled: the window runs until now, as a request
            # still in flight may have created its upload meanwhile.
            self.ended = max(self.ended, _now())
        try:
            return await self._sweep(self.kept)
        except OssError as exc:
            logger.warning(
                "Initiate of oss://%s/%s got no answer %d times, and the uploads those "
                "attempts may have created could not be looked for: %s; %s%s",
                self.bucket, self.key, self.failures, exc, self.hint(),
                "" if self.kept is None else f" (upload {self.kept} is this upload's own)",
            )  # fmt: skip
            return []

    async def _sweep(self, kept: str | None) -> list[str]:
        uploads, offset_low, offset_high = await self._list_key_uploads()
        if offset_low is None or offset_high is None:
            logger.warning(
                "Initiate of oss://%s/%s was retried, but the server sent no usable Date: "
                "its extra uploads cannot be told from others and are left alone",
                self.bucket,
                self.key,
            )
            return []
        low = math.floor(self.started + offset_low)
        high = math.ceil(self.ended + offset_high)
        times = {u.upload_id: _initiated(u) for u in uploads}
        kept_at = None if kept is None else times.get(kept)
        if kept is not None and (kept_at is None or not low <= kept_at <= high):
            logger.warning(
                "Initiate of oss://%s/%s was retried, but the upload kept (%s) is not listed "
                "inside the call's time window: no other upload is aborted",
                self.bucket,
                self.key,
                kept,
            )
            return []
        candidates = [
            u.upload_id
            for u in uploads
            if u.upload_id != kept and (at := times[u.upload_id]) is not None and low <= at <= high
        ]
        empty = [upload_id for upload_id in candidates if await self._holds_no_parts(upload_id)]
        if len(empty) > self.failures:
            logger.warning(
                "Initiate of oss://%s/%s got no answer %d times, but %d other empty "
                "uploads of it were initiated meanwhile: another client is uploading the "
                "same key, so none is aborted (%s)",
                self.bucket, self.key, self.failures, len(empty), ", ".join(empty),
            )  # fmt: skip
            return []
        return [upload_id for upload_id in empty if await self._abort(upload_id)]

    async def _holds_no_parts(self, upload_id: str) -> bool:
        try:
            parts = await self.client._list_parts(
                self.bucket, self.key, upload_id, self.other_headers
            )
        except NoSuchUploadError:
            return False  # gone already
        if parts:
            # Our lost attempts' uploads never had a part: nobody knew their ids.
            logger.warning(
                "leaving upload %s of oss://%s/%s alone: it was initiated while this call's "
                "Initiate was retried, but it holds %d parts, so it is someone else's",
                upload_id, self.bucket, self.key, len(parts),
            )  # fmt: skip
            return False
        return True

    async def _abort(self, upload_id: str) -> bool:
        try:
            await self.client._abort(self.bucket, self.key, upload_id, self.other_headers)
        except NoSuchUploadError:
            return False  # gone already
        except OssError as exc:
            logger.warning(
                "could not abort upload %s of oss://%s/%s, which a retried Initiate left "
                "behind: %s; abort it with `aiooss-resume abort oss://%s/%s --upload-id %s`",
                upload_id, self.bucket, self.key, exc, self.bucket, self.key, upload_id,
            )  # fmt: skip
            return False
        logger.info(
            "aborted upload %s of oss://%s/%s: a retried Initiate's lost answer created it",
            upload_id,
            self.bucket,
            self.key,
        )
        return True

    async def _list_key_uploads(
        self,
    ) -> tuple[list[UploadSummary], float | None, float | None]:
        """The open uploads of exactly this key (every page), and bounds on server time
        minus local time taken from the first page's ``Date``."""
        found: list[UploadSummary] = []
        key_marker = upload_id_marker = ""
        offset_low: float | None = None
        offset_high: float | None = None
        while True:
            query = [
                ("uploads", ""),
                ("max-uploads", "1000"),
                ("encoding-type", "url"),
                ("prefix", self.key),
            ]
            if key_marker:
                query.append(("key-marker", key_marker))
            if upload_id_marker:
                query.append(("upload-id-marker", upload_id_marker))
            sent = _now()
            resp = await self.client._request(
                "GET", self.bucket, None, query=query, headers=self.other_headers
            )
            received = _now()
            if offset_low is None:
                date = parse_http_date(resp.header("date"))
                if date is not None:
                    # The server's clock read date.timestamp() + [0, 1) at some local moment
                    # between sent and received.
                    offset_low = date.timestamp() - received
                    offset_high = date.timestamp() + 1 - sent
            page: ListUploadsResult = await self.client._io.run(
                decode_list_uploads_result, resp.body
            )
            for upload in page.uploads:
                if upload.key != self.key:
                    # Keys sort after their own prefix: every later entry is a longer key.
                    return found, offset_low, offset_high
                found.append(upload)
            if not page.is_truncated:
                return found, offset_low, offset_high
            marker = (page.next_key_marker, page.next_upload_id_marker)
            if marker == (key_marker, upload_id_marker):
                raise ProtocolError("ListMultipartUploads is truncated but does not advance")
            key_marker, upload_id_marker = marker
