"""RFC 6962 v1 structures: log entries, Merkle leaves, SCTs, tree-head signatures.

Everything a log signs is a TLS-encoded ``digitally-signed`` struct (RFC 6962
section 3.2 and 3.5, RFC 5246 section 4.7).  Encoders and decoders here are exact
inverses; decoders reject truncated, padded or out-of-range input with a
``DecodeError``.  SCT lists travel in the X.509v3 extension
1.3.6.1.4.1.11129.2.4.2 (RFC 6962 section 3.3), whose value is an OCTET STRING
holding the TLS ``SignedCertificateTimestampList``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from trustchain.ct import _tls, der
from trustchain.ct._tls import DecodeError, Reader
from trustchain.ct.signer import PublicKey, Signer, log_id, sign_all, verify_signature

SCT_LIST_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
"""RFC 6962 section 3.3: the embedded SCT list extension."""

V1 = 0
"""RFC 6962 section 3.2: ``enum { v1(0), (255) } Version``."""

_CERTIFICATE_TIMESTAMP = 0
_TREE_HASH = 1
_TIMESTAMPED_ENTRY = 0
MAX_CERT = (1 << 24) - 1
"""``opaque ASN.1Cert<1..2^24-1>``."""


class SCTError(ValueError):
    """An SCT or tree-head signature that does not verify, with the reason."""


class EntryType(IntEnum):
    """RFC 6962 section 3.1 ``LogEntryType``."""

    X509 = 0
    PRECERT = 1


class HashAlgorithm(IntEnum):
    """RFC 5246 section 7.4.1.4.1; RFC 6962 requires SHA-256."""

    SHA256 = 4


class SignatureAlgorithm(IntEnum):
    """RFC 5246 section 7.4.1.4.1: the algorithms RFC 6962 section 2.1.4 allows."""

    RSA = 1
    ECDSA = 3


@dataclass(frozen=True)
class LogEntry:
    """What an SCT and a Merkle leaf commit to (RFC 6962 section 3.1/3.4 ``signed_entry``)."""

    entry_type: EntryType
    """x509_entry or precert_entry."""
    certificate: bytes
    """x509_entry: the leaf certificate (DER).  precert_entry: the precertificate's
    TBSCertificate with the poison extension removed (RFC 6962 section 3.2)."""
    issuer_key_hash: bytes = b""
    """precert_entry only: SHA-256 of the issuing CA's DER SubjectPublicKeyInfo."""

    _signed: bytes = field(init=False, repr=False, compare=False)
    _identity: bytes = field(init=False, repr=False, compare=False)
    _last_sct: tuple[int, bytes, bytes, bytes] | None = field(
        init=False, repr=False, compare=False, default=None
    )

    def __post_init__(self) -> None:
        n = len(self.certificate)
        if not 1 <= n <= MAX_CERT:
            raise ValueError(f"certificate of {n} bytes is out of range")
        if self.entry_type == EntryType.PRECERT and len(self.issuer_key_hash) != 32:
            raise ValueError("a precert entry needs a 32-byte issuer_key_hash")
        if self.entry_type == EntryType.X509 and self.issuer_key_hash:
            raise ValueError("an x509 entry has no issuer_key_hash")
        # The signed body is needed several times per entry (SCT, leaf, dedup,
        # index); the entry is immutable, so it is computed once.  The identity
        # hash waits until asked for: verifying embedded SCTs never needs it.
        signed = self.issuer_key_hash + n.to_bytes(3, "big") + self.certificate
        object.__setattr__(self, "_signed", signed)

    def signed_entry(self) -> bytes:
        """The ``select (entry_type)`` body: ASN.1Cert, or PreCert {issuer_key_hash, tbs}."""
        return self._signed

    def sct_signed_data(self, timestamp: int, extensions: bytes) -> bytes:
        """``sct_signed_data(timestamp, self, extensions)``, remembering the last one.

        The SCTs embedded in one certificate normally share their timestamp and
        extensions (they commit to one log entry), so every log's signature is
        over the same bytes: built (and hashed, see ``sct_signed_digest``) once,
        checked once per log.
        """
        return self._sct_signed(timestamp, extensions)[2]

    def sct_signed_digest(self, timestamp: int, extensions: bytes) -> bytes:
        """SHA-256 of ``sct_signed_data(timestamp, extensions)``, remembered with it."""
        return self._sct_signed(timestamp, extensions)[3]

    def _sct_signed(self, timestamp: int, extensions: bytes) -> tuple[int, bytes, bytes, bytes]:
        last = self._last_sct
        if last is None or last[0] != timestamp or last[1] != extensions:
            data = sct_signed_data(timestamp, self, extensions)
            last = (timestamp, extensions, data, hashlib.sha256(data).digest())
            object.__setattr__(self, "_last_sct", last)
        return last

    def identity(self) -> bytes:
        """A hash that is equal for equal submissions: the key for deduplication."""
        try:
            return self._identity
        except AttributeError:
            ident = hashlib.sha256(self.entry_type.to_bytes(2, "big") + self._signed).digest()
            object.__setattr__(self, "_identity", ident)
            return ident

    @classmethod
    def read(cls, r: Reader, entry_type: int) -> LogEntry:
        if entry_type == EntryType.X509:
            return cls(EntryType.X509, r.opaque(3, "certificate", minimum=1))
        if entry_type == EntryType.PRECERT:
            ikh = r.fixed(32, "issuer_key_hash")
            return cls(EntryType.PRECERT, r.opaque(3, "tbs_certificate", minimum=1), ikh)
        raise DecodeError(f"unknown LogEntryType {entry_type}")


