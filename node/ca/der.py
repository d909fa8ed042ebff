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

# The generic TLV reading and writing is ct's; this module adds what certificates,
# CSRs and CRLs built for an HSM need on top of it.
from trustchain.ct import der as _ct

DERError = _ct.DERError
bounds = _ct.tlv_bounds
split = _ct.elements
tlv = _ct.encode_tlv
oid = _ct.encode_oid

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


# --- writing ---------------------------------------------------------------------


def seq(*parts: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(parts))


def integer(value: int) -> bytes:
    """Minimal two's-complement INTEGER (X.690 section 8.3)."""
    length = max(1, (value.bit_length() + 8) // 8)
    return tlv(INTEGER, value.to_bytes(length, "big", signed=True))


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
