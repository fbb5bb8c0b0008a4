"""Typed object-option flags of the command line (issues 10.15, 11): ``--content-type``...

``add_option_arguments`` adds the flags to a parser (``upload``/``cp`` get them all,
``download`` only ``--traffic-limit``); ``object_options`` turns the parsed flags into one
``ObjectOptions`` (its own validation, so the CLI and the library refuse the same values
with the same message), refusing a flag that names a header a ``--header`` also gives;
``option_flags`` renders them back for the printed resume command, so that resuming sends
the same headers (the checkpoint's fingerprint would refuse other ones anyway).

Errors are ``ValueError`` naming the flag; ``_cli`` (a layer above) reports them as usage
errors (exit 1, the subcommand's usage line). Pure code: no I/O.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, Final, get_args

from ._headers import (
    MAX_TRAFFIC_LIMIT,
    MIN_TRAFFIC_LIMIT,
    Acl,
    ObjectOptions,
    ServerSideEncryption,
    StorageClass,
)

__all__ = ["add_option_arguments", "object_options", "option_flags", "upload_only_flags"]

# flag -> (dest on the Namespace, ObjectOptions field) for the flags taking one value
_SINGLE: Final = {
    "--acl": ("opt_acl", "acl"),
    "--storage-class": ("opt_storage_class", "storage_class"),
    "--content-type": ("opt_content_type", "content_type"),
    "--content-disposition": ("opt_content_disposition", "content_disposition"),
    "--cache-control": ("opt_cache_control", "cache_control"),
    "--content-encoding": ("opt_content_encoding", "content_encoding"),
    "--sse": ("opt_sse", "server_side_encryption"),
    "--sse-kms-key-id": ("opt_sse_kms_key_id", "kms_key_id"),
}
_PAIRS: Final = {"--meta": ("opt_meta", "metadata"), "--tagging": ("opt_tagging", "tagging")}

# the raw header each flag stands for (lower-cased), to refuse a --header saying it again
_HEADER_FLAG: Final = {
    "x-oss-object-acl": "--acl",
    "x-oss-storage-class": "--storage-class",
    "content-type": "--content-type",
    "content-disposition": "--content-disposition",
    "cache-control": "--cache-control",
    "content-encoding": "--content-encoding",
    "x-oss-server-side-encryption": "--sse",
    "x-oss-server-side-encryption-key-id": "--sse-kms-key-id",
    "x-oss-tagging": "--tagging",
    "x-oss-forbid-overwrite": "--forbid-overwrite",
    "x-oss-traffic-limit": "--traffic-limit",
}


def _one_of(values: tuple[str, ...]) -> str:
    return "|".join(values)


def add_option_arguments(parser: argparse.ArgumentParser, *, download: bool = False) -> None:
    """The typed object-option flags: all of them, or (``download``) ``--traffic-limit``."""
    if download:
        group = parser.add_argument_group("object options")
    else:
        group = parser.add_argument_group(
            "object options (uploads; each stands for a header, which --header must not repeat)"
        )
    group.add_argument(
        "--traffic-limit",
        dest="opt_traffic_limit",
        metavar="BITS_PER_S",
        help=f"throttle each {'ranged GET' if download else 'part upload'} to this many bit/s, "
        f"{MIN_TRAFFIC_LIMIT}..{MAX_TRAFFIC_LIMIT} (100 KB/s..100 MB/s; x-oss-traffic-limit)",
    )
    if download:
        return
    helps = {
        "--acl": f"object ACL: {_one_of(get_args(Acl))}",
        "--storage-class": f"storage class: {_one_of(get_args(StorageClass))}",
        "--content-type": "Content-Type, e.g. text/csv (default: guessed from the key)",
        "--content-disposition": "Content-Disposition, e.g. 'attachment; filename=\"a.csv\"'",
        "--cache-control": "Cache-Control, e.g. no-cache or max-age=3600",
        "--content-encoding": "Content-Encoding label, e.g. gzip (the bytes are not changed)",
        "--sse": f"server-side encryption: {_one_of(get_args(ServerSideEncryption))}",
        "--sse-kms-key-id": "the KMS key id (with --sse KMS)",
    }
    metavars = {"--acl": "ACL", "--storage-class": "CLASS", "--sse": "ALGORITHM"}
    for flag, (dest, _field) in _SINGLE.items():
        group.add_argument(flag, dest=dest, metavar=metavars.get(flag, "VALUE"), help=helps[flag])
    group.add_argument(
        "--meta",
        dest="opt_meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="user metadata, sent as x-oss-meta-KEY (repeatable)",
    )
    group.add_argument(
        "--tagging",
        dest="opt_tagging",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an object tag (repeatable, at most 10)",
    )
    group.add_argument(
        "--forbid-overwrite",
        dest="opt_forbid_overwrite",
        action="store_true",
        help="fail (OSS error FileAlreadyExists) rather than replace an existing object",
    )


def _pairs(flag: str, items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
        if key in out:
            raise ValueError(f"{flag} {key!r} is given twice")
        out[key] = value
    return out


def object_options(
    args: argparse.Namespace, headers: Mapping[str, str] | None = None
) -> ObjectOptions | None:
    """The ``ObjectOptions`` the flags ask for (None when no flag is given).

    Raises ``ValueError`` naming the flag for a value ``ObjectOptions`` refuses, and for a
    flag whose header one of the raw ``headers`` (``--header``) also gives.
    """
    fields: dict[str, Any] = {}
    limit = getattr(args, "opt_traffic_limit", None)
    if limit is not None:
        try:
            fields["traffic_limit"] = int(limit)
        except ValueError:
            raise ValueError(f"--traffic-limit: not a whole number of bit/s: {limit!r}") from None
    for dest, field in _SINGLE.values():
        value = getattr(args, dest, None)
        if value is not None:
            fields[field] = value
    for flag, (dest, field) in _PAIRS.items():
        items = getattr(args, dest, None)
        if items:
            fields[field] = _pairs(flag, items)
    if getattr(args, "opt_forbid_overwrite", False):
        fields["forbid_overwrite"] = True
    if not fields:
        return None
    try:
        options = ObjectOptions(**fields)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{_flag_of(str(exc))}{exc}") from None
    rendered = {h.lower() for h in options.to_headers()}
    for name in headers or {}:
        lower = name.lower()
        if lower in rendered:
            flag = "--meta" if lower.startswith("x-oss-meta-") else _HEADER_FLAG.get(lower, "")
            raise ValueError(f"--header {name} conflicts with {flag}: give it one way only")
    return options


def _flag_of(message: str) -> str:
    """``--flag: `` for an ``ObjectOptions`` message that starts with its field's name."""
    names = {field: flag for flag, (_d, field) in (_SINGLE | _PAIRS).items()}
    names |= {"traffic_limit": "--traffic-limit", "kms_data_encryption": "--sse"}
    names |= {"tag": "--tagging", "metadata name": "--meta", "metadata[": "--meta"}
    for field, flag in sorted(names.items(), key=lambda kv: -len(kv[0])):
        if message.startswith(field):
            return f"{flag}: "
    return ""


def option_flags(args: argparse.Namespace) -> list[str]:
    """The flags as given, for a command line that must send the same options."""
    out: list[str] = []
    limit = getattr(args, "opt_traffic_limit", None)
    if limit is not None:
        out += ["--traffic-limit", str(limit)]
    for flag, (dest, _field) in _SINGLE.items():
        value = getattr(args, dest, None)
        if value is not None:
            out.append(f"{flag}={value}")  # '=': a value starting with '-' stays a value
    for flag, (dest, _field) in _PAIRS.items():
        for item in getattr(args, dest, None) or []:
            out.append(f"{flag}={item}")
    if getattr(args, "opt_forbid_overwrite", False):
        out.append("--forbid-overwrite")
    return out


def upload_only_flags(args: argparse.Namespace) -> list[str]:
    """The upload-only flags given (``cp oss://... FILE`` is a download: they cannot apply)."""
    given = [flag for flag, (dest, _f) in _SINGLE.items() if getattr(args, dest, None) is not None]
    given += [flag for flag, (dest, _f) in _PAIRS.items() if getattr(args, dest, None)]
    if getattr(args, "opt_forbid_overwrite", False):
        given.append("--forbid-overwrite")
    return given
