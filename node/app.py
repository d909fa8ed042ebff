"""The node's application driver: CA, CT log, DNS and the SCT flow around the state machine.

`trustchain.node.state.ReplicatedState` decides; this module does the I/O of a
validator (DESIGN.md section 6):

- **SCTs in votes.**  When this validator votes for a block, it signs, for each
  issue request in it, an SCT over the precertificate with its CT log key (the
  block's timestamp, leaf index = log size in the block's state + position) and
  sends it to the request's issuing node as a separate ``sct`` peer message.
  SCTs of a block that never commits name another timestamp or index than the
  one that does, and are never embedded.
- **On commit**, in height order: the block is recorded in ``state.db``, its
  precertificates enter the CT store (``ReplicatedLog``, one sequencing round
  per block, with the block's timestamp), the DNS records change, this
  validator signs the new checkpoint with its CT log key and broadcasts the
  signature (``cosig``), and the issuing node embeds SCTs from validators
  holding more than 2/3 of the power into the final certificate.
- **Restart**: ``state.db`` is replayed through the state machine, blocks the
  core committed but ``state.db`` missed are applied from the core's store, and
  entries missing from the CT store are appended again.

Ownership: everything here runs in the node's one trio thread; the state
machine is touched only from the consensus driver's task (hooks) and this
module's tasks, which never await while holding it half-updated.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from trustchain.consensus.core import Anchor, Evidence, evidence_operation
from trustchain.consensus.messages import Block, QuorumCert, genesis_block, make_block
from trustchain.consensus.proofs.vdf import discriminant
from trustchain.ct.api import CTApp
from trustchain.ct.checkpoint import (
    Checkpoint,
    CheckpointError,
    CosignatureCollector,
    RFC6962NoteSigner,
    RFC6962NoteVerifier,
    Voter,
    decode_rfc6962_signature,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
    verify_cosigned,
)
from trustchain.ct.merkle import EMPTY_ROOT
from trustchain.ct.note import Note, NoteError, parse_note
from trustchain.ct.sct import (
    DigitallySigned,
    LogEntry,
    SignedCertificateTimestamp,
    issue_scts,
    leaf_index_extensions,
    leaf_index_of,
)
from trustchain.ct.sequencer import Submission
from trustchain.ct.service import CTLog, LogParams
from trustchain.ct.signer import Signer, log_id
from trustchain.dns.authority import Authority
from trustchain.dns.records import CertificateIssued, CertificateRevoked, RecordError
from trustchain.node.ca.genesis import CAGenesis
from trustchain.node.ca.issuance import (
    MIN_NONCE,
    IssuanceError,
    Precertificate,
    PrecertRequest,
    check_csr,
    issue_final,
    issue_precertificate,
)
from trustchain.node.ca.profiles import CACertificate
from trustchain.node.ca.revocation import RevocationReason
from trustchain.node.errors import UserError
from trustchain.node.files import write_durably
from trustchain.node.log import EventLogger
from trustchain.node.snapshot import FILE as SNAPSHOT_FILE
from trustchain.node.snapshot import Snapshot, SnapshotError
from trustchain.node.snapshot import load_into as load_snapshot
from trustchain.node.snapshot import take as take_snapshot
from trustchain.node.state import (
    Applied,
    DecodedIssue,
    IssueRequest,
    LoggedEntry,
    ReplicatedState,
    encode_issue,
)

if TYPE_CHECKING:
    from trustchain.node.archive import Archiver

FINAL_WAIT = 10.0
"""Seconds the issuing node waits for an SCT quorum after its request committed, and
then for a cosigned checkpoint that covers it."""
STORE_AFTER_COSIGNED = 0.05
"""Seconds a CT store round waits at most for a quorum to cosign its tree first."""
SCTS_PER_PEER = 4
"""SCTs kept per request and validator, the latest: one per block that could commit it (a
block that did not commit had another timestamp or leaf index)."""
SERVE_WAIT = 2.0
"""Seconds a status lookup waits for this node's CT store to hold a cosigned entry."""
BYZANTINE_ENV = "TRUSTCHAIN_TEST_BYZANTINE"
"""Test-only: comma-separated misbehaviours of a Byzantine validator process (see NodeApp)."""
SLOW_STORE = 0.5
"""Test-only ("slow-store"): how late each CT store round of such a process starts."""
MAX_COSIG_AHEAD = 100_000
"""Checkpoint signatures for trees this much larger than ours are ignored."""
MAX_COSIG_PENDING = 256
"""Checkpoint sizes with signatures waiting for a quorum (the largest go first)."""
COSIGNED_EVERY = 1.0
"""Seconds between re-broadcasts of the latest cosigned checkpoint."""
DISCRIMINANTS_EVERY = 1.0
"""Seconds between looks for new epoch beacons and newly bonded accounts."""
MAX_BLOCK_OPS = 10_000
"""SCTs in one ``sct`` message are read up to 4x this (consensus.codec.MAX_OPS)."""


