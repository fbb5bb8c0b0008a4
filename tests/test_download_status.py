"""``aiooss-resume status`` on a damaged download checkpoint speaks of a download.

In-process (``main`` is the command line's entry point): ``status`` reads the file locally,
asks nothing of OSS. A damaged upload checkpoint keeps the upload wording.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aiooss_resume._checkpoint import (
    Checkpoint,
    DownloadCheckpoint,
    DownloadPart,
    SourceIdentity,
    encode_checkpoint,
    encode_download_checkpoint,
)
from aiooss_resume._cli import EXIT_LOCAL, EXIT_OK, main

DOWNLOAD_WORDING = "the next download fetches every range again"
UPLOAD_WORDING = "the next run uploads every part again"


def _download_checkpoint() -> bytes:
    return encode_download_checkpoint(
        DownloadCheckpoint(
            endpoint="http://127.0.0.1:1",
            bucket="bkt",
            key="k.bin",
            etag='"ABC"',
            size=3 * 1024 * 1024,
            last_modified="Mon, 07 Dec 2026 05:00:00 GMT",
            crc64=123,
            part_size=1024 * 1024,
            parts=[DownloadPart(1, 1024 * 1024, 7)],
        )
    )


def _upload_checkpoint() -> bytes:
    return encode_checkpoint(
        Checkpoint(
            endpoint="http://127.0.0.1:1",
            bucket="bkt",
            key="k.bin",
            upload_id="UPLOAD",
            part_size=1024 * 1024,
            options_fingerprint="",
            source=SourceIdentity(path="/nowhere", size=1, mtime_ns=1, inode=1),
        )
    )


def _status(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["status", str(path)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("f.bin.dcp", lambda data: data[:-20]),  # truncated (a cut write)
        ("f.bin.dcp", lambda data: data.replace(b'"bkt"', b'"bkx"')),  # checksum mismatch
        ("f.bin.dcp", lambda data: b"\x00garbage"),  # nothing left of it
        ("custom.cp", lambda data: data.replace(b'"bkt"', b'"bkx"')),  # envelope says download
    ],
    ids=["truncated", "checksum", "garbage", "not-named-dcp"],
)
def test_a_damaged_download_checkpoint_is_described_as_a_download(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, damage: object
) -> None:
    path = tmp_path / name
    good = _download_checkpoint()
    path.write_bytes(good)
    code, out, _ = _status(path, capsys)  # the undamaged one reads as a download
    assert code == EXIT_OK
    assert "(a download)" in out
    assert callable(damage)
    path.write_bytes(damage(good))
    code, out, err = _status(path, capsys)
    assert code == EXIT_LOCAL
    assert "damaged download checkpoint" in err
    assert DOWNLOAD_WORDING in err
    assert "upload" not in err
    assert out == ""


def test_a_damaged_upload_checkpoint_keeps_the_upload_wording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "f.bin.cp"
    path.write_bytes(_upload_checkpoint()[:-20])
    code, _, err = _status(path, capsys)
    assert code == EXIT_LOCAL
    assert UPLOAD_WORDING in err
    assert "download" not in err


def test_a_valid_upload_checkpoint_named_dcp_is_not_taken_for_a_download(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The name alone does not make a download checkpoint: a decodable upload checkpoint
    # goes the upload way (which then asks OSS about its upload: here nobody answers, which
    # is reported as the upload's state, not as a damaged download checkpoint).
    path = tmp_path / "odd.dcp"
    path.write_bytes(_upload_checkpoint())
    code, out, err = _status(path, capsys)
    assert "damaged download checkpoint" not in err
    assert "upload" in (out + err).lower()
    assert code in (EXIT_OK, EXIT_LOCAL)


def test_status_of_a_checkpoint_left_after_the_rename(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every range recorded, no temp file: the next run checks the file (test_download_finished).
    path = tmp_path / "f.bin.dcp"
    data = _download_checkpoint()
    path.write_bytes(data)
    code, out, _ = _status(path, capsys)
    assert code == EXIT_OK
    assert "downloads every range again" in out  # one range of three: nothing to recognise
    full = encode_download_checkpoint(
        DownloadCheckpoint(
            endpoint="http://127.0.0.1:1",
            bucket="bkt",
            key="k.bin",
            etag='"ABC"',
            size=3 * 1024 * 1024,
            last_modified="",
            crc64=123,
            part_size=1024 * 1024,
            parts=[DownloadPart(n, 1024 * 1024, n) for n in (1, 2, 3)],
        )
    )
    path.write_bytes(full)
    code, out, _ = _status(path, capsys)
    assert code == EXIT_OK
    assert "every range is done" in out
    assert f"{tmp_path / 'f.bin'}'s CRC-64" in out
