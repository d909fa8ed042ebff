"""The one interface through which TrustChain uses a private key.

No code outside a key adapter knows whether a key lives in a file or an HSM
(DESIGN.md section 6).  The CT log uses a ``Signer`` for SCTs and checkpoints; the
CA issue adds a PKCS#11 implementation behind the same two methods.

Signature conventions, fixed by the key so that callers never choose a hash:
- ECDSA P-256 / P-384 / P-521: SHA-256 / SHA-384 / SHA-512 over the message, the
  signature DER-encoded (Ecdsa-Sig-Value, RFC 5480 / RFC 5758 section 3.2);
- RSA: PKCS #1 v1.5 with SHA-256 (RFC 8017 section 8.2);
- Ed25519: PureEdDSA over the message (RFC 8032 section 5.1).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class UnusableKeyError(ValueError):
    """A key file or key that cannot be used: the message says what is wrong."""


@runtime_checkable
class Signer(Protocol):
    """A private key that signs; its public half is known."""

    def public_key(self) -> PublicKey:
        """The public key that verifies this signer's signatures."""
        ...

    async def sign(self, message: bytes) -> bytes:
        """Sign ``message`` (hashed per the key's algorithm, see the module docstring).

        ECDSA signatures are DER-encoded.  May be slow (an HSM round trip); safe to
        call concurrently.
        """
        ...


def _ecdsa_hash(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    if isinstance(curve, ec.SECP256R1):
        return hashes.SHA256()
    if isinstance(curve, ec.SECP384R1):
        return hashes.SHA384()
    if isinstance(curve, ec.SECP521R1):
        return hashes.SHA512()
    raise UnusableKeyError(f"unsupported ECDSA curve {curve.name}; use P-256, P-384 or P-521")


@runtime_checkable
class BatchSigner(Signer, Protocol):
    """A ``Signer`` that signs several messages in one call (one HSM round trip)."""

    async def sign_many(self, messages: Sequence[bytes]) -> list[bytes]:
        """The signatures of ``messages``, in order, as ``sign`` would make them."""
        ...


async def sign_all(signer: Signer, messages: Sequence[bytes]) -> list[bytes]:
    """Sign each of ``messages``: in one call where the signer can (an HSM signer's
    worker thread takes them as one job, one thread hand-off for all), else in turn."""
    if isinstance(signer, BatchSigner):
        return await signer.sign_many(messages)
    return [await signer.sign(m) for m in messages]


class SoftwareSigner:
    """A ``Signer`` over a private key held in this process (tests, `ct serve`)."""

    def __init__(self, key: PrivateKey) -> None:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            _ecdsa_hash(key.curve)  # reject unsupported curves now, not at first use
        elif not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise UnusableKeyError(f"unsupported key type {type(key).__name__}")
        self._key = key
        self._public = key.public_key()

    def public_key(self) -> PublicKey:
        return self._public

    async def sign(self, message: bytes) -> bytes:
        return self.sign_sync(message)

    def sign_sync(self, message: bytes) -> bytes:
        """Synchronous form, for code that knows it holds a software key (bulk tools)."""
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(message, ec.ECDSA(_ecdsa_hash(key.curve)))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        return key.sign(message)


def verify_signature(public_key: PublicKey, signature: bytes, message: bytes) -> bool:
    """Check a signature made under the module's conventions; never raises for bad input."""
    from cryptography.exceptions import InvalidSignature

    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, message, ec.ECDSA(_ecdsa_hash(public_key.curve)))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        else:
            public_key.verify(signature, message)
    except (InvalidSignature, ValueError, UnusableKeyError):
        return False
    return True


def spki_der(public_key: PublicKey) -> bytes:
    """DER SubjectPublicKeyInfo (RFC 5280 section 4.1.2.7)."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_pem(public_key: PublicKey) -> bytes:
    """PEM "PUBLIC KEY" (SubjectPublicKeyInfo), what relying parties configure."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def log_id(public_key: PublicKey) -> bytes:
    """RFC 6962 section 3.2: LogID = SHA-256 of the log's DER SubjectPublicKeyInfo."""
    return hashlib.sha256(spki_der(public_key)).digest()


def generate_p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def p256_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS #8 PEM (RFC 5208 / RFC 7468 "PRIVATE KEY")."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private_key(path: Path, pem: bytes) -> None:
    """Create ``path`` with mode 0600 and the key; refuse to overwrite an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())


def load_p256_signer(path: Path) -> SoftwareSigner:
    """Load an ECDSA P-256 private key from an unencrypted PKCS #8 PEM file.

    RFC 6962 section 2.1.4 allows only ECDSA P-256 or RSA for a log key; TrustChain
    uses P-256 everywhere (smaller SCTs), so anything else is refused here.
    """
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise UnusableKeyError(f"cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN PRIVATE KEY-----" not in pem:
        raise UnusableKeyError(
            f"{path} is not a PKCS #8 PEM private key (expected '-----BEGIN PRIVATE KEY-----'; "
            "make one with `trustchain ct keygen --out FILE`)"
        )
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise UnusableKeyError(f"{path}: cannot load the private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        if isinstance(key, ec.EllipticCurvePrivateKey):
            kind = f"an ECDSA {key.curve.name}"
        else:
            kind = f"an {type(key).__name__.removesuffix('PrivateKey')}"
        raise UnusableKeyError(f"{path} holds {kind} key; a CT log key must be ECDSA P-256")
    return SoftwareSigner(key)
