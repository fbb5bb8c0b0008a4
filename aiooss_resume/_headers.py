"""Typed object options: the common OSS headers without their raw names (issue 10, item 15).

``ObjectOptions`` is a frozen value validated when it is built (``ValueError`` for a value
OSS would refuse, ``TypeError`` for a value of the wrong type) that renders to the raw
header dict ``upload_file`` already routes (``_upload_plan.route_headers``: each header goes
on the request OSS reads it from). ``merge_headers`` combines it with the caller's raw
``headers=``: a header given both ways is an error, whatever the values, so that neither
silently wins. Pure code: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Final, Literal, get_args
from urllib.parse import quote

__all__ = [
    "MAX_TRAFFIC_LIMIT",
    "MIN_TRAFFIC_LIMIT",
    "Acl",
    "ObjectOptions",
    "ServerSideEncryption",
    "StorageClass",
    "merge_headers",
]

Acl = Literal["private", "public-read", "public-read-write", "default"]
"""An object ACL (``x-oss-object-acl``); ``default`` inherits the bucket's."""

StorageClass = Literal["Standard", "IA", "Archive", "ColdArchive", "DeepColdArchive"]
"""An OSS storage class (``x-oss-storage-class``)."""

ServerSideEncryption = Literal["AES256", "KMS", "SM4"]
"""Server-side encryption (``x-oss-server-side-encryption``)."""

MIN_TRAFFIC_LIMIT: Final = 819_200
"""The smallest ``x-oss-traffic-limit`` OSS accepts, in bit/s (100 KB/s)."""

MAX_TRAFFIC_LIMIT: Final = 838_860_800
"""The largest ``x-oss-traffic-limit`` OSS accepts, in bit/s (100 MB/s)."""

_MAX_METADATA_BYTES: Final = 8 * 1024  # OSS: user metadata at most 8 KB in total
_MAX_TAGS: Final = 10
_MAX_TAG_KEY: Final = 128
_MAX_TAG_VALUE: Final = 256
_META_NAME_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
)
_META_PREFIX: Final = "x-oss-meta-"


def _check_type(name: str, value: object, kind: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{name} must be {what}, not {type(value).__name__}")


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    _check_type(name, value, str, "a str")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}")


def _check_text(name: str, value: object) -> str:
    """A header value OSS accepts as it is: non-empty single-line printable ASCII."""
    _check_type(name, value, str, "a str")
    assert isinstance(value, str)
    if not value:
        raise ValueError(f"{name} must not be empty")
    if not value.isascii() or not value.isprintable():
        raise ValueError(
            f"{name} must be printable ASCII on one line, not {value!r} "
            "(percent-encode other text yourself)"
        )
    if value != value.strip():
        raise ValueError(f"{name} has leading or trailing spaces: {value!r}")
    return value


def _check_mapping(name: str, value: object) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping of str to str, not {type(value).__name__}")
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(
                f"{name} must map str to str, not {type(k).__name__} to {type(v).__name__}"
            )
    return value


