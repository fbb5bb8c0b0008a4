"""The lazy directory walker behind ``upload_dir``: which files, under which keys.

Theory of operation
-------------------
``walk`` is a generator: it holds one directory listing at a time (sorted, so the order is
the same on every run) plus the stack of directories above it, never the whole tree, so a
directory of millions of files costs the memory of its largest directory. It yields a
``LocalFile`` for every regular file to upload and a ``WalkIssue`` for everything it leaves
out that a user would want to hear about (a symbolic link not followed, a loop, a FIFO, a
name that is no valid key, two names that normalise to the same key, an unreadable
directory). Empty directories yield nothing: OSS has no directories.

* **Keys**: ``prefix`` + the path relative to the root, with ``/`` separators (as ``ossutil
  cp -r`` and ``aws s3 sync`` map them). Names are kept as the file system gives them
  unless ``normalize`` is ``"NFC"``/``"NFD"``; two siblings whose names normalise to one
  key (``é`` precomposed and decomposed) are a ``WalkIssue`` for the second, never a silent
  overwrite. A name that is not valid UTF-8, or a key longer than OSS's 1023 bytes, is a
  ``WalkIssue`` too.
* **Globs** (as rclone's filters): ``*`` and ``?`` never cross a ``/``; ``**`` crosses any
  number; ``[...]`` is a character class. A pattern without ``/`` matches a name at any
  depth, one with ``/`` the whole relative path. A file is taken if it matches no exclude
  and (when there are includes) at least one include. An exclude that matches a directory
  prunes it (``--exclude .git``).
* **Symbolic links**: not followed by default (each is reported, as rclone does). With
  ``follow_symlinks`` a link to a file is uploaded under the link's name, and a link to a
  directory is entered unless that directory is already on the current path (a loop) or
  was walked already (two links to one tree): both are reported, never walked twice.

This module touches the file system: run it in a worker thread (``IoRunner``), never on
the event loop.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from collections.abc import AsyncGenerator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Literal

from ._fileio import IoRunner
from ._session import validate_key

__all__ = [
    "GlobFilter",
    "Item",
    "LocalFile",
    "Normalization",
    "WalkIssue",
    "check_root",
    "compile_glob",
    "dir_items",
    "pair_items",
    "walk",
]

Normalization = Literal["NFC", "NFD"] | None
"""How names become keys: as given (None), or Unicode-normalised to NFC or NFD."""

_MAX_KEY_BYTES = 1023  # OSS: a key is 1-1023 bytes of UTF-8


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A regular file to upload: its path, its key, and what ``stat`` said when walked."""

    path: str
    relative: str
    key: str
    size: int
    mtime_ns: int
    inode: int


@dataclass(frozen=True, slots=True)
class WalkIssue:
    """Something the walk left out, and why (``kind``: symlink, loop, special, name, error,
    missing)."""

    path: str
    relative: str
    kind: Literal["symlink", "loop", "special", "name", "error", "missing"]
    reason: str


Item = LocalFile | WalkIssue


