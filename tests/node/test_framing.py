"""Peer frames: length-prefixed msgpack maps, strictly decoded and size-limited."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustchain.node.framing import FrameDecoder, FrameError, encode_frame

messages = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary() | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
        ),
        max_leaves=10,
    ),
    max_size=5,
)


@given(st.lists(messages, max_size=5), st.integers(1, 64))
def test_frames_survive_any_split(batch: list[dict[str, object]], chunk: int) -> None:
    data = b"".join(encode_frame(m) for m in batch)
    decoder = FrameDecoder(1 << 20)
    out: list[dict[str, object]] = []
    for i in range(0, len(data), chunk):
        out += decoder.feed(data[i : i + chunk])
    assert out == batch
    assert decoder.pending_bytes == 0


def frame_of(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xc1", "malformed msgpack"),  # 0xc1 is never used
        (msgpack.packb([1, 2]), "expected a msgpack map, got list"),
        (msgpack.packb({1: "x"}), "malformed msgpack"),  # strict_map_key: int key
        (msgpack.packb({"a": 1}) + b"\x00", "malformed msgpack"),  # trailing bytes
        (msgpack.packb({"a": msgpack.ExtType(5, b"x")}), "extension type 5"),
        (b"\x81\xa1a", "malformed msgpack"),  # map truncated inside the frame
    ],
)
def test_malformed_bodies_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        FrameDecoder(1024).feed(frame_of(body))


def test_oversized_frame_is_refused_from_its_header() -> None:
    decoder = FrameDecoder(1024)
    with pytest.raises(FrameError, match="frame of 1025 bytes exceeds the limit of 1024"):
        decoder.feed(struct.pack(">I", 1025))  # refused before any body arrives


def test_partial_frame_waits() -> None:
    data = encode_frame({"hello": "world"})
    decoder = FrameDecoder(1024)
    assert decoder.feed(data[:-1]) == []
    assert decoder.pending_bytes == len(data) - 1
    assert decoder.feed(data[-1:]) == [{"hello": "world"}]