# --- static-ct-api CtExtensions ---------------------------------------------------

_LEAF_INDEX = 0


def leaf_index_extensions(index: int) -> bytes:
    """CtExtensions holding only a ``leaf_index`` (c2sp.org/static-ct-api): 8 bytes."""
    if not 0 <= index < 1 << 40:
        raise ValueError(f"leaf index {index} does not fit in 40 bits")
    return _tls.u8(_LEAF_INDEX) + _tls.opaque(_tls.u40(index), 2)


def parse_extensions(data: bytes) -> dict[int, bytes]:
    """Decode a static-ct-api CtExtensions list; duplicates are an error (the spec forbids them)."""
    r = Reader(data, "CtExtensions")
    out: dict[int, bytes] = {}
    while r.remaining:
        kind = r.uint(1, "extension_type")
        value = r.opaque(2, "extension_data")
        if kind in out:
            raise DecodeError(f"CtExtensions: extension {kind} appears twice")
        out[kind] = value
    return out


def leaf_index_of(extensions: bytes) -> int | None:
    """The ``leaf_index`` in CtExtensions, or None if there is none."""
    value = parse_extensions(extensions).get(_LEAF_INDEX)
    if value is None:
        return None
    if len(value) != 5:
        raise DecodeError(f"leaf_index extension is {len(value)} bytes, not 5")
    return int.from_bytes(value, "big")


# --- TimestampedEntry and MerkleTreeLeaf (RFC 6962 section 3.4) -------------------


@dataclass(frozen=True)
class TimestampedEntry:
    """RFC 6962 section 3.4 ``TimestampedEntry``."""

    timestamp: int
    """Milliseconds since the epoch, ignoring leap seconds: the SCT's timestamp."""
    entry: LogEntry
    """The certificate or precertificate entry."""
    extensions: bytes
    """CtExtensions, equal to the SCT's (here: the static-ct-api leaf_index)."""

    _encoded: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        encoded = (
            _tls.u64(self.timestamp)
            + _tls.u16(self.entry.entry_type)
            + self.entry.signed_entry()
            + _tls.opaque(self.extensions, 2, what="extensions")
        )
        object.__setattr__(self, "_encoded", encoded)

    def encode(self) -> bytes:
        return self._encoded

    @classmethod
    def read(cls, r: Reader) -> TimestampedEntry:
        timestamp = r.uint(8, "timestamp")
        entry = LogEntry.read(r, r.uint(2, "entry_type"))
        return cls(timestamp, entry, r.opaque(2, "extensions"))


