"""Throw-away certificates for tests, benchmarks and local demos (never for production).

Makes real certificates with `cryptography`: roots, intermediates, Precertificate
Signing Certificates, leaves and precertificates, and a TLS server certificate
for ``::1`` with its own CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    """The certificate."""
    key: ec.EllipticCurvePrivateKey
    """Its private key."""

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _ski(key: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key)


def make_root(cn: str = "TrustChain Test Root", *, days: int = 3650) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_ski(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def make_intermediate(
    issuer: Issued, cn: str = "TrustChain Test Intermediate", *, precert_signing: bool = False
) -> Issued:
    """A CA certificate under ``issuer``; with ``precert_signing`` a PSC (RFC 6962 s3.1)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ski(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if precert_signing:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CERTIFICATE_TRANSPARENCY]), critical=False
        )
    return Issued(builder.sign(issuer.key, hashes.SHA256()), key)


def leaf_builder(
    issuer: Issued,
    dns_name: str,
    *,
    key: ec.EllipticCurvePrivateKey,
    serial: int | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    aki_from: Issued | None = None,
    issuer_name: x509.Name | None = None,
) -> x509.CertificateBuilder:
    now = _now()
    nb = not_before or now - dt.timedelta(hours=1)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(dns_name))
        .issuer_name(issuer_name or issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(not_after or nb + dt.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                (aki_from or issuer).key.public_key()
            ),
            critical=False,
        )
    )


def make_leaf(
    issuer: Issued,
    dns_name: str,
    *,
    precert: bool = False,
    key: ec.EllipticCurvePrivateKey | None = None,
    serial: int | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    extra: Sequence[x509.ExtensionType] = (),
) -> Issued:
    """A leaf certificate (or, with ``precert``, a precertificate) signed by ``issuer``."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = leaf_builder(
        issuer, dns_name, key=key, serial=serial, not_before=not_before, not_after=not_after
    )
    if precert:
        builder = builder.add_extension(x509.PrecertPoison(), critical=True)
    for ext in extra:
        builder = builder.add_extension(ext, critical=False)
    return Issued(builder.sign(issuer.key, hashes.SHA256()), key)


def make_tls_server(hosts: Sequence[str] = ("::1", "localhost")) -> tuple[Issued, Issued]:
    """A CA and a server certificate for ``hosts`` (IP addresses or DNS names).

    Returns (ca, server).  Clients trust ``ca.pem``.
    """
    ca = make_root("TrustChain Test TLS CA")
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return ca, Issued(cert, key)
