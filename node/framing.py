"""Length-prefixed msgpack frames for peer streams (DESIGN.md section 3).

A frame is a 4-byte big-endian length followed by that many bytes of msgpack
encoding a map.  The decoder refuses a frame longer than its limit as soon as
the length prefix arrives, so a hostile peer cannot make us buffer it.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

_LENGTH = struct.Struct(">I")


class FrameError(Exception):
    """The remote peer sent bytes that are not a valid frame.

    The link that carried them is closed; the node keeps running.  `preceding`
    holds the good frames that arrived before the bad one in the same feed.
    """

    preceding: list[dict[str, Any]] = []


def encode_frame(message: dict[str, Any]) -> bytes:
    body = bytes(msgpack.packb(message, use_bin_type=True))
    return _LENGTH.pack(len(body)) + body


def _refuse_ext(code: int, data: bytes) -> Any:
    raise FrameError(f"msgpack extension type {code} is not allowed")


def decode_body(body: bytes) -> dict[str, Any]:
    """Decode one frame body into a map with string keys, or raise FrameError."""
    try:
        value = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            ext_hook=_refuse_ext,
        )
    except FrameError:
        raise
    except ValueError as exc:  # every msgpack decoding error is a ValueError
        raise FrameError(f"malformed msgpack: {type(exc).__name__}: {exc}") from None
    if not isinstance(value, dict):
        raise FrameError(f"expected a msgpack map, got {type(value).__name__}")
    if not all(isinstance(k, str) for k in value):
        raise FrameError("map keys must be strings")
    return value


class FrameDecoder:
    """Accumulates stream bytes and yields complete frames.

    Owned by one stream of one link; not shared between tasks.
    """

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame held back (non-zero at FIN means a truncated frame)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        frames: list[dict[str, Any]] = []
        try:
            self._decode_into(frames)
        except FrameError as exc:
            exc.preceding = frames
            raise
        return frames

    def _decode_into(self, frames: list[dict[str, Any]]) -> None:
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > self.max_frame_bytes:
                raise FrameError(
                    f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes}"
                )
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[_LENGTH.size : end])
            del self._buffer[:end]
            frames.append(decode_body(body))
