"""The strict DER (X.690 section 10) the CA writes and reads.

cryptography's builders only sign with in-process keys, so the CA encodes its
TBSCertificate, CertificationRequestInfo and TBSCertList itself and signs them
through a ``Signer`` (which may be an HSM).  Field values that cryptography can
encode (names, extension values, public keys) come from cryptography; this
module supplies the envelope.  The reader half splits TLVs without re-encoding,
so that signed bytes are never changed on the way through.
"""

from __future__ import annotations

import datetime as dt

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
BOOLEAN = 0x01
ENUMERATED = 0x0A
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18


class DERError(ValueError):
    """Input that is not the strict DER this module expects; says where."""


# --- writing ---------------------------------------------------------------------


def tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + body


def seq(*parts: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(parts))


def integer(value: int) -> bytes:
    """Minimal two's-complement INTEGER (X.690 section 8.3)."""
    length = max(1, (value.bit_length() + 8) // 8)
    return tlv(INTEGER, value.to_bytes(length, "big", signed=True))


def oid(dotted: str) -> bytes:
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
    return tlv(OID, bytes(body))


def null() -> bytes:
    return b"\x05\x00"


def boolean(value: bool) -> bytes:
    # X.690 section 11.1: DER encodes TRUE as 0xFF.
    return b"\x01\x01\xff" if value else b"\x01\x01\x00"


def octet_string(data: bytes) -> bytes:
    return tlv(OCTET_STRING, data)


def bit_string(data: bytes) -> bytes:
    """A BIT STRING of whole octets (signatures, keys): zero unused bits."""
    return tlv(BIT_STRING, b"\x00" + data)


def enumerated(value: int) -> bytes:
    return tlv(ENUMERATED, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big"))


def explicit(number: int, body: bytes) -> bytes:
    """A context-specific constructed [number] EXPLICIT wrapper."""
    return tlv(0xA0 | number, body)


def time(value: dt.datetime) -> bytes:
    """RFC 5280 section 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.

    Always UTC ("Z") with seconds and no fraction, as RFC 5280 requires.
    """
    if value.tzinfo is None:
        raise ValueError("certificate times must be timezone-aware")
    value = value.astimezone(dt.UTC)
    if 1950 <= value.year < 2050:
        return tlv(UTC_TIME, value.strftime("%y%m%d%H%M%SZ").encode())
    return tlv(GENERALIZED_TIME, value.strftime("%Y%m%d%H%M%SZ").encode())


# --- reading ---------------------------------------------------------------------


def bounds(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the TLV at ``pos``."""
    if len(data) - pos < 2:
        raise DERError("truncated TLV header")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise DERError("high-tag-number form does not occur in these structures")
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


def split(data: bytes) -> list[bytes]:
    """A concatenation of TLVs as a list of raw TLVs."""
    out = []
    pos = 0
    while pos < len(data):
        _, _, end = bounds(data, pos)
        out.append(data[pos:end])
        pos = end
    return out


def body(element: bytes, tag: int, what: str) -> bytes:
    """The content of the single TLV ``element``, which must carry ``tag``."""
    found, start, end = bounds(element, 0)
    if found != tag:
        raise DERError(f"{what}: expected tag 0x{tag:02x}, got 0x{found:02x}")
    if end != len(element):
        raise DERError(f"{what}: trailing bytes after the element")
    return element[start:end]


def bit_string_value(element: bytes) -> bytes:
    """The octets of a BIT STRING of whole octets (a signatureValue)."""
    content = body(element, BIT_STRING, "BIT STRING")
    if not content or content[0] != 0:
        raise DERError("BIT STRING with unused bits where whole octets are expected")
    return content[1:]
