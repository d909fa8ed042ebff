"""Key facts remembered per key object equal those computed from the key each time."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from trustchain.ct import note
from trustchain.ct.checkpoint import RFC6962NoteVerifier, rfc6962_key_id
from trustchain.ct.signer import (
    PublicKey,
    log_id,
    remembered_log_id,
    remembered_spki,
    spki_der,
)


def _keys() -> list[PublicKey]:
    return [
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        ec.generate_private_key(ec.SECP384R1()).public_key(),
        ed25519.Ed25519PrivateKey.generate().public_key(),
        rsa.generate_private_key(65537, 2048).public_key(),
    ]


def test_remembered_spki_and_log_id_equal_the_computed_ones() -> None:
    keys = _keys()
    for _ in range(2):  # computed, then remembered
        for key in keys:
            assert remembered_spki(key) == spki_der(key)
            assert remembered_log_id(key) == log_id(key) == hashlib.sha256(spki_der(key)).digest()


def test_many_keys_and_new_objects_for_one_key_are_each_answered_for_themselves() -> None:
    # More keys than are remembered, asked about in turn and again: no key ever
    # gets another key's SPKI, whichever entries were dropped meanwhile.
    keys = [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(150)]
    for key in [*keys, *reversed(keys), *keys]:
        assert remembered_spki(key) == spki_der(key)
        assert remembered_log_id(key) == log_id(key)
    # Keys made and dropped one after another may reuse an id: still right.
    for _ in range(200):
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        assert remembered_log_id(key) == log_id(key)
        del key


def test_rfc6962_key_id_is_the_static_ct_api_hash() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    for name in ("log.example/a", "log.example/b", "log.example/a"):
        want = note.key_id(name, bytes([note.ALG_RFC6962]) + log_id(key))
        assert rfc6962_key_id(name, key) == want
        assert RFC6962NoteVerifier(name, key).key_id == want
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert rfc6962_key_id("log.example/a", other) != rfc6962_key_id("log.example/a", key)
