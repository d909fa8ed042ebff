"""A node's identity: its Ed25519 consensus key and the self-signed TLS
certificate made from that key for QUIC.

Peers pin the certificate's public key to the consensus key listed in the
genesis file (DESIGN.md section 3), so the certificate carries nothing else
that matters: its subject is the node name, and it is valid for ten years.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from trustchain.node.errors import UserError

PEER_AUTH_DOMAIN = b"trustchain-peer-auth-v1"


@dataclass(frozen=True)
class Identity:
    """A node's name, consensus key and TLS certificate."""

    name: str
    key: Ed25519PrivateKey
    certificate: x509.Certificate

    @property
    def public_key_raw(self) -> bytes:
        return raw_public_key(self.key.public_key())

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def self_signed_certificate(name: str, key: Ed25519PrivateKey) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, None)
    )


def generate(name: str) -> Identity:
    key = Ed25519PrivateKey.generate()
    return Identity(name, key, self_signed_certificate(name, key))


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write `key` as PKCS#8 PEM with mode 0600 from the start (never world-readable)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def save(identity: Identity, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    key_path = data_dir / "consensus.key"
    if key_path.exists():
        raise UserError(f"{key_path} already exists; refusing to overwrite a node's key")
    write_private_key(key_path, identity.key)
    (data_dir / "tls.pem").write_bytes(
        identity.certificate.public_bytes(serialization.Encoding.PEM)
    )


def load(name: str, key_path: Path, cert_path: Path) -> Identity:
    """Load a node's identity, checking that the certificate was made from the key."""
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError:
        raise UserError(
            f"{key_path}: consensus key not found; run `trustchain node init`"
        ) from None
    except ValueError as exc:
        raise UserError(f"{key_path}: not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"{key_path}: expected an Ed25519 key, found {type(key).__name__}")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except FileNotFoundError:
        raise UserError(
            f"{cert_path}: TLS certificate not found; run `trustchain node init`"
        ) from None
    except ValueError as exc:
        raise UserError(f"{cert_path}: not a PEM certificate: {exc}") from None
    cert_key = cert.public_key()
    if not isinstance(cert_key, Ed25519PublicKey) or raw_public_key(cert_key) != raw_public_key(
        key.public_key()
    ):
        raise UserError(f"{cert_path}: certificate was not made from {key_path}")
    return Identity(name, key, cert)
