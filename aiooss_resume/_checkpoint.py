"""The resumable-upload checkpoint: a versioned, checksummed msgspec Struct.

Theory of operation
-------------------
The file is one JSON document, readable with any tool::

    {"format": "aiooss_resume.checkpoint", "version": 1,
     "sha256": "<hex digest of the payload bytes>", "payload": {...}}

``payload`` is kept as ``msgspec.Raw``: the checksum covers exactly the bytes on disk, so any
truncation, bit flip or hand edit is detected before a single field is trusted (the OSS
documentation promises that a damaged checkpoint means all parts are uploaded again). The
payload records the target (endpoint, bucket, key), the upload id, the part size, a
fingerprint of the options that shape the object, the source file's identity and every part
OSS acknowledged, as compact ``[number, size, etag, crc64]`` arrays: 10,000 parts take about
600 KB.

Versioning (house rule): new fields only with defaults, never change a field's type; an
unknown ``version`` is treated as damaged, never guessed at.

This module is pure: it encodes and decodes bytes. ``_fileio`` writes them atomically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import msgspec

from ._errors import CheckpointError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "DOWNLOAD_CHECKPOINT_FORMAT",
    "STREAM_SOURCE",
    "Checkpoint",
    "CheckpointPart",
    "DownloadCheckpoint",
    "DownloadPart",
    "SourceIdentity",
    "decode_checkpoint",
    "decode_download_checkpoint",
    "encode_checkpoint",
    "encode_download_checkpoint",
    "options_fingerprint",
    "peek_source_path",
    "peek_upload_target",
]

CHECKPOINT_FORMAT = "aiooss_resume.checkpoint"
CHECKPOINT_VERSION = 1


STREAM_SOURCE = "<stream>"
"""The ``source.path`` a stream upload's checkpoint records (a file's is absolute)."""


class CheckpointPart(msgspec.Struct, frozen=True, array_like=True):
    """A part OSS acknowledged: its number, size, ETag (quoted, as sent) and CRC-64."""

    number: int
    size: int
    etag: str
    crc64: int


class SourceIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """Who the source file is: any difference means the file is not the one uploaded."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    device: int = 0


class Checkpoint(msgspec.Struct, kw_only=True):
    """Everything needed to continue a multipart upload in a later run."""

    endpoint: str
    bucket: str
    key: str
    upload_id: str
    part_size: int
    options_fingerprint: str
    source: SourceIdentity
    parts: list[CheckpointPart] = msgspec.field(default_factory=list)
    created_at: str = ""
    # "<tool> <path>" when the upload was adopted from another tool's checkpoint (_foreign):
    # its part layout is then the one on OSS, whatever part size a later run asks for.
    adopted_from: str = ""
    # A stream upload's (upload_stream): how many bytes of the stream had been read when
    # this was written, a lower bound on its length; a reopened stream ending before it is
    # not the same stream. 0 for files, and in checkpoints written before it existed.
    stream_read: int = 0


class _Envelope(msgspec.Struct, kw_only=True):
    format: str
    version: int
    sha256: str
    payload: msgspec.Raw


class _PeekSource(msgspec.Struct, kw_only=True):
    path: str


class _Target(msgspec.Struct, kw_only=True):
    """The few fields read from a damaged checkpoint to decide about its stale upload."""

    endpoint: str
    bucket: str
    key: str
    upload_id: str
    source: _PeekSource | None = None


_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_payload_decoder = msgspec.json.Decoder(Checkpoint)
_target_decoder = msgspec.json.Decoder(_Target)


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    """Encode ``checkpoint`` with its checksum, ready to be written atomically."""
    payload = _encoder.encode(checkpoint)
    envelope = _Envelope(
        format=CHECKPOINT_FORMAT,
        version=CHECKPOINT_VERSION,
        sha256=hashlib.sha256(payload).hexdigest(),
        payload=msgspec.Raw(payload),
    )
    return _encoder.encode(envelope) + b"\n"


def _envelope(data: bytes) -> _Envelope:
    try:
        envelope = _envelope_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint is not decodable: {exc}") from None
    if envelope.format != CHECKPOINT_FORMAT:
        raise CheckpointError(f"not an aiooss_resume checkpoint (format {envelope.format!r})")
    if envelope.version != CHECKPOINT_VERSION:
        raise CheckpointError(f"unknown checkpoint version {envelope.version}")
    return envelope


