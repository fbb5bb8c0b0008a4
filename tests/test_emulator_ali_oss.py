"""Interop: node ``ali-oss`` ``multipartUpload`` against the emulator (issue 14).

For each addressing mode (default: an IP endpoint, for which ali-oss keeps
``Host: BUCKET.oss-REGION.aliyuncs.com`` and a ``/key`` path; ``cname``: a custom-domain
endpoint mapped by the emulator's ``cname`` option; ``sld``: ``sldEnable``, path style under
that same virtual Host) and V1 and V4 signatures: a parallel (4) upload is cancelled with
``client.cancel()`` after a few parts, its checkpoint saved to a JSON file from the progress
callback; a second node process resumes from that checkpoint. The object must be byte-exact,
made by one upload (one Initiate), with no upload left open.

ali-oss comes from the npm registry, pinned (:data:`ALI_OSS_VERSION`): ``nox -s tests``
installs it into its cache and passes the ``node_modules`` directory in
``$AIOOSS_ALI_OSS_NODE_MODULES``. Without node or npm the tests skip; with node but without
the package they skip locally and fail under CI (``CI=true``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiooss_resume.testing import ThreadedOssServer

ALI_OSS_VERSION = "6.23.0"  # keep in step with noxfile.py
NODE_MODULES_ENV = "AIOOSS_ALI_OSS_NODE_MODULES"
DRIVER = Path(__file__).with_name("ali_oss_driver.js")
BUCKET = "ali-oss-interop"
PART_SIZE = 100 * 1024  # ali-oss's smallest part size
SIZE = 11 * PART_SIZE + 12345  # 12 parts
CANCEL_AFTER = 3
NODE_TIMEOUT = 25.0

pytestmark = pytest.mark.sdk


def _node_modules() -> Path:
    """Where ali-oss is installed; skips or fails (under CI) as the module docstring says."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"node ali-oss interop needs node and npm (node: {node}, npm: {npm})")
    configured = os.environ.get(NODE_MODULES_ENV, "")
    package = Path(configured) / "ali-oss" / "package.json" if configured else None
    if package is None or not package.is_file():
        why = (
            f"ali-oss is not installed: set ${NODE_MODULES_ENV} to a node_modules holding "
            f"ali-oss@{ALI_OSS_VERSION} (nox -s tests does: npm install --prefix DIR "
            f"ali-oss@{ALI_OSS_VERSION}); got {configured!r}"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)
    version = json.loads(package.read_text(encoding="utf-8"))["version"]
    assert version == ALI_OSS_VERSION, f"{package} is ali-oss {version}, not {ALI_OSS_VERSION}"
    return Path(configured)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    return _node_modules()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadedOssServer]:
    # "localhost" is the custom domain of the cname mode (ali-oss only overrides the Host of
    # IP endpoints); every other mode talks to 127.0.0.1.
    with ThreadedOssServer(root=tmp_path / "oss", cname={"localhost": BUCKET}) as s:
        yield s
        assert s.stats.internal_errors == 0


def _run_node(node_modules: Path, options: dict[str, object]) -> dict[str, object]:
    completed = subprocess.run(
        ["node", str(DRIVER), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        env={**os.environ, "NODE_PATH": str(node_modules)},
        check=False,
    )
    assert completed.returncode == 0, f"node failed: {completed.stderr}"
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("v4", [False, True], ids=["v1", "v4"])
@pytest.mark.parametrize("mode", ["default", "cname", "sld"])
def test_multipart_upload_cancel_and_resume(
    node_modules: Path, server: ThreadedOssServer, tmp_path: Path, mode: str, v4: bool
) -> None:
    data = random.Random(f"{mode}-{v4}").randbytes(SIZE)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    key = f"dir/{mode} {'v4' if v4 else 'v1'}+object.bin"
    endpoint = server.endpoint
    if mode == "cname":
        endpoint = endpoint.replace("127.0.0.1", "localhost")
    options: dict[str, object] = {
        "endpoint": endpoint,
        "bucket": BUCKET,
        "key": key,
        "file": str(source),
        "accessKeyId": server.credentials.access_key_id,
        "accessKeySecret": server.credentials.access_key_secret,
        "region": f"oss-{server.region}",
        "mode": mode,
        "v4": v4,
        "partSize": PART_SIZE,
        "parallel": 4,
        "checkpointPath": str(tmp_path / "checkpoint.json"),
        "cancelAfterParts": CANCEL_AFTER,
    }

    first = _run_node(node_modules, {**options, "phase": "upload"})
    assert first["result"] == "cancelled", first
    assert isinstance(first["doneParts"], int) and CANCEL_AFTER <= first["doneParts"] < 12
    assert server.object_info(BUCKET, key) is None
    (open_upload,) = server.list_uploads(BUCKET)
    assert (open_upload.key, open_upload.upload_id) == (key, first["uploadId"])
    assert server.stats.peak_in_flight["UploadPart"] > 1  # really parallel

    second = _run_node(node_modules, {**options, "phase": "resume"})
    assert second["result"] == "completed", second
    assert second["uploadId"] == first["uploadId"]
    assert second["doneParts"] == 12

    assert server.read_object(BUCKET, key) == data
    assert server.list_uploads(BUCKET) == []
    operations = [r.operation for r in server.requests]
    assert operations.count("InitiateMultipartUpload") == 1  # resumed, not restarted
    assert operations.count("CompleteMultipartUpload") == 1
    refused = [r for r in server.requests if r.status >= 300]
    assert refused == []