def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression of one glob (see the module docstring); ``ValueError`` if bad."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("a glob pattern must be a non-empty string")
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":  # "**/" matches zero or more directories
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern.startswith("[!", i) else i + 1)
            if end < 0:
                raise ValueError(f"unterminated character class in glob {pattern!r}")
            body = pattern[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


class GlobFilter:
    """Include/exclude globs applied to relative POSIX paths (see the module docstring)."""

    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        for name, value in (("include", include), ("exclude", exclude)):
            if isinstance(value, str):
                raise TypeError(f"{name} must be a sequence of globs, not a str")
        self._include = [(("/" in p), compile_glob(p)) for p in include]
        self._exclude = [(("/" in p), compile_glob(p)) for p in exclude]

    @staticmethod
    def _matches(rules: list[tuple[bool, re.Pattern[str]]], relative: str) -> bool:
        name = relative.rsplit("/", 1)[-1]
        return any(rx.match(relative if whole else name) for whole, rx in rules)

    def wants_file(self, relative: str) -> bool:
        """True if the file at ``relative`` is to be uploaded."""
        if self._matches(self._exclude, relative):
            return False
        return not self._include or self._matches(self._include, relative)

    def prunes_dir(self, relative: str) -> bool:
        """True if the directory at ``relative`` is excluded with everything in it."""
        return self._matches(self._exclude, relative)


def _key_for(prefix: str, relative: str) -> str:
    key = prefix + relative
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the name is not valid UTF-8, so it cannot be an OSS key") from None
    if len(encoded) > _MAX_KEY_BYTES:
        raise ValueError(f"the key would be {len(encoded)} bytes; OSS allows at most 1023")
    return key


def check_root(directory: str | PathLike[str]) -> str:
    """``directory`` as an absolute path, if it is a directory (else the builtin error)."""
    if not isinstance(directory, (str, PathLike)):
        raise TypeError("directory must be a str or os.PathLike")
    root = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(root):
        if not os.path.exists(root):
            raise FileNotFoundError(f"{root!r} does not exist")
        raise NotADirectoryError(f"{root!r} is not a directory")
    return root


def walk(
    root: str,
    prefix: str = "",
    *,
    filters: GlobFilter | None = None,
    follow_symlinks: bool = False,
    normalize: Normalization = None,
    skip: Sequence[str] = (),
) -> Iterator[LocalFile | WalkIssue]:
    """Yield the files under ``root`` (sorted, depth first) and the issues met on the way.

    ``skip`` lists absolute directory paths never entered (the checkpoint directory when
    it lies inside ``root``). Raises ``NotADirectoryError``/``FileNotFoundError`` for a bad
    ``root``; everything below it is reported as a ``WalkIssue`` instead of raised.
    """
    filters = filters or GlobFilter()
    root = os.path.abspath(root)
    info = os.stat(root)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{root!r} is not a directory")
    skipped = {os.path.realpath(p) for p in skip}
    visited: set[tuple[int, int]] = {(info.st_dev, info.st_ino)}
    # (directory path, its relative path, the (dev, inode) of the directories above it)
    stack: list[tuple[str, str, frozenset[tuple[int, int]]]] = [
        (root, "", frozenset({(info.st_dev, info.st_ino)}))
    ]
    while stack:
        directory, rel_dir, ancestors = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield WalkIssue(directory, rel_dir, "error", f"cannot list: {exc.strerror or exc}")
            continue
        subdirs: list[tuple[str, str, frozenset[tuple[int, int]]]] = []
        seen_names: dict[str, str] = {}
        for entry in entries:
            name = unicodedata.normalize(normalize, entry.name) if normalize else entry.name
            relative = f"{rel_dir}{name}"
            if name in seen_names:
                yield WalkIssue(
                    entry.path,
                    relative,
                    "name",
                    f"its name normalises ({normalize}) to the key of {seen_names[name]!r}",
                )
                continue
            seen_names[name] = entry.path
            try:
                is_link = entry.is_symlink()
                st = (
                    os.stat(entry.path)
                    if is_link and follow_symlinks
                    else entry.stat(follow_symlinks=False)
                )
            except OSError as exc:
                kind: Literal["symlink", "error"] = "symlink" if entry.is_symlink() else "error"
                yield WalkIssue(entry.path, relative, kind, f"cannot stat: {exc.strerror or exc}")
                continue
            if is_link and not follow_symlinks:
                yield WalkIssue(entry.path, relative, "symlink", "symbolic link not followed")
                continue
            if stat.S_ISDIR(st.st_mode):
                ident = (st.st_dev, st.st_ino)
                if filters.prunes_dir(relative) or os.path.realpath(entry.path) in skipped:
                    continue
                if ident in ancestors:
                    yield WalkIssue(entry.path, relative, "loop", "symbolic link loop: skipped")
                    continue
                if ident in visited:
                    yield WalkIssue(
                        entry.path, relative, "loop", "directory already walked by another link"
                    )
                    continue
                visited.add(ident)
                subdirs.append((entry.path, relative + "/", ancestors | {ident}))
            elif stat.S_ISREG(st.st_mode):
                if not filters.wants_file(relative):
                    continue
                try:
                    key = _key_for(prefix, relative)
                except ValueError as exc:
                    yield WalkIssue(entry.path, relative, "name", str(exc))
                    continue
                yield LocalFile(entry.path, relative, key, st.st_size, st.st_mtime_ns, st.st_ino)
            elif filters.wants_file(relative):
                yield WalkIssue(entry.path, relative, "special", "not a regular file")
        stack.extend(reversed(subdirs))


# ---------------------------------------------------------------------- async listings
_BATCH = 256


def _take(it: Iterator[Item], n: int) -> list[Item]:
    batch: list[Item] = []
    for item in it:
        batch.append(item)
        if len(batch) == n:
            break
    return batch


async def _batched(io: IoRunner, it: Iterator[Item]) -> AsyncGenerator[Item, None]:
    while batch := await io.run(_take, it, _BATCH):
        for item in batch:
            yield item


def dir_items(
    io: IoRunner,
    root: str,
    prefix: str,
    *,
    filters: GlobFilter,
    follow_symlinks: bool,
    normalize: Normalization,
    skip: Sequence[str],
) -> AsyncGenerator[Item, None]:
    """The walk of ``root`` (``_walk.walk``), run in worker threads, 256 entries at a time."""
    listing = walk(
        root,
        prefix,
        filters=filters,
        follow_symlinks=follow_symlinks,
        normalize=normalize,
        skip=skip,
    )
    return _batched(io, listing)


def _stat_pairs(pairs: list[tuple[str, str]], seen: set[str]) -> list[Item]:
    items: list[Item] = []
    for key, given in pairs:
        path = os.path.abspath(given)
        try:
            validate_key(key)
        except ValueError as exc:
            items.append(WalkIssue(path, key, "name", str(exc)))
            continue
        if key in seen:
            items.append(WalkIssue(path, key, "name", "the key was given twice: not uploaded"))
            continue
        seen.add(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            items.append(WalkIssue(path, key, "missing", "no such file"))
            continue
        except OSError as exc:
            items.append(WalkIssue(path, key, "error", f"cannot stat: {exc.strerror or exc}"))
            continue
        if not os.path.isfile(path):
            items.append(WalkIssue(path, key, "error", "not a regular file"))
            continue
        items.append(LocalFile(path, key, key, st.st_size, st.st_mtime_ns, st.st_ino))
    return items


async def pair_items(
    io: IoRunner, pairs: Iterable[tuple[str, str | PathLike[str]]]
) -> AsyncGenerator[Item, None]:
    """``(key, path)`` pairs as listing items, stat'ed in worker threads 256 at a time."""
    seen: set[str] = set()
    batch: list[tuple[str, str]] = []
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"upload_many wants (key, file_path) pairs, got {pair!r}")
        key, path = pair
        if not isinstance(key, str) or not isinstance(path, (str, PathLike)):
            raise TypeError(f"upload_many wants (str, str | os.PathLike) pairs, got {pair!r}")
        batch.append((key, os.fspath(path)))
        if len(batch) == _BATCH:
            for item in await io.run(_stat_pairs, batch, seen):
                yield item
            batch = []
    if batch:
        for item in await io.run(_stat_pairs, batch, seen):
            yield item
