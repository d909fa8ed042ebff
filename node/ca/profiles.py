"""Certificate profiles for the root, the intermediates and subscribers.

RFC 5280 section 4.2 and CA/Browser Forum Baseline Requirements section 7.1.2:

- root (BR 7.1.2.1): basicConstraints cA (critical, no path length); keyUsage
  keyCertSign + cRLSign (critical); subjectKeyIdentifier.
- intermediate (BR 7.1.2.2, technically constrained per 7.1.2.5): cA with
  pathLenConstraint 0 (critical); keyUsage digitalSignature, keyCertSign, cRLSign
  (critical); extKeyUsage serverAuth + clientAuth; nameConstraints (critical)
  permitting only the configured zones and excluding every IP address range;
  certificatePolicies; AKI (the root's key id); SKI.
- subscriber (BR 7.1.2.7): basicConstraints cA false (critical); keyUsage
  digitalSignature (+ keyEncipherment for RSA keys) (critical); extKeyUsage
  serverAuth + clientAuth; subjectAltName with the DNS names; AKI;
  certificatePolicies (domain validated, 2.23.140.1.2.1); optional CRL
  distribution point; then the poison (precertificate, RFC 6962 section 3.1) or
  the SCT list (final certificate, section 3.3) as the last extension.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustchain.ct.signer import PublicKey, spki_der
from trustchain.node.ca import names
from trustchain.node.ca.certbuild import (
    BuildError,
    Extension,
    TBSCertificate,
    TBSParts,
    certificate_parts,
)
from trustchain.node.ca.schemes import SignatureScheme, default_scheme

ORGANIZATION = "TrustChain"
ROOT_DAYS = 3650
"""Default root validity.  The root is rotated yearly; the old one stays trusted."""
INTERMEDIATE_DAYS = 365
"""Default intermediate validity: rotated quarterly, so four overlap at most."""
DV_POLICY = x509.ObjectIdentifier("2.23.140.1.2.1")
"""BR 7.1.6.1: domain-validated reserved policy identifier."""


@dataclass(frozen=True)
class CAPolicy:
    """What the CA will certify; every validator applies the same policy (genesis [ca])."""

    zones: tuple[str, ...] = ("trust.hypermesh.online",)
    """DNS suffixes certificates may name; also the intermediates' name constraints."""
    max_validity_days: int = 90
    """Longest subscriber certificate validity (BR 6.3.2 allows far more; we keep it short)."""
    allow_wildcards: bool = False
    """Whether ``*.name`` may be certified (only below a zone, never ``*.zone``)."""
    min_rsa_bits: int = 2048
    """Smallest RSA subscriber key (BR 6.1.5)."""
    max_names: int = 100
    """Most DNS names in one certificate."""
    crl_url: str | None = None
    """Base URL of the CRLs; a certificate points at ``{crl_url}/{issuer key id}.crl``."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "zones", names.check_zones(self.zones))
        except names.DNSNameError as exc:
            raise ValueError(f"policy zones: {exc}") from None
        if not 1 <= self.max_validity_days <= 398:
            raise ValueError("max_validity_days must be 1..398 (BR 6.3.2)")
        if self.min_rsa_bits < 2048:
            raise ValueError("min_rsa_bits must be at least 2048 (BR 6.1.5)")
        if not 1 <= self.max_names <= 1000:
            raise ValueError("max_names must be 1..1000")
        if self.crl_url is not None and not self.crl_url.startswith(("http://", "https://")):
            raise ValueError("crl_url must be an http:// or https:// URL")


def ca_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def key_id(public_key: PublicKey) -> bytes:
    """RFC 5280 section 4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest


def random_serial() -> int:
    """BR 7.1: at least 64 bits from a CSPRNG; here 127, positive (RFC 5280 4.1.2.2)."""
    return secrets.randbits(127) or 1


def _ext(value: x509.ExtensionType, critical: bool) -> Extension:
    return x509.Extension(value.oid, critical, value)


