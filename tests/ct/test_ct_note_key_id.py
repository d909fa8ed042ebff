"""A checkpoint signature's key id is the static-ct-api hash over the log's LogID."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from trustchain.ct import note
from trustchain.ct.checkpoint import RFC6962NoteVerifier, rfc6962_key_id
from trustchain.ct.signer import log_id


def test_rfc6962_key_id_is_the_static_ct_api_hash() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    for name in ("log.example/a", "log.example/b", "log.example/a"):
        want = note.key_id(name, bytes([note.ALG_RFC6962]) + log_id(key))
        assert rfc6962_key_id(name, key) == want
        assert RFC6962NoteVerifier(name, key).key_id == want
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert rfc6962_key_id("log.example/a", other) != rfc6962_key_id("log.example/a", key)
