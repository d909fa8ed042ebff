"""The consensus core: a sans-IO 2-chain HotStuff (Jolteon / DiemBFT v4) validator.

Inputs: `start`, `handle(sender, message, now)`, `tick(now)`, `submit(op, now)`.
Every input returns an `Output`.  The core never reads a clock, a socket or
storage while running; `now` is seconds on any monotonic clock shared by the
caller's inputs, and block timestamps are taken from it.

Protocol in brief: round r has leader `validators.leader(r)`.  The leader
proposes a block extending its highest QC; validators that accept it vote to
the leader of r + 1, who aggregates more than 2/3 of the power into a QC and
proposes in r + 1.  A block commits once its child in the very next round is
certified (the 2-chain rule).  A validator that sees no progress before its
round deadline broadcasts a timeout carrying its highest QC; more than 2/3 of
timeouts form a TC that moves everyone to the next round.  Deadlines double
after each round that ended in a TC and reset on progress.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustchain.consensus.mempool import Mempool, MempoolLimits
from trustchain.consensus.messages import (
    Block,
    Message,
    Operation,
    Proposal,
    QuorumCert,
    SyncRequest,
    SyncResponse,
    Timeout,
    TimeoutCert,
    Vote,
    block_id,
    genesis_block,
    make_block,
    operation_id,
    proposal_digest,
    timeout_digest,
    vote_digest,
)
from trustchain.consensus.safety import SafetyRules, SafetyState
from trustchain.consensus.storage import (
    BlockRecord,
    CommitRecord,
    HighQcRecord,
    PersistedState,
    Record,
    SafetyRecord,
    TcRecord,
)
from trustchain.consensus.validators import InvalidMessage, ValidatorSet


class Application(Protocol):
    """What the replicated state machine tells the core.  Must be deterministic."""

    def genesis_state(self) -> bytes:
        """State commitment before any block."""

    def validate(self, op: bytes) -> str | None:
        """None if `op` may go into a block, else the reason it may not."""

    def execute(self, state: bytes, ops: tuple[bytes, ...]) -> bytes:
        """State commitment after applying `ops` to the state with commitment `state`."""


@dataclass(frozen=True)
class Config:
    round_timeout: float = 1.0
    """Seconds before a round with no progress times out (doubles per TC, max 64x)."""
    max_batch: int = 1000
    """Operations per block."""
    min_block_interval: float = 0.0
    """With an empty mempool a leader waits this long after its parent's timestamp."""
    max_clock_skew: float = 5.0
    """A proposal's timestamp may differ from our clock by at most this many seconds."""
    sync_batch: int = 128
    """Blocks per sync response."""
    keep_committed: int = 1024
    """Committed blocks kept in memory to answer laggards; older ones come from the store."""
    sync_per_peer_per_second: float = 20.0
    """Sync requests answered per peer per second; more are ignored."""
    max_backoff_exponent: int = 6
    """Round timeouts grow to at most round_timeout * 2**this."""
    mempool: MempoolLimits = field(default_factory=MempoolLimits)


@dataclass(frozen=True)
class Evidence:
    """Two signed messages by one validator for different blocks in one round.

    Anyone can check it against the validator set (`check_evidence`), so the
    application can commit it as an operation (`evidence_operation`) that
    slashes the offender's stake.
    """

    validator: str
    round: int
    kind: str
    """"vote" or "proposal"."""
    first: tuple[bytes, int, bytes]
    """(block id, block height, signature)."""
    second: tuple[bytes, int, bytes]


EVIDENCE_TAG = b"trustchain-evidence-v1:"


def evidence_operation(evidence: Evidence) -> bytes:
    """The operation that carries `evidence` into a block."""
    body = [
        evidence.validator,
        evidence.round,
        evidence.kind,
        list(evidence.first),
        list(evidence.second),
    ]
    return EVIDENCE_TAG + bytes(msgpack.packb(body, use_bin_type=True))


