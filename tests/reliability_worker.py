"""One resumable upload in its own process, for the kill -9 tests.

    python tests/reliability_worker.py --endpoint URL --access-key-id AK --access-key-secret SK
        --bucket B --key K --file PATH [--part-size N] [--routines N] [--trap write:N]

Prints ``READY`` once imported, ``DONE {json}`` after a successful upload (exit 0) or
``ERROR type: message`` (exit 1). ``--trap write:N`` stops in the middle of the Nth checkpoint
write (half of the temporary file written) and ``--trap replace:N`` just before its rename;
both print ``TRAP <kind> <n>`` and sleep, so the parent can SIGKILL the process at exactly
that point. The traps wrap ``os.write``/``os.replace`` of this process only: the library's
own ``write_atomic`` runs unchanged around them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time


def emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def install_trap(spec: str, checkpoint_path: str) -> None:
    kind, _, nth_text = spec.partition(":")
    nth = int(nth_text or "1")
    if kind not in ("write", "replace"):
        raise SystemExit(f"unknown trap {spec!r}")
    directory = os.path.dirname(os.path.abspath(checkpoint_path))
    prefix = "." + os.path.basename(checkpoint_path) + "."
    lock = threading.Lock()
    seen: dict[str, int] = {"write": 0, "replace": 0}
    real_write, real_replace = os.write, os.replace
    real_open = os.open
    tmp_fds: set[int] = set()

    def trapped_open(path, flags, mode=0o777, *args, **kwargs):  # type: ignore[no-untyped-def]
        fd = real_open(path, flags, mode, *args, **kwargs)
        name = os.fspath(path)
        if (
            isinstance(name, str)
            and os.path.dirname(os.path.abspath(name)) == directory
            and os.path.basename(name).startswith(prefix)
            and name.endswith(".tmp")
        ):
            with lock:
                tmp_fds.add(fd)
        return fd

    def trapped_write(fd: int, data: bytes) -> int:  # type: ignore[override]
        if fd in tmp_fds:
            with lock:
                tmp_fds.discard(fd)  # count each temporary file once
                seen["write"] += 1
                hit = kind == "write" and seen["write"] == nth
            if hit and len(data) > 1:
                half = len(data) // 2
                written = real_write(fd, bytes(data[:half]))
                emit(f"TRAP write {nth}")
                time.sleep(30)
                return written
        return real_write(fd, data)

    def trapped_replace(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        if os.fspath(dst) == checkpoint_path:
            with lock:
                seen["replace"] += 1
                hit = kind == "replace" and seen["replace"] == nth
            if hit:
                emit(f"TRAP replace {nth}")
                time.sleep(30)
        return real_replace(src, dst, *args, **kwargs)

    os.open = trapped_open  # type: ignore[assignment]
    os.write = trapped_write  # type: ignore[assignment]
    os.replace = trapped_replace


async def upload(args: argparse.Namespace) -> dict[str, object]:
    import aiooss_resume as oss

    async with oss.Client(
        args.endpoint,
        credentials=oss.Credentials(args.access_key_id, args.access_key_secret),
        region=args.region,
        retry=oss.RetryPolicy(max_attempts=5, base_delay=0.0),
        read_timeout=args.read_timeout,
    ) as client:
        result = await client.bucket(args.bucket).upload_file(
            args.key,
            args.file,
            args.part_size,
            routines=args.routines,
            checkpoint=True,
        )
    return {
        "upload_id": result.upload_id,
        "parts_uploaded": result.parts_uploaded,
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

    if args.trap:
        install_trap(args.trap, os.path.abspath(args.file) + ".cp")
    emit("READY")
    try:
        outcome = asyncio.run(upload(args))
    except Exception as exc:
        emit(f"ERROR {type(exc).__name__}: {exc}")
        return 1
    emit("DONE " + json.dumps(outcome))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
