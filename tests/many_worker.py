"""One upload_dir in its own process, for the kill -9 test (tests/test_many_kill.py).

    python tests/many_worker.py --endpoint URL --access-key-id AK --access-key-secret SK
        --bucket B --prefix P --dir DIR --checkpoint-dir CP [--part-size N] [--routines N]

Prints ``READY`` once imported, ``DONE {json}`` after the transfer (exit 0) or
``ERROR type: message`` (exit 1). The parent kills it at a request count of its choosing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys


async def upload(args: argparse.Namespace) -> dict[str, object]:
    import aiooss_resume as oss

    async with oss.Client(
        args.endpoint,
        credentials=oss.Credentials(args.access_key_id, args.access_key_secret),
        region=args.region,
        retry=oss.RetryPolicy(max_attempts=5, base_delay=0.0),
        read_timeout=5.0,
    ) as client:
        result = await client.bucket(args.bucket).upload_dir(
            args.prefix,
            args.dir,
            args.part_size,
            routines=args.routines,
            files_in_flight=args.files_in_flight,
            checkpoint_dir=args.checkpoint_dir,
        )
    return {"ok": result.ok, "uploaded": result.count("uploaded")}


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("endpoint", "access-key-id", "access-key-secret", "bucket", "prefix", "dir"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--checkpoint-dir", required=True)
    parser.add_argument("--region", default="cn-hangzhou")
    parser.add_argument("--part-size", type=int, default=100 * 1024)
    parser.add_argument("--routines", type=int, default=4)
    parser.add_argument("--files-in-flight", type=int, default=8)
    args = parser.parse_args()
    import aiooss_resume  # noqa: F401  (import cost before READY, not after)

    print("READY", flush=True)
    try:
        outcome = asyncio.run(upload(args))
    except Exception as exc:
        print(f"ERROR {type(exc).__name__}: {exc}", flush=True)
        return 1
    print("DONE " + json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
