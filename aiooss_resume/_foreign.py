"""Adopting the upload another tool's checkpoint names: the Go SDK's and oss2's (issue 14).

Theory of operation
-------------------
Users switch tools mid-upload. Two official SDKs leave a record of an interrupted multipart
upload on disk:

* **The Go SDK** (``aliyun-oss-go-sdk``, ``Bucket.UploadFile`` with ``Checkpoint(true,
  path)``; older releases default ``path`` to ``<file>.cp``, as ``checkpoint=True`` does
  here) writes one JSON document: ``Magic`` (the constant ``GO_MAGIC``), ``MD5`` (base64 of
  the MD5 of the same document serialised with ``MD5`` empty), ``FilePath`` (as the caller
  passed it, possibly relative), ``FileStat`` (``Size``, ``LastModified`` as RFC 3339 with
  nanoseconds, and an ``MD5`` the SDK always leaves empty), ``ObjectKey``, ``UploadID`` and
  ``Parts``: one entry per planned part, ``{Chunk: {Number, Offset, Size}, Part:
  {PartNumber, ETag}, IsCompleted}``. Neither the bucket nor the endpoint is recorded.
* **oss2** (``oss2.resumable_upload``) keeps a record in its ``ResumableStore``: by default
  ``~/.py-oss-upload/<md5("oss://bucket/key")>--<md5(normalised absolute path)>``, a JSON
  dict ``{op_type: "ResumableUpload", upload_id, file_path, size, mtime, bucket, key,
  part_size}``. It lists no parts: oss2 asks ListParts for them on resume. It never uses
  ``<file>.cp``, so its record is found two ways: at an explicit ``checkpoint=PATH`` (a
  record in a store of your own), and, whenever this upload has no checkpoint file yet, in
  oss2's default store under the name oss2 itself would use for this bucket, key and file
  (that is where a user switching from oss2 has it, without knowing it is there).

A record is **adopted** when it names this key (and this bucket, where it records one), this
file (path, size and modification time exactly as its tool recorded them; the Go SDK's file
MD5 must be empty, as the SDK writes it), is intact (the Go SDK's MD5 verifies, oss2's field
types are what oss2 checks) and its parts tile the file as ``plan_parts`` would. Neither
tool records the endpoint (nor the Go SDK the bucket), so the last check asks OSS: ListParts
of the upload id under this call's bucket and key must succeed. OSS binds an upload id to
its bucket and key, so that proves the upload is this target's; NoSuchUpload means it lives
elsewhere (or is gone), and the record is left alone.

Adopting means: the part size is the record's (the layout of the parts already on OSS wins
over this call's ``part_size``), and the engine gets a ``Checkpoint`` in its own format with
the parts ListParts returned. Each is then verified as for the engine's own checkpoints: a
part counts only if its size is the planned one and its CRC-64 equals the local bytes' (the
engine's ``_reconcile``). Where ListParts carries no CRC, the local bytes' MD5 must equal the
part's ETag; such parts are checked here, the local CRC-64 is recorded for them and the
engine's fallback (recorded ETag and CRC) accepts them. The engine's first checkpoint write,
which happens only after that verification, replaces a record that sat at the checkpoint
path atomically (temporary file, fsync, rename): until then the foreign file is untouched.
A record found in oss2's store is never modified (oss2 finds NoSuchUpload on its next run
and drops it itself).

A record that cannot be adopted (another key or bucket, a changed file, damage, an upload
that is not this target's) is never overwritten and its upload never aborted: with
``checkpoint=True`` this upload's checkpoint goes to the per-target ``<file>.<digest>.cp``
instead, with one warning naming the foreign file and its upload id; at an explicit
``checkpoint=PATH`` the call fails with ``CheckpointError`` before any upload request, as
for a checkpoint of ours that records another target.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from ._checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    CheckpointPart,
    SourceIdentity,
    decode_checkpoint,
)
from ._crc64 import crc64
from ._errors import CheckpointError, NoSuchUploadError
from ._fileio import CHUNK_SIZE, read_optional, refuse_symlink
from ._planner import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, plan_parts

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._models import PartInfo
    from ._session import Session as Client

__all__ = [
    "GO_MAGIC",
    "OSS2_STORE_DIR",
    "Adoption",
    "ForeignRecord",
    "adopt_foreign",
    "oss2_record_path",
    "recognise",
]

logger = logging.getLogger("aiooss_resume")

GO_MAGIC = "FE8BB4EA-B593-4FAC-AD7A-2459A36E2E62"
OSS2_OP = "ResumableUpload"
OSS2_STORE_DIR = ".py-oss-upload"

_OURS = b'{"format":"' + CHECKPOINT_FORMAT.encode() + b'"'
_GO_PREFIX = b'{"Magic":"' + GO_MAGIC.encode() + b'","MD5":"'
_UPLOAD_ID = re.compile(rb'"(?:UploadID|upload_id)"\s*:\s*"([^"\\]{1,200})"')
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)\Z"
)


class ForeignRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What another tool's checkpoint says (unverified unless ``problem`` is empty)."""

    tool: str  # "Go SDK" or "oss2"
    path: str  # the file it was read from
    data: bytes  # its bytes, exactly as read
    upload_id: str  # best effort when damaged ("" if unreadable)
    problem: str = ""  # why nobody can adopt it (damage, an unreproducible layout)
    key: str = ""
    bucket: str | None = None  # the Go SDK does not record it
    file_path: str = ""
    size: int = -1
    mtime_ns: int | None = None  # the Go SDK's LastModified
    mtime: float | None = None  # oss2's os.path.getmtime()
    part_size: int = 0