def _key_usage(**enabled: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    flags.update(enabled)
    return x509.KeyUsage(**flags)


def _policies() -> x509.CertificatePolicies:
    return x509.CertificatePolicies([x509.PolicyInformation(DV_POLICY, None)])


def _validity(not_before: dt.datetime, days: int) -> dt.datetime:
    # RFC 5280 section 4.1.2.5: notAfter is inclusive, hence the one second.
    return not_before + dt.timedelta(days=days) - dt.timedelta(seconds=1)


def root_tbs(
    public_key: PublicKey,
    scheme: SignatureScheme,
    *,
    common_name: str,
    not_before: dt.datetime,
    days: int = ROOT_DAYS,
    serial: int | None = None,
) -> TBSCertificate:
    """A self-signed root certificate's TBS (BR 7.1.2.1)."""
    name = ca_name(common_name).public_bytes()
    return TBSCertificate(
        serial=serial or random_serial(),
        scheme=scheme,
        issuer=name,
        not_before=not_before,
        not_after=_validity(not_before, days),
        subject=name,
        spki=spki_der(public_key),
        extensions=(
            _ext(x509.BasicConstraints(ca=True, path_length=None), True),
            _ext(_key_usage(key_cert_sign=True, crl_sign=True), True),
            _ext(x509.SubjectKeyIdentifier(key_id(public_key)), False),
        ),
    )


@dataclass(frozen=True)
class CACertificate:
    """A CA certificate (root or intermediate), parsed once and kept with its DER."""

    der: bytes
    """The certificate as issued."""
    cert: x509.Certificate
    """Parsed."""
    subject: bytes
    """The subject Name exactly as encoded: the issuer field of what it signs."""
    key_id: bytes
    """Its subjectKeyIdentifier: the AKI of what it signs."""
    zones: tuple[str, ...]
    """Permitted dNSName subtrees (empty for an unconstrained root)."""

    @classmethod
    def from_der(cls, data: bytes) -> CACertificate:
        try:
            cert = x509.load_der_x509_certificate(data)
        except ValueError as exc:
            raise BuildError(f"not a DER certificate: {exc}") from None
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound as exc:
            missing = {x509.BasicConstraints.oid: "basicConstraints"}.get(
                exc.oid, "subjectKeyIdentifier"
            )
            raise BuildError(
                f"{cert.subject.rfc4514_string()} is not a CA certificate (it has no {missing})"
            ) from None
        if not bc.ca:
            raise BuildError(f"{cert.subject.rfc4514_string()} is not a CA certificate")
        zones: tuple[str, ...] = ()
        try:
            nc = cert.extensions.get_extension_for_class(x509.NameConstraints).value
            zones = tuple(
                str(g.value) for g in nc.permitted_subtrees or () if isinstance(g, x509.DNSName)
            )
        except x509.ExtensionNotFound:
            pass
        subject = TBSParts.split(certificate_parts(data)[0]).subject
        return cls(data, cert, subject, ski.digest, zones)

    def public_key(self) -> PublicKey:
        return self._public_key

    @functools.cached_property
    def _public_key(self) -> PublicKey:
        # Parsed once: every validator's check of every precertificate asks for it.
        key = self.cert.public_key()
        if not isinstance(
            key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
        ):
            raise BuildError("the CA key type is not supported")
        return key

    @functools.cached_property
    def spki(self) -> bytes:
        """Its DER SubjectPublicKeyInfo."""
        return spki_der(self.public_key())

    @functools.cached_property
    def name(self) -> str:
        """Its common name (for messages)."""
        cns = self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(cns[0].value) if cns else self.cert.subject.rfc4514_string()

    @functools.cached_property
    def issuer_key_hash(self) -> bytes:
        """RFC 6962 section 3.2: SHA-256 of the issuer's SubjectPublicKeyInfo (as encoded)."""
        return hashlib.sha256(TBSParts.split(certificate_parts(self.der)[0]).spki).digest()

    @functools.cached_property
    def scheme(self) -> SignatureScheme:
        """How this CA's key signs: ECDSA by curve; RSA (the root) as its self-signature does."""
        key = self.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            return _rsa_scheme_of(self.cert)
        return default_scheme(key)

    @property
    def not_before(self) -> dt.datetime:
        return self.cert.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc


def _rsa_scheme_of(cert: x509.Certificate) -> SignatureScheme:
    # A self-signed root names its own scheme in signatureAlgorithm.
    oid = cert.signature_algorithm_oid.dotted_string
    return {
        "1.2.840.113549.1.1.10": SignatureScheme.RSA_PSS_SHA384,
        "1.2.840.113549.1.1.12": SignatureScheme.RSA_PKCS1_SHA384,
        "1.2.840.113549.1.1.11": SignatureScheme.RSA_PKCS1_SHA256,
    }.get(oid, SignatureScheme.RSA_PKCS1_SHA384)


def intermediate_tbs(
    root: CACertificate,
    public_key: PublicKey,
    *,
    common_name: str,
    zones: Sequence[str],
    not_before: dt.datetime,
    days: int = INTERMEDIATE_DAYS,
    root_scheme: SignatureScheme | None = None,
    crl_url: str | None = None,
    serial: int | None = None,
) -> TBSCertificate:
    """An intermediate CA's TBS, signed by the root (BR 7.1.2.2 and 7.1.2.5)."""
    checked = names.check_zones(zones)
    not_after = _validity(not_before, days)
    if not_after > root.not_after:
        raise BuildError(
            f"the intermediate would outlive the root (root expires {root.not_after:%Y-%m-%d}); "
            "shorten --days or rotate the root first"
        )
    if not_before < root.not_before:
        raise BuildError("the intermediate would start before the root is valid")
    extensions = [
        _ext(x509.BasicConstraints(ca=True, path_length=0), True),
        _ext(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), True),
        _ext(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            False,
        ),
        _ext(
            x509.NameConstraints(
                permitted_subtrees=[x509.DNSName(z) for z in checked],
                # BR 7.1.2.5.2: a constrained CA that may not issue for IP addresses
                # excludes all of them.
                excluded_subtrees=[
                    x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                    x509.IPAddress(ipaddress.ip_network("::/0")),
                ],
            ),
            True,
        ),
        _ext(_policies(), False),
        _ext(x509.AuthorityKeyIdentifier(root.key_id, None, None), False),
        _ext(x509.SubjectKeyIdentifier(key_id(public_key)), False),
    ]
    if crl_url:
        extensions.append(_ext(_crl_points(crl_url, root.key_id), False))
    return TBSCertificate(
        serial=serial or random_serial(),
        scheme=root_scheme or root.scheme,
        issuer=root.subject,
        not_before=not_before,
        not_after=not_after,
        subject=ca_name(common_name).public_bytes(),
        spki=spki_der(public_key),
        extensions=tuple(extensions),
    )


