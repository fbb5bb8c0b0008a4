"""Run the OSS emulator in its own process for the benchmarks (discard store).

``python -m benchmarks._serve --root DIR [--tls-ca-file PATH]`` prints one JSON line
(endpoint, keys, region, ca_file) and serves until its stdin is closed (the parent exiting
closes it too), so no server outlives a benchmark run. With ``--tls-ca-file`` it serves HTTPS
with a certificate made at start (``aiooss_resume.testing.self_signed_tls``) and writes the
CA there for the clients to trust.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aiooss_resume.testing import OssServer, self_signed_tls


async def _serve(root: str, store: str, ca_file: str | None) -> None:
    tls = self_signed_tls(ca_file=ca_file) if ca_file else None
    async with OssServer(
        root,
        store=store,  # type: ignore[arg-type]
        ssl_context=tls.server_context if tls is not None else None,
    ) as server:
        creds = server.credentials
        print(
            json.dumps(
                {
                    "endpoint": server.endpoint,
                    "access_key_id": creds.access_key_id,
                    "access_key_secret": creds.access_key_secret,
                    "region": server.region,
                    "ca_file": ca_file,
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
    parser.add_argument("--tls-ca-file", default=None, help="serve HTTPS; write the CA here")
    args = parser.parse_args()
    asyncio.run(_serve(args.root, args.store, args.tls_ca_file))


if __name__ == "__main__":
    main()
