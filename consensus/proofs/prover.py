"""The requester's side: assembling and signing a bundle.

The long parts (plotting, the VDF) are made by the caller, which shows their
progress; `make_space_proof` and `make_time_proof` live beside their
verifiers.  This module binds them to one request: it derives the digest,
does the work, and signs.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustchain.consensus.proofs.bundle import (
    BUNDLE_VERSION,
    ProofBundle,
    SpaceProof,
    StakeProof,
    TimeProof,
    WorkProof,
    signed_message,
)
from trustchain.consensus.proofs.hashing import account_id, request_digest
from trustchain.consensus.proofs.ledger import raw_public_key
from trustchain.consensus.proofs.work import make_work


def sign_bundle(
    key: Ed25519PrivateKey,
    chain_id: str,
    *,
    epoch: int,
    request: bytes,
    work: WorkProof,
    space: SpaceProof,
    time: TimeProof,
) -> ProofBundle:
    """Sign the proofs for `request` with the account key (no work search)."""
    account = account_id(raw_public_key(key))
    digest = request_digest(chain_id, account, epoch, request)
    signature = key.sign(signed_message(digest, work, space, time))
    return ProofBundle(
        version=BUNDLE_VERSION,
        account=account,
        epoch=epoch,
        request=request,
        work=work,
        space=space,
        time=time,
        stake=StakeProof(signature),
    )


def make_bundle(
    key: Ed25519PrivateKey,
    chain_id: str,
    *,
    epoch: int,
    request: bytes,
    space: SpaceProof,
    time: TimeProof,
    work_bits: int,
    work_progress: Callable[[int], None] | None = None,
) -> ProofBundle:
    """Do the request's work and sign the bundle; the epoch's proofs are given."""
    account = account_id(raw_public_key(key))
    work = make_work(
        request_digest(chain_id, account, epoch, request), work_bits, progress=work_progress
    )
    return sign_bundle(
        key, chain_id, epoch=epoch, request=request, work=work, space=space, time=time
    )