class Adoption(msgspec.Struct, kw_only=True):
    """A foreign record this call adopts, decided before the checkpoint lock is taken."""

    record: ForeignRecord
    replaces: bool  # the record sits at this upload's checkpoint path
    endpoint: str
    bucket: str
    key: str
    identity: SourceIdentity
    part_size: int
    parts: list[CheckpointPart]

    def take(
        self, data: bytes | None, identity: SourceIdentity, fingerprint: str
    ) -> Checkpoint | None:
        """Under the lock: the converted checkpoint, or None if the record is gone or changed.

        Called with what the checkpoint path holds now. If another run converted or replaced
        the record meanwhile, the engine handles the file as it finds it.
        """
        if (data != self.record.data) if self.replaces else (data is not None):
            return None
        if identity != self.identity:
            raise CheckpointError(
                f"{identity.path!r} changed while the {self.record.tool} checkpoint "
                f"{self.record.path!r} was being adopted; nothing was uploaded, run again"
            )
        logger.info(
            "adopting upload %s from the %s checkpoint %s: %d part(s) listed on OSS are "
            "verified and kept; the checkpoint is converted to aiooss_resume's format",
            self.record.upload_id, self.record.tool, self.record.path, len(self.parts),
        )  # fmt: skip
        return Checkpoint(
            endpoint=self.endpoint,
            bucket=self.bucket,
            key=self.key,
            upload_id=self.record.upload_id,
            part_size=self.part_size,
            options_fingerprint=fingerprint,
            source=identity,
            parts=self.parts,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            adopted_from=f"{self.record.tool} {self.record.path}",
        )


# ---------------------------------------------------------------------- recognising


def recognise(data: bytes, path: str) -> ForeignRecord | None:
    """The Go SDK's or oss2's record in ``data``, or None if it is neither's."""
    if data.startswith(_OURS):  # ours, even if damaged or naming a key with Go's magic in it
        return None
    if GO_MAGIC.encode() in data:
        return _go_record(data, path)
    if b'"op_type"' in data and OSS2_OP.encode() in data:
        return _oss2_record(data, path)
    return None


def _upload_id_of(data: bytes) -> str:
    found = _UPLOAD_ID.search(data)
    return found.group(1).decode("utf-8", "replace") if found else ""


