"""The emulator's storage: objects and unfinished multipart uploads under one root directory.

Theory of operation
-------------------
Layout (everything under ``root``, so a server restarted on the same root sees the same
state)::

    root/tmp/                                  bodies being received (temp files)
    root/buckets/<bucket>/objects/<h>.json     object metadata (msgspec JSON), h = sha256(key)
    root/buckets/<bucket>/objects/<h>.<r>.data object bytes (r: random, see below)
    root/buckets/<bucket>/uploads/<id>/upload.json           the Initiate request's metadata
    root/buckets/<bucket>/uploads/<id>/<nnnnn>.json          one part's metadata
    root/buckets/<bucket>/uploads/<id>/<nnnnn>.<r>.data      one part's bytes

Keys are hashed into file names because an OSS key may hold any character (``/``, ``..``,
control characters) and up to 1023 bytes. A body streams into a temp file while its MD5 and
CRC-64 are computed in the same worker-thread job (:class:`BodyWriter`), 1 MiB at a time, so no
body is ever held whole in memory and the event loop never blocks on the disk. It becomes
visible with two renames: the data file to a fresh random name, then the metadata JSON (which
names that data file) over the old one. A reader therefore always sees a complete
metadata/data pair, and a crash leaves at most an orphan data file. The previous data file of
a replaced object or part is deleted afterwards.

``store="discard"`` keeps the same metadata (size, CRC-64, headers) but never writes
bodies: the bytes are checksummed and dropped, so benchmarks measure the client, not this
server. It computes MD5 only when a request carries ``Content-MD5`` (to verify it); otherwise
the ETag is derived from the CRC-64 and the size (still 32 upper-case hex digits, and still
different for different content), because MD5 at ~700 MiB/s would cap every benchmark.
Such objects cannot be read back (the server answers GetObject with ``NotImplemented``).

Concurrency: the server runs on one event loop, so ``asyncio.Lock`` is enough. Each upload has
a lock serialising part commits, Complete and Abort; one store-wide lock serialises object
commits (cheap: a rename and a small JSON write), which also makes the forbid-overwrite check
and the write atomic.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, ParamSpec, TypeVar

import msgspec

from .._crc64 import crc64, crc64_fold

__all__ = [
    "BodyResult",
    "BodyWriter",
    "ObjectMeta",
    "PartMeta",
    "Store",
    "StoreMode",
    "UploadMeta",
    "iso8601_ms",
]

StoreMode = Literal["disk", "discard"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_COPY_BUFFER = 1024 * 1024


class ObjectMeta(msgspec.Struct):
    """A stored object: what HeadObject answers, and where its bytes are."""

    key: str
    size: int
    etag: str
    crc64: int
    content_md5: str
    """base64 MD5 of the body for PutObject objects, ``""`` for multipart objects."""
    object_type: str
    last_modified: float
    headers: dict[str, str]
    """Lower-cased metadata headers (content-type, x-oss-meta-*, storage class, ACL, ...)."""
    data_file: str = ""


class PartMeta(msgspec.Struct):
    """One uploaded part of an unfinished upload."""

    part_number: int
    size: int
    etag: str
    md5_hex: str
    crc64: int
    last_modified: float
    data_file: str = ""


class UploadMeta(msgspec.Struct):
    """An unfinished multipart upload and its Initiate headers."""

    bucket: str
    key: str
    upload_id: str
    initiated: float
    headers: dict[str, str]


_object_decoder = msgspec.json.Decoder(ObjectMeta)
_part_decoder = msgspec.json.Decoder(PartMeta)
_upload_decoder = msgspec.json.Decoder(UploadMeta)


def iso8601_ms(timestamp: float) -> str:
    """``2024-05-20T08:30:00.000Z``: the form of ``LastModified``/``Initiated`` in XML.

    The milliseconds are always ``000``, as OSS sends them: oss2 parses these timestamps
    with a pattern that requires the literal ``.000Z`` and fails on anything else.
    """
    return datetime.fromtimestamp(int(timestamp), UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass(frozen=True, slots=True)
class BodyResult:
    """A fully received body: its size, digests and (disk store) temp file."""

    size: int
    md5: bytes
    crc64: int
    temp_path: Path | None

    @property
    def etag(self) -> str:
        return f'"{self.md5.hex().upper()}"'

    @property
    def content_md5(self) -> str:
        return base64.b64encode(self.md5).decode("ascii")


class BodyWriter:
    """Hashes (and, for the disk store, writes) a body; every method runs in a worker thread."""

    def __init__(self, temp_path: Path | None, *, md5: bool = True) -> None:
        self._path = temp_path
        self._file = open(temp_path, "wb") if temp_path is not None else None  # noqa: SIM115
        self._md5 = hashlib.md5() if md5 else None
        self._crc = 0
        self._size = 0

    @property
    def cheap(self) -> bool:
        """Only a CRC to compute (discard store, no MD5): fast enough for the event loop."""
        return self._file is None and self._md5 is None

    def write(self, pieces: Iterable[bytes]) -> None:
        for data in pieces:
            if self._md5 is not None:
                self._md5.update(data)
            self._crc = crc64(data, self._crc)
            self._size += len(data)
            if self._file is not None:
                self._file.write(data)

    def finish(self) -> BodyResult:
        if self._file is not None:
            self._file.close()
        if self._md5 is not None:
            digest = self._md5.digest()
        else:  # discard store without Content-MD5: a stand-in digest, see the docstring
            digest = self._crc.to_bytes(8, "big") + self._size.to_bytes(8, "big")
        return BodyResult(self._size, digest, self._crc, self._path)

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)


@dataclass(eq=False)
class _UploadState:
    meta: UploadMeta
    directory: Path
    parts: dict[int, PartMeta]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    gone: bool = False


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", errors="surrogatepass")).hexdigest()


def _write_json_atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)


class Store:
    """Objects and unfinished uploads of every bucket, persisted under ``root``."""

    def __init__(self, root: Path, mode: StoreMode = "disk") -> None:
        self.root = root
        self.mode: StoreMode = mode
        self._tmp = root / "tmp"
        self._buckets = root / "buckets"
        self._uploads: dict[tuple[str, str], _UploadState] = {}
        self._commit_lock = asyncio.Lock()

    # -- plumbing

    async def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: fn(*args, **kwargs))

    def open_sync(self) -> None:
        """Create the directory skeleton and sweep temp files left by a previous run."""
        self._buckets.mkdir(parents=True, exist_ok=True)
        if self._tmp.exists():
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def _objects_dir(self, bucket: str) -> Path:
        return self._buckets / bucket / "objects"

    def _uploads_dir(self, bucket: str) -> Path:
        return self._buckets / bucket / "uploads"

    # -- buckets

    def bucket_exists_sync(self, bucket: str) -> bool:
        return (self._buckets / bucket).is_dir()

    def create_bucket_sync(self, bucket: str) -> None:
        self._objects_dir(bucket).mkdir(parents=True, exist_ok=True)
        self._uploads_dir(bucket).mkdir(parents=True, exist_ok=True)

    async def ensure_bucket(self, bucket: str) -> None:
        if not self.bucket_exists_sync(bucket):
            await self._run(self.create_bucket_sync, bucket)

    # -- bodies

    async def new_body_writer(self, *, md5: bool = True) -> BodyWriter:
        if self.mode == "discard":
            return BodyWriter(None, md5=md5)
        path = self._tmp / f"body-{secrets.token_hex(8)}"
        return await self._run(BodyWriter, path)

    async def write(self, writer: BodyWriter, data: bytes) -> None:
        await self._run(writer.write, [data])

    async def finish(self, writer: BodyWriter) -> BodyResult:
        return await self._run(writer.finish)

    async def discard(self, writer: BodyWriter) -> None:
        await self._run(writer.discard)

    async def drop_body(self, body: BodyResult) -> None:
        if body.temp_path is not None:
            await self._run(body.temp_path.unlink, missing_ok=True)

    # -- objects

    def _meta_path(self, bucket: str, key: str) -> Path:
        return self._objects_dir(bucket) / f"{_key_hash(key)}.json"

    def _read_object_sync(self, bucket: str, key: str) -> ObjectMeta | None:
        try:
            meta = _object_decoder.decode(self._meta_path(bucket, key).read_bytes())
        except FileNotFoundError:
            return None
        # sha256 collisions are not a practical concern, but a mismatch would mean corruption.
        return meta if meta.key == key else None

    async def head_object(self, bucket: str, key: str) -> ObjectMeta | None:
        return await self._run(self._read_object_sync, bucket, key)

    def object_data_path(self, bucket: str, key: str) -> Path | None:
        """The data file of an object (disk store), or None (missing or discard store)."""
        meta = self._read_object_sync(bucket, key)
        if meta is None or not meta.data_file:
            return None
        return self._objects_dir(bucket) / meta.data_file

    def _commit_object_sync(
        self, bucket: str, meta: ObjectMeta, source: Path | None, forbid_overwrite: bool
    ) -> ObjectMeta | None:
        """Install an object; returns None when forbidden to overwrite an existing one."""
        old = self._read_object_sync(bucket, meta.key)
        if old is not None and forbid_overwrite:
            return None
        h = _key_hash(meta.key)
        if source is not None:
            meta.data_file = f"{h}.{secrets.token_hex(6)}.data"
            os.replace(source, self._objects_dir(bucket) / meta.data_file)
        _write_json_atomic(self._meta_path(bucket, meta.key), msgspec.json.encode(meta))
        if old is not None and old.data_file and old.data_file != meta.data_file:
            (self._objects_dir(bucket) / old.data_file).unlink(missing_ok=True)
        return meta

    async def put_object(
        self,
        bucket: str,
        key: str,
        body: BodyResult,
        headers: Mapping[str, str],
        *,
        now: float,
        forbid_overwrite: bool,
    ) -> ObjectMeta | None:
        """Commit a PutObject body; None if ``forbid_overwrite`` and the key exists."""
        meta = ObjectMeta(
            key=key,
            size=body.size,
            etag=body.etag,
            crc64=body.crc64,
            content_md5=body.content_md5,
            object_type="Normal",
            last_modified=now,
            headers=dict(headers),
        )
        async with self._commit_lock:
            result = await self._run(
                self._commit_object_sync, bucket, meta, body.temp_path, forbid_overwrite
            )
        if result is None:
            await self.drop_body(body)
        return result

    def _delete_object_sync(self, bucket: str, key: str) -> None:
        old = self._read_object_sync(bucket, key)
        if old is None:
            return
        self._meta_path(bucket, key).unlink(missing_ok=True)
        if old.data_file:
            (self._objects_dir(bucket) / old.data_file).unlink(missing_ok=True)

    async def delete_object(self, bucket: str, key: str) -> None:
        async with self._commit_lock:
            await self._run(self._delete_object_sync, bucket, key)

    def _open_object_sync(
        self, bucket: str, key: str, data: bool
    ) -> tuple[ObjectMeta, int | None] | None:
        # The data file of the metadata just read may be replaced (and unlinked) before it is
        # opened; read the metadata again then. Opened, it stays readable whatever follows.
        for _ in range(8):
            meta = self._read_object_sync(bucket, key)
            if meta is None:
                return None
            if not data or not meta.data_file or not meta.size:
                return meta, None
            try:
                fd = os.open(self._objects_dir(bucket) / meta.data_file, os.O_RDONLY)
            except FileNotFoundError:
                continue
            return meta, fd
        raise RuntimeError(f"oss://{bucket}/{key} keeps being replaced while opened")

    async def open_object(
        self, bucket: str, key: str, *, data: bool
    ) -> tuple[ObjectMeta, int | None] | None:
        """The object's metadata and (``data``, disk store, non-empty) an open descriptor of
        its bytes, which the caller closes (``os.close``); None if it is missing."""
        return await self._run(self._open_object_sync, bucket, key, data)

    async def pread(self, fd: int, offset: int, length: int) -> bytes:
        return await self._run(os.pread, fd, length, offset)

    # -- multipart uploads

    def _create_upload_sync(self, meta: UploadMeta) -> Path:
        directory = self._uploads_dir(meta.bucket) / meta.upload_id
        directory.mkdir(parents=True)
        _write_json_atomic(directory / "upload.json", msgspec.json.encode(meta))
        return directory

    async def create_upload(
        self, bucket: str, key: str, headers: Mapping[str, str], *, now: float
    ) -> UploadMeta:
        meta = UploadMeta(
            bucket=bucket,
            key=key,
            # spec 5.3: real ids look like 32 upper-case hex characters.
            upload_id=secrets.token_hex(16).upper(),
            initiated=now,
            headers=dict(headers),
        )
        directory = await self._run(self._create_upload_sync, meta)
        self._uploads[(bucket, meta.upload_id)] = _UploadState(meta, directory, {})
        return meta

    def _load_upload_sync(self, bucket: str, upload_id: str) -> _UploadState | None:
        directory = self._uploads_dir(bucket) / upload_id
        try:
            meta = _upload_decoder.decode((directory / "upload.json").read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return None
        parts: dict[int, PartMeta] = {}
        for path in directory.glob("[0-9]*.json"):
            part = _part_decoder.decode(path.read_bytes())
            parts[part.part_number] = part
        return _UploadState(meta, directory, parts)

    async def _upload(self, bucket: str, upload_id: str) -> _UploadState | None:
        # Upload ids are ours (32 upper-case hex): anything else cannot exist, and must not
        # reach the file system as a path component.
        if len(upload_id) != 32 or not all(c in "0123456789ABCDEF" for c in upload_id):
            return None
        state = self._uploads.get((bucket, upload_id))
        if state is None:
            state = await self._run(self._load_upload_sync, bucket, upload_id)
            if state is None:
                return None
            state = self._uploads.setdefault((bucket, upload_id), state)
        return None if state.gone else state

    async def get_upload(self, bucket: str, key: str, upload_id: str) -> UploadMeta | None:
        """The upload ``upload_id`` of ``bucket``/``key``, or None (unknown, done, aborted)."""
        state = await self._upload(bucket, upload_id)
        if state is None or state.meta.key != key:
            return None
        return state.meta

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartMeta] | None:
        state = await self._upload(bucket, upload_id)
        if state is None or state.meta.key != key:
            return None
        return [state.parts[n] for n in sorted(state.parts)]

    def _commit_part_sync(
        self, state: _UploadState, part: PartMeta, source: Path | None
    ) -> PartMeta | None:
        old = state.parts.get(part.part_number)
        if source is not None:
            part.data_file = f"{part.part_number:05d}.{secrets.token_hex(6)}.data"
            os.replace(source, state.directory / part.data_file)
        _write_json_atomic(
            state.directory / f"{part.part_number:05d}.json", msgspec.json.encode(part)
        )
        if old is not None and old.data_file and old.data_file != part.data_file:
            (state.directory / old.data_file).unlink(missing_ok=True)
        return old

    async def put_part(
        self, bucket: str, key: str, upload_id: str, part_number: int, body: BodyResult, now: float
    ) -> PartMeta | None:
        """Store (or replace) a part; None if the upload is gone."""
        state = await self._upload(bucket, upload_id)
        if state is None or state.meta.key != key:
            await self.drop_body(body)
            return None
        part = PartMeta(
            part_number=part_number,
            size=body.size,
            etag=body.etag,
            md5_hex=body.md5.hex(),
            crc64=body.crc64,
            last_modified=now,
        )
        async with state.lock:
            if state.gone:  # completed or aborted while the body was arriving
                await self.drop_body(body)
                return None
            await self._run(self._commit_part_sync, state, part, body.temp_path)
            state.parts[part_number] = part
        return part

    def _assemble_sync(self, state: _UploadState, parts: list[PartMeta]) -> Path:
        target = self._tmp / f"object-{secrets.token_hex(8)}"
        with open(target, "wb") as out:
            for part in parts:
                with open(state.directory / part.data_file, "rb") as src:
                    shutil.copyfileobj(src, out, _COPY_BUFFER)
        return target

    async def complete(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        select: Callable[[Mapping[int, PartMeta]], list[PartMeta]],
        object_headers: Callable[[UploadMeta], dict[str, str]],
        *,
        now: float,
        forbid_overwrite: Callable[[UploadMeta], bool],
    ) -> ObjectMeta | None:
        """Complete an upload with the parts ``select`` picks; None if the upload is gone.

        ``select`` runs under the upload's lock and raises the validation errors of spec 5.6.
        Raises ``FileExistsError`` when forbidden to overwrite an existing object.
        """
        state = await self._upload(bucket, upload_id)
        if state is None or state.meta.key != key:
            return None
        async with state.lock:
            if state.gone:
                return None
            parts = select(state.parts)
            # S3-style multipart ETag (spec 4.4): MD5 of the binary part MD5s, then -N.
            digest = hashlib.md5(b"".join(bytes.fromhex(p.md5_hex) for p in parts))
            meta = ObjectMeta(
                key=key,
                size=sum(p.size for p in parts),
                etag=f'"{digest.hexdigest().upper()}-{len(parts)}"',
                crc64=crc64_fold((p.crc64, p.size) for p in parts),
                content_md5="",
                object_type="Multipart",
                last_modified=now,
                headers=object_headers(state.meta),
            )
            source = None
            if self.mode == "disk":
                exists = await self.head_object(bucket, key)
                if exists is not None and forbid_overwrite(state.meta):
                    raise FileExistsError(key)
                source = await self._run(self._assemble_sync, state, parts)
            async with self._commit_lock:
                result = await self._run(
                    self._commit_object_sync, bucket, meta, source, forbid_overwrite(state.meta)
                )
            if result is None:
                if source is not None:
                    await self._run(source.unlink, missing_ok=True)
                raise FileExistsError(key)
            state.gone = True
            await self._run(shutil.rmtree, state.directory, True)
            self._uploads.pop((bucket, upload_id), None)
            return result

    async def abort(self, bucket: str, key: str, upload_id: str) -> bool:
        state = await self._upload(bucket, upload_id)
        if state is None or state.meta.key != key:
            return False
        async with state.lock:
            if state.gone:
                return False
            state.gone = True
            await self._run(shutil.rmtree, state.directory, True)
            self._uploads.pop((bucket, upload_id), None)
        return True

    def _list_uploads_sync(self, bucket: str) -> list[UploadMeta]:
        result: list[UploadMeta] = []
        directory = self._uploads_dir(bucket)
        if not directory.is_dir():
            return result
        for entry in directory.iterdir():
            try:
                result.append(_upload_decoder.decode((entry / "upload.json").read_bytes()))
            except (FileNotFoundError, NotADirectoryError):
                continue  # being created or removed right now
        return result

    async def list_uploads(self, bucket: str) -> list[UploadMeta]:
        """Every open upload of ``bucket``, sorted by key then upload id."""
        uploads = await self._run(self._list_uploads_sync, bucket)
        open_uploads = [
            u
            for u in uploads
            if not ((state := self._uploads.get((bucket, u.upload_id))) is not None and state.gone)
        ]
        return sorted(open_uploads, key=lambda u: (u.key, u.upload_id))

    def list_uploads_sync(self, bucket: str) -> list[UploadMeta]:
        return sorted(self._list_uploads_sync(bucket), key=lambda u: (u.key, u.upload_id))


def headers_subset(headers: Iterable[tuple[str, str]], names: frozenset[str]) -> dict[str, str]:
    """Lower-cased headers whose name is in ``names`` or starts with ``x-oss-meta-``."""
    return {
        n.lower(): v
        for n, v in headers
        if n.lower() in names or n.lower().startswith("x-oss-meta-")
    }