def merkle_tree_leaf(entry: TimestampedEntry) -> bytes:
    """RFC 6962 section 3.4 ``MerkleTreeLeaf`` (v1, timestamped_entry): the leaf_input."""
    return _tls.u8(V1) + _tls.u8(_TIMESTAMPED_ENTRY) + entry.encode()


def parse_merkle_tree_leaf(data: bytes) -> TimestampedEntry:
    r = Reader(data, "MerkleTreeLeaf")
    version = r.uint(1, "version")
    if version != V1:
        raise DecodeError(f"MerkleTreeLeaf: unknown version {version}")
    leaf_type = r.uint(1, "leaf_type")
    if leaf_type != _TIMESTAMPED_ENTRY:
        raise DecodeError(f"MerkleTreeLeaf: unknown leaf_type {leaf_type}")
    entry = TimestampedEntry.read(r)
    r.finish()
    return entry


# --- digitally-signed and SCTs ----------------------------------------------------


@dataclass(frozen=True)
class DigitallySigned:
    """RFC 5246 section 4.7 ``digitally-signed``: algorithms, then the signature."""

    hash_algorithm: int
    """4 (SHA-256) for everything RFC 6962 signs."""
    signature_algorithm: int
    """3 (ECDSA) or 1 (RSA)."""
    signature: bytes
    """DER ECDSA signature or RSASSA-PKCS1-v1_5 signature."""

    def encode(self) -> bytes:
        return (
            _tls.u8(self.hash_algorithm)
            + _tls.u8(self.signature_algorithm)
            + _tls.opaque(self.signature, 2, what="signature")
        )

    @classmethod
    def read(cls, r: Reader) -> DigitallySigned:
        return cls(
            r.uint(1, "hash_algorithm"), r.uint(1, "signature_algorithm"), r.opaque(2, "signature")
        )

    @classmethod
    def decode(cls, data: bytes) -> DigitallySigned:
        r = Reader(data, "DigitallySigned")
        ds = cls.read(r)
        r.finish()
        return ds


def _signature_algorithm(public_key: PublicKey) -> SignatureAlgorithm:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return SignatureAlgorithm.ECDSA
    if isinstance(public_key, rsa.RSAPublicKey):
        return SignatureAlgorithm.RSA
    raise SCTError("RFC 6962 logs sign with ECDSA or RSA keys only")


async def _sign(signer: Signer, message: bytes) -> DigitallySigned:
    alg = _signature_algorithm(signer.public_key())
    return DigitallySigned(HashAlgorithm.SHA256, alg, await signer.sign(message))


def _verify(public_key: PublicKey, ds: DigitallySigned, message: bytes, what: str) -> None:
    if ds.hash_algorithm != HashAlgorithm.SHA256:
        raise SCTError(f"{what}: hash algorithm {ds.hash_algorithm} is not SHA-256 (4)")
    if ds.signature_algorithm != _signature_algorithm(public_key):
        raise SCTError(
            f"{what}: signature algorithm {ds.signature_algorithm} does not match the key"
        )
    if isinstance(public_key, ec.EllipticCurvePublicKey) and not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise SCTError(f"{what}: RFC 6962 ECDSA log keys must be P-256")
    if not verify_signature(public_key, ds.signature, message):
        raise SCTError(f"{what}: signature does not verify with the log's key")


def sct_signed_data(timestamp: int, entry: LogEntry, extensions: bytes) -> bytes:
    """RFC 6962 section 3.2: the data an SCT's signature covers."""
    # One join: the signed entry (a whole TBS) is copied once, not per "+".
    return b"".join(
        (
            _tls.u8(V1),
            _tls.u8(_CERTIFICATE_TIMESTAMP),
            _tls.u64(timestamp),
            _tls.u16(entry.entry_type),
            entry.signed_entry(),
            _tls.opaque(extensions, 2, what="extensions"),
        )
    )


