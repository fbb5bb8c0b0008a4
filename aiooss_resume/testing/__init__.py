"""A local Alibaba Cloud OSS emulator for tests and benchmarks.

``OssServer`` (async context manager) and ``ThreadedOssServer`` (sync, own thread) speak the
OSS wire protocol on 127.0.0.1: V1/V4 signatures, multipart uploads, persistent storage under a
root directory, and fault injection (``Fault``, ``FaultPlan``). ``MockTransport`` is the
in-memory alternative: hand it to ``Client(transport=...)`` and answer each ``HttpRequest``
with an ``HttpResponse`` from your own handler, no sockets at all. ``self_signed_tls`` makes a
throwaway CA and server certificate so the emulator can serve HTTPS. See ``docs/testing.md``.
"""

from __future__ import annotations

from .._http import MockTransport
from ._faults import (
    ChaosKind,
    ChaosSpec,
    Fault,
    FaultContext,
    FaultHandle,
    FaultHook,
    FaultPlan,
    FaultRecord,
    parse_fault_spec,
)
from ._server import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    DEFAULT_REGION,
    DEFAULT_REQUEST_TIMEOUT,
    OssServer,
    RequestRecord,
    ServerCredentials,
    ServerStats,
    ThreadedOssServer,
)
from ._store import ObjectMeta
from ._tls import DEFAULT_TLS_HOSTS, TlsCertificates, self_signed_tls

__all__ = [
    "DEFAULT_ACCESS_KEY_ID",
    "DEFAULT_ACCESS_KEY_SECRET",
    "DEFAULT_REGION",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_TLS_HOSTS",
    "ChaosKind",
    "ChaosSpec",
    "Fault",
    "FaultContext",
    "FaultHandle",
    "FaultHook",
    "FaultPlan",
    "FaultRecord",
    "MockTransport",
    "ObjectMeta",
    "OssServer",
    "RequestRecord",
    "ServerCredentials",
    "ServerStats",
    "ThreadedOssServer",
    "TlsCertificates",
    "parse_fault_spec",
    "self_signed_tls",
]
