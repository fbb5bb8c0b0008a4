"""The runnable examples in examples/ really run (the docs point at them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from aiooss_resume.testing import ThreadedOssServer

EXAMPLES = Path(__file__).parent.parent / "examples"


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSS_", "ALIBABA_CLOUD_"))}
    env["PYTHONWARNINGS"] = "error"
    return env


def test_basic_upload_without_endpoint_uses_the_bundled_emulator() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "basic_upload.py")],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert proc.returncode == 0, proc.stderr
    assert "using the bundled emulator" in proc.stdout
    assert "uploaded oss://example-bucket/examples/sample.bin: 20971520 bytes" in proc.stdout


def test_basic_upload_against_a_configured_endpoint(tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    data = os.urandom(6 * 1024 * 1024)
    src.write_bytes(data)
    with ThreadedOssServer(root=tmp_path / "oss") as server:
        creds = server.credentials
        env = clean_env() | {
            "OSS_ENDPOINT": server.endpoint,
            "OSS_REGION": server.region,
            "OSS_ACCESS_KEY_ID": creds.access_key_id,
            "OSS_ACCESS_KEY_SECRET": creds.access_key_secret,
        }
        proc = subprocess.run(
            [sys.executable, str(EXAMPLES / "basic_upload.py"), str(src), "oss://bkt/x/f.bin"],
            env=env,
            capture_output=True,
            text=True,
            timeout=50,
        )
        assert proc.returncode == 0, proc.stderr
        assert "bundled emulator" not in proc.stdout
        assert "done (2/2)" in proc.stdout and "in 2 parts (new)" in proc.stdout
        assert server.read_object("bkt", "x/f.bin") == data


def test_fastapi_example_imports_without_configuration() -> None:
    # The module-level ``app`` must not need the environment until it starts.
    proc = subprocess.run(
        [sys.executable, "-c", "import runpy; runpy.run_path('fastapi_app.py')"],
        cwd=EXAMPLES,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert proc.returncode == 0, proc.stderr
