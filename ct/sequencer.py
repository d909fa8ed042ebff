"""The sequencer core: pools submissions, cuts rounds, says what to persist (sans-IO).

Driven by three inputs only, like aioquic's QuicConnection: ``submit(...)``,
``start_round(now, timestamp_ms)`` and ``finish_round(round)`` /
``fail_round(round)``.  Time comes in as arguments (``now`` is a monotonic clock
for scheduling, ``timestamp_ms`` the wall-clock time that goes into SCTs and the
checkpoint).  No file, socket or clock is touched here.

A ``Round`` is the unit of durability.  Its publishing order is the one thing
every driver must get right, so it is stated once, here:

1. Write every tile in ``round.tiles`` durably (any order among themselves).
   Crash here: tiles beyond the published checkpoint exist (possibly torn);
   nobody was told about them; ``open_store`` deletes them at the next start.
2. Sign a checkpoint for (``round.size``, ``round.root``) at ``round.timestamp``
   and write it durably.  This is the commit point.  The signature and a synced
   temporary copy of the checkpoint may be made while step 1 runs; only the
   rename to ``checkpoint`` must wait until every tile of step 1 is durable.
   Crash after it: the entries are in the log but their submitters got no SCT;
   a resubmission finds them (the index is caught up at start) and gets an SCT
   for the logged entry.
3. Index the entries (this may run alongside steps 1 and 2: the index is
   derived data, lookups ignore entries beyond the published size and
   ``open_store`` truncates an index that is ahead), then ``finish_round(round)``
   and answer each submitter with an SCT for ``Sequenced.index`` /
   ``Sequenced.leaf.entry.timestamp``.
4. Delete ``round.superseded`` partial tiles.  Crash here: stale partials stay
   until the next start removes them.

If any step before 2 fails, the driver calls ``fail_round``; the core forgets the
round (the published edge is unchanged) and returns the tickets to fail; the
driver drops whatever step 3 indexed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from trustchain.ct.sct import LogEntry
from trustchain.ct.tiles import TileID, TileLeaf, TreeEdge, new_leaf

MAX_TIMESTAMP = (1 << 63) - 1


class PoolFull(Exception):
    """The pool holds ``pool_limit`` submissions: the caller should retry later."""


@dataclass(frozen=True)
class Submission:
    """A validated entry waiting for a place in the log."""

    entry: LogEntry
    """What the SCT and the Merkle leaf commit to."""
    pre_certificate: bytes = b""
    """The submitted precertificate (precert entries only)."""
    chain: tuple[bytes, ...] = ()
    """SHA-256 fingerprints of the issuer certificates, already stored."""


@dataclass(frozen=True)
class Sequenced:
    """An entry placed in a round."""

    ticket: int
    """The ticket ``submit`` returned."""
    index: int
    """Its leaf index."""
    leaf: TileLeaf
    """The stored entry (its TimestampedEntry is what the SCT signs)."""
    leaf_hash: bytes
    """RFC 6962 leaf hash of the MerkleTreeLeaf."""


@dataclass(frozen=True)
class Round:
    """One sequencing round: what to persist and publish, in the order stated above."""

    number: int
    """Round counter since start."""
    timestamp: int
    """STH timestamp (ms) for the checkpoint; every entry carries it too."""
    size: int
    """Tree size after the round."""
    root: bytes
    """Tree root after the round."""
    entries: tuple[Sequenced, ...]
    """Entries, in index order (may be empty: a round that only refreshes the checkpoint)."""
    tiles: tuple[tuple[TileID, bytes], ...]
    """Tiles to write before the checkpoint."""
    superseded: tuple[TileID, ...]
    """Partial tiles that may be deleted after the checkpoint is written."""
    edge: TreeEdge = field(repr=False)
    """The tree edge after the round (becomes the published edge on finish)."""


@dataclass(frozen=True)
class Published:
    """The state of the log as of the last finished round."""

    size: int
    """Tree size."""
    root: bytes
    """Tree root."""
    timestamp: int
    """Checkpoint timestamp (ms)."""


class Sequencer:
    """Owns the pool and the tree edge; at most one round is in flight.

    ``pool_limit`` bounds queued submissions (``PoolFull`` past it);
    ``max_batch`` bounds a round; a round starts ``interval`` seconds after the
    previous one started, or at once when ``max_batch`` entries wait; with nothing
    pending, a round that only re-signs the checkpoint runs every
    ``refresh_interval`` seconds so that monitors see a fresh tree head.
    """

    def __init__(
        self,
        edge: TreeEdge,
        published_timestamp: int,
        *,
        pool_limit: int = 4096,
        max_batch: int = 4096,
        interval: float = 0.05,
        refresh_interval: float = 60.0,
    ) -> None:
        if pool_limit < 1 or max_batch < 1 or interval < 0 or refresh_interval <= 0:
            raise ValueError("pool_limit, max_batch and refresh_interval must be positive")
        self._edge = edge
        self.published = Published(edge.size, edge.root(), published_timestamp)
        self.pool_limit = pool_limit
        self.max_batch = max_batch
        self.interval = interval
        self.refresh_interval = refresh_interval
        self._pool: list[tuple[int, Submission]] = []
        self._by_identity: dict[bytes, int] = {}
        self._next_ticket = 0
        self._in_flight: Round | None = None
        self._rounds = 0
        self._last_start: float | None = None

    @property
    def pending(self) -> int:
        return len(self._pool)

    @property
    def in_flight(self) -> bool:
        return self._in_flight is not None

    def submit(self, sub: Submission) -> int:
        """Queue ``sub``; returns its ticket.  An identical entry already queued or in
        flight shares that ticket instead of being logged twice."""
        identity = sub.entry.identity()
        ticket = self._by_identity.get(identity)
        if ticket is not None:
            return ticket
        if len(self._pool) >= self.pool_limit:
            raise PoolFull(f"sequencing pool is full ({self.pool_limit} entries)")
        ticket = self._next_ticket
        self._next_ticket += 1
        self._pool.append((ticket, sub))
        self._by_identity[identity] = ticket
        return ticket

    def next_deadline(self, now: float) -> float | None:
        """When ``start_round`` should next be called (None while a round is in flight)."""
        if self._in_flight is not None:
            return None
        last = self._last_start
        if last is None:
            return now
        if len(self._pool) >= self.max_batch:
            return now
        if self._pool:
            return last + self.interval
        return last + self.refresh_interval

    def start_round(self, now: float, timestamp_ms: int) -> Round | None:
        """Cut a round if one is due at ``now``; None if not (or one is in flight)."""
        deadline = self.next_deadline(now)
        if deadline is None or now < deadline:
            return None
        self._last_start = now
        if not 0 <= timestamp_ms <= MAX_TIMESTAMP:
            raise ValueError("timestamp out of range")
        # Checkpoint timestamps never go backwards, even if the wall clock does.
        timestamp = max(timestamp_ms, self.published.timestamp)
        batch, self._pool = self._pool[: self.max_batch], self._pool[self.max_batch :]
        edge = self._edge.copy()
        entries = []
        for i, (ticket, sub) in enumerate(batch):
            index = edge.size + i
            leaf = new_leaf(sub.entry, timestamp, index, sub.pre_certificate, sub.chain)
            entries.append(Sequenced(ticket, index, leaf, leaf.leaf_hash()))
        tiles, superseded = edge.append(
            [e.leaf_hash for e in entries], [e.leaf.encode() for e in entries]
        )
        self._rounds += 1
        rnd = Round(
            number=self._rounds,
            timestamp=timestamp,
            size=edge.size,
            root=edge.root(),
            entries=tuple(entries),
            tiles=tuple(tiles),
            superseded=tuple(superseded),
            edge=edge,
        )
        self._in_flight = rnd
        return rnd

    def _end(self, rnd: Round) -> None:
        if self._in_flight is not rnd:
            raise ValueError("that round is not the one in flight")
        self._in_flight = None
        for e in rnd.entries:
            self._by_identity.pop(e.leaf.entry.entry.identity(), None)

    def finish_round(self, rnd: Round) -> Published:
        """Step 3 of the publishing order: the checkpoint for ``rnd`` is durable."""
        self._end(rnd)
        self._edge = rnd.edge
        self.published = Published(rnd.size, rnd.root, rnd.timestamp)
        return self.published

    def fail_round(self, rnd: Round) -> Sequence[int]:
        """The round could not be made durable: forget it, return its tickets."""
        self._end(rnd)
        return [e.ticket for e in rnd.entries]

    @property
    def edge(self) -> TreeEdge:
        """The published edge (do not mutate)."""
        return self._edge
