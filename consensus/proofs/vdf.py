"""PoTime: Chia's class-group VDF (chiavdf) with a Wesolowski proof.

The account's group for an epoch has the 1024-bit discriminant
D = create_discriminant(H(vdf tag, epoch beacon, account id)), a negative prime
found by chiavdf's hash-to-prime; nobody knows D before the beacon is
committed, so nobody can start squaring early, and no precomputation on one
group helps with another account's.  The input is x = the form (2, 1) of that
group (chiavdf's "generator", serialized as the one byte 0x08 and zeros): it is
fixed by the verifier, never taken from the bundle, because a requester who
chose x could pick the identity and skip the work.  Since D is derived from
the beacon and the account, so is x.

The requester computes y = x ** (2 ** T) for T = policy.vdf_iterations
sequential squarings and a Wesolowski proof pi; verification costs two small
exponentiations (chiavdf.verify_wesolowski), plus the hash-to-prime for D.
"""

from __future__ import annotations

import chiavdf

from trustchain.consensus.proofs.bundle import VDF_FORM_BYTES, TimeProof
from trustchain.consensus.proofs.errors import ProofRejected, ProverError
from trustchain.consensus.proofs.hashing import vdf_challenge
from trustchain.consensus.proofs.policy import Policy

DISCRIMINANT_BITS = 1024
INPUT_FORM = bytes([0x08]) + bytes(VDF_FORM_BYTES - 1)
"""BQFC serialization of the form (2, 1), flagged as the generator."""


def discriminant(beacon: bytes, account: bytes) -> str:
    """The account's discriminant for the epoch, as chiavdf's decimal string."""
    return str(chiavdf.create_discriminant(vdf_challenge(beacon, account), DISCRIMINANT_BITS))


def check_time_claims(proof: TimeProof, policy: Policy) -> None:
    """The cheap check: the iteration count is the policy's."""
    if proof.iterations != policy.vdf_iterations:
        raise ProofRejected(
            "time",
            f"wrong iteration count {proof.iterations}; the policy requires "
            f"{policy.vdf_iterations}",
        )


def verify_time(
    proof: TimeProof, beacon: bytes, account: bytes, *, disc: str | None = None
) -> None:
    """Check the Wesolowski proof in the account's group for the epoch.

    `disc` is the account's discriminant if already known (see
    `cache.EpochCache.discriminant`); it is computed otherwise.
    """
    if disc is None:
        disc = discriminant(beacon, account)
    try:
        ok = chiavdf.verify_wesolowski(
            disc, INPUT_FORM, proof.output, proof.proof, proof.iterations
        )
    except Exception:
        # chiavdf raises RuntimeError for bytes that are not a compressed form
        # of this group ("Deserializing compressed form failed").
        raise ProofRejected(
            "time", "output or proof is not a valid element of the account's class group"
        ) from None
    if ok is not True:
        raise ProofRejected("time", "VDF proof does not verify for this beacon and account")


def make_time_proof(
    beacon: bytes, account: bytes, iterations: int, *, keep_running_file: str = ""
) -> TimeProof:
    """Compute the VDF and its proof: `iterations` sequential squarings (CPU only).

    chiavdf keeps going only while `keep_running_file` exists (when one is
    given); deleting it from another thread cancels the computation, which then
    raises ProverError.
    """
    result = chiavdf.prove(
        vdf_challenge(beacon, account), INPUT_FORM, DISCRIMINANT_BITS, iterations, keep_running_file
    )
    if len(result) != 2 * VDF_FORM_BYTES:
        raise ProverError("the VDF computation was cancelled")
    return TimeProof(
        iterations=iterations, output=result[:VDF_FORM_BYTES], proof=result[VDF_FORM_BYTES:]
    )
