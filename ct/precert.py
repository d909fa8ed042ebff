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

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

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
SCT_LIST_EXTENSION = _SCT_LIST
"""The SCT list extension's OID TLV, for ``SplitCertificate.find``."""
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


def _single(data: bytes, start: int, end: int, tag: int, what: str) -> tuple[int, int]:
    """Content bounds of the one TLV that must fill ``data[start:end]`` (as ``der.content``)."""
    found = der.spans(data, start, end, most=1)
    if not found:
        raise DERError("truncated TLV header")
    got, _, content_start, content_end = found[0]
    if got != tag or content_end != end:
        raise DERError(f"{what}: expected tag 0x{tag:02x}, got 0x{got:02x}")
    return content_start, content_end


@dataclass(frozen=True)
class SplitCertificate:
    """A DER certificate split in one pass into the raw pieces its checks need.

    RFC 5280 section 4.1.  Every piece is a slice of the input, byte for byte as
    the issuer signed it.  Verifying a final certificate needs the TBS and
    signature (chain), the issuer Name, and the SCT list extension together with
    the TBS without it (RFC 6962 section 3.3); splitting once serves them all.
    The split keeps offsets into ``der`` and slices only what is asked for.
    """

    der: bytes
    """The certificate as given."""
    tbs_span: tuple[int, int, int]
    """(TLV start, content start, end) of the tbsCertificate in ``der``."""
    signature_algorithm: bytes
    """The outer signatureAlgorithm AlgorithmIdentifier TLV."""
    signature: bytes
    """The signatureValue BIT STRING TLV."""
    field_spans: tuple[tuple[int, int], ...]
    """(start, end) in ``der`` of each top-level TBSCertificate field TLV, in order."""
    version_offset: int
    """1 when the [0] EXPLICIT version field is present, 0 when absent (v1)."""
    extensions_at: int | None
    """Index of the [3] extensions field in ``field_spans``, None without one."""
    extensions_span: tuple[int, int]
    """(start, end) in ``der`` of the content of the Extensions SEQUENCE ((0, 0) without)."""
    extension_spans: tuple[tuple[int, int], ...]
    """(start, end) in ``der`` of each Extension TLV, in order."""
    extension_oids: tuple[bytes, ...]
    """The extnID OID TLV that opens each extension."""

    @property
    def tbs(self) -> bytes:
        """The tbsCertificate TLV: what the issuer's signature covers."""
        return self.der[self.tbs_span[0] : self.tbs_span[2]]

    @property
    def fields(self) -> tuple[bytes, ...]:
        """The TBSCertificate's top-level field TLVs, in order."""
        return tuple([self.der[a:b] for a, b in self.field_spans])

    @property
    def extensions(self) -> tuple[bytes, ...]:
        """The Extension TLVs, in order."""
        return tuple([self.der[a:b] for a, b in self.extension_spans])

    def _field(self, index: int) -> bytes:
        start, end = self.field_spans[self.version_offset + index]
        return self.der[start:end]

    @property
    def issuer(self) -> bytes:
        """The issuer Name TLV exactly as encoded."""
        return self._field(2)

    @property
    def subject(self) -> bytes:
        """The subject Name TLV exactly as encoded."""
        return self._field(4)

    @property
    def spki(self) -> bytes:
        """The SubjectPublicKeyInfo TLV exactly as encoded."""
        return self._field(5)

    def find(self, oid: bytes) -> list[int]:
        """Indexes of the extensions whose extnID is ``oid`` (a full OID TLV)."""
        return [i for i, o in enumerate(self.extension_oids) if o == oid]

    def extension_value(self, index: int) -> bytes:
        """The contents of extension ``index``'s extnValue OCTET STRING, as encoded."""
        data = self.der
        ext_start, ext_end = self.extension_spans[index]
        try:
            start, end = _single(data, ext_start, ext_end, der.SEQUENCE, "Extension")
            parts = der.spans(data, start, end)
        except DERError as exc:
            raise PrecertError(f"extension is not valid DER: {exc}") from None
        # Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue }
        if not 2 <= len(parts) <= 3 or (len(parts) == 3 and parts[1][0] != der.BOOLEAN):
            raise PrecertError("extension is not extnID, [critical,] extnValue")
        tag, _, value_start, value_end = parts[-1]
        if tag != der.OCTET_STRING:
            raise PrecertError("extension's extnValue is not an OCTET STRING")
        return data[value_start:value_end]

    def tbs_without(self, index: int) -> bytes:
        """The TBSCertificate re-encoded without extension ``index``; all else as encoded."""
        assert self.extensions_at is not None
        data = self.der
        _, content_start, tbs_end = self.tbs_span
        field_start, field_end = self.field_spans[self.extensions_at]
        seq_start, seq_end = self.extensions_span
        cut_start, cut_end = self.extension_spans[index]
        rest = data[seq_start:cut_start] + data[cut_end:seq_end]
        # An empty Extensions SEQUENCE is not allowed (SIZE (1..MAX)); drop [3].
        field = der.encode_tlv(0xA3, der.encode_tlv(der.SEQUENCE, rest)) if rest else b""
        body = b"".join((data[content_start:field_start], field, data[field_end:tbs_end]))
        return der.encode_tlv(der.SEQUENCE, body)

    def sct_list_index(self) -> int:
        """Index of the one SCT list extension of a final certificate (RFC 6962 section 3.3).

        Raises PrecertError for a precertificate (poison extension) and unless
        there is exactly one SCT list.
        """
        oids = self.extension_oids
        if _POISON in oids:
            raise PrecertError("a certificate with the poison extension is a precertificate")
        count = oids.count(_SCT_LIST)
        if count != 1:
            raise PrecertError(f"expected one SCT list extension, found {count}")
        return oids.index(_SCT_LIST)

    def embedded_scts(self) -> tuple[bytes, bytes]:
        """(SCT list extnValue contents, the TBS its SCTs sign): RFC 6962 section 3.3.

        The TBS is this certificate's without the SCT list extension, as
        ``final_certificate_tbs`` computes it; errors as ``sct_list_index``.
        """
        at = self.sct_list_index()
        return self.extension_value(at), self.tbs_without(at)


