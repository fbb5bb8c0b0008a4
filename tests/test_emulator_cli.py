"""``serve``: endpoint on the first line, faults, clean SIGINT and SIGTERM.

Three ways in: ``python -m aiooss_resume.testing serve``, ``python -m aiooss_resume serve``
and the installed ``aiooss-resume`` console script. Every wait on a subprocess is bounded:
a server that never prints its endpoint fails the test instead of hanging it.
"""

from __future__ import annotations

import http.client
import os
import select
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aiooss_resume._signing import sign_request
from aiooss_resume.testing import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET
from aiooss_resume.testing._cli import add_serve_arguments, serve_main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


STARTUP_TIMEOUT = 30.0
EXIT_TIMEOUT = 15.0

MODULE_SERVE = (sys.executable, "-m", "aiooss_resume.testing", "serve")


def _first_line(process: subprocess.Popen[str], timeout: float = STARTUP_TIMEOUT) -> str:
    """The first stdout line, waiting at most ``timeout`` seconds for it to start."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        process.kill()
        _, stderr = process.communicate(timeout=EXIT_TIMEOUT)
        raise AssertionError(f"no endpoint within {timeout:g} s; stderr: {stderr}")
    return process.stdout.readline()


@contextmanager
def serve(
    *args: str, env: dict[str, str] | None = None, command: tuple[str, ...] = MODULE_SERVE
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    process = subprocess.Popen(
        [*command, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        endpoint = _first_line(process).strip()
        yield endpoint, process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=EXIT_TIMEOUT)


def _put(endpoint: str, key: str, body: bytes, ak: str, sk: str) -> tuple[int, bytes]:
    headers = sign_request(
        method="PUT",
        bucket="cli-bucket",
        key=key,
        query=[],
        headers={"Content-Type": "application/octet-stream"},
        access_key_id=ak,
        access_key_secret=sk,
        security_token=None,
        version="v4",
        region="cn-hangzhou",
        now=datetime.now(UTC),
    )
    request = urllib.request.Request(
        f"{endpoint}/cli-bucket/{key}", data=body, method="PUT", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def test_serve_prints_endpoint_and_stops_on_sigint(tmp_path: Path) -> None:
    with serve(
        "--root", str(tmp_path), "--fault", "PutObject:nth=2:status=503",
        env={"OSS_ACCESS_KEY_ID": "ENVAK", "OSS_ACCESS_KEY_SECRET": "ENVSK"},
    ) as (endpoint, process):  # fmt: skip
        assert endpoint.startswith("http://127.0.0.1:")
        assert endpoint.rsplit(":", 1)[1].isdigit()
        assert _put(endpoint, "a.txt", b"hello", "ENVAK", "ENVSK")[0] == 200
        status, body = _put(endpoint, "a.txt", b"hello", "ENVAK", "ENVSK")
        assert status == 503 and b"<Code>SlowDown</Code>" in body
        status, body = _put(endpoint, "a.txt", b"hello", "ENVAK", "wrong")
        assert status == 403 and b"SignatureDoesNotMatch" in body
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=EXIT_TIMEOUT)
        assert process.returncode == 0
        assert "Traceback" not in stderr
    assert any((tmp_path / "buckets" / "cli-bucket" / "objects").iterdir())


def test_serve_stops_on_sigterm_with_flags() -> None:
    with serve("--access-key-id", "AK1", "--access-key-secret", "SK1", "--store", "discard") as (
        endpoint,
        process,
    ):
        assert _put(endpoint, "x", b"x" * 1000, "AK1", "SK1")[0] == 200
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=EXIT_TIMEOUT)
        assert process.returncode == 0
        assert "Traceback" not in stderr


def _console_script() -> str:
    # The venv's own script, beside its interpreter: the one this package installed.
    script = shutil.which("aiooss-resume", path=str(Path(sys.executable).parent))
    assert script is not None, "the aiooss-resume console script is not installed"
    return script


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(
            (sys.executable, "-m", "aiooss_resume", "serve"), id="python -m aiooss_resume"
        ),
        pytest.param(None, id="aiooss-resume console script"),
    ],
)
def test_main_cli_serve_prints_endpoint_first_and_exits_0_on_sigint(
    tmp_path: Path, command: tuple[str, ...] | None
) -> None:
    argv = command if command is not None else (_console_script(), "serve")
    with serve(
        "--root", str(tmp_path), "--access-key-id", "AK2", "--access-key-secret", "SK2",
        command=argv,
    ) as (endpoint, process):  # fmt: skip
        # exactly the URL: nothing before it on stdout, nothing after it on the line
        assert endpoint.startswith("http://127.0.0.1:")
        port = endpoint.rsplit(":", 1)[1]
        assert port.isascii() and port.isdigit() and int(port) > 0
        assert _put(endpoint, "a.txt", b"hello", "AK2", "SK2")[0] == 200
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=EXIT_TIMEOUT)
        assert process.returncode == 0, stderr
        assert stdout == ""  # the endpoint was the only line
        assert "Traceback" not in stderr
        assert "OSS emulator" in stderr
    assert any((tmp_path / "buckets" / "cli-bucket" / "objects").iterdir())


def test_serve_truncate_response_fault_from_the_command_line() -> None:
    with serve("--fault", "PutObject:truncate_response") as (endpoint, process):
        with pytest.raises(http.client.IncompleteRead):
            _put(endpoint, "t.txt", b"hello", DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET)
        # fired once: the next PUT is answered whole
        ok = _put(endpoint, "t.txt", b"hello", DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET)
        assert ok[0] == 200
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=EXIT_TIMEOUT)
        assert process.returncode == 0, stderr


def test_bad_fault_spec_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        serve_main(["serve", "--fault", "UploadPart:bogus=1"])
    assert info.value.code == 2
    assert "unknown fault option" in capsys.readouterr().err


def test_add_serve_arguments_defaults() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--bucket", "a-b", "--bucket", "c-d", "--fault", "PutObject:delay=1"])
    assert (args.host, args.port, args.region, args.store) == (
        "127.0.0.1",
        0,
        "cn-hangzhou",
        "disk",
    )
    assert args.buckets == ["a-b", "c-d"]
    assert args.faults == ["PutObject:delay=1"]


def _stop(process: subprocess.Popen[str]) -> str:
    """SIGINT, wait (bounded), assert a clean exit; the whole stderr."""
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=EXIT_TIMEOUT)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    return stderr


def test_banner_shows_the_demo_key_id_and_secret() -> None:
    env = dict.fromkeys(("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET"), "")
    with serve(env=env) as (endpoint, process):
        assert (
            _put(endpoint, "d", b"demo", DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET)[0] == 200
        )
        stderr = _stop(process)
    assert f"access key id {DEFAULT_ACCESS_KEY_ID}," in stderr
    assert f"secret {DEFAULT_ACCESS_KEY_SECRET}," in stderr


def test_banner_never_prints_a_configured_secret() -> None:
    env = {"OSS_ACCESS_KEY_ID": "ENVAK", "OSS_ACCESS_KEY_SECRET": "ENV-SECRET-VALUE"}
    with serve(env=env) as (endpoint, process):
        assert _put(endpoint, "e", b"env", "ENVAK", "ENV-SECRET-VALUE")[0] == 200
        stderr = _stop(process)
    assert "access key id ENVAK," in stderr
    assert "ENV-SECRET-VALUE" not in stderr
    assert "secret as configured (not shown)" in stderr


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(MODULE_SERVE, id="python -m aiooss_resume.testing serve"),
        pytest.param(None, id="aiooss-resume serve"),
    ],
)
def test_serve_help_names_the_demo_credentials_and_the_env_override(
    command: tuple[str, ...] | None,
) -> None:
    argv = command if command is not None else (_console_script(), "serve")
    result = subprocess.run(
        [*argv, "--help"], capture_output=True, text=True, timeout=STARTUP_TIMEOUT,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines
    assert "$OSS_ACCESS_KEY_ID" in text and "$OSS_ACCESS_KEY_SECRET" in text
    assert DEFAULT_ACCESS_KEY_ID in text and DEFAULT_ACCESS_KEY_SECRET in text
    for option in ("--virtual-host-base", "--cname", "--request-timeout"):
        assert option in text


def test_serve_virtual_host_base_and_cname_options(tmp_path: Path) -> None:
    with serve(
        "--root", str(tmp_path), "--virtual-host-base", "emu.test",
        "--cname", "files.example.test=cname-bucket", "--request-timeout", "30",
    ) as (endpoint, process):  # fmt: skip
        for host, bucket in (
            ("cli-bucket.emu.test", "cli-bucket"),
            ("files.example.test", "cname-bucket"),
        ):
            headers = sign_request(
                method="PUT", bucket=bucket, key="v.txt", query=[],
                headers={"Host": host, "Content-Type": "text/plain"},
                access_key_id=DEFAULT_ACCESS_KEY_ID, access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
                security_token=None,
                version="v1", region="cn-hangzhou", now=datetime.now(UTC),
            )  # fmt: skip
            request = urllib.request.Request(
                f"{endpoint}/v.txt", data=host.encode(), method="PUT", headers=headers
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
            objects = tmp_path / "buckets" / bucket / "objects"
            assert any(objects.iterdir()), f"nothing stored in {bucket}"
        _stop(process)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--request-timeout", "0"], "--request-timeout must be a positive"),
        (["--request-timeout", "nan"], "--request-timeout must be a positive"),
        (["--cname", "no-equals-sign"], "--cname wants HOST=BUCKET"),
        (["--cname", "files.example.test=Bad_Bucket"], "invalid bucket name"),
    ],
)
def test_bad_serve_options_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        serve_main(["serve", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
