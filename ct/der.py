"""Just enough strict DER (X.690 section 10) to rewrite a TBSCertificate.

RFC 6962 section 3.2 defines the precertificate's signed TBS by editing the DER of
the TBSCertificate (drop one extension, maybe swap the issuer).  Going through a
full ASN.1 object model would re-encode fields and risk changing bytes the CA
signed, so these helpers split and join raw TLVs and leave every other byte as is.
"""

from __future__ import annotations

import functools


class DERError(ValueError):
    """Input that is not the strict DER this module expects."""


def read_tlv(data: bytes) -> tuple[int, bytes, bytes]:
    """Split one TLV off the front: (tag byte, content, rest)."""
    tag, start, end = tlv_bounds(data, 0)
    return tag, data[start:end], data[end:]


def tlv_bounds(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the TLV at ``pos``."""
    if len(data) - pos < 2:
        raise DERError("truncated TLV header")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DERError("high-tag-number form is not used in certificates")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DERError("indefinite length is not DER")
    else:
        n = first & 0x7F
        if n > 4 or len(data) - pos < n:
            raise DERError("bad long-form length")
        raw = data[pos : pos + n]
        if raw[0] == 0:
            raise DERError("non-minimal length encoding")
        length = int.from_bytes(raw, "big")
        if length < 0x80:
            raise DERError("long form used for a short length")
        pos += n
    if len(data) - pos < length:
        raise DERError("content runs past the end of the data")
    return tag, pos, pos + length


def elements(data: bytes) -> list[bytes]:
    """Split a concatenation of TLVs into the raw TLVs (tag and length included)."""
    out = []
    pos = 0
    while pos < len(data):
        _, _, end = tlv_bounds(data, pos)
        out.append(data[pos:end])
        pos = end
    return out


def spans(
    data: bytes, start: int = 0, end: int | None = None, *, most: int = -1
) -> list[tuple[int, int, int, int]]:
    """(tag, TLV start, content start, content end) of the TLVs filling ``data[start:end]``.

    The same strict checks as ``tlv_bounds`` (short tags, definite minimal
    lengths, nothing past ``end``), in one loop without a call per TLV: the
    certificate verifier splits a few dozen TLVs per certificate, and the
    calls were a visible part of its time.  Offsets index ``data``, so nothing
    is copied.  With ``most`` it stops after that many TLVs (the rest unread).
    """
    stop = len(data) if end is None else end
    if not 0 <= start <= stop <= len(data):
        raise DERError("span outside the data")
    out: list[tuple[int, int, int, int]] = []
    append = out.append
    left = most
    pos = start
    while pos < stop:
        at = pos
        if stop - pos < 2:
            raise DERError("truncated TLV header")
        tag = data[pos]
        if tag & 0x1F == 0x1F:
            raise DERError("high-tag-number form is not used in certificates")
        length = data[pos + 1]
        pos += 2
        if length >= 0x80:
            n = length & 0x7F
            if n == 0:
                raise DERError("indefinite length is not DER")
            if n > 4 or stop - pos < n:
                raise DERError("bad long-form length")
            if data[pos] == 0:
                raise DERError("non-minimal length encoding")
            if n == 1:
                length = data[pos]
            elif n == 2:
                length = data[pos] << 8 | data[pos + 1]
            else:
                length = int.from_bytes(data[pos : pos + n], "big")
            if length < 0x80:
                raise DERError("long form used for a short length")
            pos += n
        content_end = pos + length
        if content_end > stop:
            raise DERError("content runs past the end of the data")
        append((tag, at, pos, content_end))
        pos = content_end
        left -= 1
        if left == 0:
            break
    return out


def content(tlv: bytes, expected_tag: int, what: str) -> bytes:
    tag, body, rest = read_tlv(tlv)
    if tag != expected_tag or rest:
        raise DERError(f"{what}: expected tag 0x{expected_tag:02x}, got 0x{tag:02x}")
    return body


def encode_tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + body


@functools.lru_cache(maxsize=512)
def encode_oid(dotted: str) -> bytes:
    """The full DER encoding (tag 0x06) of an OBJECT IDENTIFIER (cached: OIDs recur)."""
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise ValueError(f"bad OID {dotted}")
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return encode_tlv(0x06, bytes(body))


SEQUENCE = 0x30
OCTET_STRING = 0x04
BOOLEAN = 0x01
NULL = 0x05