def check_evidence(validators: ValidatorSet, op: bytes) -> Evidence:
    """Decode and verify an evidence operation; raise InvalidMessage saying what is wrong."""
    if not op.startswith(EVIDENCE_TAG):
        raise InvalidMessage("evidence: not an evidence operation")
    try:
        who, round, kind, first, second = msgpack.unpackb(op[len(EVIDENCE_TAG) :], raw=False)
        pairs = [(bytes(b), int(h), bytes(s)) for b, h, s in (first, second)]
    except (ValueError, TypeError) as exc:
        raise InvalidMessage(f"evidence: malformed: {exc}") from None
    if kind not in ("vote", "proposal") or not isinstance(round, int) or not isinstance(who, str):
        raise InvalidMessage("evidence: malformed fields")
    if pairs[0][0] == pairs[1][0]:
        raise InvalidMessage("evidence: both messages are for the same block")
    for block, height, signature in pairs:
        digest = (
            vote_digest(validators.chain_id, block, round, height)
            if kind == "vote"
            else proposal_digest(validators.chain_id, block, round, height)
        )
        if not validators.verify(who, digest, signature):
            raise InvalidMessage(f"evidence: a signature does not verify for {who}")
    return Evidence(who, round, kind, pairs[0], pairs[1])


ROUNDS_AHEAD = 100
"""Votes and timeouts for rounds further ahead of ours are not kept: honest validators
are a round or two apart (a lagging one catches up through the certificates first),
and a Byzantine one could otherwise fill our memory with rounds we never reach."""


