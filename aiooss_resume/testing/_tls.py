"""Throwaway TLS certificates for the emulator and the benchmark sink.

Theory of operation
-------------------
:func:`self_signed_tls` makes, at run time and in memory, a private certificate authority and
one server certificate it signs for ``127.0.0.1``, ``::1``, ``localhost`` and
``*.localhost`` (so virtual-hosted ``BUCKET.localhost`` works too). The server side gets an
``ssl.SSLContext`` holding the certificate; the client side is told to trust the CA
*explicitly*: an ``ssl.SSLContext`` from :meth:`TlsCertificates.client_context`, or the CA's
PEM file for clients that take a bundle path (oss2, alibabacloud-oss-v2, curl). Nothing ever
turns certificate verification off.

The certificates come from `trustme <https://pypi.org/project/trustme/>`_, a small
test-only package built for exactly this (it wraps ``cryptography``). It is in the ``test``
and ``bench`` extras, never a runtime dependency of aiooss_resume: it is imported only when
this function is called, and its absence is a clear ``RuntimeError`` naming the extra.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["DEFAULT_TLS_HOSTS", "TlsCertificates", "self_signed_tls"]

DEFAULT_TLS_HOSTS: Final = ("127.0.0.1", "::1", "localhost", "*.localhost")
"""The names the server certificate is valid for by default."""


@dataclass(frozen=True, slots=True)
class TlsCertificates:
    """A run-time CA and the server certificate it signed.

    ``server_context`` goes to ``OssServer(ssl_context=...)``; clients trust ``ca_pem``
    (``client_context()``, or the file ``ca_file`` when one was written).
    """

    server_context: ssl.SSLContext
    ca_pem: bytes
    """The CA certificate, PEM."""
    ca_file: Path | None
    """Where the CA certificate was written (``ca_file=`` of :func:`self_signed_tls`)."""
    hosts: tuple[str, ...]

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context (hostname checked) that trusts this CA only."""
        context = ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))
        return context


def self_signed_tls(
    hosts: Sequence[str] = DEFAULT_TLS_HOSTS, *, ca_file: str | Path | None = None
) -> TlsCertificates:
    """Make a throwaway CA and a server certificate for ``hosts``; see the module docstring.

    ``ca_file``: also write the CA certificate (PEM) there, for clients that want a path.
    Raises ``RuntimeError`` when the ``trustme`` package (``aiooss_resume[test]``) is missing.
    """
    if isinstance(hosts, str) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise TypeError("hosts must be a non-empty sequence of host names or IP addresses")
    try:
        import trustme
    except ImportError:
        raise RuntimeError(
            "TLS for the emulator needs the 'trustme' package: "
            "pip install 'aiooss_resume[test]' (or pip install trustme)"
        ) from None
    authority = trustme.CA(organization_name="aiooss_resume emulator (throwaway)")
    leaf = authority.issue_cert(*hosts)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(server_context)
    ca_pem = authority.cert_pem.bytes()
    written: Path | None = None
    if ca_file is not None:
        written = Path(ca_file)
        written.write_bytes(ca_pem)
    return TlsCertificates(server_context, ca_pem, written, tuple(hosts))
