"""Deterministic simulation of a validator cluster running the real consensus core.

One seed is one run: the seed fixes the keys, the Byzantine strategies, the
faults and the network's randomness.  Events (message deliveries, ticks,
crashes, restarts, partitions, client operations) live in one priority queue;
the loop sleeps until each event's time on trio's MockClock, which jumps
straight there, so a minute of simulated time takes milliseconds.  Every
message is encoded and decoded with the real codec on the way.

Faults (all stop at `heal_at`; only normal network delay remains after):
  drop, duplicate, reorder, delay, partition (symmetric), asym-partition,
  crash (restart from the persisted state; also right after a vote), pause,
  skew (per-node clock offsets, kept after healing).

Byzantine validators run an honest core for bookkeeping and twist what it
sends: equivocating proposals (split or both to everyone), forks that extend
an older certificate, chains certified by forged QCs (one signature repeated),
blocks with invalid operations, votes for invalid blocks, withheld votes, and
replays of old proposals, also to nodes that just reconnected.

Checkers run after every event: agreement (one block per height across honest
nodes), validity (no committed invalid operation), no honest double vote or
double proposal; and at the end liveness (after healing, every honest node
commits new blocks within `liveness_bound` seconds).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgpack
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from trustchain.consensus import codec
from trustchain.consensus.core import Config, Core, Output
from trustchain.consensus.messages import (
    Block,
    Message,
    Operation,
    Proposal,
    QuorumCert,
    SyncRequest,
    SyncResponse,
    Timeout,
    Vote,
    make_block,
    proposal_digest,
    vote_digest,
)
from trustchain.consensus.safety import MUTANTS, SafetyRules
from trustchain.consensus.storage import MemoryStorage
from trustchain.consensus.validators import Member, ValidatorSet

FAULTS = (
    "drop", "duplicate", "reorder", "delay", "partition", "asym-partition",
    "crash", "pause", "skew",
)  # fmt: skip
STRATEGIES = ("equivocate", "fork", "forge", "invalid", "vote-invalid", "withhold", "replay")


class SimApp:
    """A hash-chain state machine; operations starting with b"BAD" are invalid."""

    def genesis_state(self) -> bytes:
        return bytes(32)

    def validate(self, op: bytes) -> str | None:
        return "operation is marked bad" if op.startswith(b"BAD") else None

    def execute(self, state: bytes, ops: tuple[bytes, ...]) -> bytes:
        h = hashlib.sha256(state)
        for op in ops:
            h.update(hashlib.sha256(op).digest())
        return h.digest()


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 4
    byzantine: int = 1
    faults: tuple[str, ...] = FAULTS
    mutant: str | None = None
    heal_at: float = 6.0
    """Simulated seconds of faults; afterwards the network is only slow."""
    liveness_bound: float = 30.0
    """After healing, every honest node must commit new blocks within this many seconds."""
    commits_after_heal: int = 3
    round_timeout: float = 0.3


@dataclass
class Violation:
    kind: str
    detail: str


@dataclass
class RunResult:
    seed: int
    violations: list[Violation]
    trace_hash: str
    committed: dict[str, int]
    """Committed height per honest node at the end."""
    events: int
    sim_time: float


def _key(seed: int, name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest())


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _wire(message: Message) -> bytes:
    return bytes(msgpack.packb(codec.encode(message), use_bin_type=True))


def _unwire(data: bytes) -> Message:
    return codec.decode(msgpack.unpackb(data, raw=False))


class Coalition:
    """The Byzantine validators' shared knowledge: their keys and their attack blocks."""

    def __init__(self, keys: dict[str, Ed25519PrivateKey], validators: ValidatorSet) -> None:
        self.keys = keys
        self.validators = validators
        self.forged_blocks: dict[bytes, Block] = {}
        self.forged_qcs: dict[bytes, QuorumCert] = {}
        self.alternates: list[Proposal] = []

    def votes_for(self, block: Block) -> list[tuple[str, Vote]]:
        """Every coalition member's vote for `block`, addressed to the next leader."""
        digest = vote_digest(self.validators.chain_id, block.id, block.round, block.height)
        leader = self.validators.leader(block.round + 1)
        return [
            (leader, Vote(block.id, block.round, block.height, name, key.sign(digest)))
            for name, key in sorted(self.keys.items())
        ]

    def forged_qc(self, block: Block) -> QuorumCert:
        """A QC made of one member's signature repeated until the count looks like a quorum."""
        name, key = sorted(self.keys.items())[0]
        signature = key.sign(
            vote_digest(self.validators.chain_id, block.id, block.round, block.height)
        )
        count = self.validators.total_power * 2 // 3 + 1
        return QuorumCert(block.id, block.round, block.height, ((name, signature),) * count)


