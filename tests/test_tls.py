"""HTTPS against the emulator with a certificate made at run time (issue 13 item 3).

The client trusts the throwaway CA only when told to (``Client(ssl=...)``); without it the
upload fails at once with a typed, non-retryable ``TransportError``, never a traceback and
never a retry loop. oss2 and alibabacloud-oss-v2 upload over the same endpoint, each trusting
the CA through its own (requests-based) mechanism, with verification on.
"""

from __future__ import annotations

import asyncio
import os
import select
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import alibabacloud_oss_v2 as oss_v2
import oss2
import pytest

import aiooss_resume as oss
from aiooss_resume._crc64 import crc64
from aiooss_resume._retry import is_retryable
from aiooss_resume.testing import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    OssServer,
    ThreadedOssServer,
    TlsCertificates,
    self_signed_tls,
)

pytestmark = pytest.mark.anyio

BUCKET = "tls-bucket"
KIB = 1024


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsCertificates:
    return self_signed_tls(ca_file=tmp_path_factory.mktemp("tls") / "ca.pem")


@pytest.fixture
def handshakes(tls: TlsCertificates) -> Iterator[list[str]]:
    """Server names of the TLS handshakes the emulator sees (clients send SNI for names)."""
    seen: list[str] = []
    tls.server_context.sni_callback = lambda _sock, name, _ctx: seen.append(name or "")  # type: ignore[assignment]
    yield seen
    tls.server_context.sni_callback = None


@pytest.fixture
async def server(tmp_path: Path, tls: TlsCertificates) -> AsyncIterator[OssServer]:
    async with OssServer(root=tmp_path / "oss", ssl_context=tls.server_context) as s:
        yield s
        assert s.stats.internal_errors == 0


def _client(server: OssServer, endpoint: str | None = None, **kwargs: Any) -> oss.Client:
    creds = server.credentials
    return oss.Client(
        endpoint or server.endpoint,
        credentials=oss.Credentials(creds.access_key_id, creds.access_key_secret),
        region=server.region,
        **kwargs,
    )


def _source(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "source.bin"
    path.write_bytes(data)
    return path, data


def test_self_signed_tls_material(tls: TlsCertificates) -> None:
    assert tls.ca_file is not None
    assert tls.ca_file.read_bytes() == tls.ca_pem
    assert tls.ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert "localhost" in tls.hosts
    assert "127.0.0.1" in tls.hosts
    client = tls.client_context()
    assert client.verify_mode == ssl.CERT_REQUIRED
    assert client.check_hostname
    with pytest.raises(TypeError, match="non-empty sequence"):
        self_signed_tls("localhost")


async def test_upload_over_tls_is_byte_exact(
    server: OssServer, tls: TlsCertificates, tmp_path: Path
) -> None:
    assert server.endpoint.startswith("https://127.0.0.1:")
    path, data = _source(tmp_path, 550 * KIB + 7)
    async with _client(server, ssl=tls.client_context()) as client:
        result = await client.bucket(BUCKET).upload_file("big.bin", path, 100 * KIB, routines=3)
        small = await client.bucket(BUCKET).upload_file("small.bin", path, 1024 * KIB)
    assert server.read_object(BUCKET, "big.bin") == data
    assert server.read_object(BUCKET, "small.bin") == data
    assert result.etag.strip('"').endswith("-6")
    assert small.crc64 == result.crc64
    assert server.stats.requests["UploadPart"] == 6


async def test_tls_by_host_name(
    server: OssServer, tls: TlsCertificates, tmp_path: Path, handshakes: list[str]
) -> None:
    """``https://localhost:PORT``: the certificate's name is checked (and SNI sent)."""
    path, data = _source(tmp_path, 200 * KIB)
    async with _client(
        server, f"https://localhost:{server.port}", ssl=tls.client_context()
    ) as client:
        await client.bucket(BUCKET).upload_file("by-name", path, 100 * KIB)
    assert server.read_object(BUCKET, "by-name") == data
    assert handshakes
    assert set(handshakes) == {"localhost"}


async def test_untrusted_certificate_is_a_typed_error_not_retried(
    server: OssServer, tmp_path: Path, handshakes: list[str]
) -> None:
    path, _ = _source(tmp_path, 10 * KIB)
    retry = oss.RetryPolicy(max_attempts=5, base_delay=0.0, max_delay=0.0)
    async with _client(server, f"https://localhost:{server.port}", retry=retry) as client:
        with pytest.raises(oss.TransportError, match="TLS certificate verification failed") as e:
            await client.bucket(BUCKET).upload_file("k", path, 100 * KIB)
    assert e.value.retryable is False
    assert not is_retryable(e.value)
    assert "Client(ssl=" in str(e.value)  # says how to fix it
    assert isinstance(e.value.__cause__, aiohttp.ClientConnectorCertificateError)
    assert handshakes == ["localhost"]  # one attempt, although five were allowed
    assert server.requests == []  # no request ever got through


async def test_certificate_for_another_host_is_refused(server: OssServer, tmp_path: Path) -> None:
    """Hostname checking stays on: a trusted CA does not make a wrong name acceptable."""
    other = self_signed_tls(["elsewhere.example"])
    async with OssServer(root=tmp_path / "other", ssl_context=other.server_context) as wrong:
        path, _ = _source(tmp_path, 1024)
        async with _client(wrong, ssl=other.client_context()) as client:
            with pytest.raises(oss.TransportError, match="verification failed") as e:
                await client.bucket(BUCKET).upload_file("k", path, 100 * KIB)
    assert e.value.retryable is False


async def test_ssl_option_misuse(server: OssServer, tls: TlsCertificates) -> None:
    with pytest.raises(TypeError, match=r"ssl\.SSLContext"):
        _client(server, ssl=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="https endpoint"):
        _client(server, "http://127.0.0.1:9", ssl=tls.client_context())
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match="ssl or session"):
            _client(server, ssl=tls.client_context(), session=session)
    with pytest.raises(TypeError, match="ssl_context"):
        OssServer(ssl_context=True)  # type: ignore[arg-type]