class RequestRefused(ValueError):
    """A client's request that the node refuses before it reaches consensus (HTTP 4xx)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


# --- the CT store, one sequencing round per committed block --------------------------


class ReplicatedLog(CTLog):
    """A CTLog whose entries, indices and timestamps come from committed blocks.

    The standalone log's sequencer loop (`CTLog.run`) is not started: `append`
    cuts exactly one round per block with the block's timestamp, so this
    store's tree is the one every validator's state commitment names.
    """

    cosigned: bytes | None = None
    """The latest checkpoint cosigned by more than 2/3 of the power that this store
    holds (what it serves, and proves inclusion against)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._presigned: dict[tuple[int, bytes, int], tuple[bytes, DigitallySigned]] = {}
        """(size, root, timestamp) -> the checkpoint `sign_tree` signed, and its STH signature."""

    @classmethod
    async def open_replicated(
        cls, data_dir: Path, signer: Signer, origin: str, cosigners: Sequence[Voter] = ()
    ) -> ReplicatedLog:
        data_dir.mkdir(parents=True, exist_ok=True)
        first = data_dir / "checkpoint"
        if first.exists():
            await _sign_restored(first, signer, origin, cosigners)
        else:
            # The empty tree at timestamp 0: a standalone log would use the wall clock,
            # but leaf timestamps must be the blocks' (never before a checkpoint's).
            signed = await sign_checkpoint(
                Checkpoint(origin, 0, EMPTY_ROOT), [RFC6962NoteSigner(origin, signer, 0)]
            )
            write_durably(first, signed)
        log = await cls.open(
            data_dir, signer, origin, None, LogParams(interval=0.0, refresh_interval=1e9)
        )
        assert isinstance(log, ReplicatedLog)
        cosigned = data_dir / "cosigned-checkpoint"
        if cosigned.exists():
            note = cosigned.read_bytes()
            try:
                parse_checkpoint(parse_note(note.decode()).text)
            except (UnicodeDecodeError, ValueError):
                # A copy of what the validators sent; the next one replaces it.
                note = b""
            log.cosigned = note or None
        return log

    def checkpoint(self) -> bytes:
        return self.cosigned or super().checkpoint()

    async def sign_tree(self, size: int, root: bytes, timestamp: int) -> bytes:
        """Sign the checkpoint of a committed tree now, before the round that stores it:
        the round that publishes that tree takes this signature instead of asking the
        HSM again."""
        signed = await super()._sign_tree(size, root, timestamp)
        self._presigned[(size, root, timestamp)] = signed
        return signed[0]

    async def _sign_tree(
        self, size: int, root: bytes, timestamp: int
    ) -> tuple[bytes, DigitallySigned]:
        signed = self._presigned.pop((size, root, timestamp), None)
        for key in [k for k in self._presigned if k[0] <= size]:
            del self._presigned[key]  # trees this store is past (none in order)
        return signed if signed is not None else await super()._sign_tree(size, root, timestamp)

    async def append(self, entries: Sequence[LoggedEntry], timestamp: int, root: bytes) -> None:
        """Log a committed block's entries; raise if the result is not the agreed tree."""
        for e in entries:
            await self._store_issuer(hashlib.sha256(e.issuer_der).digest(), e.issuer_der)
            self._core.submit(Submission(e.leaf.entry.entry, e.leaf.pre_certificate, e.leaf.chain))
        rnd = self._core.start_round(trio.current_time(), timestamp)
        if rnd is None or rnd.timestamp != timestamp or rnd.root != root:
            raise RuntimeError("the CT store diverged from the committed state")
        with trio.CancelScope(shield=True):
            await self._publish(rnd)

    def save_cosigned(self, data_dir: Path, note: bytes) -> None:
        """Write `note` (a cosigned checkpoint) where a restarted node finds it."""
        path = data_dir / "cosigned-checkpoint"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(note)
        tmp.replace(path)


