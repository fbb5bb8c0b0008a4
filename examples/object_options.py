"""Upload with typed object options (ACL, storage class, metadata, tags...), no raw headers.

    python examples/object_options.py

Runs against the bundled emulator, started in-process, and prints what the stored object
carries. Against real OSS, build the ``Client`` with your endpoint instead: the options
are the same.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import aiooss_resume as oss
from aiooss_resume.testing import OssServer

OPTIONS = oss.ObjectOptions(
    content_type="text/csv",
    content_disposition='attachment; filename="report.csv"',
    cache_control="max-age=3600",
    storage_class="IA",
    acl="private",
    server_side_encryption="AES256",
    metadata={"owner": "data-team", "source-run": "2026-12-07"},
    tagging={"project": "reports", "retention": "90 days"},
    forbid_overwrite=True,  # refuse to replace an existing report.csv
    traffic_limit=100 * 1024 * 1024 * 8,  # bit/s: at most 100 MiB/s, on each part request
)


async def main(path: Path) -> None:
    async with OssServer() as server:
        creds = server.credentials
        async with oss.Client(
            server.endpoint,
            credentials=oss.Credentials(creds.access_key_id, creds.access_key_secret),
            region=server.region,
        ) as client:
            bucket = client.bucket("example-bucket")
            result = await bucket.upload_file(
                "reports/report.csv", path, 1024 * 1024, routines=2, options=OPTIONS
            )
            print(f"uploaded oss://{result.bucket}/{result.key}: {result.size} bytes")
            try:
                await bucket.upload_file("reports/report.csv", path, options=OPTIONS)
            except oss.ServiceError as exc:
                print(f"second upload refused: {exc.status} {exc.code}")
        stored = server.object_info("example-bucket", "reports/report.csv")
        assert stored is not None
        for name, value in sorted(stored.headers.items()):
            print(f"  {name}: {value}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "report.csv"
        sample.write_bytes(os.urandom(3 * 1024 * 1024))
        asyncio.run(main(sample))