class ByzantineNode:
    """A validator that follows the protocol only to know what to attack."""

    def __init__(
        self,
        name: str,
        core: Core,
        coalition: Coalition,
        strategies: tuple[str, ...],
        rng: random.Random,
    ) -> None:
        self.name = name
        self.core = core
        self.coalition = coalition
        self.strategies = strategies
        self.rng = rng
        self.honest: list[str] = []

    def twist(self, out: Output, now: float) -> list[tuple[str | None, Message]]:
        sends: list[tuple[str | None, Message]] = []
        for dest, message in out.send:
            if (
                isinstance(message, Vote)
                and "withhold" in self.strategies
                and self.rng.random() < 0.5
            ):
                continue
            if isinstance(message, Proposal) and message.block.proposer == self.name:
                sends += self._attack(message, now)
            else:
                sends.append((dest, message))
        return sends

    def on_message(
        self, sender: str, message: Message, now: float
    ) -> list[tuple[str | None, Message]]:
        extra: list[tuple[str | None, Message]] = []
        if isinstance(message, SyncRequest) and message.target in self.coalition.forged_blocks:
            chain = []
            b: Block | None = self.coalition.forged_blocks[message.target]
            while b is not None:
                chain.append(b)
                b = self.coalition.forged_blocks.get(b.parent_id)
            extra.append(
                (
                    sender,
                    SyncResponse(
                        tuple(reversed(chain)), self.coalition.forged_qcs.get(message.target)
                    ),
                )
            )
        if isinstance(message, Proposal) and "vote-invalid" in self.strategies:
            block = message.block
            extra += [v for v in self.coalition.votes_for(block) if v[1].voter == self.name]
        return extra

    def on_reconnect(self, peer: str) -> list[tuple[str | None, Message]]:
        if "replay" not in self.strategies:
            return []
        return [(peer, p) for p in self.coalition.alternates[-4:]]

    def replay(self) -> list[tuple[str | None, Message]]:
        if "replay" not in self.strategies or not self.coalition.alternates or not self.honest:
            return []
        proposal = self.rng.choice(self.coalition.alternates[-8:])
        return [(self.rng.choice(self.honest), proposal)]

    # --- attacks on our own proposals ------------------------------------------------------

    def _sign(self, block: Block) -> Proposal:
        key = self.coalition.keys[self.name]
        return Proposal(
            block,
            None,
            key.sign(
                proposal_digest(
                    self.coalition.validators.chain_id, block.id, block.round, block.height
                )
            ),
        )

    def _variant(self, block: Block, payload: tuple[bytes, ...], **changes: Any) -> Block:
        fields: dict[str, Any] = {
            "round": block.round, "height": block.height, "qc": block.qc,
            "timestamp": block.timestamp + 1, "state": block.state, "payload": payload,
            "proposer": block.proposer,
        }  # fmt: skip
        fields.update(changes)
        return make_block(**fields)

    def _split(self) -> tuple[list[str], list[str]]:
        """Honest validators split into one that gets the honest proposal and the rest."""
        honest = list(self.honest)
        self.rng.shuffle(honest)
        f = len(self.coalition.keys)
        return honest[2 * f :] or honest[:1], honest[: 2 * f]

    def _attack(self, proposal: Proposal, now: float) -> list[tuple[str | None, Message]]:
        block = proposal.block
        enabled = [s for s in ("equivocate", "fork", "forge", "invalid") if s in self.strategies]
        if not enabled or self.rng.random() < 0.2:
            return [(None, proposal)]
        attack = self.rng.choice(enabled)
        if attack == "invalid":
            bad = self._sign(self._variant(block, (*block.payload, b"BAD-" + block.id[:4])))
            return [(None, bad)]
        if attack == "equivocate":
            alt = self._sign(self._variant(block, (*block.payload, b"byz-" + block.id[:8])))
            self.coalition.alternates.append(alt)
            sends: list[tuple[str | None, Message]] = []
            if self.rng.random() < 0.5:  # both to everyone, in a random order
                for peer in self.honest:
                    pair = [proposal, alt]
                    self.rng.shuffle(pair)
                    sends += [(peer, pair[0]), (peer, pair[1])]
            else:
                one, rest = self._split()
                sends += [(p, proposal) for p in one] + [(p, alt) for p in rest]
            return sends + list(self.coalition.votes_for(alt.block))
        fork = self._fork(block, forge=attack == "forge")
        if fork is None:
            return [(None, proposal)]
        one, rest = self._split()
        self.coalition.alternates.append(fork)
        return (
            [(p, proposal) for p in one]
            + [(p, fork) for p in rest]
            + list(self.coalition.votes_for(fork.block))
        )

    def _fork(self, block: Block, *, forge: bool) -> Proposal | None:
        """A sibling of the grandparent of our block, which someone may commit meanwhile.

        Without `forge` it extends the real QC of the great-grandparent (a lock
        violation to vote for); with `forge` it builds two blocks on that QC,
        certified by forged QCs, and proposes on top of them.
        """
        blocks = self.core.blocks
        parent = blocks.get(block.parent_id)
        grand = blocks.get(parent.parent_id) if parent else None
        great = blocks.get(grand.parent_id) if grand else None
        if parent is None or grand is None or great is None or great.height == 0:
            return None
        state = self.core.app.execute(great.state, great.payload)
        ts = max(block.timestamp - 3, great.timestamp + 1)
        if not forge:
            fork = make_block(
                round=block.round, height=grand.height, qc=grand.qc, timestamp=ts, state=state,
                payload=(b"byz-fork-" + block.id[:6],), proposer=self.name,
            )  # fmt: skip
            return self._sign(fork)
        r = block.round
        if r - 2 <= great.round:
            return None
        v = self.coalition.validators
        f0 = make_block(round=r - 2, height=grand.height, qc=grand.qc, timestamp=ts, state=state,
                        payload=(b"byz-f0-" + block.id[:6],), proposer=v.leader(r - 2))  # fmt: skip
        q0 = self.coalition.forged_qc(f0)
        f1 = make_block(round=r - 1, height=f0.height + 1, qc=q0, timestamp=ts + 1,
                        state=self.core.app.execute(f0.state, f0.payload),
                        payload=(b"byz-f1-" + block.id[:6],), proposer=v.leader(r - 1))  # fmt: skip
        q1 = self.coalition.forged_qc(f1)
        self.coalition.forged_blocks.update({f0.id: f0, f1.id: f1})
        self.coalition.forged_qcs.update({f0.id: q0, f1.id: q1})
        f2 = make_block(round=r, height=f1.height + 1, qc=q1, timestamp=ts + 2,
                        state=self.core.app.execute(f1.state, f1.payload),
                        payload=(b"byz-f2-" + block.id[:6],), proposer=self.name)  # fmt: skip
        return self._sign(f2)