def _crl_points(base: str, issuer_key_id: bytes) -> x509.CRLDistributionPoints:
    url = f"{base.rstrip('/')}/{issuer_key_id.hex()}.crl"
    return x509.CRLDistributionPoints(
        [x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)]
    )


POISON = _ext(x509.PrecertPoison(), True)
"""RFC 6962 section 3.1: critical, value ASN.1 NULL."""


def leaf_extensions(
    issuer: CACertificate,
    public_key: PublicKey,
    dns_names: Sequence[str],
    *,
    crl_url: str | None,
) -> list[Extension]:
    """A subscriber certificate's extensions, without poison or SCT list."""
    usage = _key_usage(
        digital_signature=True, key_encipherment=isinstance(public_key, rsa.RSAPublicKey)
    )
    extensions = [
        _ext(x509.BasicConstraints(ca=False, path_length=None), True),
        _ext(usage, True),
        _ext(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            False,
        ),
        # RFC 5280 section 4.2.1.6: critical when the subject is empty.
        _ext(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
            _common_name(dns_names) is None,
        ),
        _ext(x509.AuthorityKeyIdentifier(issuer.key_id, None, None), False),
        _ext(_policies(), False),
    ]
    if crl_url:
        extensions.append(_ext(_crl_points(crl_url, issuer.key_id), False))
    return extensions


CN_MAX = 64
"""RFC 5280 appendix A (ub-common-name): a commonName has at most 64 characters."""


def _common_name(dns_names: Sequence[str]) -> str | None:
    return next((n for n in dns_names if len(n) <= CN_MAX), None)


def leaf_subject(dns_names: Sequence[str]) -> bytes:
    """BR 7.1.2.7.2: commonName, if present, is one of the SAN entries: the first that
    fits in a commonName.  A certificate whose names are all longer has an empty subject."""
    cn = _common_name(dns_names)
    attributes = [] if cn is None else [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    return x509.Name(attributes).public_bytes()
