"""The manifest of a many-file upload: which files are done, as a checksummed msgspec Struct.

Theory of operation
-------------------
``upload_many``/``upload_dir`` with a ``checkpoint_dir`` keep one manifest
(``<checkpoint_dir>/manifest.json``) and, for each file that needs a multipart upload, the
ordinary upload checkpoint (``<checkpoint_dir>/files/<digest>.cp``, see ``_checkpoint``).
The manifest is the same envelope as a checkpoint, with its own format name::

    {"format": "aiooss_resume.manifest", "version": 1,
     "sha256": "<hex digest of the payload bytes>", "payload": {...}}

The payload names the transfer (endpoint, bucket, a fingerprint of the options that shape
the objects) and holds one compact record per file OSS acknowledged,
``[number, key, size, mtime_ns, inode, crc64]``: about 60 bytes plus the key's length per
file (10,000 files with 30-byte keys: about 0.9 MB). ``number`` is the record's slot (the
checkpoint writer of ``_transfer`` rewrites the file from them, coalescing records that
arrive while a write is in flight); a file re-sent because it changed keeps its slot.

A file counts as done on a later run only if its record's key, size, mtime_ns and inode
all equal the file's now. Versioning as for the checkpoint: new fields only with defaults,
an unknown version is treated as damaged.

This module is pure: it encodes and decodes bytes. ``_fileio`` writes them atomically.
"""

from __future__ import annotations

import hashlib
from array import array

import msgspec

from ._errors import CheckpointError

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "Manifest",
    "ManifestEncoder",
    "ManifestEntry",
    "ManifestSnapshot",
    "decode_manifest",
    "encode_manifest",
]

MANIFEST_FORMAT = "aiooss_resume.manifest"
MANIFEST_VERSION = 1


class ManifestEntry(msgspec.Struct, frozen=True, array_like=True):
    """A file OSS acknowledged: its slot, key, local identity then, and its CRC-64."""

    number: int
    key: str
    size: int
    mtime_ns: int
    inode: int
    crc64: int


class Manifest(msgspec.Struct, kw_only=True):
    """Everything a rerun needs to know which files need not be sent again."""

    endpoint: str
    bucket: str
    options_fingerprint: str
    files: list[ManifestEntry] = msgspec.field(default_factory=list)
    created_at: str = ""


class ManifestSnapshot(msgspec.Struct):
    """What the checkpoint writer hands over: the records, in slot order (``parts``)."""

    parts: list[ManifestEntry] = msgspec.field(default_factory=list)


class _Envelope(msgspec.Struct, kw_only=True):
    format: str
    version: int
    sha256: str
    payload: msgspec.Raw


_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_payload_decoder = msgspec.json.Decoder(Manifest)


def encode_manifest(manifest: Manifest) -> bytes:
    """Encode ``manifest`` with its checksum, ready to be written atomically."""
    payload = _encoder.encode(manifest)
    envelope = _Envelope(
        format=MANIFEST_FORMAT,
        version=MANIFEST_VERSION,
        sha256=hashlib.sha256(payload).hexdigest(),
        payload=msgspec.Raw(payload),
    )
    return _encoder.encode(envelope) + b"\n"


