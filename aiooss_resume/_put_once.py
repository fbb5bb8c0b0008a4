"""PutObject whose lost answer is not mistaken for someone else's object (audit of issue 10).

Theory of operation
-------------------
A PutObject whose answer is lost (a reset, a timeout after OSS stored the body) is retried,
as every request is. Without ``x-oss-forbid-overwrite`` the retry simply stores the same
bytes again. With it, the retry is refused with ``409 FileAlreadyExists``: the object is
there, but it may be ours (the unanswered attempt stored it) or someone else's (written
meanwhile, or before).

So, only when an attempt of this call got no answer (a transport or protocol error: an
error answer from OSS means it stored nothing) and the request then ends in
``FileAlreadyExists``, the key is HEADed: an object of exactly the size sent whose CRC-64
(``x-oss-hash-crc64ecma``) equals the CRC-64 of the bytes sent is taken as ours, and the
upload succeeds with the HEAD's ETag and request id. Anything else (another size or CRC, no
CRC reported, no object) re-raises the 409, with a note saying what was found. A CRC-64
match of another writer's object with the same size is as unlikely as a CRC collision, and
would mean that exactly our bytes are stored anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from ._errors import OssError, ServiceError
from ._http import BodyFactory, HttpResponse
from ._session import RetryHook, Session
from ._transfer import _head_matches

__all__ = ["put_object_once"]

logger = logging.getLogger("aiooss_resume")


async def put_object_once(
    client: Session,
    bucket: str,
    key: str,
    body: BodyFactory,
    size: int,
    headers: Mapping[str, str],
    check: Callable[[HttpResponse], None],
    on_retry: RetryHook | None,
    *,
    fatal: Callable[[], BaseException | None] | None,
    sent_crc: Callable[[], Awaitable[int]],
    head_headers: Mapping[str, str],
) -> tuple[HttpResponse, int | None]:
    """``Session._put_object``; a ``FileAlreadyExists`` after an unanswered attempt is a
    success when HEAD shows our bytes. Returns the response (PutObject's, or HEAD's) and,
    in the latter case, the CRC-64 verified (``sent_crc()``), else None."""
    unanswered = 0

    async def hook(failures: int, error: OssError, delay: float) -> None:
        nonlocal unanswered
        if not isinstance(error, ServiceError):
            unanswered += 1
        if on_retry is not None:
            result = on_retry(failures, error, delay)
            if result is not None:
                await result

    try:
        resp = await client._put_object(
            bucket, key, body, size, headers, check, hook, fatal=fatal
        )  # fmt: skip
    except ServiceError as exc:
        if exc.code != "FileAlreadyExists" or not unanswered:
            raise
        crc = await sent_crc()
        head = await client._head(bucket, key, head_headers)
        if head is None or not _head_matches(head, size, crc):
            exc.add_note(
                f"(an earlier attempt of this PutObject got no answer, but oss://{bucket}/"
                f"{key} is not the {size} bytes with CRC-64 {crc} that were sent: it is "
                "someone else's)"
            )
            raise
        logger.info(
            "PutObject of oss://%s/%s: an attempt whose answer was lost stored it; the retry "
            "was refused (forbid-overwrite), and HEAD shows the bytes sent (size, CRC-64)",
            bucket,
            key,
        )
        return head, crc
    return resp, None