def decode_checkpoint(data: bytes) -> Checkpoint:
    """Decode and verify a checkpoint; any damage raises ``CheckpointError``."""
    envelope = _envelope(data)
    payload = bytes(envelope.payload)
    if hashlib.sha256(payload).hexdigest() != envelope.sha256:
        raise CheckpointError("checkpoint checksum mismatch: the file is damaged")
    try:
        checkpoint = _payload_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise CheckpointError(f"checkpoint payload is invalid: {exc}") from None
    _check_consistent(checkpoint)
    return checkpoint


def _check_consistent(checkpoint: Checkpoint) -> None:
    if checkpoint.part_size <= 0 or not checkpoint.upload_id:
        raise CheckpointError("checkpoint is inconsistent: no upload id or part size")
    numbers = [p.number for p in checkpoint.parts]
    if numbers != sorted(set(numbers)) or any(n < 1 or n > 10_000 for n in numbers):
        raise CheckpointError("checkpoint is inconsistent: bad part numbers")


def _peek(data: bytes) -> _Target | None:
    try:
        envelope = _envelope_decoder.decode(data)
        return _target_decoder.decode(bytes(envelope.payload))
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def peek_upload_target(data: bytes) -> tuple[str, str, str, str] | None:
    """Best effort: ``(endpoint, bucket, key, upload_id)`` from a possibly damaged checkpoint.

    Unverified data: the caller aborts the upload it names only when endpoint, bucket, key
    and source path are all its own (see ``peek_source_path``), and names it otherwise.
    """
    target = _peek(data)
    if target is None:
        return None
    return target.endpoint, target.bucket, target.key, target.upload_id


def peek_source_path(data: bytes) -> str | None:
    """Best effort: the source path a possibly damaged checkpoint records, or None."""
    target = _peek(data)
    return None if target is None or target.source is None else target.source.path


def options_fingerprint(
    *, part_size: int, initiate_headers: Mapping[str, str], complete_headers: Mapping[str, str]
) -> str:
    """A digest of everything that shapes the object besides its bytes.

    Resuming with different metadata would silently produce an object the caller did not ask
    for, so a changed fingerprint means a fresh upload.
    """

    def canon(headers: Mapping[str, str]) -> Iterable[tuple[str, str]]:
        return sorted((name.lower(), value) for name, value in headers.items())

    doc = [part_size, list(canon(initiate_headers)), list(canon(complete_headers))]
    return hashlib.sha256(_encoder.encode(doc)).hexdigest()[:32]


# ---------------------------------------------------------------------- download checkpoint

DOWNLOAD_CHECKPOINT_FORMAT = "aiooss_resume.download-checkpoint"


class DownloadPart(msgspec.Struct, frozen=True, array_like=True):
    """A range written to the temp file and fsynced: its number, size and CRC-64."""

    number: int
    size: int
    crc64: int


class DownloadCheckpoint(msgspec.Struct, kw_only=True):
    """Everything needed to continue a download: the object's identity and finished ranges."""

    endpoint: str
    bucket: str
    key: str
    etag: str
    size: int
    last_modified: str
    crc64: int | None
    part_size: int
    parts: list[DownloadPart] = msgspec.field(default_factory=list)


_download_decoder = msgspec.json.Decoder(DownloadCheckpoint)


def encode_download_checkpoint(checkpoint: DownloadCheckpoint) -> bytes:
    """Encode a download checkpoint in the same checksummed envelope as an upload's."""
    payload = _encoder.encode(checkpoint)
    envelope = _Envelope(
        format=DOWNLOAD_CHECKPOINT_FORMAT,
        version=CHECKPOINT_VERSION,
        sha256=hashlib.sha256(payload).hexdigest(),
        payload=msgspec.Raw(payload),
    )
    return _encoder.encode(envelope) + b"\n"


def decode_download_checkpoint(data: bytes) -> DownloadCheckpoint:
    """Decode and verify a download checkpoint; any damage raises ``CheckpointError``."""
    try:
        envelope = _envelope_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint is not decodable: {exc}") from None
    if envelope.format != DOWNLOAD_CHECKPOINT_FORMAT or envelope.version != CHECKPOINT_VERSION:
        raise CheckpointError("not an aiooss_resume download checkpoint of a known version")
    payload = bytes(envelope.payload)
    if hashlib.sha256(payload).hexdigest() != envelope.sha256:
        raise CheckpointError("checkpoint checksum mismatch: the file is damaged")
    try:
        checkpoint = _download_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise CheckpointError(f"checkpoint payload is invalid: {exc}") from None
    numbers = [p.number for p in checkpoint.parts]
    if checkpoint.part_size <= 0 or numbers != sorted(set(numbers)):
        raise CheckpointError("checkpoint is inconsistent: bad part size or part numbers")
    return checkpoint
