"""The runnable examples in examples/ really run (the docs point at them)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiooss_resume.testing import Fault, ThreadedOssServer

EXAMPLES = Path(__file__).parent.parent / "examples"


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSS_", "ALIBABA_CLOUD_"))}
    env["PYTHONWARNINGS"] = "error"
    return env


def server_env(server: ThreadedOssServer) -> dict[str, str]:
    creds = server.credentials
    return clean_env() | {
        "OSS_ENDPOINT": server.endpoint,
        "OSS_REGION": server.region,
        "OSS_ACCESS_KEY_ID": creds.access_key_id,
        "OSS_ACCESS_KEY_SECRET": creds.access_key_secret,
    }


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
        env = server_env(server)
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


def test_basic_upload_ctrl_c_prints_the_resume_command_and_it_resumes(tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    data = os.urandom(12 * 1024 * 1024)  # 3 parts of 5 MiB (the example's part size)
    src.write_bytes(data)
    with ThreadedOssServer(root=tmp_path / "oss") as server:
        # Parts 1 and 2 go through; part 3 is held until the example is interrupted.
        server.faults.add(Fault(operation="UploadPart", part_number=3, stall=30.0))
        env = server_env(server)
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "basic_upload.py"), "f.bin", "oss://bkt/x/f.bin"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 30
        for line in proc.stdout:
            seen.append(line)
            if "(2/3)" in line or time.monotonic() > deadline:
                break
        assert any("(2/3)" in line for line in seen), seen
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        assert "acknowledged parts are kept in f.bin.cp; resume with:" in err
        command = shlex.split(err.split("resume with:\n", 1)[1].strip().splitlines()[0])
        assert command[-2:] == [str(src), "oss://bkt/x/f.bin"]  # absolute: any directory works

        server.faults.clear()
        again = subprocess.run(
            command, env=env, cwd="/", capture_output=True, text=True, timeout=50
        )
        assert again.returncode == 0, again.stderr
        assert "resuming, 10485760 bytes already on OSS" in again.stdout
        assert server.read_object("bkt", "x/f.bin") == data


def test_basic_upload_ctrl_c_without_a_lasting_oss_says_nothing_can_resume() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "basic_upload.py")],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("started:"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "nothing to resume" in err and "resume with" not in err
