"""One resumable download in its own process, for the download kill -9 tests.

    python tests/reliability_download_worker.py --endpoint URL --access-key-id AK
        --access-key-secret SK --bucket B --key K --file PATH [--part-size N] [--routines N]
        [--trap write:N|replace:N|rename|renamed]

Prints ``READY`` once imported, ``DONE {json}`` after a successful download (exit 0) or
``ERROR type: message`` (exit 1). ``--trap write:N`` / ``replace:N`` stop in the middle of
the Nth checkpoint write / just before its rename (``reliability_worker.install_trap``, the
upload worker's traps, on ``PATH.dcp``); ``--trap rename`` stops just before the temp file
is renamed over ``PATH``, ``--trap renamed`` just after it (before the checkpoint's
deletion). Each prints ``TRAP ...`` and sleeps, so the parent can SIGKILL the process at
exactly that point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from reliability_worker import emit, install_trap


def install_rename_trap(dest: str, *, after: bool = False) -> None:
    real_replace = os.replace

    def trapped(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        if os.fspath(dst) == dest and not after:
            emit("TRAP rename")
            time.sleep(30)
        result = real_replace(src, dst, *args, **kwargs)
        if os.fspath(dst) == dest and after:
            emit("TRAP renamed")
            time.sleep(30)
        return result

    os.replace = trapped


async def download(args: argparse.Namespace) -> dict[str, object]:
    import aiooss_resume as oss

    async with oss.Client(
        args.endpoint,
        credentials=oss.Credentials(args.access_key_id, args.access_key_secret),
        region=args.region,
        retry=oss.RetryPolicy(max_attempts=5, base_delay=0.0),
        read_timeout=args.read_timeout,
    ) as client:
        result = await client.bucket(args.bucket).download_file(
            args.key, args.file, args.part_size, routines=args.routines, checkpoint=True
        )
    return {
        "parts_downloaded": result.parts_downloaded,
        "parts_resumed": result.parts_resumed,
        "crc64": result.crc64,
        "size": result.size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--access-key-id", required=True)
    parser.add_argument("--access-key-secret", required=True)
    parser.add_argument("--region", default="cn-hangzhou")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--part-size", type=int, default=100 * 1024)
    parser.add_argument("--routines", type=int, default=4)
    parser.add_argument("--read-timeout", type=float, default=5.0)
    parser.add_argument("--trap", default="")
    args = parser.parse_args(argv)
    import aiooss_resume  # noqa: F401  (import cost before READY, not after)

    dest = os.path.abspath(args.file)
    if args.trap == "rename":
        install_rename_trap(dest)
    elif args.trap == "renamed":
        install_rename_trap(dest, after=True)
    elif args.trap:
        install_trap(args.trap, dest + ".dcp")
    emit("READY")
    try:
        outcome = asyncio.run(download(args))
    except Exception as exc:
        emit(f"ERROR {type(exc).__name__}: {exc}")
        return 1
    emit("DONE " + json.dumps(outcome))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