class ManifestEncoder:
    """``encode_manifest`` into one reused buffer, incrementally, for the checkpoint writer.

    The manifest of a large transfer is rewritten many times; a fresh megabyte-sized bytes
    object per write (payload, then envelope) fragments the C heap, which then holds on to
    memory in proportion to the number of files (measured: about half of the peak RSS
    growth of a 10,000-file upload). The envelope's head has a fixed length, so the payload
    is encoded straight after it and the head written in front once the digest is known.

    Records are encoded once, not once per write: the buffer keeps the records already
    encoded (and where each one ends); a rewrite keeps the longest leading run of records
    equal to the last write's (records arrive in slot order, so usually all of them) and
    encodes only the rest. msgspec holds the GIL for a whole ``encode`` call (10,000
    records: 4-8 ms) and this runs in a worker thread next to the event loop, which cannot
    run meanwhile; a rewrite now holds it for the new records only. The bytes are those of
    ``encode_manifest``. Not thread-safe: one writer at a time (the checkpoint writer never
    overlaps writes).
    """

    _HEAD = b'{"format":"%s","version":%d,"sha256":"%s","payload":'
    _FILES = b'"files":['  # only the key can match: JSON strings escape every '"'

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._frame = b""  # the payload without records, that the buffer was built with
        self._cut = 0  # where the records go in the frame: just after the list's "["
        self._start = 0  # where the records start in the buffer
        self._done: list[ManifestEntry] = []  # the records encoded in the buffer, in order
        self._ends = array("q")  # where each of them ends in the buffer

    def encode(self, manifest: Manifest) -> bytearray:
        """The same document as ``encode_manifest(manifest)``, in the reused buffer."""
        head_length = len(self._head("0" * 64))
        try:
            self._buffer.append(0)  # BufferError, changing nothing, if a view is held
            del self._buffer[-1]
        except BufferError:
            # Something still holds a view of the last document (a frame kept by a
            # traceback or a profiler keeps write_atomic's memoryview alive): that buffer
            # is left to its holder, untouched, and a new one is used.
            self._buffer = bytearray()
            self._frame = b""
        buffer = self._buffer
        frame = _encoder.encode(msgspec.structs.replace(manifest, files=[]))
        if frame != self._frame:  # first write, or other header fields: start over
            self._frame, self._done, self._ends = frame, [], array("q")
            self._cut = frame.index(self._FILES) + len(self._FILES)
            # msgspec.Raw: written at the offset, the buffer's allocation kept
            _encoder.encode_into(msgspec.Raw(frame[: self._cut]), buffer, head_length)
            self._start = len(buffer)
        files, done = manifest.files, self._done
        kept = _common_prefix(files, done)
        del done[kept:]
        del self._ends[kept:]
        del buffer[self._ends[-1] if kept else self._start :]
        for entry in files[kept:]:
            if done:
                buffer += b","
            _encoder.encode_into(entry, buffer, -1)
            done.append(entry)
            self._ends.append(len(buffer))
        buffer += frame[self._cut :]  # the list's "]" and the rest of the payload
        digest = hashlib.sha256(memoryview(buffer)[head_length:]).hexdigest()
        buffer[:head_length] = self._head(digest)
        buffer += b"}\n"
        return buffer

    def _head(self, digest: str) -> bytes:
        return self._HEAD % (MANIFEST_FORMAT.encode(), MANIFEST_VERSION, digest.encode())


def _common_prefix(new: list[ManifestEntry], old: list[ManifestEntry]) -> int:
    """How many leading records ``new`` and ``old`` share (equal values)."""
    n = min(len(new), len(old))
    if new[:n] == old[:n]:  # the usual case, compared in C (identical objects: no field)
        return n
    low, high = 0, n  # new[:low] == old[:low] holds, new[:high] == old[:high] does not
    while high - low > 1:
        mid = (low + high) // 2
        if new[low:mid] == old[low:mid]:
            low = mid
        else:
            high = mid
    return low


def decode_manifest(data: bytes) -> Manifest:
    """Decode and verify a manifest; any damage raises ``CheckpointError``."""
    try:
        envelope = _envelope_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"manifest is not decodable: {exc}") from None
    if envelope.format != MANIFEST_FORMAT:
        raise CheckpointError(f"not an aiooss_resume manifest (format {envelope.format!r})")
    if envelope.version != MANIFEST_VERSION:
        raise CheckpointError(f"unknown manifest version {envelope.version}")
    payload = bytes(envelope.payload)
    if hashlib.sha256(payload).hexdigest() != envelope.sha256:
        raise CheckpointError("manifest checksum mismatch: the file is damaged")
    try:
        manifest = _payload_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise CheckpointError(f"manifest payload is invalid: {exc}") from None
    numbers = [e.number for e in manifest.files]
    if len(set(numbers)) != len(numbers) or any(n < 0 for n in numbers):
        raise CheckpointError("manifest records are not numbered uniquely")
    return manifest
