"""A checkpoint signature's key id is the static-ct-api hash over the log's LogID."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trustchain.ct.checkpoint import RFC6962NoteVerifier, rfc6962_key_id


def _spec_key_id(name: str, key: ec.EllipticCurvePublicKey) -> int:
    """static-ct-api / C2SP signed-note, written out: the first four bytes, big-endian, of
    SHA-256(name || 0x0A || 0x05 || LogID), where LogID = SHA-256(DER SubjectPublicKeyInfo)."""
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(name.encode() + b"\n\x05" + hashlib.sha256(spki).digest()).digest()
    return int.from_bytes(digest[:4], "big")


def test_rfc6962_key_id_is_the_static_ct_api_hash() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    for name in ("log.example/a", "log.example/b", "log.example/a"):
        want = _spec_key_id(name, key)
        assert rfc6962_key_id(name, key) == want
        assert RFC6962NoteVerifier(name, key).key_id == want
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert rfc6962_key_id("log.example/a", other) != rfc6962_key_id("log.example/a", key)
