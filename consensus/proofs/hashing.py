"""Domain-separated SHA-256 and the values derived from it.

Every hash in the proof layer is ``SHA-256(tag || part_1 || ... )`` where the
tag and each part are prefixed with their 4-byte big-endian length.  Distinct
tags keep one construction's hash from ever being valid as another's (a work
hash can never double as a challenge); the length prefixes make the encoding
injective, so no two different part lists hash the same input.
"""

from __future__ import annotations

import hashlib

ACCOUNT_ID_BYTES = 20
"""An account id is the first 20 bytes of a tagged hash of its public key."""
DIGEST_BYTES = 32
PUBLIC_KEY_BYTES = 32
"""Raw Ed25519 public key length (RFC 8032 section 5.1.5)."""
SIGNATURE_BYTES = 64
"""Ed25519 signature length (RFC 8032 section 5.1.6)."""

TAG_ACCOUNT_ID = b"trustchain/account-id/v1"
TAG_PLOT_ID = b"trustchain/plot-id/v1"
TAG_SPACE_CHALLENGE = b"trustchain/space-challenge/v1"
TAG_VDF_CHALLENGE = b"trustchain/vdf-challenge/v1"
TAG_WORK = b"trustchain/work/v1"
TAG_REQUEST = b"trustchain/request/v1"
TAG_BUNDLE_SIGNATURE = b"trustchain/bundle-signature/v1"
TAG_BUNDLE_BODY = b"trustchain/bundle-body/v1"
TAG_CACHE_KEY = b"trustchain/epoch-cache/v1"
TAG_LEDGER_OP = b"trustchain/ledger-op/v1"
TAG_LEDGER_STATE = b"trustchain/ledger-state/v1"


def _frame(part: bytes) -> bytes:
    return len(part).to_bytes(4, "big") + part


def tagged_prefix(tag: bytes, *parts: bytes) -> bytes:
    """The bytes that `tagged_hash` hashes; hashcash extends this with its nonce."""
    return _frame(tag) + b"".join(_frame(p) for p in parts)


def tagged_hash(tag: bytes, *parts: bytes) -> bytes:
    return hashlib.sha256(tagged_prefix(tag, *parts)).digest()


def u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def account_id(public_key: bytes) -> bytes:
    """The 20-byte id of the account whose Ed25519 key is `public_key`."""
    return tagged_hash(TAG_ACCOUNT_ID, public_key)[:ACCOUNT_ID_BYTES]


def plot_id(public_key: bytes, salt: bytes) -> bytes:
    """The chiapos plot id of a plot made for this account.

    Binding the id to the account key means a plot (and every proof from it)
    belongs to one account; the salt lets an account hold several plots.
    """
    return tagged_hash(TAG_PLOT_ID, public_key, salt)


def space_challenge(beacon: bytes, account: bytes, index: int) -> bytes:
    """The chiapos challenge number `index` for `account` in the beacon's epoch.

    A plot of size k answers a given challenge with probability about 1 - 1/e,
    so the requester may use any index below the policy limit
    (DESIGN.md section 5); the verifier only checks the range.
    """
    return tagged_hash(TAG_SPACE_CHALLENGE, beacon, account, u64(index))


def vdf_challenge(beacon: bytes, account: bytes) -> bytes:
    """The seed of the account's VDF discriminant in the beacon's epoch."""
    return tagged_hash(TAG_VDF_CHALLENGE, beacon, account)


def request_digest(chain_id: str, account: bytes, epoch: int, request: bytes) -> bytes:
    """What a bundle proves things about: this request, by this account, now.

    `request` is the SHA-256 of everything the certificate will say (the CA
    layer computes it from the CSR and the requested fields); `account` is who
    asked; `chain_id` keeps a bundle from being replayed on another cluster and
    `epoch` bounds how long the digest can be replayed at all.
    """
    return tagged_hash(TAG_REQUEST, chain_id.encode(), account, u64(epoch), request)