def _go_md5_ok(data: bytes) -> bool:
    """The Go SDK's own check: base64(md5(document with ``"MD5":""``)) equals ``MD5``.

    Go's ``json.Marshal`` puts ``Magic`` then ``MD5`` first, so the document it hashed is the
    file with the MD5 value cut out; recomputing from the bytes (not from a re-encoding)
    makes the check exact for anything Go wrote, whatever its escaping of other fields.
    """
    if not data.startswith(_GO_PREFIX):
        return False
    end = data.find(b'"', len(_GO_PREFIX))
    if end < 0:
        return False
    recorded = data[len(_GO_PREFIX) : end]
    digest = hashlib.md5(_GO_PREFIX + data[end:], usedforsecurity=False).digest()
    return base64.b64encode(digest) == recorded


def _rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch of Go's RFC 3339 time text (``time.Time`` JSON)."""
    m = _RFC3339.match(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = (m.group(7) or "").ljust(9, "0")
    zone = m.group(8)
    offset = 0 if zone == "Z" else (int(zone[1:3]) * 60 + int(zone[4:6])) * 60
    if zone.startswith("-"):
        offset = -offset
    base = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    return (int(base.timestamp()) - offset) * 1_000_000_000 + int(fraction)


def _damaged(tool: str, data: bytes, path: str, problem: str) -> ForeignRecord:
    return ForeignRecord(
        tool=tool, path=path, data=data, upload_id=_upload_id_of(data), problem=problem
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _go_record(data: bytes, path: str) -> ForeignRecord:
    tool = "Go SDK"
    if not _go_md5_ok(data):
        return _damaged(tool, data, path, "its MD5 does not verify: the file is damaged")
    try:
        doc = json.loads(data)
        stat = doc["FileStat"]
        chunks = [
            (p["Chunk"]["Number"], p["Chunk"]["Offset"], p["Chunk"]["Size"]) for p in doc["Parts"]
        ]
        fields_ok = (
            isinstance(doc["FilePath"], str)
            and isinstance(doc["ObjectKey"], str)
            and isinstance(doc["UploadID"], str)
            and doc["UploadID"] != ""
            and _is_int(stat["Size"])
            and isinstance(stat["MD5"], str)
            and all(_is_int(v) for chunk in chunks for v in chunk)
        )
        mtime_ns = _rfc3339_ns(stat["LastModified"])
    except (ValueError, KeyError, TypeError) as exc:
        return _damaged(tool, data, path, f"it is not a Go SDK upload checkpoint ({exc!r})")
    if not fields_ok:
        return _damaged(tool, data, path, "a field has the wrong type: the file is damaged")
    size: int = stat["Size"]
    part_size = chunks[0][2] if chunks else 0
    problem = ""
    if stat["MD5"]:
        problem = "it records a file MD5, which the Go SDK never writes"
    elif _layout_problem(size, part_size) or chunks != [
        (p.number, p.offset, p.size) for p in plan_parts(size, part_size)
    ]:
        problem = "its parts do not tile the file in equal parts (the layout is not resumable)"
    return ForeignRecord(
        tool=tool,
        path=path,
        data=data,
        upload_id=doc["UploadID"],
        problem=problem,
        key=doc["ObjectKey"],
        file_path=doc["FilePath"],
        size=size,
        mtime_ns=mtime_ns,
        part_size=part_size,
    )


def _oss2_record(data: bytes, path: str) -> ForeignRecord | None:
    tool = "oss2"
    try:
        doc: Any = json.loads(data)
    except ValueError:
        return _damaged(tool, data, path, "it is not valid JSON: the file is damaged")
    if not isinstance(doc, dict) or doc.get("op_type") != OSS2_OP:
        return None
    strings = ("upload_id", "file_path", "bucket", "key")
    if (
        not all(isinstance(doc.get(name), str) for name in strings)
        or not all(_is_int(doc.get(name)) for name in ("size", "part_size"))
        or not isinstance(doc.get("mtime"), (int, float))
        or isinstance(doc.get("mtime"), bool)
    ):
        # The same fields oss2's own sanity check requires.
        return _damaged(tool, data, path, "a field is missing or has the wrong type")
    problem = ""
    if "content_crypto_material" in doc:
        problem = "it is a client-side encrypted upload (oss2 CryptoBucket)"
    elif _layout_problem(doc["size"], doc["part_size"]):
        problem = f"its part size {doc['part_size']} cannot be completed on OSS"
    return ForeignRecord(
        tool=tool,
        path=path,
        data=data,
        upload_id=doc["upload_id"],
        problem=problem,
        key=doc["key"],
        bucket=doc["bucket"],
        file_path=doc["file_path"],
        size=doc["size"],
        mtime=float(doc["mtime"]),
        part_size=doc["part_size"],
    )


def _layout_problem(size: int, part_size: int) -> bool:
    if size <= 0 or not 0 < part_size <= MAX_PART_SIZE:
        return True
    count = -(-size // part_size)
    # Every part but the last must reach OSS's minimum (checked at Complete).
    return count > MAX_PARTS or (count > 1 and part_size < MIN_PART_SIZE)


# ---------------------------------------------------------------------- matching


def oss2_record_path(bucket: str, key: str, source: str, home: str | None = None) -> str:
    """Where ``oss2.ResumableStore()`` keeps its record for uploading ``source`` to the key."""

    def md5_hex(text: str) -> str:
        return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()

    name = (
        md5_hex(f"oss://{bucket}/{key}")
        + "--"
        + md5_hex(os.path.normpath(os.path.normcase(source)))
    )
    return os.path.join(home or os.path.expanduser("~"), OSS2_STORE_DIR, name)


def _names_this_file(recorded: str, source: str) -> bool:
    if os.path.isabs(recorded):
        return os.path.normpath(os.path.normcase(recorded)) == os.path.normcase(source)
    # The Go SDK records the path as its caller passed it, relative to that process's
    # working directory: resolved against ours, or else the same file name (size and a
    # nanosecond modification time must match as well).
    return os.path.abspath(recorded) == source or os.path.basename(recorded) == os.path.basename(
        source
    )


def _mismatch(
    record: ForeignRecord, bucket: str, key: str, identity: SourceIdentity, mtime: float
) -> str | None:
    """Why this call cannot adopt ``record`` (checked locally), or None."""
    if record.problem:
        return record.problem
    if record.key != key or (record.bucket is not None and record.bucket != bucket):
        target = f"oss://{record.bucket}/{record.key}" if record.bucket else f"key {record.key!r}"
        return f"it records an upload to {target}, not to oss://{bucket}/{key}"
    if not _names_this_file(record.file_path, identity.path):
        return f"it records the file {record.file_path!r}, not {identity.path!r}"
    same_time = (
        record.mtime_ns == identity.mtime_ns
        if record.mtime_ns is not None
        else record.mtime == mtime
    )
    if record.size != identity.size or not same_time:
        return "the file changed since (its size or modification time differs)"
    return None


# ---------------------------------------------------------------------- the engine's hook


def _adopted_part_size(data: bytes, endpoint: str, bucket: str, key: str) -> int | None:
    """The part size of a checkpoint of ours converted from another tool's, else None."""
    try:
        cp = decode_checkpoint(data)
    except CheckpointError:
        return None
    if cp.adopted_from and (cp.endpoint, cp.bucket, cp.key) == (endpoint, bucket, key):
        return cp.part_size
    return None


def _find(
    cp_path: str, endpoint: str, bucket: str, key: str, source: str
) -> tuple[ForeignRecord, bool, SourceIdentity, float] | int | None:
    data = read_optional(cp_path)
    replaces = data is not None
    if data is not None:
        record = recognise(data, cp_path)
        if record is None:
            return _adopted_part_size(data, endpoint, bucket, key)
    else:
        store = oss2_record_path(bucket, key, source)
        try:
            data = read_optional(store)
        except CheckpointError as exc:  # someone else's store: unreadable means not found
            logger.debug("not reading oss2's record %s: %s", store, exc)
            return None
        record = recognise(data, store) if data is not None else None
        if record is None or record.tool != "oss2":
            return None
    st = os.stat(source)
    identity = SourceIdentity(
        path=source, size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino, device=st.st_dev
    )
    return record, replaces, identity, st.st_mtime


def _verified_parts(
    source: str, part_size: int, size: int, listed: list[PartInfo]
) -> list[CheckpointPart]:
    """The listed parts worth handing to the engine's reconciliation (see the docstring)."""
    planned = {p.number: p for p in plan_parts(size, part_size)}
    parts: list[CheckpointPart] = []
    with open(source, "rb") as f:
        for part in sorted(listed, key=lambda p: p.part_number):
            plan = planned.get(part.part_number)
            if plan is None or plan.size != part.size:
                continue
            if part.crc64 is not None:  # the engine compares it with the local bytes
                parts.append(CheckpointPart(plan.number, plan.size, part.etag, part.crc64))
                continue
            md5 = hashlib.md5(usedforsecurity=False)
            crc = 0
            f.seek(plan.offset)
            remaining = plan.size
            while remaining:
                chunk = f.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    break
                md5.update(chunk)
                crc = crc64(chunk, crc)
                remaining -= len(chunk)
            if not remaining and md5.hexdigest().upper() == part.etag.strip('"').upper():
                parts.append(CheckpointPart(plan.number, plan.size, part.etag, crc))
    return parts


async def adopt_foreign(
    client: Client,
    bucket: str,
    key: str,
    source: str,
    cp_path: str | None,
    distinct: str | None,
    headers: Mapping[str, str],
) -> tuple[str | None, Adoption | None, int | None]:
    """Where this upload's checkpoint goes, the foreign upload it adopts, and its part size.

    ``distinct`` is the per-target checkpoint name to fall back on when a record that
    cannot be adopted sits at ``cp_path`` (``checkpoint=True``); None means ``cp_path`` was
    the caller's choice, and such a record is refused instead. The part size is also given
    for a checkpoint of ours converted earlier (``adopted_from``): the parts on OSS keep
    the layout the other tool chose, whatever ``part_size`` this call passes.
    """
    if cp_path is None:
        return None, None, None
    found = await client._io.run(_find, cp_path, client.endpoint, bucket, key, source)
    if found is None or isinstance(found, int):
        return cp_path, None, found
    record, replaces, identity, mtime = found
    why = _mismatch(record, bucket, key, identity, mtime)
    listed: list[PartInfo] = []
    if why is None:
        try:
            listed = await client._list_parts(bucket, key, record.upload_id, headers)
        except NoSuchUploadError:
            why = (
                f"OSS knows no upload {record.upload_id} of oss://{bucket}/{key} at "
                f"{client.endpoint} (it belongs to another bucket or endpoint, or is gone)"
            )
    if why is not None:
        return await _refuse(client, record, replaces, cp_path, distinct, why), None, None
    parts = await client._io.run(_verified_parts, source, record.part_size, record.size, listed)
    adoption = Adoption(
        record=record,
        replaces=replaces,
        endpoint=client.endpoint,
        bucket=bucket,
        key=key,
        identity=identity,
        part_size=record.part_size,
        parts=parts,
    )
    return cp_path, adoption, adoption.part_size


async def _refuse(
    client: Client,
    record: ForeignRecord,
    replaces: bool,
    cp_path: str,
    distinct: str | None,
    why: str,
) -> str:
    upload = f"upload {record.upload_id}" if record.upload_id else "an upload"
    if replaces and distinct is None:
        raise CheckpointError(
            f"checkpoint {cp_path!r} is the {record.tool}'s record of {upload}, which this "
            f"upload cannot adopt: {why}. It is not overwritten: pass another checkpoint path "
            "(or finish that upload with its tool first); nothing was uploaded"
        )
    instead = distinct if replaces and distinct is not None else cp_path
    if instead != cp_path:
        await client._io.run(refuse_symlink, instead)
    logger.warning(
        "not adopting the %s checkpoint %s (%s): %s. It is left untouched and so is its "
        "upload (`aiooss-resume uploads` lists it); this upload's checkpoint is %s",
        record.tool, record.path, upload, why, instead,
    )  # fmt: skip
    return instead
