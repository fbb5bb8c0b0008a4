"""Upload a file resumably, printing progress events.

    python examples/basic_upload.py [FILE] [oss://BUCKET/KEY]

With ``OSS_ENDPOINT`` set, the upload goes there with the credentials and region from the
environment (``OSS_ACCESS_KEY_ID``, ``OSS_ACCESS_KEY_SECRET``, ``OSS_REGION``). Without it,
the bundled emulator is started in-process, so the example runs anywhere. Without FILE, a
20 MiB sample file is created in a temporary directory.

Interrupt it (Ctrl-C): the library flushes every acknowledged part to ``FILE.cp`` while the
upload unwinds, and the example prints the command that resumes and exits with 130 (the
shell's code for Ctrl-C), without a traceback. Run that command: it resumes from
``FILE.cp``. Resuming needs an OSS that outlives the example (``OSS_ENDPOINT``) and a FILE
of your own: the bundled emulator and the temporary sample go away with the process, so a
rerun without them starts over (and says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiooss_resume as oss


@contextlib.asynccontextmanager
async def open_client() -> AsyncIterator[oss.Client]:
    """A client for ``OSS_ENDPOINT``, or for a fresh in-process emulator if it is unset."""
    endpoint = os.environ.get("OSS_ENDPOINT")
    if endpoint:
        async with oss.Client(endpoint) as client:  # credentials and region from the env
            yield client
        return
    from aiooss_resume.testing import OssServer

    async with OssServer() as server:
        creds = server.credentials
        print(f"OSS_ENDPOINT is not set: using the bundled emulator at {server.endpoint}")
        async with oss.Client(
            server.endpoint,
            credentials=oss.Credentials(creds.access_key_id, creds.access_key_secret),
            region=server.region,
        ) as client:
            yield client


def on_progress(event: oss.ProgressEvent) -> None:
    """Print the events that say something; ``BytesSent`` comes every 1 MiB, so skip it."""
    if isinstance(event, oss.UploadStarted):
        state = f"resuming, {event.resumed_bytes} bytes already on OSS" if event.resumed else "new"
        print(f"started: {event.total_bytes} bytes in {event.part_count} parts ({state})")
    elif isinstance(event, oss.PartDone):
        print(f"part {event.part_number} done ({event.parts_done}/{event.part_count})")
    elif isinstance(event, oss.PartRetried):
        print(f"retrying part {event.part_number} in {event.delay:.1f}s: {event.error}")


async def main(path: Path, target: str) -> None:
    bucket, _, key = target.removeprefix("oss://").partition("/")
    async with open_client() as client:
        result = await client.bucket(bucket).upload_file(
            key,
            path,
            5 * 1024 * 1024,  # part size
            routines=4,
            checkpoint=True,  # resumable: the checkpoint is FILE.cp until the upload completes
            on_progress=on_progress,
        )
    print(
        f"uploaded oss://{result.bucket}/{result.key}: {result.size} bytes, "
        f"etag {result.etag}, crc64 {result.crc64}, {result.bytes_resumed} bytes resumed"
    )


def interrupted(path: Path | None, target: str) -> int:
    """What to say after Ctrl-C: how to resume (or why it cannot), and the exit code."""
    if path is None or not os.environ.get("OSS_ENDPOINT"):
        print(
            "interrupted: nothing to resume (the temporary sample or the bundled emulator is "
            "gone); pass a FILE and set OSS_ENDPOINT to get a resumable upload",
            file=sys.stderr,
        )
        return 130
    command = shlex.join([sys.executable, sys.argv[0], str(path.resolve()), target])
    print(
        f"interrupted: acknowledged parts are kept in {path}.cp; resume with:\n  {command}",
        file=sys.stderr,
    )
    return 130


if __name__ == "__main__":
    target = sys.argv[2] if len(sys.argv) > 2 else "oss://example-bucket/examples/sample.bin"
    # asyncio.run cancels main() on Ctrl-C (the upload flushes its checkpoint while it
    # unwinds) and then raises KeyboardInterrupt here, once that cleanup is over.
    try:
        if len(sys.argv) > 1:
            asyncio.run(main(Path(sys.argv[1]), target))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                sample = Path(tmp) / "sample.bin"
                sample.write_bytes(os.urandom(20 * 1024 * 1024))
                asyncio.run(main(sample, target))
    except KeyboardInterrupt:
        sys.exit(interrupted(Path(sys.argv[1]) if len(sys.argv) > 1 else None, target))
