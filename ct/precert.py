"""Precertificates: the TBSCertificate an SCT signs, computed the same way by everyone.

RFC 6962 section 3.2: a precert_entry's ``tbs_certificate`` is the precertificate's
TBSCertificate with the poison extension (1.3.6.1.4.1.11129.2.4.3) removed.  If
the precertificate was signed by a Precertificate Signing Certificate (a CA
certificate with the Certificate Transparency EKU 1.3.6.1.4.1.11129.2.4.4), the
issuer field becomes that PSC's issuer and the Authority Key Identifier becomes
the PSC's own AKI, so the TBS matches what the real CA will sign in the final
certificate; ``issuer_key_hash`` is then the real CA's key.

RFC 6962 section 3.3: a TLS client verifying an SCT embedded in a final
certificate rebuilds the same TBS by removing the SCT list extension.

All edits work on raw DER (see der.py): every byte the CA signed that is not
edited stays exactly as it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from trustchain.ct import der
from trustchain.ct.der import DERError
from trustchain.ct.sct import SCT_LIST_OID, EntryType, LogEntry

POISON_OID = "1.3.6.1.4.1.11129.2.4.3"
PRECERT_SIGNING_EKU = "1.3.6.1.4.1.11129.2.4.4"
_AKI_OID = "2.5.29.35"
_POISON = der.encode_oid(POISON_OID)
_SCT_LIST = der.encode_oid(SCT_LIST_OID.dotted_string)
_AKI = der.encode_oid(_AKI_OID)


class PrecertError(ValueError):
    """A certificate that cannot be used as (or with) a precertificate; says why."""


def tbs_of(cert_der: bytes) -> bytes:
    """The raw TBSCertificate TLV of a DER Certificate (RFC 5280 section 4.1)."""
    try:
        body = der.content(cert_der, der.SEQUENCE, "Certificate")
        parts = der.elements(body)
    except DERError as exc:
        raise PrecertError(f"certificate is not valid DER: {exc}") from None
    if len(parts) != 3:
        raise PrecertError("certificate does not have tbsCertificate, algorithm and signature")
    return parts[0]


class _TBS:
    """A TBSCertificate split into its top-level fields, extensions split too."""

    def __init__(self, tbs: bytes) -> None:
        try:
            self.fields = der.elements(der.content(tbs, der.SEQUENCE, "TBSCertificate"))
            # [0] EXPLICIT version is optional (absent means v1).
            self.off = 1 if self.fields and self.fields[0][0] == 0xA0 else 0
            if len(self.fields) < self.off + 6:
                raise PrecertError("TBSCertificate is missing fields")
            self.ext_at = next((i for i, f in enumerate(self.fields) if f[0] == 0xA3), None)
            self.extensions: list[bytes] = []
            if self.ext_at is not None:
                seq = der.content(self.fields[self.ext_at], 0xA3, "extensions")
                self.extensions = der.elements(der.content(seq, der.SEQUENCE, "Extensions"))
        except DERError as exc:
            raise PrecertError(f"TBSCertificate is not valid DER: {exc}") from None

    @property
    def issuer(self) -> bytes:
        return self.fields[self.off + 2]

    @property
    def spki(self) -> bytes:
        return self.fields[self.off + 5]

    @staticmethod
    def ext_oid(ext: bytes) -> bytes:
        """The OID TLV that opens an Extension (read alone: the value can be long)."""
        try:
            tag, start, end = der.tlv_bounds(ext, 0)
            if tag != der.SEQUENCE or end != len(ext):
                raise DERError("an Extension must be one SEQUENCE")
            oid_tag, _, oid_end = der.tlv_bounds(ext, start) if start < end else (0, 0, 0)
        except DERError as exc:
            raise PrecertError(f"extension is not valid DER: {exc}") from None
        if oid_tag != 0x06:
            raise PrecertError("extension does not start with an OID")
        return ext[start:oid_end]

    def find(self, oid: bytes) -> list[int]:
        return [i for i, e in enumerate(self.extensions) if self.ext_oid(e) == oid]

    def encode(self) -> bytes:
        fields = list(self.fields)
        if self.ext_at is not None:
            if self.extensions:
                seq = der.encode_tlv(der.SEQUENCE, b"".join(self.extensions))
                fields[self.ext_at] = der.encode_tlv(0xA3, seq)
            else:
                # An empty Extensions SEQUENCE is not allowed (SIZE (1..MAX)); drop [3].
                del fields[self.ext_at]
        return der.encode_tlv(der.SEQUENCE, b"".join(fields))


def _check_poison(tbs: _TBS) -> int:
    found = tbs.find(_POISON)
    if len(found) != 1:
        raise PrecertError(
            f"a precertificate must carry exactly one poison extension, found {len(found)}"
        )
    ext = der.elements(der.content(tbs.extensions[found[0]], der.SEQUENCE, "Extension"))
    # RFC 6962 section 3.1: critical, with extnValue ASN.1 NULL.
    if len(ext) != 3 or ext[1] != b"\x01\x01\xff" or ext[2] != b"\x04\x02\x05\x00":
        raise PrecertError("the poison extension must be critical and contain ASN.1 NULL")
    return found[0]


def _aki_value(cert_der: bytes) -> bytes | None:
    """The whole AKI Extension TLV of a certificate, or None."""
    tbs = _TBS(tbs_of(cert_der))
    at = tbs.find(_AKI)
    return tbs.extensions[at[0]] if at else None


def precert_tbs(precert_der: bytes, precert_signer_der: bytes | None = None) -> bytes:
    """The TBSCertificate a precert_entry commits to (RFC 6962 section 3.2).

    ``precert_signer_der`` is the Precertificate Signing Certificate when one
    signed the precertificate; None when the CA signed it directly.
    """
    tbs = _TBS(tbs_of(precert_der))
    del tbs.extensions[_check_poison(tbs)]
    if precert_signer_der is not None:
        psc = _TBS(tbs_of(precert_signer_der))
        tbs.fields[tbs.off + 2] = psc.issuer
        psc_aki = _aki_value(precert_signer_der)
        at = tbs.find(_AKI)
        if at:
            if psc_aki is not None:
                tbs.extensions[at[0]] = psc_aki
            else:
                del tbs.extensions[at[0]]
        elif psc_aki is not None:
            tbs.extensions.append(psc_aki)
            if tbs.ext_at is None:
                tbs.ext_at = len(tbs.fields)
                tbs.fields.append(b"")
    return tbs.encode()


def final_certificate_tbs(cert_der: bytes) -> bytes:
    """The TBS an embedded SCT signs: the final certificate minus its SCT list (RFC 6962 3.3)."""
    tbs = _TBS(tbs_of(cert_der))
    # The poison OID cannot be missing from the bytes of a certificate that has it.
    if _POISON in cert_der and tbs.find(_POISON):
        raise PrecertError("a certificate with the poison extension is a precertificate")
    found = tbs.find(_SCT_LIST)
    if len(found) != 1:
        raise PrecertError(f"expected one SCT list extension, found {len(found)}")
    del tbs.extensions[found[0]]
    return tbs.encode()


def issuer_key_hash(issuer_der: bytes) -> bytes:
    """SHA-256 over the issuer's DER SubjectPublicKeyInfo, as it appears in its certificate."""
    return hashlib.sha256(_TBS(tbs_of(issuer_der)).spki).digest()