async def _sign_restored(
    path: Path, signer: Signer, origin: str, cosigners: Sequence[Voter]
) -> None:
    """Add our signature to a restored checkpoint that a quorum cosigned without us.

    `trustchain restore` writes the cluster's cosigned checkpoint as the log's
    own; a validator that was not among its signers could not open its store.
    Only a checkpoint that more than 2/3 of the power signed is signed again
    (the restore verified the tree under it); anything else is left for the
    store to refuse.
    """
    raw = path.read_bytes()
    try:
        open_checkpoint(raw, RFC6962NoteVerifier(origin, signer.public_key()))
        return
    except CheckpointError:
        pass
    try:
        cosigned = verify_cosigned(raw, cosigners, origin=origin)
        stamps = [decode_rfc6962_signature(s.signature)[0] for s in parse_note(raw).signatures]
    except (CheckpointError, NoteError, ValueError):
        return
    signed = await sign_checkpoint(
        cosigned.checkpoint,
        [RFC6962NoteSigner(origin, signer, max(stamps))],
        parse_note(raw).signatures,
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(signed)
    tmp.replace(path)


# --- applied blocks (SQLite adapter) --------------------------------------------------


class AppliedStore:
    """Committed blocks this node applied, in height order (``state.db``).

    Contract: `add` survives a crash of the process when it returns; a block is
    added once, after the ones below it.  It is not fsynced (WAL with
    synchronous=NORMAL): every committed block is already durable in the
    consensus store, and `NodeApp.recover` re-applies from there whatever a
    power loss took from the tail of this file.

    A row is the block without its QC's signatures (`encode_applied`): its id
    can be computed again, so the archived rows are a chain whose last block a
    restored node can rejoin consensus at (trustchain.node.daemon).
    """

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS blocks (height INTEGER PRIMARY KEY, b BLOB)")

    def load(self) -> list[Block]:
        rows = self._db.execute("SELECT b FROM blocks ORDER BY height").fetchall()
        return [decode_applied(bytes(r[0])) for r in rows]

    def last(self) -> Block | None:
        row = self._db.execute("SELECT b FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
        return None if row is None else decode_applied(bytes(row[0]))

    def add(self, block: Block) -> None:
        self.add_many([block])

    def add_many(self, blocks: Sequence[Block]) -> None:
        """Record consecutive blocks in one transaction."""
        rows = [(b.height, encode_applied(b)) for b in blocks]
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO blocks VALUES (?, ?)", rows)

    def close(self) -> None:
        self._db.close()


def encode_applied(b: Block) -> bytes:
    """A state.db row (and an archived state segment's): every field of the block that its
    id covers, none of its QC's signatures."""
    row = [
        b.round, b.height, b.timestamp, b.state, list(b.payload), b.parent_id, b.qc.round,
        b.proposer,
    ]  # fmt: skip
    data: bytes = msgpack.packb(row, use_bin_type=True)
    return data


def decode_applied(data: bytes) -> Block:
    """The block of a state.db row, with its id computed again (raises ValueError or
    TypeError on a malformed row).  Rows of five fields (before the ids were kept) give
    a block without id."""
    row = msgpack.unpackb(data, raw=False)
    if not isinstance(row, list) or len(row) not in (5, 8):
        raise ValueError("a block row has 5 or 8 fields")
    rnd, height, timestamp, state, payload = row[:5]
    if not all(isinstance(x, int) for x in (rnd, height, timestamp)):
        raise TypeError("round, height and timestamp must be integers")
    if not isinstance(state, bytes) or not all(isinstance(o, bytes) for o in payload):
        raise TypeError("state and operations must be bytes")
    if len(row) == 5:
        qc = genesis_block("", b"").qc
        return Block(rnd, height, b"", qc, timestamp, state, tuple(payload), "")
    parent, qc_round, proposer = row[5:]
    if not isinstance(parent, bytes) or not isinstance(qc_round, int):
        raise TypeError("parent id must be bytes and qc round an integer")
    if not isinstance(proposer, str):
        raise TypeError("proposer must be a string")
    return make_block(
        round=rnd, height=height, qc=QuorumCert(parent, qc_round, height - 1, ()),
        timestamp=timestamp, state=state, payload=tuple(payload), proposer=proposer,
    )  # fmt: skip


# --- the issuing node's side ------------------------------------------------------------


@dataclass
class Issued:
    """What a client gets back for an issued certificate."""

    certificate: bytes
    """The final certificate (DER)."""
    chain: tuple[bytes, ...]
    """Certificate, then intermediate (DER)."""
    scts: tuple[SignedCertificateTimestamp, ...]
    signers: tuple[str, ...]
    leaf_index: int
    height: int
    checkpoint: str
    """The latest cosigned checkpoint (signed note text)."""


@dataclass
class _Pending:
    oid: bytes
    """The operation id of the issue request."""
    precert: Precertificate
    done: trio.Event = field(default_factory=trio.Event)
    result: Issued | None = None
    error: RequestRefused | None = None
    committed: tuple[int, int, int] | None = None
    """(height, timestamp, leaf index) once the request's block is applied."""
    signing: bool = False
    """A final certificate is being signed."""
    again: bool = False
    """An SCT arrived meanwhile (try again if that signature lacked a quorum)."""
    stages: dict[str, float] = field(default_factory=dict)
    """time.monotonic() when the request reached each stage (for the issuance log)."""


class NodeApp:
    """One validator's CA/CT/DNS application around a `ReplicatedState`."""

    def __init__(
        self,
        name: str,
        state: ReplicatedState,
        ca: CAGenesis,
        data_dir: Path,
        *,
        issuer: tuple[Signer, CACertificate],
        log_signer: Signer,
        ctlog: ReplicatedLog,
        authority: Authority | None,
        send: Callable[[str | None, dict[str, Any]], None],
        submit: Callable[[bytes, Callable[[int | None, str | None], None]], None],
        log: EventLogger,
        validity_days: int = 30,
        byzantine: frozenset[str] = frozenset(),
    ) -> None:
        self.name = name
        self.state = state
        self.ca = ca
        self.data_dir = data_dir
        self.issuer_signer, self.issuer_cert = issuer
        self.log_signer = log_signer
        self.log_id = log_id(log_signer.public_key())
        self.ctlog = ctlog
        self.origin = ctlog.origin
        self.authority = authority
        self.send = send
        self.submit = submit
        self.log = log
        self.validity_days = validity_days
        self.store = AppliedStore(data_dir / "state.db")
        self._applied_send, self._applied = trio.open_memory_channel[tuple[Block, Applied]](2**20)
        self._to_cosign_send, self._to_cosign = trio.open_memory_channel[Applied](2**20)
        self._votes_send, self._votes = trio.open_memory_channel[Block](4096)
        self._pending: dict[bytes, _Pending] = {}
        # op id -> (validator, timestamp, extensions) -> SCT, for requests this node issues.
        self._scts: dict[bytes, dict[tuple[str, int, bytes], SignedCertificateTimestamp]] = {}
        self._log_ids = {v.name: v.log_id for v in self.ca.validators}
        self._voters = ca.checkpoint_voters(self.origin)
        self.issued = 0
        self.applied_height = 0
        self.byzantine = byzantine
        """Test-only misbehaviour (BYZANTINE_ENV): "bad-scts" signs SCTs for the wrong
        leaf, "flood-scts" sends each issuing node 32 junk SCTs per request besides its
        own (half in the other validators' names), "accept-invalid" proposes and votes
        for requests that fail validation,
        "equivocate" signs two proposals per round (trustchain.node.state.AppCore);
        and one fault, "slow-store": each CT store round starts SLOW_STORE seconds late."""
        self._nursery: trio.Nursery | None = None
        self._cosigned_changed = trio.Event()
        """Set (and replaced) whenever the cosigned checkpoint advances."""
        self._applied_changed = trio.Event()
        """Set (and replaced) whenever `applied_height` advances."""
        self.archiver: Archiver | None = None
        """The S3 archive of this node's log and state (set by the daemon), if any."""
        self.published: dict[str, CertificateIssued] = {}
        """Certificates whose TLSA records the replicated state publishes, by serial."""
        self.on_snapshot: Callable[[Snapshot], None] | None = None
        """Called with a snapshot every `snapshot_every` committed blocks (the archiver)."""
        self.snapshot_every = 10_000
        self.epoch: Anchor | None = None
        """The consensus epoch the cluster is in, if it was rebuilt from an archive."""
        me = next((v for v in ca.validators if v.name == name), None)
        self._own_intermediate = me is not None and self.issuer_cert.der in (
            c.der for c in me.intermediates
        )
        """Is this node's intermediate one the genesis lists for it? Only then may it
        skip decoding its own issue operations (others would refuse them anyway)."""
        self._saved_cosigned: bytes | None = ctlog.cosigned
        """The cosigned checkpoint last written to ``ct/cosigned-checkpoint``."""
        served = parse_checkpoint(parse_note(ctlog.cosigned).text).size if ctlog.cosigned else -1
        self._cosignatures = CosignatureCollector(
            self._voters,
            self.origin,
            quorum=ca.has_quorum,
            cosigned_size=served,
            max_pending=MAX_COSIG_PENDING,
        )
        """The validators' signatures over checkpoints, gathered until a quorum signed one;
        its `cosigned_size` is the size of `_latest_cosigned` (-1: none yet)."""
        self._latest_cosigned: bytes | None = ctlog.cosigned
        """The latest checkpoint a quorum cosigned (what an issuance answer carries)."""
        self._unserved: collections.deque[tuple[int, bytes]] = collections.deque()
        """(size, note) of cosigned checkpoints larger than this node's CT store, oldest first."""
        self._served_size = served
        """The size of `ctlog.cosigned`, the cosigned checkpoint this node serves."""
        self._served_changed = trio.Event()
        """Set (and replaced) whenever `ctlog.cosigned` advances."""

    # --- recovery -----------------------------------------------------------------------

    async def recover(self, core_blocks: dict[bytes, Block], committed_id: bytes) -> None:
        """Rebuild the state from state.db and the core's committed chain; fill the CT store.

        A restored node starts from its snapshot (``DIR/snapshot``, verified by the
        restore) and replays only the blocks after it.
        """
        start = 0
        path = self.data_dir / SNAPSHOT_FILE
        if path.exists():
            try:
                loaded = load_snapshot(self.state, path.read_bytes())
            except SnapshotError as exc:
                raise RuntimeError(f"{path}: {exc}; restore the node again") from None
            start = loaded.height
            self.published = {c.certificate_id: c for c in loaded.published}
            if self.authority is not None and loaded.published:
                self.authority.apply(loaded.published, version=loaded.height)
        stored = await trio.to_thread.run_sync(self.store.load)
        replay: list[tuple[Block, Applied]] = []
        for b in stored:
            if b.height > start:
                replay.append((b, self._apply(b)))
        chain = []
        b_: Block | None = core_blocks.get(committed_id)
        while b_ is not None and b_.height > self.state.height:
            chain.append(b_)
            b_ = core_blocks.get(b_.parent_id)
        for b in reversed(chain):
            applied = self._apply(b)
            await trio.to_thread.run_sync(self.store.add, b)
            replay.append((b, applied))
        size = self.ctlog.size
        for b, applied in replay:
            if applied.entries and applied.edge.size > size:
                await self.ctlog.append(applied.entries, b.timestamp, applied.edge.root())
            if self.authority is not None and applied.dns:
                self._apply_dns(applied)
        if self.ctlog.size != self.state.edge.size:
            # E.g. state.db and consensus.db were removed and ct/ was kept.
            raise UserError(
                f"{self.data_dir / 'ct'}: the CT store holds {self.ctlog.size} entries, the state "
                f"{self.state.edge.size}; move the ct folder away too and start again (the node "
                "rebuilds it from its state)"
            )
        # Uncommitted blocks the core holds: their states must be known to execute children.
        for b in sorted(core_blocks.values(), key=lambda x: x.height):
            if b.height > self.state.height:
                self.state.execute_at(b.state, b.payload, b.timestamp)
        self.applied_height = self.state.height
        self.log.info("app.recovered", height=self.state.height, log_size=self.state.edge.size)

    # --- hooks from the consensus driver (its task; must not block) ---------------------

    def on_vote(self, block: Block) -> None:
        if any(op.startswith(b"trustchain-issue-v1:") for op in block.payload):
            try:
                self._votes_send.send_nowait(block)
            except trio.WouldBlock:
                self.log.warning("app.sct_queue_full", height=block.height)

    def on_committed(self, block: Block) -> None:
        applied = self._apply(block)
        for oid, reason in applied.refused:
            self.log.warning("app.refused_on_commit", op=oid.hex()[:16], reason=reason)
        # The block is final: the final certificates of the requests this node issues
        # are signed now, while the block is recorded and its entries go into the CT
        # store (`issue` answers only once that store holds them durably).
        for e in applied.entries:
            pending = self._pending.get(e.op_id)
            if pending is not None:
                index = e.leaf.entry.extensions
                pending.committed = (block.height, block.timestamp, leaf_index_of(index) or 0)
                pending.stages["committed"] = time.monotonic()
                self._try_final_soon(e.op_id)
        if applied.entries:
            self._to_cosign_send.send_nowait(applied)
        self._applied_send.send_nowait((block, applied))
        if self.on_snapshot is not None and block.height % self.snapshot_every == 0:
            self.on_snapshot(
                take_snapshot(self.state, encode_applied(block), self.published, self.epoch)
            )

    def _apply(self, block: Block) -> Applied:
        """Apply a committed block; keep the certificates whose TLSA records are published
        (replicated state that a snapshot carries)."""
        applied = self.state.apply(block)
        for change in applied.dns:
            if isinstance(change, CertificateIssued):
                self.published[change.certificate_id] = change
            elif isinstance(change, CertificateRevoked):
                self.published.pop(change.certificate_id, None)
        return applied

    def on_evidence(self, evidence: Evidence) -> None:
        op = evidence_operation(evidence)
        if self.state.validate(op) is None:
            self.submit(op, lambda height, error: None)

    # --- peer messages ------------------------------------------------------------------

    def deliver(self, peer: str, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "sct":
            items = message.get("items")
            if isinstance(items, list):
                # One message per block and issuing node: [[op id, SCT], ...].
                for item in items[: 4 * MAX_BLOCK_OPS]:
                    if isinstance(item, list) and len(item) == 2:
                        self._on_sct(peer, item[0], item[1])
            else:
                self._on_sct(peer, message.get("op"), message.get("sct"))
        elif kind == "cosig":
            note = message.get("note")
            # The latest cosigned checkpoint comes back from every peer every
            # COSIGNED_EVERY seconds: the one we hold already needs no parsing.
            if isinstance(note, bytes) and len(note) < 64 * 1024 and note != self.ctlog.cosigned:
                self._add_cosignature(note)

    def _on_sct(self, peer: str, oid: Any, data: Any) -> None:
        if not isinstance(oid, bytes) or not isinstance(data, bytes) or oid not in self._pending:
            return
        try:
            sct = SignedCertificateTimestamp.decode(data)
        except ValueError:  # ct._tls.DecodeError is a ValueError
            self.log.warning("app.bad_sct", peer=peer, reason="undecodable")
            return
        if sct.log_id != self._log_ids.get(peer):
            # Each validator hands over its own SCTs: one with another's log id is a lie
            # (or a replay), and would take a place of the real one.
            self.log.warning("app.bad_sct", peer=peer, reason="not the sender's log id")
            return
        # Kept per sender and leaf (a block that did not commit had another timestamp
        # or index), a few per sender: one validator cannot crowd out the others'.
        by = self._scts.setdefault(oid, {})
        key = (peer, sct.timestamp, sct.extensions)
        if key not in by:
            mine = [k for k in by if k[0] == peer]
            if len(mine) >= SCTS_PER_PEER:
                del by[mine[0]]  # the oldest: a later block is likelier to commit
        by[key] = sct
        pending = self._pending[oid]
        if pending.committed is not None and not pending.done.is_set():
            self._try_final_soon(oid)

    # --- tasks ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._sign_scts)
                nursery.start_soon(self._cosign_loop)
                nursery.start_soon(self._apply_loop)
                nursery.start_soon(self._rebroadcast)
                nursery.start_soon(self._precompute_discriminants)
                nursery.start_soon(self._save_cosigned)
                task_status.started()
        finally:
            self.close()

    async def _precompute_discriminants(self) -> None:
        """Each bonded account's VDF discriminant for every accepted epoch, made in a worker
        thread as soon as the epoch's beacon commits.

        Deriving a 1024-bit discriminant costs about 15 ms; done here, the first
        request of an account in an epoch (a cold check) only verifies its proofs.
        """
        done: set[tuple[bytes, bytes]] = set()
        while True:
            minimum = self.state.policy.min_stake
            todo = [
                (epoch, beacon, a.account_id)
                for epoch, beacon in sorted(self.state.beacons.items())
                for a in self.state.ledger.accounts()
                if a.bonded >= minimum and (beacon, a.account_id) not in done
            ]
            for epoch, beacon, account in todo:
                value = await trio.to_thread.run_sync(discriminant, beacon, account)
                self.state.verifier.cache.add_discriminant(beacon, account, epoch, value)
                done.add((beacon, account))
            if todo:
                self.log.info("app.discriminants", computed=len(todo))
            live = set(self.state.beacons.values())
            done = {d for d in done if d[0] in live}
            await trio.sleep(DISCRIMINANTS_EVERY)

    async def _sign_scts(self) -> None:
        async for block in self._votes:
            # One message per issuing node and block, however many of its requests
            # the block holds (each message costs a datagram and wake-ups at both ends).
            # And one HSM call for all of the block's SCTs.
            entries = self.state.entries_of(block)
            requests: list[tuple[LogEntry, int, bytes]] = []
            for entry in entries:
                index, timestamp = entry.leaf.entry.extensions, block.timestamp
                if "bad-scts" in self.byzantine:
                    # Another leaf than the one committed: a validly signed lie.
                    index = leaf_index_extensions((leaf_index_of(index) or 0) + 1)
                    timestamp += 1
                requests.append((entry.decoded.precert.entry, timestamp, index))
            scts = await issue_scts(self.log_signer, requests, signer_log_id=self.log_id)
            by_issuer: dict[str, list[list[bytes]]] = {}
            for entry, sct in zip(entries, scts, strict=True):
                by_issuer.setdefault(entry.decoded.request.issuer, []).append(
                    [entry.op_id, sct.encode()]
                )
            if "flood-scts" in self.byzantine:
                for items in by_issuer.values():
                    items[:0] = [[oid, junk] for oid, _ in list(items) for junk in self._junk()]
            for issuer, items in by_issuer.items():
                if issuer == self.name:
                    for oid, data in items:
                        self._on_sct(self.name, oid, data)
                else:
                    self.send(issuer, {"type": "sct", "items": items})

    def _junk(self) -> list[bytes]:
        """Test-only ("flood-scts"): decodable SCTs that no honest check accepts."""
        others = [lid for lid in self._log_ids.values() if lid and lid != self.log_id]
        return [
            SignedCertificateTimestamp(
                lid, int(time.time() * 1000) - i, b"", DigitallySigned(4, 3, b"\x30\x00")
            ).encode()
            for i in range(16)
            for lid in (self.log_id, others[i % len(others)])
        ]

    async def _apply_loop(self) -> None:
        async for first in self._applied:
            batch = [first]
            while len(batch) < 256:
                try:
                    batch.append(self._applied.receive_nowait())
                except trio.WouldBlock:
                    break
            # Recorded first: a crash after this re-appends the entries at restart.
            # On the event loop: without an fsync (see AppliedStore) the insert is
            # cheaper than the two thread hand-offs a worker thread would cost.
            started = time.monotonic()
            self.store.add_many([b for b, _ in batch])
            recorded = time.monotonic() - started
            # The store rounds wait (briefly) until a quorum cosigned these trees: the
            # issuing node answers then, and until then every validator's CPU is
            # better spent on the cosignatures and the final certificate.
            last = max((a.edge.size for _, a in batch if a.entries), default=-1)
            with trio.move_on_after(STORE_AFTER_COSIGNED):
                while self._cosignatures.cosigned_size < last:
                    await self._cosigned_changed.wait()
            for block, applied in batch:
                await self._carry_out(block, applied, recorded)

    async def _carry_out(self, block: Block, applied: Applied, recorded: float) -> None:
        started = time.monotonic()
        if applied.entries:
            if "slow-store" in self.byzantine:
                await trio.sleep(SLOW_STORE)
            await self.ctlog.append(applied.entries, block.timestamp, applied.edge.root())
            self._serve_cosigned()
        logged = time.monotonic() - started
        if self.authority is not None and applied.dns:
            self._apply_dns(applied)
        self.applied_height = block.height
        self._applied_changed.set()
        self._applied_changed = trio.Event()
        if applied.entries:
            # state_ms: recording the batch in state.db; ct_ms: the CT store round.
            self.log.info(
                "app.logged", height=block.height, entries=len(applied.entries),
                log_size=applied.edge.size, state_ms=round(recorded * 1000, 1),
                ct_ms=round(logged * 1000, 1),
            )  # fmt: skip

    def _apply_dns(self, applied: Applied) -> None:
        assert self.authority is not None
        try:
            self.authority.apply(list(applied.dns), version=applied.height)
        except RecordError as exc:
            self.log.warning("app.dns_refused", height=applied.height, error=str(exc))

    # --- cosigned checkpoints -------------------------------------------------------------

    async def _cosign_loop(self) -> None:
        # Apart from the apply loop, so that a block's cosignature never waits behind
        # the CT store round of the block before it.
        async for applied in self._to_cosign:
            await self._cosign(applied)

    async def _cosign(self, applied: Applied) -> None:
        """Sign the tree a block committed at once, before this node's CT store round.

        The block is durable already: every validator that voted for it persisted it
        with fsync first, and a restarted node re-appends committed blocks to its store.
        The store round that follows takes this signature for its own checkpoint.
        """
        note = await self.ctlog.sign_tree(applied.edge.size, applied.edge.root(), applied.timestamp)
        self.send(None, {"type": "cosig", "note": note})
        self._add_cosignature(note)

    async def _rebroadcast(self) -> None:
        """Send the latest cosigned checkpoint now and then: a validator that was down
        signs the sizes it missed alone, and completes the quorum from this."""
        while True:
            await trio.sleep(COSIGNED_EVERY)
            if self.ctlog.cosigned is not None:
                self.send(None, {"type": "cosig", "note": self.ctlog.cosigned})

    async def _save_cosigned(self) -> None:
        """Keep ``ct/cosigned-checkpoint`` current, once a second at most (not at every
        block, on the event loop): a restarted node serves it until its peers send newer."""
        while True:
            await trio.sleep(COSIGNED_EVERY)
            note = self.ctlog.cosigned
            if note is not None and note != self._saved_cosigned:
                await trio.to_thread.run_sync(self.ctlog.save_cosigned, self.data_dir / "ct", note)
                self._saved_cosigned = note

    def _add_cosignature(self, note: bytes | Note) -> None:
        """Take a checkpoint note's signatures (ours, a peer's, or a re-broadcast
        cosigned one); publish the checkpoint once a quorum's signatures verified."""
        if isinstance(note, bytes):
            try:
                note = parse_note(note)
            except NoteError:
                return
        # Completed up to the tree this node committed (a larger one waits for its
        # own cosignature of it); served once its own CT store holds it.
        edge = self.state.edge
        done = self._cosignatures.add(
            note, size=edge.size, root=edge.root, max_ahead=MAX_COSIG_AHEAD
        )
        if done is None:
            return
        self._latest_cosigned = done.note
        self._unserved.append((done.cosigned.checkpoint.size, done.note))
        self._serve_cosigned()
        self._cosigned_changed.set()
        self._cosigned_changed = trio.Event()

    def _serve_cosigned(self) -> None:
        """Serve the largest cosigned checkpoint this node's CT store holds: its status
        answers prove inclusion against it, and its 6962 checkpoint must not run ahead
        of its tiles (peers often finish their store round first)."""
        served = None
        while self._unserved and self._unserved[0][0] <= self.ctlog.size:
            served = self._unserved.popleft()
        if served is None:
            return
        self._served_size, self.ctlog.cosigned = served
        self._served_changed.set()
        self._served_changed = trio.Event()

    def cosigned_checkpoint(self) -> str:
        return (self.ctlog.cosigned or b"").decode()

    # --- final certificates ---------------------------------------------------------------

    def _try_final_soon(self, oid: bytes) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._try_final, oid)

    async def _try_final(self, oid: bytes) -> None:
        pending = self._pending.get(oid)
        if pending is None or pending.committed is None or pending.done.is_set():
            return
        if pending.signing:
            # An SCT arrived while the final certificate is being signed: sign it
            # again only if that attempt lacked a quorum (never twice in parallel).
            pending.again = True
            return
        pending.signing = True
        try:
            while not pending.done.is_set():
                pending.again = False
                await self._final(pending)
                if not pending.again:
                    break
        finally:
            pending.signing = False

    async def _final(self, pending: _Pending) -> None:
        assert pending.committed is not None
        height, timestamp, index = pending.committed
        extensions = leaf_index_extensions(index)
        # Only SCTs for the committed leaf count; those for blocks that never
        # committed (other timestamp or index) are dropped here.
        scts = [
            s
            for s in self._scts.get(pending.oid, {}).values()
            if s.timestamp == timestamp and s.extensions == extensions
        ]
        signers = {s.log_id for s in scts}
        power = sum(
            v.power for v in self.ca.validators if v.log_id is not None and v.log_id in signers
        )
        if not self.ca.has_quorum(power):
            return
        try:
            final = await issue_final(self.issuer_signer, pending.precert, scts, self.ca)
        except IssuanceError as exc:
            if exc.check == "sct quorum":
                return  # wait for more SCTs
            pending.error = RequestRefused("issuance", str(exc), 500)
            pending.done.set()
            return
        if pending.done.is_set():
            return
        pending.result = Issued(
            final.der,
            (final.der, self.issuer_cert.der),
            final.scts,
            final.signers,
            index,
            height,
            self.cosigned_checkpoint(),
        )
        self.issued += 1
        pending.stages["signed"] = time.monotonic()
        for rejected in final.rejected:
            self.log.warning("app.sct_rejected", op=pending.oid.hex()[:16], reason=rejected[1])
        pending.done.set()

    # --- client requests ------------------------------------------------------------------

    async def issue(self, csr: bytes, bundle: bytes, *, timeout: float = 30.0) -> Issued:
        """Issue a certificate for `csr` with the requester's proof `bundle`."""
        started = time.monotonic()
        try:
            checked = check_csr(csr, self.ca.policy)
        except IssuanceError as exc:
            raise RequestRefused(exc.check.replace(" ", "_"), str(exc)) from None
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        days = min(self.validity_days, self.ca.policy.max_validity_days)
        not_after = min(
            now + dt.timedelta(days=days) - dt.timedelta(seconds=1), self.issuer_cert.not_after
        )
        request = PrecertRequest(checked, secrets.token_bytes(MIN_NONCE), now, not_after)
        try:
            precert = await issue_precertificate(
                self.issuer_signer,
                self.issuer_cert,
                request,
                self.ca.policy,
                issued_serials=self.state.certificates,
            )
        except IssuanceError as exc:
            raise RequestRefused(exc.check.replace(" ", "_"), str(exc)) from None
        issue_request = IssueRequest(
            checked.der,
            bundle,
            precert.der,
            self.name,
            request.nonce,
            int(request.not_before.timestamp()),
            int(request.not_after.timestamp()),
        )
        op = encode_issue(issue_request)
        if self._own_intermediate:
            self.state.remember_issue(op, DecodedIssue(issue_request, checked, precert))
        reason = self.state.validate(op)
        if reason is not None:
            raise RequestRefused(reason.split(":", 1)[0].replace(" ", "_"), reason)
        oid = hashlib.sha256(op).digest()
        pending = self._pending[oid] = _Pending(oid, precert)

        def done(height: int | None, error: str | None) -> None:
            if error is not None and not pending.done.is_set():
                pending.error = RequestRefused("not_committed", error, 503)
                pending.done.set()

        pending.stages["submitted"] = time.monotonic()
        self.submit(op, done)
        try:
            with trio.move_on_after(timeout):
                await pending.done.wait()
            if pending.error is not None:
                raise pending.error
            if pending.result is None:
                raise RequestRefused(
                    "timeout", f"not issued within {timeout:g} s; retry later", 503
                )
            result = pending.result
            # The client wants a checkpoint that covers its leaf, signed by a quorum:
            # validators holding more than 2/3 of the power vouch for the entry (and
            # the committed block is on disk at a quorum), whether or not this node's
            # own CT store round for it has finished.
            with trio.move_on_after(FINAL_WAIT):
                while self._cosignatures.cosigned_size <= result.leaf_index:
                    await self._cosigned_changed.wait()
            if self._cosignatures.cosigned_size <= result.leaf_index:
                raise RequestRefused(
                    "timeout", "issued, but no cosigned checkpoint covers it yet; retry later", 503
                )
            result.checkpoint = (self._latest_cosigned or b"").decode()
            # Where the time went: submitted -> committed -> final certificate signed
            # -> covered by a cosigned checkpoint.
            pending.stages["cosigned"] = time.monotonic()
            self.log.info(
                "app.issued", serial=f"{precert.serial:x}", leaf_index=result.leaf_index,
                ms=round((time.monotonic() - started) * 1000, 1),
                stages_ms={k: round((t - started) * 1000, 1) for k, t in pending.stages.items()},
            )  # fmt: skip
            return result
        finally:
            del self._pending[oid]
            self._scts.pop(oid, None)

    async def wait_served(self, serial: int) -> None:
        """Wait (at most SERVE_WAIT) until this node serves a cosigned checkpoint covering
        `serial`'s entry, when a quorum cosigned one already: an issuing node answers
        once the tree is cosigned, possibly before its own store round finished."""
        record = self.state.certificates.get(serial)
        if record is None:
            return
        with trio.move_on_after(SERVE_WAIT):
            while self._served_size <= record.leaf_index < self._cosignatures.cosigned_size:
                await self._served_changed.wait()

    async def submit_and_wait(self, op: bytes, *, timeout: float = 30.0) -> int:
        """Submit a revoke (or other) operation; the committed height once it commits."""
        reason = self.state.validate(op)
        if reason is not None:
            raise RequestRefused(reason.split(":", 1)[0].replace(" ", "_"), reason)
        outcome: list[tuple[int | None, str | None]] = []
        event = trio.Event()

        def done(height: int | None, error: str | None) -> None:
            outcome.append((height, error))
            event.set()

        self.submit(op, done)
        with trio.move_on_after(timeout):
            await event.wait()
        if not outcome:
            raise RequestRefused("timeout", f"not committed within {timeout:g} s", 503)
        height, error = outcome[0]
        if error is not None or height is None:
            raise RequestRefused("not_committed", error or "not committed", 503)
        # Wait until this node applied it, so that status answers reflect it.
        while self.applied_height < height:
            await self._applied_changed.wait()
        return height

    def status(self, serial: int) -> dict[str, Any] | None:
        """The status document of docs/ca.md ("Status API"), or None if unknown."""
        record = self.state.certificates.get(serial)
        if record is None:
            return None
        note = self.cosigned_checkpoint()
        size = self._served_size
        proof: list[str] = []
        if record.leaf_index < size:
            # The state knows the index: no lookup of the leaf hash in the CT index.
            hashes = self.ctlog.inclusion_proof(record.leaf_index, size)
            proof = [base64.b64encode(h).decode() for h in hashes]
        doc: dict[str, Any] = {
            "serial": f"{serial:x}",
            "revoked": serial in self.state.revocations,
            "leaf_index": record.leaf_index,
            "inclusion_proof": proof,
            "checkpoint": note,
        }
        rev = self.state.revocations.get(serial)
        if rev is not None:
            when = dt.datetime.fromtimestamp(rev.time / 1000, dt.UTC)
            doc["revocation"] = {
                "reason": RevocationReason(rev.reason).label,
                "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        return doc

    def close(self) -> None:
        note = self.ctlog.cosigned
        if note is not None and note != self._saved_cosigned:
            self.ctlog.save_cosigned(self.data_dir / "ct", note)
        self.store.close()
        self.ctlog.close()


# --- the CT HTTPS app with the CA status endpoint -----------------------------------------

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class PublicApp:
    """Port 6962: the CT log's RFC 6962 / static-ct-api paths plus ``/ca/v1/status/``.

    The status endpoint is read-only and public (relying parties run
    ``trustchain cert verify --online`` without a client certificate).
    """

    def __init__(self, app: NodeApp) -> None:
        self.app = app
        self.ct = CTApp(app.ctlog)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/ca/v1/status/"):
            status, doc = await self.status_response(scope["path"][len("/ca/v1/status/") :])
            body = json.dumps(doc).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.ct(scope, receive, send)

    async def status_response(self, text: str) -> tuple[int, dict[str, Any]]:
        try:
            serial = int(text, 16)
            if not 0 < serial < 2**160 or text != f"{serial:x}":
                raise ValueError
        except ValueError:
            return 400, {"error": "bad_serial", "message": "serial must be lowercase hex"}
        await self.app.wait_served(serial)
        doc = self.app.status(serial)
        if doc is None:
            return 404, {"error": "unknown_serial", "message": f"no certificate {serial:x}"}
        return 200, doc


def pem_chain(chain: Sequence[bytes]) -> bytes:
    """The certificates (DER, already checked: ours) as PEM, RFC 7468 section 5: base64
    in lines of 64 characters between the labels, byte for byte what cryptography's
    ``public_bytes(PEM)`` writes, without parsing each certificate again (19 -> 8 us
    for a leaf and its intermediate, per issuance answer)."""
    out = []
    for der in chain:
        text = base64.b64encode(der)
        out.append(b"-----BEGIN CERTIFICATE-----\n")
        out.extend(text[i : i + 64] + b"\n" for i in range(0, len(text), 64))
        out.append(b"-----END CERTIFICATE-----\n")
    return b"".join(out)
