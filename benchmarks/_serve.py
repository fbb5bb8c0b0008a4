"""Run the OSS emulator in its own process for the benchmarks (discard store).

``python -m benchmarks._serve --root DIR`` prints one JSON line (endpoint, keys, region) and
serves until its stdin is closed (the parent exiting closes it too), so no server outlives a
benchmark run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aiooss_resume.testing import OssServer


async def _serve(root: str, store: str) -> None:
    async with OssServer(root, store=store) as server:  # type: ignore[arg-type]
        creds = server.credentials
        print(
            json.dumps(
                {
                    "endpoint": server.endpoint,
                    "access_key_id": creds.access_key_id,
                    "access_key_secret": creds.access_key_secret,
                    "region": server.region,
                }
            ),
            flush=True,
        )
        loop = asyncio.get_running_loop()
        # Wait for EOF on stdin without blocking the server's loop.
        await loop.run_in_executor(None, sys.stdin.buffer.read)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--store", default="discard", choices=["discard", "disk"])
    args = parser.parse_args()
    asyncio.run(_serve(args.root, args.store))


if __name__ == "__main__":
    main()
