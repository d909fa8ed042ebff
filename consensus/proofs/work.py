"""PoWork: hashcash over SHA-256, bound to the request digest.

work hash = SHA-256(len||"trustchain/work/v1" || len||digest || nonce), nonce 8
bytes.  The proof holds if the hash has at least `policy.work_bits` leading
zero bits.  Binding to the digest (which covers the chain, the account, the
epoch and the certificate request) means the work was spent on this request
and no other; the domain tag means no other hash in the system can stand in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from trustchain.consensus.proofs.bundle import WORK_NONCE_BYTES, WorkProof
from trustchain.consensus.proofs.errors import ProofRejected, ProverError
from trustchain.consensus.proofs.hashing import TAG_WORK, tagged_prefix

_MAX_NONCE = 2 ** (8 * WORK_NONCE_BYTES)


def work_hash(digest: bytes, nonce: bytes) -> bytes:
    return hashlib.sha256(tagged_prefix(TAG_WORK, digest) + nonce).digest()


def leading_zero_bits(value: bytes) -> int:
    return 8 * len(value) - int.from_bytes(value, "big").bit_length()


def check_work(digest: bytes, proof: WorkProof, bits: int) -> None:
    """Raise ProofRejected("work", ...) unless the nonce meets the difficulty."""
    found = leading_zero_bits(work_hash(digest, proof.nonce))
    if found < bits:
        raise ProofRejected(
            "work", f"hash has {found} leading zero bits, the policy requires {bits}"
        )


def make_work(
    digest: bytes,
    bits: int,
    *,
    progress: Callable[[int], None] | None = None,
    report_every: int = 1 << 16,
) -> WorkProof:
    """Search nonces 0, 1, 2, ... until one meets `bits`; about 2**bits hashes.

    `progress(tried)` is called every `report_every` nonces so a client can
    show how far it got (the expected total is 2**bits).
    """
    base = hashlib.sha256(tagged_prefix(TAG_WORK, digest))
    # Compare the top 64 bits only: work_bits is at most 40 (policy bound).
    limit = 1 << (64 - bits) if bits < 64 else 1
    for counter in range(_MAX_NONCE):
        nonce = counter.to_bytes(WORK_NONCE_BYTES, "big")
        h = base.copy()
        h.update(nonce)
        if int.from_bytes(h.digest()[:8], "big") < limit:
            return WorkProof(nonce)
        if progress is not None and counter % report_every == report_every - 1:
            progress(counter + 1)
    raise ProverError(f"no nonce meets {bits} bits of work")  # pragma: no cover
