"""Ceilings of this machine for the same bytes: ``python -m benchmarks ceiling [--size 1GiB]``.

* ``socket xN``: ``os.pread`` 1 MiB chunks of the data file and ``sendall`` them over N loopback
  connections (N threads) to a discarding socket server in another process (``recv_into`` a
  reused buffer). This is what any HTTP upload of the file is bounded by here.
* ``pread+crc``: the file read in 1 MiB chunks with CRC-64 (fastcrc, as the library does).
* ``crc only``: fastcrc over an in-memory 8 MiB buffer.
* ``md5``: hashlib MD5 over 8 MiB buffers: the emulator hashes a body with MD5 only when the
  request sends ``Content-MD5`` (since 4033c83; before, it hashed every byte even with
  ``store="discard"``, which capped every upload near this rate). None of the benchmarked
  clients sends ``Content-MD5``, so this is no longer a bound here; kept for reference.

Upload figures in docs/benchmarks.md are shown as a fraction of these.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aiooss_resume._crc64 import crc64

from ._common import MiB, fmt_size, make_data_file, median, parse_size, print_table, save_results
from ._common import temp_dir as make_temp_dir

CHUNK = MiB

_SERVER = r"""
import socket, sys, threading
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(64)
print(srv.getsockname()[1], flush=True)
def drain(conn):
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    total = 0
    with conn:
        while n := conn.recv_into(view):
            total += n
        conn.sendall(str(total).encode())
def accept():
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=drain, args=(conn,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
sys.stdin.read()
"""


def socket_transfer(path: Path, size: int, connections: int) -> float:
    """MiB/s of pread + sendall of the whole file over ``connections`` loopback sockets."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        fd = os.open(path, os.O_RDONLY)
        share = -(-size // connections)
        errors: list[BaseException] = []

        def send(index: int) -> None:
            try:
                start, end = index * share, min(size, (index + 1) * share)
                with socket.create_connection(("127.0.0.1", port)) as s:
                    offset = start
                    while offset < end:
                        data = os.pread(fd, min(CHUNK, end - offset), offset)
                        s.sendall(data)
                        offset += len(data)
                    s.shutdown(socket.SHUT_WR)
                    received = int(s.recv(64))
                    if received != end - start:
                        raise RuntimeError(f"server got {received}, sent {end - start}")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(connections)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        os.close(fd)
        if errors:
            raise errors[0]
        return size / MiB / elapsed
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


def pread_crc(path: Path, size: int) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        crc = 0
        offset = 0
        while offset < size:
            data = os.pread(fd, CHUNK, offset)
            crc = crc64(data, crc)
            offset += len(data)
        return size / MiB / (time.perf_counter() - t0)
    finally:
        os.close(fd)


def in_memory(fn: Any, total: int = 512 * MiB) -> float:
    buf = os.urandom(8 * MiB)
    fn(buf)
    t0 = time.perf_counter()
    for _ in range(total // len(buf)):
        fn(buf)
    return total / MiB / (time.perf_counter() - t0)


def run(size: int, repeat: int) -> dict[str, Any]:
    rows: dict[str, list[float]] = {
        "socket x1 (pread+sendall)": [],
        "socket x4 (pread+sendall)": [],
        "pread+crc (fastcrc, 1 MiB)": [],
        "crc only (fastcrc, 8 MiB)": [],
        "md5 (hashlib, 8 MiB; reference)": [],
    }
    with make_temp_dir() as tmp:
        path = make_data_file(tmp / "data.bin", size)
        for _ in range(repeat):
            rows["socket x1 (pread+sendall)"].append(socket_transfer(path, size, 1))
            rows["socket x4 (pread+sendall)"].append(socket_transfer(path, size, 4))
            rows["pread+crc (fastcrc, 1 MiB)"].append(pread_crc(path, size))
            rows["crc only (fastcrc, 8 MiB)"].append(in_memory(crc64))
            rows["md5 (hashlib, 8 MiB; reference)"].append(
                in_memory(lambda b: hashlib.md5(b).digest())
            )
    return {
        "size": size,
        "repeat": repeat,
        "ceilings": {
            name: {"mib_s": median(v), "all": [round(x, 1) for x in v]} for name, v in rows.items()
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ceiling", description=__doc__)
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    doc = run(parse_size(args.size), args.repeat)
    print(f"\nCeilings for {fmt_size(doc['size'])} (median of {args.repeat})\n")
    print_table(
        ["what", "MiB/s", "runs"],
        [[k, v["mib_s"], " ".join(map(str, v["all"]))] for k, v in doc["ceilings"].items()],
    )
    print(f"\nsaved {save_results('ceiling', doc)}")
