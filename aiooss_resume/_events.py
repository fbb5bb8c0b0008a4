"""Progress events passed to ``upload_file(on_progress=...)`` and the hook's Protocol.

Every event is a frozen msgspec Struct, tagged with its class name, so a service can encode
it straight to JSON (``msgspec.json.encode(event)``) for server-sent events or logs.

Byte counts are *cumulative* and never go backwards: bytes re-sent by a retry are not counted
twice, and ``bytes_done`` reaches exactly ``total_bytes`` when the upload completes. Resumed
bytes (parts already on OSS from an earlier run) are counted in ``bytes_done`` from the start
and reported separately as ``resumed_bytes``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

__all__ = [
    "BytesSent",
    "PartDone",
    "PartRetried",
    "ProgressEvent",
    "ProgressHook",
    "UploadCompleted",
    "UploadStarted",
]


class UploadStarted(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """The upload is planned and about to send data.

    ``resumed`` is true when an earlier run's parts were found on OSS and kept; then
    ``resumed_bytes``/``resumed_parts`` say how much need not be sent again.
    """

    key: str
    total_bytes: int
    part_count: int
    part_size: int
    upload_id: str | None
    resumed: bool = False
    resumed_bytes: int = 0
    resumed_parts: int = 0


class BytesSent(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """More bytes were handed to the network. ``bytes_done`` includes resumed bytes."""

    key: str
    bytes_done: int
    total_bytes: int
    resumed_bytes: int = 0


class PartDone(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """OSS acknowledged a part and its CRC-64 matched.

    ``parts_done`` counts parts done so far, resumed ones included, and never decreases: if
    the upload id vanishes and a new upload starts, it stays put while parts are sent again.
    """

    key: str
    part_number: int
    size: int
    parts_done: int
    part_count: int


class PartRetried(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """A request failed transiently and is about to be retried.

    ``part_number`` is 0 for requests that are not part uploads (Initiate, Complete...).
    """

    key: str
    part_number: int
    attempt: int
    error: str
    delay: float


class UploadCompleted(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """The object exists and its CRC-64 was verified."""

    key: str
    total_bytes: int
    etag: str
    crc64: int
    upload_id: str | None
    parts_uploaded: int
    parts_resumed: int


ProgressEvent = UploadStarted | BytesSent | PartDone | PartRetried | UploadCompleted
"""Any progress event."""

ProgressHook = Callable[[ProgressEvent], Awaitable[None] | None]
"""A sync or async callable receiving progress events, in order, on the event loop."""
