"""PoSpace: Chia's proof of space (chiapos), bound to the account and the epoch.

* Plot id = H(plot tag, account public key, salt).  The bundle carries the salt
  and the plot id; the verifier recomputes the id, so a proof from someone
  else's plot (whose id is bound to another key) can never pass.
* Challenge i = H(space tag, epoch beacon, account id, i) for an index i below
  the policy limit: nobody can answer before the beacon is committed.
* k at least the policy minimum; the proof is 64 k-bit values (8k bytes).
* The proof is checked by chiapos's Verifier.validate_proof, which recomputes
  the seven tables' matches from the plot id and returns the proof's quality
  string only if every match holds (an invalid proof has no quality).

Plot access is passed in (`PlotReader`, satisfied by chiapos.DiskProver), so
this module does no I/O itself.
"""

from __future__ import annotations

from typing import Protocol

import chiapos

from trustchain.consensus.proofs.bundle import PLOT_SALT_BYTES, SpaceProof
from trustchain.consensus.proofs.errors import ProofRejected, ProverError
from trustchain.consensus.proofs.hashing import plot_id, space_challenge
from trustchain.consensus.proofs.policy import CHIAPOS_MAX_K, Policy

PLOT_MEMO_MAGIC = b"trustchain-plot-v1:"
"""A TrustChain plot's chiapos memo is this magic followed by the 32-byte salt."""

QUALITY_BYTES = 32


class PlotReader(Protocol):
    """The part of chiapos.DiskProver the prover uses."""

    def get_id(self) -> bytes: ...
    def get_size(self) -> int: ...
    def get_memo(self) -> bytes: ...
    def get_qualities_for_challenge(self, challenge: bytes) -> list[bytes]: ...
    def get_full_proof(self, challenge: bytes, index: int) -> bytes: ...


def plot_memo(salt: bytes) -> bytes:
    return PLOT_MEMO_MAGIC + salt


def salt_from_memo(memo: bytes) -> bytes | None:
    """The salt stored in a TrustChain plot's memo, or None for a foreign plot."""
    if memo.startswith(PLOT_MEMO_MAGIC) and len(memo) == len(PLOT_MEMO_MAGIC) + PLOT_SALT_BYTES:
        return memo[len(PLOT_MEMO_MAGIC) :]
    return None


def check_space_claims(proof: SpaceProof, public_key: bytes, policy: Policy) -> None:
    """The cheap checks: size, index range, proof length, plot id binding."""
    if proof.k < policy.min_k:
        raise ProofRejected(
            "space", f"plot size k={proof.k} is below the policy minimum {policy.min_k}"
        )
    if proof.k > CHIAPOS_MAX_K:
        raise ProofRejected("space", f"plot size k={proof.k} is above chiapos's maximum 50")
    if proof.index >= policy.space_index_limit:
        raise ProofRejected(
            "space",
            f"challenge index {proof.index} is not below the policy limit "
            f"{policy.space_index_limit}",
        )
    if len(proof.proof) != 8 * proof.k:
        raise ProofRejected(
            "space",
            f"proof is {len(proof.proof)} bytes; a k={proof.k} proof is {8 * proof.k} bytes",
        )
    if plot_id(public_key, proof.salt) != proof.plot_id:
        raise ProofRejected("space", "plot id not bound to account")


_verifier: chiapos.Verifier | None = None


def verify_space(proof: SpaceProof, beacon: bytes, account: bytes) -> bytes:
    """Check the chiapos proof against the account's challenge; return its quality.

    Call `check_space_claims` first: it guarantees the lengths chiapos relies on.
    """
    global _verifier
    if _verifier is None:
        _verifier = chiapos.Verifier()
    challenge = space_challenge(beacon, account, proof.index)
    try:
        quality = _verifier.validate_proof(proof.plot_id, proof.k, challenge, proof.proof)
    except Exception:  # chiapos raises RuntimeError on inputs it cannot parse
        quality = None
    if not isinstance(quality, bytes) or len(quality) != QUALITY_BYTES:
        raise ProofRejected(
            "space", f"proof does not verify for this plot, k={proof.k} and challenge {proof.index}"
        )
    return quality


def make_space_proof(
    plot: PlotReader, public_key: bytes, account: bytes, beacon: bytes, policy: Policy
) -> SpaceProof:
    """Answer the epoch's first space challenge the plot can answer."""
    salt = salt_from_memo(plot.get_memo())
    if salt is None:
        raise ProverError("the plot was not made by `trustchain proof plot` (no TrustChain memo)")
    if plot_id(public_key, salt) != plot.get_id():
        raise ProverError("the plot was made for another account; plot one for this account")
    k = plot.get_size()
    if k < policy.min_k:
        raise ProverError(f"the plot has k={k}; the policy requires at least k={policy.min_k}")
    for index in range(policy.space_index_limit):
        challenge = space_challenge(beacon, account, index)
        if plot.get_qualities_for_challenge(challenge):
            return SpaceProof(
                salt=salt,
                plot_id=plot.get_id(),
                k=k,
                index=index,
                proof=plot.get_full_proof(challenge, 0),
            )
    raise ProverError(
        f"the plot answers none of this epoch's {policy.space_index_limit} challenges "
        "(this happens with probability about e**-limit); use another plot or wait "
        "for the next epoch"
    )
