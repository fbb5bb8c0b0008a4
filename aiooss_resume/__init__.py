"""aiooss_resume: asyncio-native resumable multipart uploads to Alibaba Cloud OSS."""

from __future__ import annotations

from ._errors import (
    CheckpointError,
    CredentialsError,
    FileChangedError,
    IntegrityError,
    NoSuchUploadError,
    OssError,
    ProtocolError,
    ServiceError,
    TransportError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CredentialsError",
    "FileChangedError",
    "IntegrityError",
    "NoSuchUploadError",
    "OssError",
    "ProtocolError",
    "ServiceError",
    "TransportError",
    "__version__",
]
