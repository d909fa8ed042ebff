"""The TLS presentation language (RFC 8446 section 3) as used by RFC 6962.

A ``Reader`` consumes a byte string strictly: every read checks the bytes are
there, and ``finish()`` rejects trailing data, so a decoder built from it rejects
every truncated or padded encoding with a ``DecodeError`` naming the field.
"""

from __future__ import annotations


class DecodeError(ValueError):
    """Bytes that do not decode as the structure they claim to be."""


def u8(v: int) -> bytes:
    return v.to_bytes(1, "big")


def u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


def u24(v: int) -> bytes:
    return v.to_bytes(3, "big")


def u40(v: int) -> bytes:
    return v.to_bytes(5, "big")


def u64(v: int) -> bytes:
    return v.to_bytes(8, "big")


def opaque(data: bytes, length_bytes: int, *, minimum: int = 0, what: str = "value") -> bytes:
    """``opaque data<minimum..2^(8*length_bytes)-1>``: a length prefix then the bytes."""
    if not minimum <= len(data) < 1 << (8 * length_bytes):
        raise ValueError(f"{what} of {len(data)} bytes does not fit a {length_bytes}-byte length")
    return len(data).to_bytes(length_bytes, "big") + data


class Reader:
    """Reads TLS-encoded fields from ``data``, front to back."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._what = what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _take(self, n: int, field: str) -> bytes:
        if self.remaining < n:
            raise DecodeError(f"{self._what}: truncated in {field}")
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += n
        return out

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self._take(size, field), "big")

    def fixed(self, n: int, field: str) -> bytes:
        return self._take(n, field)

    def opaque(self, length_bytes: int, field: str, *, minimum: int = 0) -> bytes:
        n = self.uint(length_bytes, f"{field} length")
        if n < minimum:
            raise DecodeError(f"{self._what}: {field} is shorter than {minimum} bytes")
        return self._take(n, field)

    def finish(self) -> None:
        if self.remaining:
            raise DecodeError(f"{self._what}: {self.remaining} bytes of trailing data")