@dataclass(frozen=True)
class SignedCertificateTimestamp:
    """RFC 6962 section 3.2 ``SignedCertificateTimestamp`` (v1)."""

    log_id: bytes
    """SHA-256 of the log's DER SubjectPublicKeyInfo."""
    timestamp: int
    """Milliseconds since the epoch."""
    extensions: bytes
    """CtExtensions (static-ct-api: the leaf_index)."""
    signature: DigitallySigned
    """Over ``sct_signed_data``."""
    version: int = V1
    """Always v1 (0)."""

    def encode(self) -> bytes:
        return (
            _tls.u8(self.version)
            + self.log_id
            + _tls.u64(self.timestamp)
            + _tls.opaque(self.extensions, 2, what="extensions")
            + self.signature.encode()
        )

    @classmethod
    def decode(cls, data: bytes) -> SignedCertificateTimestamp:
        r = Reader(data, "SignedCertificateTimestamp")
        version = r.uint(1, "sct_version")
        if version != V1:
            raise DecodeError(f"SignedCertificateTimestamp: unknown version {version}")
        sct = cls(
            log_id=r.fixed(32, "id"),
            timestamp=r.uint(8, "timestamp"),
            extensions=r.opaque(2, "extensions"),
            signature=DigitallySigned.read(r),
        )
        r.finish()
        return sct

    def to_json(self) -> dict[str, Any]:
        """The add-chain / add-pre-chain response body (RFC 6962 section 4.1)."""
        return {
            "sct_version": self.version,
            "id": base64.b64encode(self.log_id).decode(),
            "timestamp": self.timestamp,
            "extensions": base64.b64encode(self.extensions).decode(),
            "signature": base64.b64encode(self.signature.encode()).decode(),
        }

    @classmethod
    def from_json(cls, doc: Any) -> SignedCertificateTimestamp:
        """Parse an add-chain response; raises DecodeError naming the bad field."""
        if not isinstance(doc, dict):
            raise DecodeError("SCT response is not a JSON object")
        try:
            version = doc["sct_version"]
            if version != V1:
                raise DecodeError(f"SCT response: unknown sct_version {version!r}")
            lid = base64.b64decode(doc["id"], validate=True)
            if len(lid) != 32:
                raise DecodeError("SCT response: id is not 32 bytes")
            timestamp = doc["timestamp"]
            if not isinstance(timestamp, int) or not 0 <= timestamp < 1 << 64:
                raise DecodeError("SCT response: timestamp is not a uint64")
            ext = base64.b64decode(doc["extensions"], validate=True)
            ds = DigitallySigned.decode(base64.b64decode(doc["signature"], validate=True))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, DecodeError):
                raise
            raise DecodeError(f"SCT response: missing or malformed field ({exc})") from None
        return cls(lid, timestamp, ext, ds)


async def issue_sct(
    signer: Signer,
    entry: LogEntry,
    timestamp: int,
    extensions: bytes,
    *,
    signer_log_id: bytes | None = None,
) -> SignedCertificateTimestamp:
    """Sign an SCT for ``entry`` (RFC 6962 section 3.2).

    ``signer_log_id`` saves re-encoding the key on every call; it must be
    ``log_id(signer.public_key())``.
    """
    ds = await _sign(signer, sct_signed_data(timestamp, entry, extensions))
    lid = signer_log_id if signer_log_id is not None else log_id(signer.public_key())
    return SignedCertificateTimestamp(lid, timestamp, extensions, ds)


async def issue_scts(
    signer: Signer,
    requests: Sequence[tuple[LogEntry, int, bytes]],
    *,
    signer_log_id: bytes | None = None,
) -> list[SignedCertificateTimestamp]:
    """`issue_sct` for each (entry, timestamp, extensions), signed in one HSM call
    where the signer can (a block's SCTs: one worker hand-off instead of one each)."""
    alg = _signature_algorithm(signer.public_key())
    signatures = await sign_all(
        signer, [sct_signed_data(ts, entry, ext) for entry, ts, ext in requests]
    )
    lid = signer_log_id if signer_log_id is not None else log_id(signer.public_key())
    return [
        SignedCertificateTimestamp(lid, ts, ext, DigitallySigned(HashAlgorithm.SHA256, alg, sig))
        for (_, ts, ext), sig in zip(requests, signatures, strict=True)
    ]


