"""Consensus messages: blocks, votes, certificates, timeouts (DESIGN.md section 4).

Every message is a frozen dataclass.  What a signature covers is defined here
once, as a ``*_digest`` function with a domain-separation prefix and the chain
id, so a signature made for one purpose or one cluster is useless elsewhere.
The wire codec (strict msgpack) is `trustchain.consensus.codec`.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import msgpack

HASH_BYTES = 32


def _h(*parts: object) -> bytes:
    return hashlib.sha256(msgpack.packb(list(parts), use_bin_type=True)).digest()


@dataclass(frozen=True)
class QuorumCert:
    """Votes from more than 2/3 of the voting power for one block in one round."""

    block_id: bytes
    """The certified block."""
    round: int
    """The certified block's round (signed by every vote)."""
    height: int
    """The certified block's height (0 for genesis; signed by every vote)."""
    votes: tuple[tuple[str, bytes], ...]
    """(validator name, Ed25519 signature over vote_digest) pairs."""

    def digest(self) -> bytes:
        return _h("qc", self.block_id, self.round, self.height, [list(v) for v in self.votes])


@dataclass(frozen=True)
class TimeoutCert:
    """Timeouts from more than 2/3 of the voting power for one round."""

    round: int
    """The round that timed out."""
    timeouts: tuple[tuple[str, int, bytes], ...]
    """(validator, round of that validator's highest QC, signature over timeout_digest)."""

    @property
    def max_high_qc_round(self) -> int:
        return max(high for _, high, _ in self.timeouts)

    def digest(self) -> bytes:
        return _h("tc", self.round, [list(t) for t in self.timeouts])


@dataclass(frozen=True)
class Block:
    """A batch of operations proposed in one round, extending the block its QC certifies."""

    round: int
    """The round it was proposed in; strictly above its parent's."""
    height: int
    """Parent's height + 1."""
    parent_id: bytes
    """Id of the parent block (equals qc.block_id)."""
    qc: QuorumCert
    """Certificate of the parent: the proposer's highest QC."""
    timestamp: int
    """Proposer's clock in milliseconds; above the parent's, within the allowed skew of ours."""
    state: bytes
    """The application's state commitment after executing the parent (e.g. CT log size and root)."""
    payload: tuple[bytes, ...]
    """The operations, in order."""
    proposer: str
    """Leader of `round`."""
    id: bytes = field(default=b"", compare=False)
    """Hash of every other field; filled in by `make_block`."""


def block_id(b: Block) -> bytes:
    return _h(
        "block", b.round, b.height, b.parent_id, b.qc.block_id, b.qc.round,
        b.timestamp, b.state, list(b.payload), b.proposer,
    )  # fmt: skip


def make_block(
    *, round: int, height: int, qc: QuorumCert, timestamp: int, state: bytes,
    payload: tuple[bytes, ...], proposer: str,
) -> Block:  # fmt: skip
    b = Block(round, height, qc.block_id, qc, timestamp, state, payload, proposer)
    return Block(round, height, qc.block_id, qc, timestamp, state, payload, proposer, block_id(b))


def genesis_block(chain_id: str, state: bytes, height: int = 0, timestamp: int = 0) -> Block:
    """Round 0; certified by an empty QC that every node accepts for it alone.

    Height 0 for a new chain.  A cluster restored from an archive starts a new
    epoch (a new `chain_id`) whose genesis is the anchor: the last archived
    block's height, timestamp and state.  The anchor has no parent anyone
    holds, so walks down the chain stop there.
    """
    root = _h("genesis", chain_id)
    qc = QuorumCert(root, 0, height, ())
    parent = root if height == 0 else _h("before-anchor", chain_id)
    return Block(0, height, parent, qc, timestamp, state, (), "", root)


@dataclass(frozen=True)
class Proposal:
    """A leader's block for its round, signed, with a TC when the previous round timed out."""

    block: Block
    tc: TimeoutCert | None
    """Present when block.qc.round + 1 != block.round."""
    signature: bytes
    """Proposer's signature over proposal_digest(block.id, block.round, block.height)."""


@dataclass(frozen=True)
class Vote:
    """A validator's vote for a block; sent to the next round's leader."""

    block_id: bytes
    round: int
    height: int
    voter: str
    signature: bytes


@dataclass(frozen=True)
class Timeout:
    """A validator gave up on a round; broadcast to everyone."""

    round: int
    high_qc: QuorumCert
    """The sender's highest QC (its round is signed)."""
    voter: str
    signature: bytes
    tc: TimeoutCert | None = None
    """The TC that took the sender into `round`, if any, so laggards can follow."""


@dataclass(frozen=True)
class SyncRequest:
    """Ask a peer for committed or certified blocks above `from_height` up to `target`."""

    from_height: int
    target: bytes
    """Id of the block we are missing (its descendants' QCs reference it)."""


@dataclass(frozen=True)
class SyncResponse:
    """Blocks in height order, each one's parent being the previous (or known to the asker)."""

    blocks: tuple[Block, ...]
    commit_qc: QuorumCert | None
    """A QC certifying the last block, so the asker can verify and use the tip."""


@dataclass(frozen=True)
class Operation:
    """A client operation, gossiped to every validator's mempool."""

    submitter: str
    """Who is accountable for it (an account id or a validator name); bounds per submitter."""
    data: bytes


Message = Proposal | Vote | Timeout | SyncRequest | SyncResponse | Operation


def vote_digest(chain_id: str, block_id: bytes, round: int, height: int) -> bytes:
    return _h("trustchain-vote-v1", chain_id, block_id, round, height)


def timeout_digest(chain_id: str, round: int, high_qc_round: int) -> bytes:
    return _h("trustchain-timeout-v1", chain_id, round, high_qc_round)


def proposal_digest(chain_id: str, block_id: bytes, round: int, height: int) -> bytes:
    # The round and height are signed, not only inside the block id: evidence of two
    # proposals in one round carries ids, so the signatures must prove the round.
    return _h("trustchain-proposal-v2", chain_id, block_id, round, height)


@functools.lru_cache(maxsize=2048)
def operation_id(data: bytes) -> bytes:
    """SHA-256 of an operation.  Remembered for recent operations: the mempool, the
    proposal and vote checks, execution and commit each ask for it, about 16 times
    per operation and node (a few KiB hashed each time)."""
    return hashlib.sha256(data).digest()