class _FrozenMap(Mapping[str, str]):
    """A read-only copy of a ``str -> str`` mapping: hashable (so is ``ObjectOptions``),
    equal to any mapping with the same items, shown as a plain dict."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str]) -> None:
        self._items = dict(items)

    def __getitem__(self, name: str) -> str:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return repr(self._items)


@dataclass(frozen=True, kw_only=True, slots=True)
class ObjectOptions:
    """The common options of a stored object, typed; pass it as ``upload_file(options=...)``.

    Every field is optional (None: not sent, OSS's default applies). Values are checked when
    the object is built: ``ValueError`` for a value OSS would refuse, ``TypeError`` for one of
    the wrong type. Each field becomes one or more raw headers (``to_headers()``), which go
    on the requests where OSS reads them: ACL on Complete, the traffic limit on every
    UploadPart, the rest on Initiate (all of them on a single PutObject). Raw ``headers=``
    still work alongside; a header given both ways is a ``ValueError``. An ``ObjectOptions``
    is immutable and hashable: ``metadata`` and ``tagging`` are kept as read-only copies.

    Attributes:
        acl: ``x-oss-object-acl``: ``private``, ``public-read``, ``public-read-write`` or
            ``default`` (the bucket's).
        storage_class: ``x-oss-storage-class``: ``Standard``, ``IA``, ``Archive``,
            ``ColdArchive`` or ``DeepColdArchive``.
        server_side_encryption: ``x-oss-server-side-encryption``: ``AES256``, ``KMS`` or
            ``SM4``.
        kms_key_id: ``x-oss-server-side-encryption-key-id``, the KMS key (only with
            ``server_side_encryption="KMS"``).
        kms_data_encryption: ``x-oss-server-side-data-encryption``: ``SM4`` to encrypt the
            data with SM4 under a KMS key (only with ``server_side_encryption="KMS"``).
        metadata: user metadata, ``{"owner": "ops"}`` -> ``x-oss-meta-owner: ops``. Names are
            letters, digits and ``-`` (OSS stores them lower-cased, so two names differing
            only in case are an error); values printable ASCII; 8 KiB at most in total.
        content_type: ``Content-Type``, e.g. ``text/csv``. Without it, the type is guessed
            from the key's extension as before.
        content_disposition: ``Content-Disposition``, e.g. ``attachment; filename="a.csv"``.
        cache_control: ``Cache-Control``, e.g. ``no-cache`` or ``max-age=3600``.
        content_encoding: ``Content-Encoding``, e.g. ``gzip`` (the bytes are stored as they
            are; this only labels them).
        tagging: object tags, ``{"project": "x y"}``, URL-encoded into ``x-oss-tagging``;
            at most 10 tags, keys 1-128 and values 0-256 characters.
        forbid_overwrite: ``x-oss-forbid-overwrite``: True refuses to replace an existing
            object (409 ``FileAlreadyExists``, on PutObject or on Complete).
        traffic_limit: ``x-oss-traffic-limit`` in bit/s, 819200 (100 KB/s) to 838860800
            (100 MB/s), applied by OSS to each request that carries a body (every UploadPart,
            the single PutObject) and to each ranged GET of a download. It does not shape
            the object, so changing it does not prevent resuming.
    """

    acl: Acl | None = None
    storage_class: StorageClass | None = None
    server_side_encryption: ServerSideEncryption | None = None
    kms_key_id: str | None = None
    kms_data_encryption: Literal["SM4"] | None = None
    metadata: Mapping[str, str] | None = None
    content_type: str | None = None
    content_disposition: str | None = None
    cache_control: str | None = None
    content_encoding: str | None = None
    tagging: Mapping[str, str] | None = None
    forbid_overwrite: bool | None = None
    traffic_limit: int | None = None

    def __post_init__(self) -> None:
        if self.acl is not None:
            _check_choice("acl", self.acl, get_args(Acl))
        if self.storage_class is not None:
            _check_choice("storage_class", self.storage_class, get_args(StorageClass))
        if self.server_side_encryption is not None:
            _check_choice(
                "server_side_encryption",
                self.server_side_encryption,
                get_args(ServerSideEncryption),
            )
        for name in ("kms_key_id", "kms_data_encryption"):
            if getattr(self, name) is not None and self.server_side_encryption != "KMS":
                raise ValueError(f"{name} needs server_side_encryption='KMS'")
        if self.kms_key_id is not None:
            _check_text("kms_key_id", self.kms_key_id)
        if self.kms_data_encryption is not None:
            _check_choice("kms_data_encryption", self.kms_data_encryption, ("SM4",))
        for name in ("content_type", "content_disposition", "cache_control", "content_encoding"):
            if getattr(self, name) is not None:
                _check_text(name, getattr(self, name))
        if self.content_type is not None and "/" not in self.content_type:
            raise ValueError(
                f"content_type must be a MIME type such as 'text/plain', not {self.content_type!r}"
            )
        if self.metadata is not None:
            self._check_metadata(_check_mapping("metadata", self.metadata))
            # A read-only copy: the caller's dict may change later, the value must not.
            object.__setattr__(self, "metadata", _FrozenMap(self.metadata))
        if self.tagging is not None:
            self._check_tagging(_check_mapping("tagging", self.tagging))
            object.__setattr__(self, "tagging", _FrozenMap(self.tagging))
        if self.forbid_overwrite is not None:
            _check_type("forbid_overwrite", self.forbid_overwrite, bool, "a bool")
        if self.traffic_limit is not None:
            _check_type("traffic_limit", self.traffic_limit, int, "an int (bit/s)")
            if not MIN_TRAFFIC_LIMIT <= self.traffic_limit <= MAX_TRAFFIC_LIMIT:
                raise ValueError(
                    f"traffic_limit must be {MIN_TRAFFIC_LIMIT} to {MAX_TRAFFIC_LIMIT} bit/s "
                    f"(100 KB/s to 100 MB/s), not {self.traffic_limit}"
                )

    @staticmethod
    def _check_metadata(metadata: Mapping[str, str]) -> None:
        seen: set[str] = set()
        total = 0
        for name, value in metadata.items():
            if name.lower().startswith(_META_PREFIX):
                raise ValueError(
                    f"metadata name {name!r}: give it without the {_META_PREFIX!r} prefix"
                )
            if not name or not set(name) <= _META_NAME_CHARS:
                raise ValueError(
                    f"metadata name {name!r} must be letters, digits and '-' (it becomes the "
                    f"header {_META_PREFIX}<name>)"
                )
            if name.lower() in seen:
                raise ValueError(
                    f"metadata name {name!r} is given twice (OSS stores names lower-cased)"
                )
            seen.add(name.lower())
            if value:
                _check_text(f"metadata[{name!r}]", value)
            total += len(name) + len(value)
        if total > _MAX_METADATA_BYTES:
            raise ValueError(f"metadata is {total} bytes; OSS allows at most 8 KiB in total")

    @staticmethod
    def _check_tagging(tagging: Mapping[str, str]) -> None:
        if len(tagging) > _MAX_TAGS:
            raise ValueError(f"tagging has {len(tagging)} tags; OSS allows at most {_MAX_TAGS}")
        for key, value in tagging.items():
            if not 1 <= len(key) <= _MAX_TAG_KEY:
                raise ValueError(f"tag key {key!r} must be 1 to {_MAX_TAG_KEY} characters")
            if len(value) > _MAX_TAG_VALUE:
                raise ValueError(
                    f"tag {key!r}: its value must be at most {_MAX_TAG_VALUE} characters"
                )

    def to_headers(self) -> dict[str, str]:
        """The raw headers these options stand for (only the fields that are set)."""
        h: dict[str, str] = {}
        if self.content_type is not None:
            h["Content-Type"] = self.content_type
        if self.content_disposition is not None:
            h["Content-Disposition"] = self.content_disposition
        if self.cache_control is not None:
            h["Cache-Control"] = self.cache_control
        if self.content_encoding is not None:
            h["Content-Encoding"] = self.content_encoding
        if self.acl is not None:
            h["x-oss-object-acl"] = self.acl
        if self.storage_class is not None:
            h["x-oss-storage-class"] = self.storage_class
        if self.server_side_encryption is not None:
            h["x-oss-server-side-encryption"] = self.server_side_encryption
        if self.kms_data_encryption is not None:
            h["x-oss-server-side-data-encryption"] = self.kms_data_encryption
        if self.kms_key_id is not None:
            h["x-oss-server-side-encryption-key-id"] = self.kms_key_id
        for name, value in (self.metadata or {}).items():
            h[_META_PREFIX + name.lower()] = value
        if self.tagging:
            h["x-oss-tagging"] = "&".join(
                f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in self.tagging.items()
            )
        if self.forbid_overwrite is not None:
            h["x-oss-forbid-overwrite"] = "true" if self.forbid_overwrite else "false"
        if self.traffic_limit is not None:
            h["x-oss-traffic-limit"] = str(self.traffic_limit)
        return h

    def only(self, *names: str) -> None:
        """Raise ``ValueError`` unless every field set is among ``names`` (what a download
        can use: ``only("traffic_limit")``)."""
        extra = [
            f.name
            for f in fields(self)
            if getattr(self, f.name) is not None and f.name not in names
        ]
        if extra:
            raise ValueError(f"{', '.join(extra)} cannot apply here; only {', '.join(names)} can")


def merge_headers(
    options: ObjectOptions | None, headers: Mapping[str, str] | None
) -> Mapping[str, str] | None:
    """``options`` rendered, plus the raw ``headers``; a header in both is a ``ValueError``.

    The raw headers are returned as they are when there are no options, so that their own
    validation (``route_headers``) reports on them unchanged.
    """
    if options is None:
        return headers
    if not isinstance(options, ObjectOptions):
        raise TypeError(f"options must be an ObjectOptions, not {type(options).__name__}")
    rendered = options.to_headers()
    if headers is None:
        return rendered
    if not isinstance(headers, Mapping):
        raise TypeError("headers must be a mapping of header names to values")
    ours = {name.lower(): name for name in rendered}
    for name in headers:
        if isinstance(name, str) and name.lower() in ours:
            raise ValueError(
                f"header {name!r} is given twice: in headers= and by options= (as "
                f"{ours[name.lower()]!r}); pass it one way only"
            )
    return {**rendered, **headers}
