"""Signature schemes: what a CA key signs with, and how X.509 names it.

A ``trustchain.ct.signer.Signer`` fixes its hash by the key (P-256 with SHA-256,
P-384 with SHA-384, Ed25519 pure).  RSA keys are the exception: the root CA signs
with SHA-384 and either PKCS #1 v1.5 or PSS, as configured, while the CT module's
convention for RSA is PKCS #1 v1.5 with SHA-256.  A CA signer therefore also says
which ``SignatureScheme`` it uses (``CASigner``); a plain ``Signer`` gets the CT
convention (``scheme_of``).

Each scheme knows its AlgorithmIdentifier DER (RFC 5758 section 3.2 for ECDSA,
RFC 4055 section 3.1 / 5 for RSA, RFC 8410 section 3 for Ed25519), which goes
into a TBSCertificate's ``signature`` field and the outer ``signatureAlgorithm``.
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from trustchain.ct.signer import PrivateKey, PublicKey, Signer
from trustchain.node.ca import der

_SHA256 = "2.16.840.1.101.3.4.2.1"
_SHA384 = "2.16.840.1.101.3.4.2.2"
_MGF1 = "1.2.840.113549.1.1.8"


class SignatureScheme(enum.Enum):
    """The signature algorithms the CA issues and accepts."""

    ECDSA_SHA256 = "ecdsa-sha256"
    ECDSA_SHA384 = "ecdsa-sha384"
    RSA_PKCS1_SHA256 = "rsa-pkcs1-sha256"
    RSA_PKCS1_SHA384 = "rsa-pkcs1-sha384"
    RSA_PSS_SHA384 = "rsa-pss-sha384"
    ED25519 = "ed25519"

    @property
    def hash(self) -> hashes.HashAlgorithm | None:
        """The message digest, or None for Ed25519 (which hashes internally)."""
        if self in (SignatureScheme.ECDSA_SHA256, SignatureScheme.RSA_PKCS1_SHA256):
            return hashes.SHA256()
        if self is SignatureScheme.ED25519:
            return None
        return hashes.SHA384()

    @property
    def is_rsa(self) -> bool:
        return self.value.startswith("rsa-")

    @property
    def algorithm_identifier(self) -> bytes:
        """The DER AlgorithmIdentifier naming this scheme."""
        return _ALGORITHM_IDENTIFIERS[self]

    def padding(self) -> padding.AsymmetricPadding:
        """The RSA padding (only for RSA schemes)."""
        if self is SignatureScheme.RSA_PSS_SHA384:
            # RFC 4055 section 3.1 / CA/B Forum BR 7.1.3.2: MGF1 with the same hash,
            # salt as long as the digest.
            return padding.PSS(padding.MGF1(hashes.SHA384()), 48)
        if self.is_rsa:
            return padding.PKCS1v15()
        raise ValueError(f"{self.value} is not an RSA scheme")


def _hash_id(dotted: str) -> bytes:
    # RFC 4055 section 2.1: implementations must accept absent or NULL
    # parameters; NULL matches what OpenSSL and cryptography write.
    return der.seq(der.oid(dotted), der.null())


_ALGORITHM_IDENTIFIERS = {
    SignatureScheme.ECDSA_SHA256: der.seq(der.oid("1.2.840.10045.4.3.2")),
    SignatureScheme.ECDSA_SHA384: der.seq(der.oid("1.2.840.10045.4.3.3")),
    SignatureScheme.RSA_PKCS1_SHA256: der.seq(der.oid("1.2.840.113549.1.1.11"), der.null()),
    SignatureScheme.RSA_PKCS1_SHA384: der.seq(der.oid("1.2.840.113549.1.1.12"), der.null()),
    SignatureScheme.RSA_PSS_SHA384: der.seq(
        der.oid("1.2.840.113549.1.1.10"),
        der.seq(
            der.explicit(0, _hash_id(_SHA384)),
            der.explicit(1, der.seq(der.oid(_MGF1), _hash_id(_SHA384))),
            der.explicit(2, der.integer(48)),
        ),
    ),
    SignatureScheme.ED25519: der.seq(der.oid("1.3.101.112")),
}


def parse_scheme(text: str) -> SignatureScheme:
    """The scheme named ``text`` (e.g. "rsa-pss-sha384"); ValueError listing the choices."""
    try:
        return SignatureScheme(text)
    except ValueError:
        choices = ", ".join(s.value for s in SignatureScheme)
        raise ValueError(f"unknown signature scheme {text!r} (choose one of {choices})") from None


def default_scheme(public_key: PublicKey) -> SignatureScheme:
    """The scheme of ``trustchain.ct.signer``'s conventions for this key."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, ec.SECP256R1):
            return SignatureScheme.ECDSA_SHA256
        if isinstance(public_key.curve, ec.SECP384R1):
            return SignatureScheme.ECDSA_SHA384
        raise ValueError(f"ECDSA curve {public_key.curve.name} is not used by the CA")
    if isinstance(public_key, rsa.RSAPublicKey):
        return SignatureScheme.RSA_PKCS1_SHA256
    return SignatureScheme.ED25519


