"""The validator set, quorums, and certificate verification.

Quorum: signers holding more than 2/3 of the total voting power (DESIGN.md
section 4), so any two quorums share more than 1/3 of the power, hence at
least one honest validator while less than 1/3 is Byzantine.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trustchain.consensus.messages import (
    Block,
    QuorumCert,
    TimeoutCert,
    proposal_digest,
    timeout_digest,
    vote_digest,
)


class InvalidMessage(Exception):
    """A message failed verification; the reason names the check."""


@dataclass(frozen=True)
class Member:
    name: str
    public_key: bytes
    """Raw Ed25519 consensus key."""
    power: int


class ValidatorSet:
    """Who votes and with what weight; verifies signatures with a bounded cache."""

    CACHE_SIZE = 65536

    def __init__(self, chain_id: str, members: Iterable[Member]) -> None:
        self.chain_id = chain_id
        self.members = {m.name: m for m in members}
        if not self.members:
            raise ValueError("empty validator set")
        self.order = sorted(self.members)
        self.total_power = sum(m.power for m in self.members.values())
        self._keys = {
            name: Ed25519PublicKey.from_public_bytes(m.public_key)
            for name, m in self.members.items()
        }
        # (signer, digest, signature) -> True for signatures that verified.
        self._verified: OrderedDict[tuple[str, bytes, bytes], bool] = OrderedDict()

    def leader(self, round: int) -> str:
        """Round-robin over the validators sorted by name."""
        return self.order[round % len(self.order)]

    def is_quorum(self, power: int) -> bool:
        return 3 * power > 2 * self.total_power

    def exceeds_one_third(self, power: int) -> bool:
        return 3 * power > self.total_power

    def power_of(self, names: Iterable[str]) -> int:
        return sum(self.members[n].power for n in set(names) if n in self.members)

    def verify(self, signer: str, digest: bytes, signature: bytes) -> bool:
        key = self._keys.get(signer)
        if key is None:
            return False
        cache_key = (signer, digest, signature)
        if cache_key in self._verified:
            self._verified.move_to_end(cache_key)
            return True
        try:
            key.verify(signature, digest)
        except InvalidSignature:
            return False
        self._verified[cache_key] = True
        if len(self._verified) > self.CACHE_SIZE:
            self._verified.popitem(last=False)
        return True

    # --- certificates -------------------------------------------------------------

    def check_qc(
        self,
        qc: QuorumCert,
        genesis_id: bytes,
        *,
        genesis_height: int = 0,
        genesis_round: int = 0,
        count_repeats: bool = False,
    ) -> None:
        """Raise InvalidMessage unless `qc` is the genesis QC or carries a valid quorum.

        The genesis is the root of what the core holds: height 0, a new epoch's anchor,
        or the block a rejoining node starts from (its own round and height).

        `count_repeats` exists only for the weak-quorum mutant of `trustchain sim`.
        """
        genesis = (
            qc.block_id == genesis_id and qc.round == genesis_round and qc.height == genesis_height
        )
        if genesis and not qc.votes:
            return
        if qc.round <= 0 or qc.height <= 0:
            raise InvalidMessage(f"qc: round {qc.round} / height {qc.height} out of range")
        names = [name for name, _ in qc.votes]
        if len(set(names)) != len(names) and not count_repeats:
            raise InvalidMessage("qc: a validator signed twice")
        for name in names:
            if name not in self.members:
                raise InvalidMessage(f"qc: {name!r} is not a validator")
        digest = vote_digest(self.chain_id, qc.block_id, qc.round, qc.height)
        for name, signature in qc.votes:
            if not self.verify(name, digest, signature):
                raise InvalidMessage(f"qc: bad signature from {name}")
        power = sum(self.members[n].power for n in names) if count_repeats else self.power_of(names)
        if not self.is_quorum(power):
            raise InvalidMessage(
                f"qc: power {self.power_of(names)} of {self.total_power} is not more than 2/3"
            )

    def check_tc(self, tc: TimeoutCert) -> None:
        names = [name for name, _, _ in tc.timeouts]
        if len(set(names)) != len(names):
            raise InvalidMessage("tc: a validator signed twice")
        for name, high_qc_round, signature in tc.timeouts:
            if high_qc_round >= tc.round or high_qc_round < 0:
                raise InvalidMessage(
                    f"tc: {name}'s high qc round {high_qc_round} is not below {tc.round}"
                )
            if not self.verify(
                name, timeout_digest(self.chain_id, tc.round, high_qc_round), signature
            ):
                raise InvalidMessage(f"tc: bad signature from {name}")
        if not self.is_quorum(self.power_of(names)):
            raise InvalidMessage(
                f"tc: power {self.power_of(names)} of {self.total_power} is not more than 2/3"
            )

    def check_proposal_signature(self, block: Block, signature: bytes) -> None:
        proposer = block.proposer
        digest = proposal_digest(self.chain_id, block.id, block.round, block.height)
        if not self.verify(proposer, digest, signature):
            raise InvalidMessage(f"proposal: bad signature from {proposer}")
