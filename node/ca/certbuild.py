"""TBSCertificate, CSR and certificate envelopes, signed through any ``Signer``.

RFC 5280 section 4.1 defines the certificate as
``SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }``; the CA
encodes ``tbsCertificate`` here (field values from cryptography's encoders) and
signs its DER with a ``Signer``, which may hold its key in an HSM.  Builders
check what RFC 5280 demands of each field before anything is signed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from trustchain.ct.signer import Signer
from trustchain.node.ca import der
from trustchain.node.ca.schemes import SignatureScheme, scheme_of

MAX_SERIAL_BITS = 159
"""RFC 5280 section 4.1.2.2: at most 20 octets, and positive, so below 2**159."""


class BuildError(ValueError):
    """A field that RFC 5280 (or our profile) does not allow; says which."""


Extension = x509.Extension[x509.ExtensionType]


def encode_extension(ext: Extension) -> bytes:
    """RFC 5280 section 4.1: ``SEQUENCE { extnID, critical DEFAULT FALSE, extnValue }``."""
    parts = [der.oid(ext.oid.dotted_string)]
    if ext.critical:
        # DER omits a BOOLEAN equal to its DEFAULT (X.690 section 11.5).
        parts.append(der.boolean(True))
    parts.append(der.octet_string(ext.value.public_bytes()))
    return der.seq(*parts)


def encode_extensions(extensions: Sequence[Extension]) -> list[bytes]:
    seen: set[str] = set()
    out = []
    for ext in extensions:
        dotted = ext.oid.dotted_string
        if dotted in seen:
            # RFC 5280 section 4.2: at most one instance of an extension.
            raise BuildError(f"extension {dotted} appears twice")
        seen.add(dotted)
        out.append(encode_extension(ext))
    return out


@dataclass(frozen=True)
class TBSCertificate:
    """The fields of an X.509 v3 TBSCertificate (RFC 5280 section 4.1.2)."""

    serial: int
    """Positive, at most 20 octets (section 4.1.2.2)."""
    scheme: SignatureScheme
    """The issuer's signature scheme, named in the ``signature`` field."""
    issuer: bytes
    """The issuer's Name, DER, copied byte for byte from its certificate's subject."""
    not_before: dt.datetime
    """Start of validity (timezone-aware)."""
    not_after: dt.datetime
    """End of validity, inclusive (section 4.1.2.5)."""
    subject: bytes
    """The subject Name, DER."""
    spki: bytes
    """The subject's SubjectPublicKeyInfo, DER."""
    extensions: tuple[Extension, ...]
    """v3 extensions in the order they are encoded."""

    def encode(self) -> bytes:
        fields, extensions = self._encoded()
        if extensions:
            fields.append(der.explicit(3, der.seq(*extensions)))
        return der.seq(*fields)

    def encode_precertificate(self) -> tuple[bytes, bytes]:
        """(this TBS, the TBS without its last extension), each field encoded once.

        A precertificate's last extension is the poison (``issuance.precertificate_tbs``)
        and RFC 6962 section 3.2's precert_entry logs the TBS without it, which is
        what ``ct.precert.precert_tbs`` cuts from the signed DER; building both
        here spares a validator re-parsing the bytes it has just encoded.
        """
        fields, extensions = self._encoded()
        if not extensions:
            raise BuildError("a precertificate TBS must end with the poison extension")
        signed = der.seq(*fields, der.explicit(3, der.seq(*extensions)))
        # An empty Extensions SEQUENCE is not allowed (SIZE (1..MAX)); then no [3].
        rest = [der.explicit(3, der.seq(*extensions[:-1]))] if len(extensions) > 1 else []
        return signed, der.seq(*fields, *rest)

    def _encoded(self) -> tuple[list[bytes], list[bytes]]:
        """The encoded fields before [3] extensions, and the encoded extensions."""
        if not 0 < self.serial < 1 << MAX_SERIAL_BITS:
            raise BuildError("the serial number must be positive and at most 20 octets")
        if not self.not_before < self.not_after:
            raise BuildError("notBefore must be earlier than notAfter")
        fields = [
            der.explicit(0, der.integer(2)),  # version v3
            der.integer(self.serial),
            self.scheme.algorithm_identifier,
            self.issuer,
            der.seq(der.time(self.not_before), der.time(self.not_after)),
            self.subject,
            self.spki,
        ]
        return fields, encode_extensions(self.extensions) if self.extensions else []