@dataclass
class Output:
    """What the driver must do after an input, in this order:

    1. `persist`: write every record durably (fsync) BEFORE anything in `send`
       leaves the node, so that after a crash the node never contradicts what
       it signed (never votes twice in one round).
    2. `send`: deliver each (recipient, message); recipient None means every
       other validator.
    3. `committed`: hand the newly committed blocks, in height order, to the
       application.
    4. `evidence`: equivocation found; the application may commit it.
    5. `history`: answer each (peer, height) with a SyncResponse of the committed
       blocks above that height read from the store (`Storage.committed_after`):
       the peer lags further behind than the blocks this core keeps in memory.
    6. `wakeup`: call `tick` at this time at the latest (None: no deadline).
    """

    persist: list[Record] = field(default_factory=list)
    send: list[tuple[str | None, Message]] = field(default_factory=list)
    committed: list[Block] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    history: list[tuple[str, int]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    """Why inputs were refused, for logs and tests."""
    invalid: list[tuple[str, str]] = field(default_factory=list)
    """(peer, why) for messages refused as invalid: a faulty, hostile or incompatible
    peer, which operators should hear about (also in `rejected`)."""
    wakeup: float | None = None


@dataclass(frozen=True)
class Anchor:
    """Where the chain of a cluster restored from an archive starts (a new epoch).

    The validators of such a cluster have no consensus history; they agree on
    the last archived block and on a new chain id (so that no signature of the
    old epoch is valid in the new one) and build on it as on a genesis block.
    """

    height: int
    """Height of the last archived block."""
    timestamp: int
    """Its timestamp (milliseconds): the first new block's must be later."""
    state: bytes
    """The application's state commitment after it (unused with `block`, whose own fields
    are the chain's)."""
    block: Block | None = None
    """The chain's own block at `height` when a node rejoins its chain from an archive
    (same chain id; children certify its id and round).  None: a new epoch's genesis."""


def _ms(now: float) -> int:
    return int(now * 1000)


class Core:
    """One validator's consensus state machine.  Owned by a single driver task."""

    def __init__(
        self,
        me: str,
        key: Ed25519PrivateKey,
        validators: ValidatorSet,
        app: Application,
        persisted: PersistedState | None = None,
        config: Config | None = None,
        rules: SafetyRules | None = None,
        anchor: Anchor | None = None,
    ) -> None:
        self.me = me
        self.key = key
        self.validators = validators
        self.app = app
        self.config = config or Config()
        self.rules = rules or SafetyRules()
        self.chain_id = validators.chain_id
        if anchor is None:
            self.genesis = genesis_block(self.chain_id, app.genesis_state())
        elif anchor.block is not None:
            self.genesis = anchor.block
        else:
            self.genesis = genesis_block(
                self.chain_id, anchor.state, anchor.height, anchor.timestamp
            )
        # The root of what this core holds is certified by an empty QC of its own.
        root_qc = QuorumCert(self.genesis.id, self.genesis.round, self.genesis.height, ())
        self.mempool = Mempool(self.config.mempool)
        state = persisted or PersistedState()
        self.safety: SafetyState = state.safety
        self.blocks: dict[bytes, Block] = {self.genesis.id: self.genesis, **state.blocks}
        self.high_qc: QuorumCert = state.high_qc or root_qc
        self.last_tc: TimeoutCert | None = state.last_tc
        self.committed_height = (
            state.committed_height if state.committed_id else self.genesis.height
        )
        self.committed_id = state.committed_id or self.genesis.id
        self.round = max(self.high_qc.round, self.last_tc.round if self.last_tc else 0) + 1
        self.deadline = 0.0
        self.failed_rounds = 0
        self.timed_out_round = 0
        # A proposal leaves only once a record of that round (our vote, our timeout or
        # _maybe_propose's own) is on disk: a restarted leader must not propose again
        # in a round it may have proposed in (a second block would be equivocation).
        self.proposed_round = self.safety.highest_vote_round
        # Round -> block id -> voter -> signature (only as next leader).
        self.votes: dict[int, dict[bytes, dict[str, bytes]]] = {}
        # Round -> voter -> (round of its high qc, signature).
        self.timeouts: dict[int, dict[str, tuple[int, bytes]]] = {}
        # (validator, round, kind) -> (block id, height, signature): first signed message seen.
        self.seen_signed: dict[tuple[str, int, str], tuple[bytes, int, bytes]] = {}
        self.accused: set[str] = set()
        """Validators this core reported evidence against: one report each (a Byzantine
        validator signing thousands of conflicting messages gets one punishment, not a
        mempool full of them)."""
        # Proposals waiting for missing ancestors: block id they need -> proposals.
        self.waiting: dict[bytes, list[tuple[str, Proposal]]] = {}
        self.sync_budget: dict[str, tuple[float, float]] = {}
        self._deferred: list[Record] = []
        self._out = Output()
        self.silent_until: float | None = None
        """While set: a rejoining validator that signs nothing (see `rejoin`)."""
        self.seen_round = 0
        """Highest round certified by a QC or TC seen (a quorum was past it)."""

    # --- inputs -------------------------------------------------------------------------

    def start(self, now: float) -> Output:
        self._enter_round(self.round, now, first=True)
        return self._flush(now)

    def rejoin(self, now: float, grace: float) -> None:
        """This validator lost what it signed (its store was rebuilt from an archive).

        It may have voted or timed out in rounds the cluster is still in.  For
        `grace` seconds it signs nothing and watches the cluster's certificates;
        then it treats every round up to one past the highest certified round as
        one it already signed in.  A round it could have signed in before is one
        the cluster reached, and the cluster reached a round only through a QC
        or TC of the round before, which the cluster's proposals and timeouts
        carry.  Only certificates count: one Byzantine signer cannot fake them.
        """
        self.silent_until = now + grace

    def _silent(self, now: float) -> bool:
        if self.silent_until is None:
            return False
        if now < self.silent_until:
            return True
        self.silent_until = None
        if self.seen_round + 1 > self.safety.highest_vote_round:
            self.safety = SafetyState(self.seen_round + 1, self.safety.highest_qc_round)
            self._persist(SafetyRecord(self.safety))
        return False

    def tick(self, now: float) -> Output:
        if now >= self.deadline:
            self._local_timeout(now)
        self._maybe_propose(now)
        return self._flush(now)

    def submit(self, op: Operation, now: float) -> Output:
        """A client operation arrived at this node: queue it and gossip it."""
        reason = self._admit(op, now)
        if reason is None:
            self._out.send.append((None, op))
            self._maybe_propose(now)
        else:
            self._out.rejected.append(f"operation: {reason}")
        return self._flush(now)

    def handle(self, sender: str, message: Message, now: float) -> Output:
        try:
            if isinstance(message, Proposal):
                self._on_proposal(sender, message, now)
            elif isinstance(message, Vote):
                self._on_vote(message, now)
            elif isinstance(message, Timeout):
                self._on_timeout(message, now)
            elif isinstance(message, SyncRequest):
                self._on_sync_request(sender, message, now)
            elif isinstance(message, SyncResponse):
                self._on_sync_response(sender, message, now)
            elif isinstance(message, Operation):
                # The peer that sent it answers for it, whatever the wire says: a peer
                # must not spend another submitter's share of the mempool.
                reason = self._admit(Operation(sender, message.data), now)
                if reason is None:
                    self._maybe_propose(now)
        except InvalidMessage as exc:
            reason = f"{type(message).__name__.lower()} from {sender}: {exc}"
            self._out.rejected.append(reason)
            self._out.invalid.append((sender, reason))
        return self._flush(now)

    # --- output ---------------------------------------------------------------------

    def _persist(self, record: Record) -> None:
        self._out.persist.append(record)

    def _flush(self, now: float) -> Output:
        out, self._out = self._out, Output()
        if self._deferred:
            # Only the unpersisted mutant defers: what it signed last time is
            # written now, after it was sent.
            out.persist[:0] = self._deferred
            self._deferred = []
        if not self.rules.persists_before_sending():
            self._deferred = [r for r in out.persist if isinstance(r, SafetyRecord)]
            out.persist = [r for r in out.persist if not isinstance(r, SafetyRecord)]
        at = self._propose_at()
        out.wakeup = min(self.deadline, at) if at is not None and at > now else self.deadline
        return out

    def _sign(self, digest: bytes) -> bytes:
        return self.key.sign(digest)

    # --- rounds ------------------------------------------------------------------------

    def _enter_round(self, round: int, now: float, *, first: bool = False) -> None:
        if round < self.round or (round == self.round and not first):
            return
        self.round = round
        backoff = 2 ** min(self.failed_rounds, self.config.max_backoff_exponent)
        self.deadline = now + self.config.round_timeout * backoff
        # Forget vote and timeout bookkeeping for rounds well behind us.
        for old in [r for r in self.votes if r < round - 2]:
            del self.votes[old]
        for old in [r for r in self.timeouts if r < round - 2]:
            del self.timeouts[old]
        self._maybe_propose(now)

    def _proposal_basis(self) -> tuple[Block, TimeoutCert | None] | None:
        """The parent and TC a proposal of ours would carry now, or None if we cannot propose."""
        if self.validators.leader(self.round) != self.me or self.proposed_round >= self.round:
            return None
        parent = self.blocks.get(self.high_qc.block_id)
        if parent is None:
            return None  # the sync that fetches it brings us back here
        if self.high_qc.round + 1 == self.round:
            return parent, None
        if self.last_tc is not None and self.last_tc.round + 1 == self.round:
            return parent, self.last_tc
        return None  # we are in this round without a certificate to justify a proposal

    def _propose_at(self) -> float | None:
        """When to propose: None if we cannot, -inf for at once."""
        basis = self._proposal_basis()
        if basis is None:
            return None
        if len(self.mempool) or not self.config.min_block_interval or self._awaits_commit(basis[0]):
            return -math.inf
        return basis[0].timestamp / 1000 + self.config.min_block_interval

    def _awaits_commit(self, tip: Block) -> bool:
        """Does a block up to `tip` that others may not yet know committed carry operations?

        Then the next block, even an empty one, is what commits them (or tells the
        others that they committed), so it should not wait for the block interval.
        """
        b: Block | None = tip
        while b is not None and b.height >= max(self.committed_height, 1):
            if b.payload:
                return True
            b = self.blocks.get(b.parent_id)
        return False

    def _maybe_propose(self, now: float) -> None:
        if self._silent(now):
            return
        at = self._propose_at()
        if at is None or now < at:
            return
        basis = self._proposal_basis()
        assert basis is not None
        parent, tc = basis
        pending = self._uncommitted_ops(parent)
        valid = []
        for op in self.mempool.batch(self.config.max_batch, pending):
            reason = self.app.validate(op)
            if reason is None:
                valid.append(op)
            else:
                # Valid when admitted, not any more (a replay, evidence against a
                # validator punished since): waiting will not help, and left at the
                # head of the mempool it would keep newer operations out of blocks.
                self.mempool.remove(operation_id(op))
                self._out.rejected.append(f"operation dropped from the mempool: {reason}")
        payload = tuple(valid)
        block = make_block(
            round=self.round,
            height=parent.height + 1,
            qc=self.high_qc,
            timestamp=max(_ms(now), parent.timestamp + 1),
            state=self.app.execute(parent.state, parent.payload),
            payload=payload,
            proposer=self.me,
        )
        self.proposed_round = self.round
        digest = proposal_digest(self.chain_id, block.id, block.round, block.height)
        proposal = Proposal(block, tc, self._sign(digest))
        self._out.send.append((None, proposal))
        self._on_proposal(self.me, proposal, now)
        if self.safety.highest_vote_round < block.round:
            # Our own vote was refused: the proposal still leaves only once a record
            # that we signed in this round is on disk (persist goes before send).
            self.safety = SafetyState(block.round, self.safety.highest_qc_round)
            self._persist(SafetyRecord(self.safety))

    def _uncommitted_ops(self, tip: Block) -> set[bytes]:
        ids: set[bytes] = set()
        b: Block | None = tip
        while b is not None and b.height > self.committed_height:
            ids.update(operation_id(op) for op in b.payload)
            b = self.blocks.get(b.parent_id)
        return ids

    # --- certificates -------------------------------------------------------------------

    def _check_qc(self, qc: QuorumCert) -> None:
        if qc == self.high_qc:
            return
        self.validators.check_qc(
            qc,
            self.genesis.id,
            genesis_height=self.genesis.height,
            genesis_round=self.genesis.round,
            count_repeats=self.rules.counts_repeated_signers(),
        )

    def _process_qc(self, qc: QuorumCert, now: float) -> None:
        """Record a verified QC: raise our high QC, commit by the 2-chain rule, advance."""
        self.seen_round = max(self.seen_round, qc.round)
        if qc.round > self.high_qc.round:
            self.high_qc = qc
            self._persist(HighQcRecord(qc))
            self.failed_rounds = 0
        new_safety = self.rules.observe_qc(self.safety, qc.round)
        if new_safety != self.safety:
            self.safety = new_safety
            self._persist(SafetyRecord(new_safety))
        block = self.blocks.get(qc.block_id)
        if block is not None:
            parent = self.blocks.get(block.parent_id)
            if (
                parent is not None
                and parent.round + 1 == block.round
                and block.qc.block_id == parent.id
            ):
                self._commit(parent)
        self._enter_round(qc.round + 1, now)

    def _process_tc(self, tc: TimeoutCert, now: float) -> None:
        self.seen_round = max(self.seen_round, tc.round)
        if self.last_tc is None or tc.round > self.last_tc.round:
            self.last_tc = tc
            self._persist(TcRecord(tc))
        if tc.round >= self.round:
            self.failed_rounds += 1
            self._enter_round(tc.round + 1, now)

    def _commit(self, block: Block) -> None:
        if block.height <= self.committed_height:
            return
        chain = []
        b: Block | None = block
        while b is not None and b.height > self.committed_height:
            chain.append(b)
            b = self.blocks.get(b.parent_id)
        if b is None or b.id != self.committed_id:
            # Should be impossible with a correct quorum: the certified chain does
            # not extend what we committed.  Refuse and say so loudly.
            self._out.rejected.append(
                f"commit: block at height {block.height} forks our committed chain"
            )
            return
        for c in reversed(chain):
            self._out.committed.append(c)
            self._persist(CommitRecord(c.height, c.id))
            for op in c.payload:
                self.mempool.committed(op)
        self.committed_height, self.committed_id = block.height, block.id
        if block.height % 64 == 0:
            self._prune()

    def _prune(self) -> None:
        """Drop fork blocks at or below the committed height and old committed blocks."""
        keep: set[bytes] = set()
        b: Block | None = self.blocks.get(self.committed_id)
        while b is not None and b.height > self.committed_height - self.config.keep_committed:
            keep.add(b.id)
            b = self.blocks.get(b.parent_id) if b.height else None
        for bid in [
            bid
            for bid, blk in self.blocks.items()
            if blk.height <= self.committed_height and bid not in keep
        ]:
            del self.blocks[bid]

    # --- proposals -----------------------------------------------------------------------

    def _on_proposal(self, sender: str, proposal: Proposal, now: float) -> None:
        block = proposal.block
        if block.id != block_id(block):
            raise InvalidMessage("block id does not match its contents")
        leader = self.validators.leader(block.round)
        if block.proposer != leader:
            raise InvalidMessage(f"round {block.round} belongs to {leader}, not {block.proposer}")
        self.validators.check_proposal_signature(block, proposal.signature)
        self._note_signed(
            block.proposer, block.round, "proposal", (block.id, block.height, proposal.signature)
        )
        self._check_qc(block.qc)
        if proposal.tc is not None:
            self.validators.check_tc(proposal.tc)
        if block.round <= block.qc.round:
            raise InvalidMessage("block round is not above its qc round")
        self._process_qc(block.qc, now)
        if proposal.tc is not None:
            self._process_tc(proposal.tc, now)
        parent = self.blocks.get(block.parent_id)
        if parent is None:
            self._wait_for(block.parent_id, sender, proposal)
            return
        self._check_block(block, parent, now)
        if block.id not in self.blocks:
            self.blocks[block.id] = block
            self._persist(BlockRecord(block))
        self._release_waiting(block.id, now)
        if block.round != self.round:
            return  # too old to vote for (or we are behind; the QC above moved us)
        if self._silent(now):
            return
        refusal = self.rules.vote_refusal(self.safety, block, proposal.tc)
        if refusal is not None:
            self._out.rejected.append(f"no vote for round {block.round}: {refusal}")
            return
        self.safety = self.rules.after_vote(self.safety, block)
        self._persist(SafetyRecord(self.safety))
        vote = Vote(
            block.id, block.round, block.height, self.me,
            self._sign(vote_digest(self.chain_id, block.id, block.round, block.height)),
        )  # fmt: skip
        next_leader = self.validators.leader(block.round + 1)
        if next_leader == self.me:
            self._on_vote(vote, now)
        else:
            self._out.send.append((next_leader, vote))

    def _check_block(self, block: Block, parent: Block, now: float) -> None:
        if block.height != parent.height + 1:
            raise InvalidMessage(
                f"height {block.height} does not follow parent height {parent.height}"
            )
        if block.round <= parent.round:
            raise InvalidMessage("round is not above the parent's")
        if block.qc.height != parent.height or block.qc.round != parent.round:
            raise InvalidMessage("qc round/height do not match the parent")
        if block.timestamp <= parent.timestamp:
            raise InvalidMessage("timestamp is not after the parent's")
        skew = abs(block.timestamp - _ms(now)) / 1000
        if skew > self.config.max_clock_skew:
            raise InvalidMessage(
                f"timestamp is {skew:.1f} s from our clock (max {self.config.max_clock_skew:g})"
            )
        if len(block.payload) > self.config.max_batch:
            raise InvalidMessage(f"{len(block.payload)} operations exceed the batch limit")
        expected = self.app.execute(parent.state, parent.payload)
        if block.state != expected:
            raise InvalidMessage("state commitment does not match the parent's execution")
        seen = self._uncommitted_ops(parent)
        for op in block.payload:
            reason = self.app.validate(op)
            if reason is not None:
                raise InvalidMessage(f"invalid operation: {reason}")
            oid = operation_id(op)
            if oid in seen:
                raise InvalidMessage("operation repeated in the chain")
            seen.add(oid)

    def _wait_for(self, missing: bytes, sender: str, proposal: Proposal) -> None:
        queue = self.waiting.setdefault(missing, [])
        if len(queue) < 8 and len(self.waiting) < 64:
            queue.append((sender, proposal))
        self._out.send.append((sender, SyncRequest(self.committed_height, missing)))

    def _release_waiting(self, block_id_: bytes, now: float) -> None:
        for sender, proposal in self.waiting.pop(block_id_, []):
            try:
                self._on_proposal(sender, proposal, now)
            except InvalidMessage as exc:
                self._out.rejected.append(f"queued proposal: {exc}")

    # --- votes --------------------------------------------------------------------------

    def _on_vote(self, vote: Vote, now: float) -> None:
        if self.validators.leader(vote.round + 1) != self.me:
            raise InvalidMessage(
                f"vote for round {vote.round} sent to a non-leader of round {vote.round + 1}"
            )
        if vote.voter not in self.validators.members:
            raise InvalidMessage(f"{vote.voter!r} is not a validator")
        if vote.round < self.round - 1:
            return  # stale
        if vote.round > self.round + ROUNDS_AHEAD:
            return  # not kept: it would hold memory until we got there
        digest = vote_digest(self.chain_id, vote.block_id, vote.round, vote.height)
        if not self.validators.verify(vote.voter, digest, vote.signature):
            raise InvalidMessage(f"bad vote signature from {vote.voter}")
        self._note_signed(
            vote.voter, vote.round, "vote", (vote.block_id, vote.height, vote.signature)
        )
        by_block = self.votes.setdefault(vote.round, {}).setdefault(vote.block_id, {})
        if vote.voter in by_block:
            return
        by_block[vote.voter] = vote.signature
        if (
            self.validators.is_quorum(self.validators.power_of(by_block))
            and vote.round >= self.high_qc.round
        ):
            qc = QuorumCert(vote.block_id, vote.round, vote.height, tuple(sorted(by_block.items())))
            if qc.round > self.high_qc.round:
                self._process_qc(qc, now)

    # --- timeouts -----------------------------------------------------------------------

    def _local_timeout(self, now: float) -> None:
        if self._silent(now):
            self.deadline = now + self.config.round_timeout
            return
        round = self.round
        if self.timed_out_round < round:
            refusal = self.rules.timeout_refusal(self.safety, round, self.high_qc.round)
            if refusal is not None:
                self._out.rejected.append(f"no timeout for round {round}: {refusal}")
                self.deadline = now + self.config.round_timeout
                return
            self.safety = self.rules.after_timeout(self.safety, round)
            self._persist(SafetyRecord(self.safety))
            self.timed_out_round = round
        # (Re)broadcast: timeouts are the liveness path, so resend each period until progress.
        signature = self._sign(timeout_digest(self.chain_id, round, self.high_qc.round))
        timeout = Timeout(round, self.high_qc, self.me, signature, self.last_tc)
        self._out.send.append((None, timeout))
        self.deadline = now + self.config.round_timeout * 2 ** min(
            self.failed_rounds + 1, self.config.max_backoff_exponent
        )
        self._record_timeout(timeout, now)

    def _on_timeout(self, timeout: Timeout, now: float) -> None:
        if timeout.voter not in self.validators.members:
            raise InvalidMessage(f"{timeout.voter!r} is not a validator")
        digest = timeout_digest(self.chain_id, timeout.round, timeout.high_qc.round)
        if timeout.high_qc.round >= timeout.round:
            raise InvalidMessage("high qc is not below the timeout round")
        if not self.validators.verify(timeout.voter, digest, timeout.signature):
            raise InvalidMessage(f"bad timeout signature from {timeout.voter}")
        self._check_qc(timeout.high_qc)
        if timeout.high_qc.block_id not in self.blocks:
            self._out.send.append(
                (timeout.voter, SyncRequest(self.committed_height, timeout.high_qc.block_id))
            )
        self._process_qc(timeout.high_qc, now)
        if timeout.tc is not None:
            self.validators.check_tc(timeout.tc)
            self._process_tc(timeout.tc, now)
        self._record_timeout(timeout, now)

    def _record_timeout(self, timeout: Timeout, now: float) -> None:
        # Its certificates are processed already: an honest timeout is now at most a
        # round or so ahead of ours.
        if not self.round <= timeout.round <= self.round + ROUNDS_AHEAD:
            return
        entries = self.timeouts.setdefault(timeout.round, {})
        entries[timeout.voter] = (timeout.high_qc.round, timeout.signature)
        power = self.validators.power_of(entries)
        if self.validators.is_quorum(power):
            tc = TimeoutCert(
                timeout.round, tuple(sorted((n, r, s) for n, (r, s) in entries.items()))
            )
            self._process_tc(tc, now)
        elif (
            self.validators.exceeds_one_third(power)
            and self.timed_out_round < timeout.round
            and timeout.round == self.round
        ):
            # More than 1/3 gave up on this round, so at least one honest node
            # did: join them rather than wait for our own deadline.
            self._local_timeout(now)

    # --- equivocation -----------------------------------------------------------------------

    def _note_signed(
        self, who: str, round: int, kind: str, signed: tuple[bytes, int, bytes]
    ) -> None:
        key = (who, round, kind)
        first = self.seen_signed.get(key)
        if first is None:
            self.seen_signed[key] = signed
            if len(self.seen_signed) > 100_000:
                for old in [k for k in self.seen_signed if k[1] < self.round - 1000]:
                    del self.seen_signed[old]
        elif first[0] != signed[0] and who not in self.accused:
            self.accused.add(who)
            self._out.evidence.append(Evidence(who, round, kind, first, signed))

    # --- catch-up ------------------------------------------------------------------------------

    def _on_sync_request(self, sender: str, request: SyncRequest, now: float) -> None:
        if sender not in self.validators.members or sender == self.me:
            raise InvalidMessage("sync requests are answered to validators only")
        last, budget = self.sync_budget.get(sender, (now, self.config.sync_per_peer_per_second))
        budget = min(
            self.config.sync_per_peer_per_second,
            budget + (now - last) * self.config.sync_per_peer_per_second,
        )
        if budget < 1:
            self.sync_budget[sender] = (now, budget)
            return
        self.sync_budget[sender] = (now, budget - 1)
        target = self.blocks.get(request.target)
        if target is None:
            return
        chain = []
        b: Block | None = target
        while b is not None and b.height > request.from_height and b.id != self.genesis.id:
            chain.append(b)
            b = self.blocks.get(b.parent_id)
        if b is None and request.from_height < self.committed_height:
            # The peer lags behind the committed blocks kept in memory: the driver
            # answers from the store, and the peer asks again from there.
            self._out.history.append((sender, request.from_height))
            return
        chain.reverse()
        chain = chain[: self.config.sync_batch]
        if not chain:
            return
        qc = self._qc_for(chain[-1].id)
        self._out.send.append((sender, SyncResponse(tuple(chain), qc)))

    def _qc_for(self, bid: bytes) -> QuorumCert | None:
        if self.high_qc.block_id == bid:
            return self.high_qc
        for b in self.blocks.values():
            if b.qc.block_id == bid:
                return b.qc
        return None

    def _on_sync_response(self, sender: str, response: SyncResponse, now: float) -> None:
        if not response.blocks:
            return
        first = response.blocks[0]
        if first.parent_id not in self.blocks:
            raise InvalidMessage("sync response does not connect to a block we know")
        for prev, b in zip(response.blocks, response.blocks[1:], strict=False):
            if b.parent_id != prev.id:
                raise InvalidMessage("sync response blocks do not form a chain")
        for b in response.blocks:
            self._check_qc(b.qc)
        tip_qc = response.commit_qc
        if tip_qc is not None:
            if tip_qc.block_id != response.blocks[-1].id:
                raise InvalidMessage("sync response qc does not certify its last block")
            self._check_qc(tip_qc)
        # Each block is certified by the next one's QC; the last by commit_qc, or by a
        # QC we checked already (a proposal waiting for it, our highest).  Else it is
        # no one's word but the sender's, and is not kept.
        last_id = response.blocks[-1].id
        known = last_id in self.waiting or last_id == self.high_qc.block_id
        certified = response.blocks if tip_qc is not None or known else response.blocks[:-1]
        for b in certified:
            parent = self.blocks[b.parent_id]
            if (
                b.height != parent.height + 1
                or b.qc.round != parent.round
                or b.round <= parent.round
            ):
                raise InvalidMessage("sync response block does not follow its parent")
            # Certified blocks were checked by a quorum; we take them as they are.
            if b.id not in self.blocks:
                self.blocks[b.id] = b
                self._persist(BlockRecord(b))
            self._process_qc(b.qc, now)
        if not certified:
            return
        if tip_qc is not None:
            self._process_qc(tip_qc, now)
        for b in certified:
            self._release_waiting(b.id, now)
        last = certified[-1]
        if len(response.blocks) >= self.config.sync_batch and tip_qc is None:
            self._out.send.append((sender, SyncRequest(last.height, self.high_qc.block_id)))

    # --- mempool --------------------------------------------------------------------------------

    def _admit(self, op: Operation, now: float) -> str | None:
        reason = self.app.validate(op.data)
        if reason is not None:
            return reason
        return self.mempool.add(op, now)
