"""The proof bundle a requester attaches to a certificate request.

Messages only; `codec` turns them into bytes and back, validating every field.

What is signed: the account signs ``request digest || body hash`` where the body
is the work, space and time proofs.  The digest already covers the chain, the
account, the epoch and what the certificate will say (`hashing.request_digest`);
signing the body as well makes a bundle non-malleable: nobody but the account
holder can swap a proof inside it, so a relayer that flips a bit anywhere is
caught by the signature.
"""

from __future__ import annotations

from dataclasses import dataclass

from trustchain.consensus.proofs.hashing import (
    TAG_BUNDLE_BODY,
    TAG_BUNDLE_SIGNATURE,
    request_digest,
    tagged_hash,
    tagged_prefix,
    u64,
)

BUNDLE_VERSION = 1
"""The only bundle version this code reads and writes."""

VDF_FORM_BYTES = 100
"""A compressed class-group element for a 1024-bit discriminant (chiavdf BQFC)."""
WORK_NONCE_BYTES = 8
PLOT_SALT_BYTES = 32


@dataclass(frozen=True)
class WorkProof:
    """PoWork: hashcash bound to the request digest."""

    nonce: bytes
    """8 bytes such that SHA-256(work tag, digest, nonce) has `work_bits` leading zero bits."""


@dataclass(frozen=True)
class SpaceProof:
    """PoSpace: a chiapos proof from a plot bound to the account key."""

    salt: bytes
    """32 bytes; plot id = H(plot tag, account public key, salt)."""
    plot_id: bytes
    """The chiapos plot id the proof was made with (checked against the salt)."""
    k: int
    """The plot size; at least the policy's min_k."""
    index: int
    """Which space challenge of the epoch the plot answered; below the policy limit."""
    proof: bytes
    """The chiapos full proof: 64 k-bit x values, 8 * k bytes."""


@dataclass(frozen=True)
class TimeProof:
    """PoTime: a Wesolowski VDF proof in the account's class group for the epoch."""

    iterations: int
    """Number of squarings; must equal the policy's vdf_iterations."""
    output: bytes
    """y = x ** (2 ** iterations), compressed (100 bytes)."""
    proof: bytes
    """The Wesolowski proof pi, compressed (100 bytes)."""


@dataclass(frozen=True)
class StakeProof:
    """PoStake: the account's Ed25519 signature."""

    signature: bytes
    """Ed25519 over `signed_message(...)` (64 bytes)."""


@dataclass(frozen=True)
class ProofBundle:
    """Everything a validator checks before voting for a certificate request."""

    version: int
    """`BUNDLE_VERSION`."""
    account: bytes
    """The requesting account's 20-byte id."""
    epoch: int
    """The epoch whose beacon the space and time proofs answer."""
    request: bytes
    """SHA-256 of what the certificate will say (computed by the CA layer)."""
    work: WorkProof
    space: SpaceProof
    time: TimeProof
    stake: StakeProof

    def digest(self, chain_id: str) -> bytes:
        """The request digest: who asked, for what, on which chain, in which epoch."""
        return request_digest(chain_id, self.account, self.epoch, self.request)


def body_hash(work: WorkProof, space: SpaceProof, time: TimeProof) -> bytes:
    """Hash of the three proofs the stake signature covers besides the digest."""
    return tagged_hash(
        TAG_BUNDLE_BODY,
        work.nonce,
        space.salt,
        space.plot_id,
        u64(space.k),
        u64(space.index),
        space.proof,
        u64(time.iterations),
        time.output,
        time.proof,
    )


def signed_message(digest: bytes, work: WorkProof, space: SpaceProof, time: TimeProof) -> bytes:
    """The exact bytes the account key signs for a bundle."""
    return tagged_prefix(TAG_BUNDLE_SIGNATURE, digest, body_hash(work, space, time))
