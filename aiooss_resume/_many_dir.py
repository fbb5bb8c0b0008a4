"""The checkpoint directory of a many-file upload (``_many``): its layout and its removal.

``<checkpoint_dir>/manifest.json`` (``_manifest``, written atomically by the checkpoint
writer through ``save_manifest``) and ``<checkpoint_dir>/files/<digest>.cp``, the ordinary
checkpoint of each file that needs a multipart upload, named after a digest of its key.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable

from ._fileio import write_atomic
from ._manifest import Manifest, ManifestEncoder, ManifestSnapshot

__all__ = [
    "MANIFEST_NAME",
    "file_checkpoint",
    "kept_checkpoints",
    "remove_checkpoint_dir",
    "remove_empty_dir",
    "save_manifest",
]

MANIFEST_NAME = "manifest.json"
_FILES_DIR = "files"
# write_atomic's temporaries: ".<name>.<pid>.<8 hex>.tmp" (see _fileio.write_atomic)
_OUR_TEMP = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")


def file_checkpoint(checkpoint_dir: str, key: str) -> str:
    """Where the multipart checkpoint of the file uploaded to ``key`` lives."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return os.path.join(checkpoint_dir, _FILES_DIR, f"{digest}.cp")


def kept_checkpoints(checkpoint_dir: str) -> set[str]:
    """The names of the per-file checkpoints in ``checkpoint_dir`` (listed once per run, so
    no file costs a ``stat`` to learn it has none)."""
    try:
        names = os.listdir(os.path.join(checkpoint_dir, _FILES_DIR))
    except FileNotFoundError:
        return set()
    return {name for name in names if name.endswith(".cp")}


def save_manifest(header: Manifest) -> Callable[[str, ManifestSnapshot], None]:
    """The checkpoint writer's ``save``: ``header`` with the records, encoded, written."""

    encoder = ManifestEncoder()  # one buffer reused by every rewrite (see its docstring)

    def save(path: str, snapshot: ManifestSnapshot) -> None:
        header.files = snapshot.parts
        write_atomic(path, encoder.encode(header))

    return save


def remove_checkpoint_dir(directory: str, manifest_path: str) -> list[str]:
    """Remove the checkpoint directory of a finished transfer; the paths that would not go.

    Runs holding the manifest's lock: every temporary and lock file of ours in it is stale.
    """
    problems: list[str] = []
    files_dir = os.path.join(directory, _FILES_DIR)

    def unlink(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")

    for where in (files_dir, directory):
        try:
            names = os.listdir(where)
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{where}: {exc.strerror or exc}")
            continue
        for name in names:
            path = os.path.join(where, name)
            stale_lock = where == files_dir and name.endswith(".cp.lock")
            if _OUR_TEMP.match(name) or stale_lock:
                unlink(path)
    unlink(manifest_path)
    try:
        os.rmdir(files_dir)
    except FileNotFoundError:
        pass
    except OSError as exc:
        problems.append(f"{files_dir}: {exc.strerror or exc}")
    return problems


def remove_empty_dir(directory: str) -> list[str]:
    """``rmdir`` the checkpoint directory once its lock is released; what would not go."""
    try:
        os.rmdir(directory)
    except FileNotFoundError:
        pass
    except OSError as exc:
        return [f"{directory}: {exc.strerror or exc}"]
    return []
