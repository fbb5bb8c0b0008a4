"""CRC-64/XZ as OSS uses it for ``x-oss-hash-crc64ecma``.

Theory of operation
-------------------
OSS reports CRC-64/XZ (ECMA-182 polynomial, reflected, init and xorout all ones; check value
``0x995DC9BBDF1939FA``), as an unsigned decimal string (protocol spec section 8).

* ``crc64(data, crc)`` is computed by fastcrc, chosen by measurement (``benchmarks/bench_crc.py``):
  it ran ~49 GB/s and releases the GIL, so a 1 MiB chunk costs ~20 µs and can also run in a
  worker thread without stalling other threads. Passing a finished CRC as ``crc`` continues it,
  because the final xor and the initial xor cancel (spec 8.1).
* ``crc64_combine(crc_a, crc_b, len_b)`` returns the CRC of ``A || B`` from the CRCs of the two
  pieces and the length of ``B`` (spec 8.2). It is zlib's modern ``crc32_combine``
  (``multmodp``/``x2nmodp``) widened to 64 bits: multiply ``crc_a`` by ``x^(8*len_b)`` modulo
  the polynomial, then xor ``crc_b``. ``x^(2^k)`` for k < 64 is precomputed, so a combine costs
  a few dozen 64-bit carry-less multiplications (tens of µs in pure Python), cheap enough to
  fold 10,000 part CRCs.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from fastcrc import crc64 as _fastcrc64

__all__ = ["CRC64_CHECK", "crc64", "crc64_combine", "crc64_fold"]

_POLY_REFLECTED = 0xC96C5795D7870F42
_TOP = 1 << 63  # x^0 in the reflected representation
_MASK = (1 << 64) - 1

CRC64_CHECK = 0x995DC9BBDF1939FA
"""CRC-64/XZ of ``b"123456789"``: the catalogue check value."""


def crc64(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Return the CRC-64/XZ of ``data``, continuing from ``crc`` (a previous result)."""
    if not crc:
        return int(_fastcrc64.xz(data))
    return int(_fastcrc64.xz(data, crc & _MASK))


def _multmodp(a: int, b: int) -> int:
    """Multiply two polynomials modulo the CRC polynomial (reflected bit order)."""
    m = _TOP
    p = 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                break
        m >>= 1
        b = (b >> 1) ^ _POLY_REFLECTED if b & 1 else b >> 1
    return p


def _build_x2n_table() -> tuple[int, ...]:
    table = [0] * 64
    p = _TOP >> 1  # x^1
    table[0] = p
    for k in range(1, 64):
        p = _multmodp(p, p)
        table[k] = p
    return tuple(table)


_X2N = _build_x2n_table()


@lru_cache(maxsize=128)  # an upload has at most two distinct part lengths
def _x2nmodp(n: int, k: int) -> int:
    """Return x^(n * 2^k) modulo the CRC polynomial."""
    p = _TOP
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 63], p)
        n >>= 1
        k += 1
    return p


def crc64_combine(crc_a: int, crc_b: int, len_b: int) -> int:
    """Return the CRC-64 of ``A || B`` given ``crc64(A)``, ``crc64(B)`` and ``len(B)``."""
    if len_b < 0:
        raise ValueError("len_b must be >= 0")
    if len_b == 0:
        return crc_a
    return _multmodp(_x2nmodp(len_b, 3), crc_a & _MASK) ^ (crc_b & _MASK)


@lru_cache(maxsize=8)
def _shift_tables(length: int) -> tuple[tuple[int, ...], ...]:
    """Byte tables for "multiply by x^(8 * length)": the map is linear over GF(2), so its
    value on a 64-bit CRC is the xor of its values on the CRC's eight bytes."""
    factor = _x2nmodp(length, 3)
    tables = []
    for i in range(8):
        table = [0] * 256
        for bit in range(8):
            table[1 << bit] = _multmodp(factor, 1 << (8 * i + bit))
        for v in range(3, 256):
            low = v & -v
            if v != low:
                table[v] = table[low] ^ table[v ^ low]
        tables.append(tuple(table))
    return tuple(tables)


def crc64_fold(parts: Iterable[tuple[int, int]], crc: int = 0) -> int:
    """Fold ``(crc, length)`` pairs, in object order, into the whole object's CRC-64.

    ``crc`` is the CRC of what precedes the parts, so a long list can be folded in slices:
    ``crc64_fold(b, crc64_fold(a)) == crc64_fold(a + b)``.

    Parts share one or two lengths, so each combine is eight table lookups (about 1 µs)
    instead of a polynomial multiplication: 10,000 parts fold in milliseconds.
    """
    total = crc & _MASK
    for crc, length in parts:
        if length == 0:
            continue
        t0, t1, t2, t3, t4, t5, t6, t7 = _shift_tables(length)
        total = (
            t0[total & 0xFF]
            ^ t1[(total >> 8) & 0xFF]
            ^ t2[(total >> 16) & 0xFF]
            ^ t3[(total >> 24) & 0xFF]
            ^ t4[(total >> 32) & 0xFF]
            ^ t5[(total >> 40) & 0xFF]
            ^ t6[(total >> 48) & 0xFF]
            ^ t7[total >> 56]
            ^ (crc & _MASK)
        )
    return total