@dataclass
class _Node:
    name: str
    storage: MemoryStorage
    core: Core | None
    byzantine: ByzantineNode | None = None
    skew: float = 0.0
    paused_until: float = 0.0
    tick_generation: int = 0
    commits: list[Block] = field(default_factory=list)


class Simulation:
    def __init__(
        self, seed: int, config: SimConfig, trace: Callable[[str], None] | None = None
    ) -> None:
        self.trace_line = trace
        if config.mutant is not None and config.mutant not in MUTANTS:
            raise ValueError(f"unknown mutant {config.mutant!r}; known: {', '.join(MUTANTS)}")
        unknown = set(config.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
        self.seed = seed
        self.config = config
        self.rng = random.Random(seed)
        names = [f"n{i}" for i in range(config.nodes)]
        self.keys = {n: _key(seed, n) for n in names}
        self.validators = ValidatorSet(
            f"sim-{seed}", [Member(n, _raw(k), 1) for n, k in self.keys.items()]
        )
        byz_names = sorted(self.rng.sample(names, config.byzantine))
        self.honest = [n for n in names if n not in byz_names]
        self.core_config = Config(
            round_timeout=config.round_timeout, max_backoff_exponent=4, max_clock_skew=5.0
        )
        self.app = SimApp()
        coalition = Coalition({n: self.keys[n] for n in byz_names}, self.validators)
        self.nodes: dict[str, _Node] = {}
        for n in names:
            node = _Node(n, MemoryStorage(), None)
            if n in byz_names:
                count = self.rng.randint(2, len(STRATEGIES))
                strategies = tuple(sorted(self.rng.sample(STRATEGIES, count)))
                node.core = self._new_core(n, honest=False)
                node.byzantine = ByzantineNode(n, node.core, coalition, strategies, self.rng)
                node.byzantine.honest = list(self.honest)
            if "skew" in config.faults:
                node.skew = self.rng.uniform(-1.5, 1.5)
            self.nodes[n] = node
        self.faults = set(config.faults)
        self.queue: list[tuple[float, int, Callable[[], None]]] = []
        self.counter = itertools.count()
        self.now = 0.0
        self.trace = hashlib.sha256()
        self.violations: list[Violation] = []
        self.committed_at: dict[int, bytes] = {}
        self.votes_cast: dict[tuple[str, int], bytes] = {}
        self.proposals_made: dict[tuple[str, int], bytes] = {}
        self.partition: tuple[set[str], bool] | None = None
        self.events = 0
        self.op_counter = 0
        self.heal_heights: dict[str, int] | None = None

    def _new_core(self, name: str, *, honest: bool) -> Core:
        rules = SafetyRules()
        if honest and self.config.mutant is not None:
            rules = MUTANTS[self.config.mutant]()
        node = self.nodes.get(name)
        storage = node.storage if node else MemoryStorage()
        return Core(
            name,
            self.keys[name],
            self.validators,
            self.app,
            storage.load(),
            self.core_config,
            rules,
        )

    # --- scheduling ----------------------------------------------------------------------

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.queue, (when, next(self.counter), action))

    def _clock(self, node: _Node) -> float:
        return self.now + node.skew

    def _faulty(self) -> bool:
        return self.now < self.config.heal_at

    # --- network -------------------------------------------------------------------------

    def _delay(self) -> float:
        delay = self.rng.uniform(0.005, 0.03)
        if self._faulty():
            if "delay" in self.faults and self.rng.random() < 0.1:
                delay += self.rng.uniform(0.05, 0.8)
            if "reorder" in self.faults:
                delay += self.rng.uniform(0, 0.05)
        return delay

    def _blocked(self, src: str, dst: str) -> bool:
        if self.partition is None or not self._faulty():
            return False
        side, asymmetric = self.partition
        if asymmetric:
            return src in side and dst not in side
        return (src in side) != (dst in side)

    def send(self, src: str, dest: str | None, message: Message) -> None:
        data = _wire(message)
        targets = [dest] if dest is not None else [n for n in self.nodes if n != src]
        for dst in targets:
            if self._blocked(src, dst):
                continue
            if self._faulty() and "drop" in self.faults and self.rng.random() < 0.05:
                continue
            copies = (
                2
                if self._faulty() and "duplicate" in self.faults and self.rng.random() < 0.05
                else 1
            )
            for _ in range(copies):
                self.at(self.now + self._delay(), partial(self._deliver, src, dst, data))

    def _deliver(self, src: str, dst: str, data: bytes) -> None:
        node = self.nodes[dst]
        if node.core is None:
            return  # crashed: the datagram is lost
        if node.paused_until > self.now:
            self.at(node.paused_until + 0.001, lambda: self._deliver(src, dst, data))
            return
        message = _unwire(data)
        if self.trace_line is not None:
            self.trace_line(f"{self.now:10.4f} {src}->{dst} {_describe(message)}")
        self.trace.update(
            b"d%s%s%s%.6f"
            % (src.encode(), dst.encode(), hashlib.sha256(data).digest()[:8], self.now)
        )
        now = self._clock(node)
        out = node.core.handle(src, message, now)
        extra = node.byzantine.on_message(src, message, now) if node.byzantine else []
        self._act(node, out, extra)

    # --- acting on outputs ------------------------------------------------------------------

    def _act(
        self, node: _Node, out: Output, extra: list[tuple[str | None, Message]] | None = None
    ) -> None:
        assert node.core is not None
        node.storage.write(out.persist)
        sends = node.byzantine.twist(out, self._clock(node)) if node.byzantine else out.send
        voted = False
        for dest, message in [*sends, *(extra or [])]:
            if isinstance(message, Vote) and node.byzantine is None:
                self._check_vote(node.name, message)
                voted = True
            if isinstance(message, Proposal) and node.byzantine is None:
                self._check_proposal(node.name, message)
            self.send(node.name, dest, message)
        for peer, height in out.history:
            blocks = node.storage.committed_after(height, node.core.config.sync_batch)
            if blocks:
                self.send(node.name, peer, SyncResponse(tuple(blocks), None))
        for block in out.committed:
            self._check_commit(node, block)
        if node.byzantine is None:
            for reason in out.rejected:
                if reason.startswith("commit:"):
                    # A quorum certified, as committed, a block that forks what this
                    # node committed: two blocks committed at one height.
                    self._violation("agreement", f"{node.name}: {reason}")
        if out.wakeup is not None:
            node.tick_generation += 1
            generation = node.tick_generation
            wake = out.wakeup
            self.at(max(self.now, wake - node.skew), lambda: self._tick(node, generation, wake))
        if voted and "crash" in self.faults and self._faulty() and self.rng.random() < 0.03:
            self._crash(node, downtime=self.rng.uniform(0.05, 0.4))

    def _tick(self, node: _Node, generation: int, wake: float) -> None:
        if node.core is None or generation != node.tick_generation:
            return
        if node.paused_until > self.now:
            self.at(node.paused_until, lambda: self._tick(node, generation, wake))
            return
        # max(): the skewed clock may round a hair below the wakeup it was scheduled for.
        self._act(node, node.core.tick(max(self._clock(node), wake)))

    def _crash(self, node: _Node, downtime: float) -> None:
        if node.core is None or node.byzantine is not None:
            return
        node.core = None
        if self.trace_line is not None:
            self.trace_line(f"{self.now:10.4f} crash {node.name}")
        self.trace.update(b"crash%s%.6f" % (node.name.encode(), self.now))
        self.at(self.now + downtime, lambda: self._restart(node))

    def _restart(self, node: _Node) -> None:
        node.core = self._new_core(node.name, honest=True)
        self.trace.update(b"restart%s%.6f" % (node.name.encode(), self.now))
        self._act(node, node.core.start(self._clock(node)))
        for other in self.nodes.values():
            if other.byzantine is not None and other.core is not None:
                for dest, message in other.byzantine.on_reconnect(node.name):
                    self.send(other.name, dest, message)

    # --- checkers ---------------------------------------------------------------------------

    def _violation(self, kind: str, detail: str) -> None:
        self.violations.append(Violation(kind, detail))
        if self.trace_line is not None:
            self.trace_line(f"{self.now:10.4f} VIOLATION {kind}: {detail}")

    def _check_vote(self, voter: str, vote: Vote) -> None:
        key = (voter, vote.round)
        first = self.votes_cast.setdefault(key, vote.block_id)
        if first != vote.block_id:
            self._violation("double-vote", f"{voter} voted for two blocks in round {vote.round}")

    def _check_proposal(self, proposer: str, proposal: Proposal) -> None:
        key = (proposer, proposal.block.round)
        first = self.proposals_made.setdefault(key, proposal.block.id)
        if first != proposal.block.id:
            self._violation("double-proposal", f"{proposer} proposed two blocks in round {key[1]}")

    def _check_commit(self, node: _Node, block: Block) -> None:
        if node.byzantine is not None:
            return
        node.commits.append(block)
        if self.trace_line is not None:
            self.trace_line(
                f"{self.now:10.4f} {node.name} commits height {block.height} round {block.round}"
            )
        self.trace.update(b"c%s%d%s" % (node.name.encode(), block.height, block.id[:8]))
        first = self.committed_at.setdefault(block.height, block.id)
        if first != block.id:
            self._violation(
                "agreement", f"{node.name} committed a different block at height {block.height}"
            )
        for op in block.payload:
            if self.app.validate(op) is not None:
                self._violation(
                    "validity",
                    f"{node.name} committed an invalid operation at height {block.height}",
                )

    # --- faults and load ------------------------------------------------------------------------

    def _schedule_faults(self) -> None:
        heal = self.config.heal_at
        honest = list(self.honest)
        if "crash" in self.faults:
            for _ in range(self.rng.randint(1, 3)):
                when = self.rng.uniform(0.2, heal - 0.5)
                name = self.rng.choice(honest)
                self.at(when, partial(self._crash, self.nodes[name], self.rng.uniform(0.1, 1.5)))
        if "pause" in self.faults:
            for _ in range(self.rng.randint(1, 2)):
                when = self.rng.uniform(0.2, heal - 0.5)
                name = self.rng.choice(honest)
                self.at(when, partial(self._pause, name, self.rng.uniform(0.1, 1.0)))
        for kind in ("partition", "asym-partition"):
            if kind in self.faults:
                start = self.rng.uniform(0.2, heal - 1.0)
                end = min(heal, start + self.rng.uniform(0.3, 2.0))
                self.at(start, partial(self._partition, asymmetric=kind == "asym-partition"))
                self.at(end, self._heal_partition)
        self.at(heal, self._heal_partition)

    def _pause(self, name: str, duration: float) -> None:
        node = self.nodes[name]
        node.paused_until = max(node.paused_until, self.now + duration)

    def _partition(self, *, asymmetric: bool) -> None:
        names = sorted(self.nodes)
        self.rng.shuffle(names)
        cut = self.rng.randint(1, len(names) - 1)
        self.partition = (set(names[:cut]), asymmetric)

    def _heal_partition(self) -> None:
        self.partition = None

    def _client(self) -> None:
        if self.now > self.config.heal_at + self.config.liveness_bound:
            return
        self.op_counter += 1
        target = self.nodes[self.rng.choice(self.honest)]
        if target.core is not None:
            op = Operation("client", b"op-%d-%d" % (self.seed, self.op_counter))
            self._act(target, target.core.submit(op, self._clock(target)))
        self.at(self.now + self.rng.uniform(0.02, 0.2), self._client)

    def _byzantine_replays(self) -> None:
        for node in self.nodes.values():
            if node.byzantine is not None:
                for dest, message in node.byzantine.replay():
                    self.send(node.name, dest, message)
        if self._faulty():
            self.at(self.now + 0.05, self._byzantine_replays)

    # --- run -----------------------------------------------------------------------------------

    def _done(self) -> bool:
        if self.heal_heights is None:
            return False
        need = self.config.commits_after_heal
        return all(
            sum(1 for b in self.nodes[n].commits if b.height > self.heal_heights[n]) >= need
            for n in self.honest
        )

    async def run(self) -> RunResult:
        for node in self.nodes.values():
            if node.core is None:
                node.core = self._new_core(node.name, honest=True)
            self._act(node, node.core.start(self._clock(node)))
        self._schedule_faults()
        self.at(0.01, self._client)
        self.at(0.05, self._byzantine_replays)
        self.at(self.config.heal_at, self._record_heal)
        end = self.config.heal_at + self.config.liveness_bound
        while self.queue and not self.violations:
            when, _, action = heapq.heappop(self.queue)
            if when > end:
                break
            await trio.sleep_until(when)
            self.now = when
            action()
            self.events += 1
            if self._done():
                break
        if not self.violations and not self._done():
            stuck = [n for n in self.honest if self.nodes[n].core is not None]
            self._violation(
                "liveness",
                f"after healing at {self.config.heal_at:g} s, not every honest node committed "
                f"{self.config.commits_after_heal} new blocks within "
                f"{self.config.liveness_bound:g} s "
                f"(heights: {', '.join(f'{n}={self._height(n)}' for n in stuck)})",
            )
        return RunResult(
            self.seed,
            self.violations,
            self.trace.hexdigest(),
            {n: self._height(n) for n in self.honest},
            self.events,
            self.now,
        )

    def _height(self, name: str) -> int:
        commits = self.nodes[name].commits
        return commits[-1].height if commits else 0

    def _record_heal(self) -> None:
        self.heal_heights = {n: self._height(n) for n in self.honest}


def _describe(message: Message) -> str:
    if isinstance(message, Proposal):
        b = message.block
        tc = f" tc={message.tc.round}" if message.tc else ""
        ops = len(b.payload)
        return (
            f"proposal r={b.round} h={b.height} qc={b.qc.round}{tc} ops={ops} id={b.id.hex()[:8]}"
        )
    if isinstance(message, Vote):
        return f"vote r={message.round} by {message.voter} for {message.block_id.hex()[:8]}"
    if isinstance(message, Timeout):
        return f"timeout r={message.round} by {message.voter} high_qc={message.high_qc.round}"
    if isinstance(message, SyncRequest):
        return f"sync? from={message.from_height} target={message.target.hex()[:8]}"
    if isinstance(message, SyncResponse):
        return f"sync blocks={len(message.blocks)}"
    return f"op {len(message.data)} bytes"


def run_seed(seed: int, config: SimConfig, trace: Callable[[str], None] | None = None) -> RunResult:
    """Run one seed on trio's MockClock (autojump: simulated time costs no wall time)."""
    sim = Simulation(seed, config, trace)
    clock = trio.testing.MockClock(autojump_threshold=0)
    result: RunResult = trio.run(sim.run, clock=clock)
    return result