def split_certificate(cert_der: bytes) -> SplitCertificate:
    """Split a DER Certificate in one pass (see ``SplitCertificate``).

    The same strict DER checks, and the same PrecertError messages, as
    ``tbs_of`` followed by reading every extension's OID.
    """
    data = bytes(cert_der)
    try:
        start, end = _single(data, 0, len(data), der.SEQUENCE, "Certificate")
        top = der.spans(data, start, end)
    except DERError as exc:
        raise PrecertError(f"certificate is not valid DER: {exc}") from None
    if len(top) != 3:
        raise PrecertError("certificate does not have tbsCertificate, algorithm and signature")
    (tbs_tag, tbs_at, tbs_start, tbs_end), (_, alg_at, _, alg_end), (_, sig_at, _, sig_end) = top
    ext_spans: list[tuple[int, int]] = []
    oids: list[bytes] = []
    seq_start = seq_end = 0
    try:
        if tbs_tag != der.SEQUENCE:
            raise DERError(f"TBSCertificate: expected tag 0x30, got 0x{tbs_tag:02x}")
        spans = der.spans(data, tbs_start, tbs_end)
        off = 1 if spans and spans[0][0] == 0xA0 else 0
        if len(spans) < off + 6:
            raise PrecertError("TBSCertificate is missing fields")
        ext_at = None
        for i, span in enumerate(spans):
            if span[0] == 0xA3:
                ext_at = i
                break
        if ext_at is not None:
            _, _, outer_start, outer_end = spans[ext_at]
            seq_start, seq_end = _single(data, outer_start, outer_end, der.SEQUENCE, "Extensions")
            for tag, at, e_start, e_end in der.spans(data, seq_start, seq_end):
                ext_spans.append((at, e_end))
                # The common case inline, a short-form OID opening the SEQUENCE:
                # the checks der.spans makes, without a call per extension.
                if tag == der.SEQUENCE and e_end - e_start >= 2 and data[e_start] == 0x06:
                    oid_end = e_start + 2 + data[e_start + 1]
                    if data[e_start + 1] < 0x80 and oid_end <= e_end:
                        oids.append(data[e_start:oid_end])
                        continue
                oids.append(_extension_oid(data, tag, e_start, e_end))
    except DERError as exc:
        raise PrecertError(f"TBSCertificate is not valid DER: {exc}") from None
    return SplitCertificate(
        data,
        (tbs_at, tbs_start, tbs_end),
        data[alg_at:alg_end],
        data[sig_at:sig_end],
        tuple([(at, e) for _, at, _, e in spans]),
        off,
        ext_at,
        (seq_start, seq_end),
        tuple(ext_spans),
        tuple(oids),
    )


def _extension_oid(data: bytes, tag: int, start: int, end: int) -> bytes:
    """The OID TLV opening the Extension with ``tag`` and content ``data[start:end]``."""
    try:
        if tag != der.SEQUENCE:
            raise DERError("an Extension must be one SEQUENCE")
        first = der.spans(data, start, end, most=1)
    except DERError as exc:
        raise PrecertError(f"extension is not valid DER: {exc}") from None
    if not first or first[0][0] != 0x06:
        raise PrecertError("extension does not start with an OID")
    _, at, _, oid_end = first[0]
    return data[at:oid_end]


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
    split = split_certificate(cert_der)
    return split.tbs_without(split.sct_list_index())


@functools.lru_cache(maxsize=256)
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