async def test_plain_http_client_against_tls_server_fails_cleanly(server: OssServer) -> None:
    async with _client(server, f"http://127.0.0.1:{server.port}") as client:
        with pytest.raises(oss.OssError):
            await client.bucket(BUCKET).abort_upload("k", "UPLOAD")


# ---------------------------------------------------------------- official SDKs


@pytest.fixture
def threaded(tmp_path: Path, tls: TlsCertificates) -> Iterator[ThreadedOssServer]:
    with ThreadedOssServer(root=tmp_path / "oss", ssl_context=tls.server_context) as s:
        yield s
        assert s.stats.internal_errors == 0


@pytest.mark.sdk
def test_oss2_over_tls(
    threaded: ThreadedOssServer,
    tls: TlsCertificates,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """oss2 passes no ``verify``, so a requests Session's ``verify`` is its CA bundle (unless
    REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE is set: requests prefers those, so they are unset)."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    path, data = _source(tmp_path, 350 * KIB)
    ak, sk, _ = threaded.credentials
    session = oss2.Session()
    session.session.verify = str(tls.ca_file)  # requests' CA bundle; verification stays on
    bucket = oss2.Bucket(
        oss2.AuthV4(ak, sk), threaded.endpoint, BUCKET, region=threaded.region, session=session
    )
    oss2.resumable_upload(
        bucket,
        "oss2.bin",
        str(path),
        part_size=100 * KIB,
        multipart_threshold=100 * KIB,
        num_threads=2,
        store=oss2.ResumableStore(root=str(tmp_path / "ckpt")),
    )
    assert threaded.read_object(BUCKET, "oss2.bin") == data
    untrusting = oss2.Bucket(oss2.AuthV4(ak, sk), threaded.endpoint, BUCKET, region="cn-hangzhou")
    with pytest.raises(oss2.exceptions.RequestError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.put_object("k", b"x")


@pytest.mark.sdk
def test_v2_over_tls(
    threaded: ThreadedOssServer,
    tls: TlsCertificates,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """v2 passes ``verify=True`` on every request, so requests reads REQUESTS_CA_BUNDLE."""
    path, data = _source(tmp_path, 350 * KIB)
    ak, sk, _ = threaded.credentials

    def client() -> Any:
        cfg = oss_v2.config.load_default()
        cfg.credentials_provider = oss_v2.credentials.StaticCredentialsProvider(ak, sk)
        cfg.region = threaded.region
        cfg.endpoint = threaded.endpoint
        cfg.retry_max_attempts = 1
        return oss_v2.Client(cfg)

    with pytest.raises(oss_v2.exceptions.OperationError, match="CERTIFICATE_VERIFY_FAILED"):
        client().put_object(oss_v2.PutObjectRequest(bucket=BUCKET, key="k", body=b"x"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca_file))
    uploader = client().uploader(part_size=100 * KIB, parallel_num=2)
    uploader.upload_file(oss_v2.PutObjectRequest(bucket=BUCKET, key="v2.bin"), str(path))
    assert threaded.read_object(BUCKET, "v2.bin") == data


# ---------------------------------------------------------------- serve --tls


@pytest.mark.skipif(sys.platform == "win32", reason="select() on pipes")
def test_serve_tls_prints_endpoint_and_ca(tmp_path: Path) -> None:
    ca_path = tmp_path / "emulator-ca.pem"
    command = [sys.executable, "-m", "aiooss_resume.testing", "serve", "--port", "0", "--tls"]
    process = subprocess.Popen(
        [*command, "--tls-ca-file", str(ca_path), "--root", str(tmp_path / "root")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "serve --tls printed nothing within 30 s"
        # both lines are written (and flushed) together once the server listens
        endpoint = process.stdout.readline().strip()
        printed_ca = process.stdout.readline().strip()
        assert endpoint.startswith("https://127.0.0.1:")
        assert Path(printed_ca) == ca_path
        path, data = _source(tmp_path, 150 * KIB)

        async def upload() -> oss.UploadResult:
            async with oss.Client(
                endpoint,
                credentials=oss.Credentials(DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET),
                region="cn-hangzhou",
                ssl=ssl.create_default_context(cafile=printed_ca),
            ) as client:
                return await client.bucket(BUCKET).upload_file("cli.bin", path, 100 * KIB)

        result = asyncio.run(upload())
        assert result.crc64 == crc64(data)  # checked by the client against the server's
    finally:
        process.terminate()
        process.communicate(timeout=15)
    assert process.returncode == 0


def test_serve_tls_ca_file_needs_tls(capsys: pytest.CaptureFixture[str]) -> None:
    from aiooss_resume.testing._cli import serve_main

    with pytest.raises(SystemExit) as exit_info:
        serve_main(["--tls-ca-file", "x.pem"])
    assert exit_info.value.code == 2
    assert "--tls-ca-file needs --tls" in capsys.readouterr().err
