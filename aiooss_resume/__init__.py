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
from ._uploader import UploadResult

__version__ = "0.1.0"

__all__ = [
    "Bucket",
    "BytesSent",
    "CheckpointError",
    "Client",
    "Credentials",
    "CredentialsError",
    "CredentialsProvider",
    "DownloadResult",
    "EnvironmentCredentialsProvider",
    "FileChangedError",
    "FileFinished",
    "FileOutcome",
    "FileStatus",
    "HttpRequest",
    "HttpResponse",
    "IntegrityError",
    "ManyEvent",
    "ManyProgress",
    "ManyProgressHook",
    "ManyResult",
    "NoSuchUploadError",
    "OssError",
    "PartDone",
    "PartRetried",
    "ProgressEvent",
    "ProgressHook",
    "ProtocolError",
    "RetryPolicy",
    "ServiceError",
    "StaticCredentialsProvider",
    "Transport",
    "TransportError",
    "UploadCompleted",
    "UploadResult",
    "UploadStarted",
    "UploadSummary",
    "__version__",
]
