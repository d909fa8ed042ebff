"""Durable consensus state behind a narrow interface.

Contract of `Storage.write(records)`: when it returns, every record is durable
(on disk with fsync for SQLite); a crash after it returns loses none of them,
a crash during it loses the whole batch or nothing.  The core never reads
storage while running; `load()` is called once at start.  The driver reads
committed blocks back (`committed_after`) to answer a peer that lags further
behind than the blocks the core keeps in memory.

`MemoryStorage` is the simulator's: `write` is durable (it survives
`crash()`), and `crash()` keeps only what was written.  `SqliteStorage` is the
node's: WAL mode, synchronous=FULL, one transaction per batch.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgpack

from trustchain.consensus import codec
from trustchain.consensus.messages import Block, QuorumCert, TimeoutCert
from trustchain.consensus.safety import SafetyState


@dataclass(frozen=True)
class SafetyRecord:
    state: SafetyState


@dataclass(frozen=True)
class BlockRecord:
    block: Block


@dataclass(frozen=True)
class HighQcRecord:
    qc: QuorumCert


@dataclass(frozen=True)
class TcRecord:
    tc: TimeoutCert


@dataclass(frozen=True)
class CommitRecord:
    """A block committed (written for every committed block, in height order)."""

    height: int
    block_id: bytes


Record = SafetyRecord | BlockRecord | HighQcRecord | TcRecord | CommitRecord


@dataclass
class PersistedState:
    """Everything a restarted core needs."""

    safety: SafetyState = field(default_factory=SafetyState)
    blocks: dict[bytes, Block] = field(default_factory=dict)
    high_qc: QuorumCert | None = None
    last_tc: TimeoutCert | None = None
    committed_height: int = 0
    committed_id: bytes | None = None


class Storage(Protocol):
    def load(self) -> PersistedState:
        """The state as of the last completed write (empty for a new node)."""

    def write(self, records: list[Record]) -> None:
        """Make `records` durable before returning (see the module docstring)."""

    def committed_after(self, height: int, limit: int) -> list[Block]:
        """Up to `limit` committed blocks above `height`, in height order, as far as
        the store has them without a gap."""


def apply(state: PersistedState, records: list[Record]) -> None:
    for r in records:
        if isinstance(r, SafetyRecord):
            state.safety = r.state
        elif isinstance(r, BlockRecord):
            state.blocks[r.block.id] = r.block
        elif isinstance(r, HighQcRecord):
            if state.high_qc is None or r.qc.round > state.high_qc.round:
                state.high_qc = r.qc
        elif isinstance(r, TcRecord):
            if state.last_tc is None or r.tc.round > state.last_tc.round:
                state.last_tc = r.tc
        elif r.height > state.committed_height:
            state.committed_height, state.committed_id = r.height, r.block_id


class MemoryStorage:
    """In-memory storage for simulation; `write` models an fsync'd write."""

    def __init__(self) -> None:
        self._state = PersistedState()
        self._committed: dict[int, bytes] = {}
        self.writes = 0

    def load(self) -> PersistedState:
        s = self._state
        return PersistedState(
            s.safety, dict(s.blocks), s.high_qc, s.last_tc, s.committed_height, s.committed_id
        )

    def write(self, records: list[Record]) -> None:
        self.writes += 1
        apply(self._state, records)
        for r in records:
            if isinstance(r, CommitRecord):
                self._committed[r.height] = r.block_id

    def committed_after(self, height: int, limit: int) -> list[Block]:
        out = []
        for h in range(height + 1, height + 1 + limit):
            block = self._state.blocks.get(self._committed.get(h, b""))
            if block is None:
                break
            out.append(block)
        return out


class SqliteStorage:
    """The node's consensus store: one SQLite file, WAL, synchronous=FULL."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The node writes from a worker thread, one batch at a time (the driver
        # awaits each write), so the connection is never used concurrently.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS blocks (id BLOB PRIMARY KEY, height INTEGER NOT NULL,"
            " data BLOB NOT NULL)"
        )
        # The committed chain by height (stores written before it have it from then on).
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS committed (height INTEGER PRIMARY KEY, id BLOB NOT NULL)"
        )

    def close(self) -> None:
        self._db.close()

    def load(self) -> PersistedState:
        state = PersistedState()
        records: list[Record] = []
        for (data,) in self._db.execute("SELECT data FROM blocks ORDER BY height"):
            records.append(BlockRecord(codec.decode_block("stored block", msgpack.unpackb(data))))
        kv = dict(self._db.execute("SELECT key, value FROM kv"))
        if "safety" in kv:
            vote_round, qc_round = msgpack.unpackb(kv["safety"])
            records.append(SafetyRecord(SafetyState(vote_round, qc_round)))
        if "high_qc" in kv:
            records.append(HighQcRecord(codec.decode_qc(msgpack.unpackb(kv["high_qc"]))))
        if "last_tc" in kv:
            tc = codec.decode_tc(msgpack.unpackb(kv["last_tc"]))
            if tc is not None:
                records.append(TcRecord(tc))
        if "commit" in kv:
            height, block_id = msgpack.unpackb(kv["commit"])
            records.append(CommitRecord(height, block_id))
        apply(state, records)
        return state

    def write(self, records: list[Record]) -> None:
        if not records:
            return
        rows: list[tuple[str, bytes]] = []
        blocks: list[tuple[bytes, int, bytes]] = []
        committed: list[tuple[int, bytes]] = []
        for r in records:
            if isinstance(r, SafetyRecord):
                rows.append(
                    ("safety", _pack([r.state.highest_vote_round, r.state.highest_qc_round]))
                )
            elif isinstance(r, BlockRecord):
                blocks.append((r.block.id, r.block.height, _pack(codec.encode_block(r.block))))
            elif isinstance(r, HighQcRecord):
                rows.append(("high_qc", _pack(codec.encode_qc(r.qc))))
            elif isinstance(r, TcRecord):
                rows.append(("last_tc", _pack(codec.encode_tc(r.tc))))
            else:
                rows.append(("commit", _pack([r.height, r.block_id])))
                committed.append((r.height, r.block_id))
        with self._db:  # one transaction; COMMIT fsyncs the WAL (synchronous=FULL)
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", rows)
            self._db.executemany("INSERT OR IGNORE INTO blocks VALUES (?, ?, ?)", blocks)
            self._db.executemany("INSERT OR REPLACE INTO committed VALUES (?, ?)", committed)

    def committed_after(self, height: int, limit: int) -> list[Block]:
        rows = self._db.execute(
            "SELECT c.height, b.data FROM committed c JOIN blocks b ON b.id = c.id"
            " WHERE c.height > ? ORDER BY c.height LIMIT ?",
            (height, limit),
        )
        out: list[Block] = []
        for h, data in rows:
            if h != height + 1 + len(out):
                break  # a gap (committed before the table existed)
            out.append(codec.decode_block("stored block", msgpack.unpackb(data)))
        return out


def _pack(value: object) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))
