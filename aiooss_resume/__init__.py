"""aiooss_resume: asyncio-native resumable multipart uploads to Alibaba Cloud OSS.

```python
import aiooss_resume as oss

async with oss.Client(endpoint, credentials=oss.Credentials(ak, sk), region="cn-hangzhou") as c:
    result = await c.bucket("examplebucket").upload_file(
        "abc/efg/123.jpg", "LocalFile", 100 * 1024, routines=3, checkpoint=True
    )
```
"""

from __future__ import annotations

from ._client import Bucket, Client
from ._credentials import (
    Credentials,
    CredentialsProvider,
    EnvironmentCredentialsProvider,
    StaticCredentialsProvider,
)
from ._downloader import DownloadResult
from ._errors import (
    CheckpointError,
    CredentialsError,
    FileChangedError,
    IntegrityError,
    NoSuchUploadError,
    OssError,
    ProtocolError,
    ServiceError,
    StreamLengthError,
    TransportError,
)
from ._events import (
    BytesSent,
    PartDone,
    PartRetried,
    ProgressEvent,
    ProgressHook,
    UploadCompleted,
    UploadStarted,
)
from ._headers import (
    MAX_TRAFFIC_LIMIT,
    MIN_TRAFFIC_LIMIT,
    Acl,
    ObjectOptions,
    ServerSideEncryption,
    StorageClass,
)
from ._http import HttpRequest, HttpResponse, Transport
from ._many_types import (
    FileFinished,
    FileOutcome,
    FileStatus,
    ManyEvent,
    ManyProgress,
    ManyProgressHook,
    ManyResult,
)
from ._models import UploadSummary
from ._retry import RetryPolicy
from ._stream import DEFAULT_STREAM_PART_SIZE
from ._stream_parts import Reopen, StreamSource
from ._uploader import UploadResult

__version__ = "0.1.0"

__all__ = [  # noqa: RUF022 (plainly sorted, as tests/test_architecture.py checks)
    "Acl",
    "Bucket",
    "BytesSent",
    "CheckpointError",
    "Client",
    "Credentials",
    "CredentialsError",
    "CredentialsProvider",
    "DEFAULT_STREAM_PART_SIZE",
    "DownloadResult",
    "EnvironmentCredentialsProvider",
    "FileChangedError",
    "FileFinished",
    "FileOutcome",
    "FileStatus",
    "HttpRequest",
    "HttpResponse",
    "IntegrityError",
    "MAX_TRAFFIC_LIMIT",
    "MIN_TRAFFIC_LIMIT",
    "ManyEvent",
    "ManyProgress",
    "ManyProgressHook",
    "ManyResult",
    "NoSuchUploadError",
    "ObjectOptions",
    "OssError",
    "PartDone",
    "PartRetried",
    "ProgressEvent",
    "ProgressHook",
    "ProtocolError",
    "Reopen",
    "RetryPolicy",
    "ServerSideEncryption",
    "ServiceError",
    "StaticCredentialsProvider",
    "StorageClass",
    "StreamLengthError",
    "StreamSource",
    "Transport",
    "TransportError",
    "UploadCompleted",
    "UploadResult",
    "UploadStarted",
    "UploadSummary",
    "__version__",
]