def assemble(tbs: bytes, scheme: SignatureScheme, signature: bytes) -> bytes:
    """``SEQUENCE { tbs, signatureAlgorithm, BIT STRING signature }`` (certificate, CSR or CRL)."""
    return der.seq(tbs, scheme.algorithm_identifier, der.bit_string(signature))


def _check_signer(signer: Signer, scheme: SignatureScheme) -> None:
    if scheme_of(signer) is not scheme:
        actual = scheme_of(signer).value
        raise BuildError(f"the structure names {scheme.value} but the signer signs with {actual}")


async def sign_certificate(signer: Signer, tbs: TBSCertificate) -> bytes:
    """The DER certificate: ``tbs`` signed by ``signer``."""
    _check_signer(signer, tbs.scheme)
    encoded = tbs.encode()
    return assemble(encoded, tbs.scheme, await signer.sign(encoded))


async def sign_tbs_bytes(signer: Signer, tbs: bytes, scheme: SignatureScheme) -> bytes:
    """Sign an already-encoded TBS (a final certificate made from a precertificate's TBS)."""
    _check_signer(signer, scheme)
    return assemble(tbs, scheme, await signer.sign(tbs))


async def sign_csr(signer: Signer, subject: x509.Name, spki: bytes) -> bytes:
    """A PKCS #10 request (RFC 2986 section 4) for ``signer``'s key, made in place.

    The ceremony uses it so that the root certifies a key whose holder has proved
    possession, even when the key never leaves an HSM.
    """
    scheme = scheme_of(signer)
    info = der.seq(
        der.integer(0),
        subject.public_bytes(),
        spki,
        der.tlv(0xA0, b""),  # attributes [0] IMPLICIT SET OF Attribute: none
    )
    return assemble(info, scheme, await signer.sign(info))


# --- reading what we wrote -----------------------------------------------------------


@dataclass(frozen=True)
class TBSParts:
    """A TBSCertificate split into raw top-level fields, extensions split too."""

    fields: list[bytes]
    """Top-level TLVs: version, serial, signature, issuer, validity, subject, spki, ..."""
    extensions: list[bytes]
    """The Extension TLVs, in order."""
    extensions_at: int | None
    """Index of the [3] field in ``fields``."""

    @classmethod
    def split(cls, tbs: bytes) -> TBSParts:
        try:
            fields = der.split(der.body(tbs, der.SEQUENCE, "TBSCertificate"))
            at = next((i for i, f in enumerate(fields) if f[0] == 0xA3), None)
            extensions: list[bytes] = []
            if at is not None:
                inner = der.body(fields[at], 0xA3, "extensions")
                extensions = der.split(der.body(inner, der.SEQUENCE, "Extensions"))
        except der.DERError as exc:
            raise BuildError(f"TBSCertificate is not valid DER: {exc}") from None
        if not fields or fields[0][0] != 0xA0 or len(fields) < 7:
            raise BuildError("not an X.509 v3 TBSCertificate")
        return cls(fields, extensions, at)

    @property
    def issuer(self) -> bytes:
        return self.fields[3]

    @property
    def subject(self) -> bytes:
        return self.fields[5]

    @property
    def spki(self) -> bytes:
        return self.fields[6]

    def index_of(self, dotted: str) -> int | None:
        wanted = der.oid(dotted)
        for i, ext in enumerate(self.extensions):
            try:
                first = der.split(der.body(ext, der.SEQUENCE, "Extension"))[0]
            except (der.DERError, IndexError):
                raise BuildError("an extension is not valid DER") from None
            if first == wanted:
                return i
        return None

    def encode(self) -> bytes:
        fields = list(self.fields)
        if self.extensions_at is not None:
            fields[self.extensions_at] = der.explicit(3, der.seq(*self.extensions))
        return der.seq(*fields)


def certificate_parts(cert_der: bytes) -> tuple[bytes, bytes, bytes]:
    """(tbsCertificate, signatureAlgorithm, signatureValue) TLVs of a DER certificate."""
    try:
        parts = der.split(der.body(cert_der, der.SEQUENCE, "Certificate"))
    except der.DERError as exc:
        raise BuildError(f"certificate is not valid DER: {exc}") from None
    if len(parts) != 3:
        raise BuildError("a certificate has exactly three fields")
    return parts[0], parts[1], parts[2]


def subject_der(cert_der: bytes) -> bytes:
    """The subject Name exactly as encoded in ``cert_der`` (the issuer field of its children)."""
    return TBSParts.split(certificate_parts(cert_der)[0]).subject