_ECDSA_PREHASHED_SHA256 = ec.ECDSA(Prehashed(hashes.SHA256()))
"""ECDSA over a SHA-256 digest already taken: the same check as over the message."""


class LogKey:
    """A CT log's public key, ready to check many SCTs: ``verify_sct`` for one key.

    What depends only on the key (its log id, signature algorithm, whether its
    curve is allowed) is worked out once; every SCT still gets every check of
    ``verify_sct``, in the same order with the same messages, and its own
    signature verification.
    """

    def __init__(self, public_key: PublicKey, *, key_log_id: bytes | None = None) -> None:
        self.public_key = public_key
        """The log's key."""
        self.log_id = key_log_id if key_log_id is not None else log_id(public_key)
        """SHA-256 of its SubjectPublicKeyInfo (RFC 6962 section 3.2)."""
        self._algorithm: SignatureAlgorithm | None = None
        self._problem = "RFC 6962 logs sign with ECDSA or RSA keys only"
        self._p256: ec.EllipticCurvePublicKey | None = None
        if isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            self._algorithm = _signature_algorithm(public_key)
            self._problem = ""
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if isinstance(public_key.curve, ec.SECP256R1):
                self._p256 = public_key
            else:
                self._problem = "SCT: RFC 6962 ECDSA log keys must be P-256"

    def verify(self, sct: SignedCertificateTimestamp, entry: LogEntry) -> None:
        """Raise SCTError unless ``sct`` is this log's signature over ``entry``."""
        if sct.version != V1:
            raise SCTError(f"SCT version {sct.version} is not v1")
        if sct.log_id != self.log_id:
            raise SCTError("SCT log id does not match the log's key")
        ds = sct.signature
        if ds.hash_algorithm != HashAlgorithm.SHA256:
            raise SCTError(f"SCT: hash algorithm {ds.hash_algorithm} is not SHA-256 (4)")
        if self._algorithm is None:
            raise SCTError(self._problem)
        if ds.signature_algorithm != self._algorithm:
            raise SCTError(
                f"SCT: signature algorithm {ds.signature_algorithm} does not match the key"
            )
        if self._problem:
            raise SCTError(self._problem)
        if self._p256 is not None:
            # The digest of the signed data, shared by the SCTs of one entry.
            digest = entry.sct_signed_digest(sct.timestamp, sct.extensions)
            try:
                self._p256.verify(ds.signature, digest, _ECDSA_PREHASHED_SHA256)
                return
            except (InvalidSignature, ValueError):
                pass
        elif verify_signature(
            self.public_key, ds.signature, entry.sct_signed_data(sct.timestamp, sct.extensions)
        ):
            return
        raise SCTError("SCT: signature does not verify with the log's key")


def verify_sct(
    sct: SignedCertificateTimestamp,
    entry: LogEntry,
    public_key: PublicKey,
    *,
    key_log_id: bytes | None = None,
) -> None:
    """Raise SCTError unless ``sct`` is the log's signature over ``entry``.

    ``key_log_id`` is ``log_id(public_key)`` when the caller already has it (it
    costs a key serialisation and a hash per call otherwise).  To check many
    SCTs against one key, make a ``LogKey`` once.
    """
    LogKey(public_key, key_log_id=key_log_id).verify(sct, entry)


# --- tree heads (RFC 6962 section 3.5) --------------------------------------------


def tree_head_signed_data(timestamp: int, tree_size: int, root_hash: bytes) -> bytes:
    """RFC 6962 section 3.5 ``TreeHeadSignature``: what an STH signature covers."""
    if len(root_hash) != 32:
        raise ValueError("root hash must be 32 bytes")
    return _tls.u8(V1) + _tls.u8(_TREE_HASH) + _tls.u64(timestamp) + _tls.u64(tree_size) + root_hash


async def sign_tree_head(
    signer: Signer, timestamp: int, tree_size: int, root_hash: bytes
) -> DigitallySigned:
    return await _sign(signer, tree_head_signed_data(timestamp, tree_size, root_hash))