def has_poison(cert: x509.Certificate, der: bytes | None = None) -> bool:
    """Whether ``cert`` carries the CT poison extension.

    With ``der`` (the certificate's encoding) the common answer is found without
    parsing extensions: the poison's OID cannot be absent from the bytes of a
    certificate that has it.
    """
    if der is not None and _POISON not in der:
        return False
    try:
        cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(POISON_OID))
    except x509.ExtensionNotFound:
        return False
    return True


def is_precert_signing_certificate(cert: x509.Certificate) -> bool:
    """A CA certificate whose EKU includes Certificate Transparency (RFC 6962 section 3.1)."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CERTIFICATE_TRANSPARENCY in eku


def precert_entry(chain: Sequence[bytes], *, psc: bool) -> LogEntry:
    """The LogEntry for a precertificate chain [precert, issuer-or-PSC, (issuer), ...].

    ``psc`` says whether chain[1] is a Precertificate Signing Certificate; then
    chain[2] is the real issuer whose key hash goes into the entry.
    """
    if len(chain) < (3 if psc else 2):
        raise PrecertError("the chain is too short to contain the precertificate's issuer")
    tbs = precert_tbs(chain[0], chain[1] if psc else None)
    return LogEntry(EntryType.PRECERT, tbs, issuer_key_hash(chain[2] if psc else chain[1]))


def embedded_sct_entry(cert_der: bytes, issuer_der: bytes) -> LogEntry:
    """The LogEntry an SCT embedded in a final certificate signs (RFC 6962 section 3.3)."""
    return LogEntry(EntryType.PRECERT, final_certificate_tbs(cert_der), issuer_key_hash(issuer_der))