def check_scheme(public_key: PublicKey, scheme: SignatureScheme) -> None:
    """Raise ValueError unless ``scheme`` can be used with ``public_key``."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if scheme is not default_scheme(public_key):
            raise ValueError(
                f"a {public_key.curve.name} key signs with "
                f"{default_scheme(public_key).value}, not {scheme.value}"
            )
    elif isinstance(public_key, rsa.RSAPublicKey):
        if not scheme.is_rsa:
            raise ValueError(f"an RSA key cannot sign with {scheme.value}")
    elif scheme is not SignatureScheme.ED25519:
        raise ValueError(f"an Ed25519 key cannot sign with {scheme.value}")


@runtime_checkable
class CASigner(Signer, Protocol):
    """A ``Signer`` that also states its scheme (needed for RSA keys)."""

    @property
    def scheme(self) -> SignatureScheme:
        """The scheme every signature of this signer uses."""
        ...


def scheme_of(signer: Signer) -> SignatureScheme:
    """The scheme ``signer``'s signatures use."""
    # What isinstance(signer, CASigner) checks, without a runtime Protocol check
    # (slow, and asked at every final certificate).
    scheme = getattr(signer, "scheme", None)
    if isinstance(scheme, SignatureScheme):
        return scheme
    return default_scheme(signer.public_key())


def verify(
    public_key: PublicKey, scheme: SignatureScheme, signature: bytes, message: bytes
) -> bool:
    """Check one signature; never raises for bad input."""
    try:
        check_scheme(public_key, scheme)
        algorithm = scheme.hash
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            assert algorithm is not None
            public_key.verify(signature, message, ec.ECDSA(algorithm))
        elif isinstance(public_key, rsa.RSAPublicKey):
            assert algorithm is not None
            public_key.verify(signature, message, scheme.padding(), algorithm)
        else:
            public_key.verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class SoftwareCASigner:
    """A ``CASigner`` over a key held in this process (tests, benchmarks, tools).

    Production CA keys live in an HSM (``trustchain.node.ca.hsm``); this class
    exists so that the same code paths run without one.
    """

    def __init__(self, key: PrivateKey, scheme: SignatureScheme | None = None) -> None:
        public = key.public_key()
        self._scheme = scheme or default_scheme(public)
        check_scheme(public, self._scheme)
        self._key = key
        self._public = public

    @property
    def scheme(self) -> SignatureScheme:
        return self._scheme

    def public_key(self) -> PublicKey:
        return self._public

    async def sign(self, message: bytes) -> bytes:
        return self.sign_sync(message)

    def sign_sync(self, message: bytes) -> bytes:
        key = self._key
        algorithm = self._scheme.hash
        if isinstance(key, ec.EllipticCurvePrivateKey):
            assert algorithm is not None
            return key.sign(message, ec.ECDSA(algorithm))
        if isinstance(key, rsa.RSAPrivateKey):
            assert algorithm is not None
            return key.sign(message, self._scheme.padding(), algorithm)
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key.sign(message)