def verify_tree_head(
    public_key: PublicKey, timestamp: int, tree_size: int, root_hash: bytes, ds: DigitallySigned
) -> None:
    _verify(public_key, ds, tree_head_signed_data(timestamp, tree_size, root_hash), "tree head")


# --- SCT list extension (RFC 6962 section 3.3) ------------------------------------


def encode_sct_list(scts: Iterable[SignedCertificateTimestamp]) -> bytes:
    """TLS ``SerializedSCT sct_list<1..2^16-1>``, each ``opaque SerializedSCT<1..2^16-1>``."""
    body = b"".join(_tls.opaque(s.encode(), 2, minimum=1, what="SCT") for s in scts)
    if not body:
        raise ValueError("an SCT list needs at least one SCT")
    return _tls.opaque(body, 2, minimum=1, what="SCT list")


def decode_sct_list(data: bytes) -> list[SignedCertificateTimestamp]:
    """Decode a TLS ``SignedCertificateTimestampList`` (RFC 6962 section 3.3).

    Certificate verification decodes one list per certificate, so well-formed
    lists take a slicing fast path; anything it does not accept is decoded
    again by the field-by-field reader, which names what is wrong.
    """
    fast = _decode_sct_list_fast(bytes(data))
    return fast if fast is not None else _decode_sct_list_reader(data)


def _decode_sct_list_fast(data: bytes) -> list[SignedCertificateTimestamp] | None:
    """The list if it is well formed (exactly as ``_decode_sct_list_reader``), else None."""
    end = len(data)
    if end < 2 or int.from_bytes(data[:2], "big") != end - 2 or end == 2:
        return None
    out = []
    pos = 2
    while pos < end:
        if end - pos < 2:
            return None
        n = int.from_bytes(data[pos : pos + 2], "big")
        start, stop = pos + 2, pos + 2 + n
        # version(1) id(32) timestamp(8) extensions<0..2^16-1> hash(1) sig(1) signature<..>
        if n == 0 or stop > end or n < 47 or data[start] != V1:
            return None
        ext_len = int.from_bytes(data[start + 41 : start + 43], "big")
        at = start + 43 + ext_len
        if at + 4 > stop:
            return None
        sig_len = int.from_bytes(data[at + 2 : at + 4], "big")
        if at + 4 + sig_len != stop:
            return None
        out.append(
            SignedCertificateTimestamp(
                data[start + 1 : start + 33],
                int.from_bytes(data[start + 33 : start + 41], "big"),
                data[start + 43 : at],
                DigitallySigned(data[at], data[at + 1], data[at + 4 : stop]),
            )
        )
        pos = stop
    return out


def _decode_sct_list_reader(data: bytes) -> list[SignedCertificateTimestamp]:
    r = Reader(data, "SignedCertificateTimestampList")
    body = r.opaque(2, "sct_list", minimum=1)
    r.finish()
    inner = Reader(body, "SignedCertificateTimestampList")
    out = []
    while inner.remaining:
        out.append(SignedCertificateTimestamp.decode(inner.opaque(2, "SerializedSCT", minimum=1)))
    return out


def _der_octet_string(data: bytes) -> bytes:
    n = len(data)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return b"\x04" + length + data


def sct_list_extension(scts: Sequence[SignedCertificateTimestamp]) -> x509.UnrecognizedExtension:
    """The extension to add to a certificate (non-critical, RFC 6962 section 3.3).

    Its value is the DER OCTET STRING wrapping the TLS list; `cryptography` parses
    it back as ``PrecertificateSignedCertificateTimestamps``.
    """
    return x509.UnrecognizedExtension(SCT_LIST_OID, _der_octet_string(encode_sct_list(scts)))


def parse_sct_list_extension(value: bytes) -> list[SignedCertificateTimestamp]:
    """Decode the raw extnValue contents (the DER OCTET STRING) of the SCT list extension."""
    tag, content, rest = der.read_tlv(value)
    if tag != 0x04 or rest:
        raise DecodeError("SCT list extension value is not a single OCTET STRING")
    return decode_sct_list(content)


def sct_json(sct: SignedCertificateTimestamp) -> bytes:
    return json.dumps(sct.to_json(), separators=(",", ":")).encode()
