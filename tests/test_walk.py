"""The directory walker of upload_dir (issue 11.2): globs, symlinks, keys, unicode. No network."""

from __future__ import annotations

import os
import sys
import unicodedata
from pathlib import Path

import pytest

from aiooss_resume._walk import GlobFilter, LocalFile, WalkIssue, check_root, compile_glob, walk


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _files(root: Path, **kwargs: object) -> list[str]:
    return [i.key for i in walk(str(root), **kwargs) if isinstance(i, LocalFile)]  # type: ignore[arg-type]


def _issues(root: Path, **kwargs: object) -> list[tuple[str, str]]:
    return [(i.relative, i.kind) for i in walk(str(root), **kwargs) if isinstance(i, WalkIssue)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("*.txt", "a.txt", True),
        ("*.txt", "d/a.txt", False),  # * never crosses a /
        ("**/*.txt", "a.txt", True),  # **/ matches zero directories too
        ("**/*.txt", "d/e/a.txt", True),
        ("d/**", "d/e/a.txt", True),
        ("d/**", "x/d/a.txt", False),
        ("?.bin", "a.bin", True),
        ("?.bin", "ab.bin", False),
        ("[ab].c", "b.c", True),
        ("[!ab].c", "b.c", False),
        ("[!ab].c", "z.c", True),
        ("a+b(1).txt", "a+b(1).txt", True),  # regex metacharacters are literal
        ("a+b(1).txt", "aab(1).txt", False),
    ],
)
def test_glob_semantics(pattern: str, text: str, matches: bool) -> None:
    assert bool(compile_glob(pattern).match(text)) is matches


@pytest.mark.parametrize("bad", ["", "[abc"])
def test_bad_globs_are_value_errors(bad: str) -> None:
    with pytest.raises(ValueError, match="glob"):
        compile_glob(bad)


def test_filters_include_exclude_and_prune() -> None:
    f = GlobFilter(include=["*.jpg", "docs/*.md"], exclude=["tmp*", ".git"])
    assert f.wants_file("a/b/photo.jpg")  # no "/" in the pattern: the name, at any depth
    assert f.wants_file("docs/readme.md")
    assert not f.wants_file("x/docs/readme.md")  # with "/": the whole relative path
    assert not f.wants_file("tmp1.jpg")  # exclude wins over include
    assert not f.wants_file("a.png")  # includes given: only what they match
    assert f.prunes_dir("src/.git")
    assert not f.prunes_dir("src")
    with pytest.raises(TypeError, match="sequence"):
        GlobFilter(include="*.jpg")


def test_keys_order_prefix_and_empty_directories(tmp_path: Path) -> None:
    _tree(tmp_path, {"b.txt": b"1", "a/z.txt": b"2", "a/c/d.txt": b"3", "a.txt": b"4"})
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    keys = _files(tmp_path, prefix="p/")
    # Sorted and depth first, the same on every run; the empty directories yield nothing.
    assert keys == ["p/a.txt", "p/b.txt", "p/a/z.txt", "p/a/c/d.txt"]
    entry = next(i for i in walk(str(tmp_path)) if isinstance(i, LocalFile))
    assert (entry.size, entry.relative) == (1, "a.txt")
    assert entry.path == str(tmp_path / "a.txt")


def test_excluded_directory_is_pruned_and_skip_list_honoured(tmp_path: Path) -> None:
    _tree(tmp_path, {"keep.txt": b"", ".git/HEAD": b"x", "cp/manifest.json": b"{}"})
    keys = _files(tmp_path, filters=GlobFilter(exclude=[".git"]), skip=[str(tmp_path / "cp")])
    assert keys == ["keep.txt"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX symbolic links")
def test_symlinks_not_followed_by_default(tmp_path: Path) -> None:
    _tree(tmp_path, {"d/f.txt": b"x", "g.txt": b"y"})
    os.symlink(tmp_path / "d", tmp_path / "link-dir")
    os.symlink(tmp_path / "g.txt", tmp_path / "link-file")
    os.symlink(tmp_path / "nowhere", tmp_path / "broken")
    assert _files(tmp_path) == ["g.txt", "d/f.txt"]
    assert sorted(_issues(tmp_path)) == [
        ("broken", "symlink"),
        ("link-dir", "symlink"),
        ("link-file", "symlink"),
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX symbolic links")
def test_follow_symlinks_never_loops_nor_walks_twice(tmp_path: Path) -> None:
    _tree(tmp_path, {"d/f.txt": b"x", "g.txt": b"y"})
    os.symlink(tmp_path, tmp_path / "d" / "up")  # a loop back to the root
    os.symlink(tmp_path / "d", tmp_path / "z-second")  # a second way into d
    os.symlink(tmp_path / "g.txt", tmp_path / "h.txt")  # a link to a file: uploaded
    keys = _files(tmp_path, follow_symlinks=True)
    assert keys == ["g.txt", "h.txt", "d/f.txt"]
    assert sorted(_issues(tmp_path, follow_symlinks=True)) == [
        ("d/up", "loop"),
        ("z-second", "loop"),
    ]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_special_files_are_reported_not_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    assert _files(tmp_path) == []
    assert _issues(tmp_path) == [("pipe", "special")]


def test_unicode_names_normalised_and_collisions_reported(tmp_path: Path) -> None:
    nfc = unicodedata.normalize("NFC", "café.txt")
    nfd = unicodedata.normalize("NFD", "café.txt")
    try:
        (tmp_path / nfc).write_bytes(b"1")
        (tmp_path / nfd).write_bytes(b"2")
    except OSError:
        pytest.skip("the file system normalises names itself")
    if len(os.listdir(tmp_path)) != 2:
        pytest.skip("the file system normalises names itself")
    # As given: two distinct keys.
    assert sorted(_files(tmp_path)) == sorted([nfc, nfd])
    # Normalised: one key; the second name is reported, never silently overwriting.
    assert _files(tmp_path, normalize="NFC") == [nfc]
    issues = list(walk(str(tmp_path), normalize="NFC"))
    collisions = [i for i in issues if isinstance(i, WalkIssue)]
    assert len(collisions) == 1 and collisions[0].kind == "name"
    assert "normalises (NFC)" in collisions[0].reason


@pytest.mark.skipif(sys.platform != "linux", reason="arbitrary bytes in names")
def test_names_that_cannot_be_keys_are_reported(tmp_path: Path) -> None:
    os.close(os.open(os.fsencode(tmp_path) + b"/bad-\xff.txt", os.O_CREAT | os.O_WRONLY, 0o600))
    long_dir = tmp_path.joinpath(*(c * 200 for c in "uvwxyz"))  # a 1,200-byte key
    long_dir.mkdir(parents=True)
    (long_dir / "f.txt").write_bytes(b"")
    issues = [i for i in walk(str(tmp_path)) if isinstance(i, WalkIssue)]
    reasons = sorted(i.reason for i in issues)
    assert len(issues) == 2
    assert "not valid UTF-8" in reasons[1]
    assert "at most 1023" in reasons[0]


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        check_root(tmp_path / "f")
    with pytest.raises(FileNotFoundError):
        check_root(tmp_path / "absent")
    with pytest.raises(TypeError):
        check_root(42)  # type: ignore[arg-type]
    assert check_root(tmp_path) == str(tmp_path)
