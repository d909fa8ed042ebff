"""Run the consensus core over the peer mesh, with SQLite durability.

The driver owns the Core: one task takes inputs (peer messages, client
operations, timer), hands them to the core in batches, and acts on the
outputs in the order `trustchain.consensus.core.Output` prescribes: it writes
every record of the batch to SQLite in one transaction (fsync), appends what
it signed to the audit log, and only then sends.  Batching inputs that arrive
together amortises the fsync over many messages.

Clients submit operations on a local TCP endpoint (``client_listen`` in
node.toml, loopback only): 4-byte length-prefixed msgpack maps
``{"id": N, "op": BYTES}``, answered with ``{"id": N, "ok": true, "height": H}``
once the operation is committed, or ``{"id": N, "ok": false, "error": ...}``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustchain.consensus import codec
from trustchain.consensus.core import Anchor, Application, Config, Core, Evidence, Output
from trustchain.consensus.messages import (
    Block,
    Message,
    Operation,
    SyncResponse,
    Timeout,
    Vote,
    operation_id,
)
from trustchain.consensus.storage import SqliteStorage
from trustchain.consensus.validators import Member, ValidatorSet
from trustchain.node.config import Address, Genesis
from trustchain.node.epoch import Epoch
from trustchain.node.framing import FrameDecoder, FrameError, encode_frame
from trustchain.node.log import EventLogger
from trustchain.node.peer import PeerNetwork

MAX_OP_BYTES = 64 * 1024
BATCH_INPUTS = 512
COMMIT_WAIT = 30.0
PROGRESS_EVERY = 1.0
INVALID_EVERY = 10.0
"""Seconds between two warnings about one peer's invalid messages."""
MAX_IDLE = 5.0
REJOIN_GRACE = 5.0
"""Seconds a rejoining validator only watches the cluster's rounds (Core.rejoin)."""


class NoOpApplication:
    """The replicated state until the CA/CT state machine lands: a hash chain of operations."""

    def __init__(self, chain_id: str) -> None:
        self._genesis = hashlib.sha256(b"trustchain-state-v1" + chain_id.encode()).digest()

    def genesis_state(self) -> bytes:
        return self._genesis

    def validate(self, op: bytes) -> str | None:
        if len(op) > MAX_OP_BYTES:
            return f"operation of {len(op)} bytes exceeds {MAX_OP_BYTES}"
        return None

    def execute(self, state: bytes, ops: tuple[bytes, ...]) -> bytes:
        h = hashlib.sha256(state)
        for op in ops:
            h.update(hashlib.sha256(op).digest())
        return h.digest()


def validator_set(genesis: Genesis, chain_id: str | None = None) -> ValidatorSet:
    """The genesis validators, signing for `chain_id` (a restored cluster's epoch) or genesis'."""
    return ValidatorSet(
        chain_id or genesis.chain_id,
        [Member(v.name, v.public_key, v.power) for v in genesis.validators],
    )


class ConsensusDriver:
    def __init__(
        self,
        name: str,
        key: Ed25519PrivateKey,
        genesis: Genesis,
        network: PeerNetwork,
        data_dir: Path,
        config: Config,
        log: EventLogger,
        *,
        app: Application | None = None,
        core_class: type[Core] = Core,
        epoch: Epoch | None = None,
        rejoin: Block | None = None,
    ) -> None:
        self.name = name
        self.network = network
        self.log = log
        self.storage = SqliteStorage(data_dir / "consensus.db")
        self._invalid: dict[str, tuple[float, int]] = {}
        """peer -> (when its last invalid message was logged, how many since)."""
        persisted = self.storage.load()
        anchor = epoch.anchor if epoch else None
        # A node whose consensus store is new but whose state is not (restored from the
        # archive, or the store was lost) rejoins its chain at its last applied block.
        rejoining = (
            persisted.committed_id is None
            and rejoin is not None
            and (anchor is None or rejoin.height > anchor.height)
        )
        if rejoining and rejoin is not None:
            anchor = Anchor(rejoin.height, rejoin.timestamp, rejoin.state, rejoin)
        self.core = core_class(
            name, key, validator_set(genesis, epoch.chain_id if epoch else None),
            app or NoOpApplication(genesis.chain_id), persisted, config, anchor=anchor,
        )  # fmt: skip
        if rejoining:
            self.core.rejoin(time.time(), REJOIN_GRACE)
            log.info("consensus.rejoining", height=self.core.committed_height, grace=REJOIN_GRACE)
        # The application's hooks (trustchain.node.app), called from the loop task:
        # for each block committed (height order, before client waiters are
        # answered), and for equivocation evidence found.
        self.on_committed: Callable[[Block], None] | None = None
        self.on_evidence: Callable[[Evidence], None] | None = None
        self.audit = open(data_dir / "signed.log", "a", buffering=1)
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple[str, Any]](65536)
        # operation id -> (callback, deadline) to call with (height, error) on commit or failure.
        self._waiters: dict[
            bytes, list[tuple[Callable[[int | None, str | None], None], float]]
        ] = {}
        self.committed_ops = 0
        self.last_loop = time.monotonic()
        """When the loop last handled an input or a tick (the node's health check)."""

    # --- inputs ------------------------------------------------------------------------

    def deliver(self, peer: str, body: Any) -> None:
        """A consensus frame body from an authenticated peer."""
        try:
            message = codec.decode(body)
        except codec.CodecError as exc:
            self.log.warning("consensus.bad_message", peer=peer, error=str(exc))
            return
        try:
            self._inbox_send.send_nowait(("peer", (peer, message)))
        except trio.WouldBlock:
            self.log.warning("consensus.inbox_full", peer=peer)

    def submit(self, op: bytes, done: Callable[[int | None, str | None], None]) -> None:
        """Propose `op`; `done(height, None)` once committed, `done(None, why)` if it is not."""
        deadline = time.monotonic() + COMMIT_WAIT
        self._waiters.setdefault(operation_id(op), []).append((done, deadline))
        try:
            self._inbox_send.send_nowait(("submit", op))
        except trio.WouldBlock:
            self._resolve(operation_id(op), None, "node overloaded, retry later")

    # --- the loop -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._progress)
                out = self.core.start(time.time())
                wakeup = await self._act([out])
                task_status.started()
                while True:
                    outputs: list[Output] = []
                    # Turn at least every MAX_IDLE seconds: the health check watches the loop.
                    deadline = trio.current_time() + min(MAX_IDLE, max(0.0, wakeup - time.time()))
                    with trio.move_on_at(deadline):
                        outputs.append(self._input(await self._inbox.receive()))
                        for _ in range(BATCH_INPUTS):
                            try:
                                outputs.append(self._input(self._inbox.receive_nowait()))
                            except trio.WouldBlock:
                                break
                    if not outputs:
                        outputs.append(self.core.tick(time.time()))
                    wakeup = await self._act(outputs)
                    self.last_loop = time.monotonic()
        finally:
            self.audit.close()
            self.storage.close()

    def _input(self, item: tuple[str, Any]) -> Output:
        kind, value = item
        now = time.time()
        if kind == "peer":
            peer, message = value
            return self.core.handle(peer, message, now)
        out = self.core.submit(Operation(self.name, value), now)
        if out.rejected:
            self._resolve(operation_id(value), None, out.rejected[0])
        return out

    async def _act(self, outputs: list[Output]) -> float:
        records = [r for out in outputs for r in out.persist]
        if records:
            # Durable before anything below leaves the node (Output's rule 1).
            # On the event loop, not a worker thread: a WAL commit with fsync takes a
            # fraction of a millisecond on local disks, less than two thread hand-offs,
            # and it sits on the commit path of every round.
            self.storage.write(records)
        for out in outputs:
            for peer, height in out.history:
                blocks = self.storage.committed_after(height, self.core.config.sync_batch)
                if blocks:
                    out.send.append((peer, SyncResponse(tuple(blocks), None)))
            for to, message in out.send:
                self._audit(message)
                frame = {"type": "consensus", "c": codec.encode(message)}
                if to is None:
                    self.network.broadcast(frame)
                elif to != self.name:
                    self.network.send(to, frame)
            for block in out.committed:
                self._committed(block)
            for evidence in out.evidence:
                self.log.warning(
                    "consensus.equivocation", validator=evidence.validator,
                    round=evidence.round, kind=evidence.kind,
                )  # fmt: skip
                if self.on_evidence is not None:
                    self.on_evidence(evidence)
            for reason in out.rejected:
                self.log.debug("consensus.rejected", reason=reason)
            for peer, reason in out.invalid:
                self._warn_invalid(peer, reason)
        last = outputs[-1].wakeup
        return last if last is not None else math.inf

    def _warn_invalid(self, peer: str, reason: str) -> None:
        """A warning per peer at most every INVALID_EVERY seconds, with how many more
        there were: a peer on other code, or a hostile one, must show in the log
        without filling it."""
        now = time.monotonic()
        last, suppressed = self._invalid.get(peer, (-math.inf, 0))
        if now - last < INVALID_EVERY:
            self._invalid[peer] = (last, suppressed + 1)
            return
        self._invalid[peer] = (now, 0)
        self.log.warning(
            "consensus.invalid_message", peer=peer, reason=reason[:300], since_last=suppressed
        )

    def _audit(self, message: Message) -> None:
        """One line per signature this validator gives, for operators and tests."""
        if isinstance(message, Vote) and message.voter == self.name:
            self.audit.write(f"vote {message.round} {message.block_id.hex()}\n")
        elif isinstance(message, Timeout) and message.voter == self.name:
            self.audit.write(f"timeout {message.round} {message.high_qc.round}\n")

    def _committed(self, block: Block) -> None:
        if self.on_committed is not None:
            self.on_committed(block)
        self.committed_ops += len(block.payload)
        self.log.debug(
            "consensus.committed", height=block.height, round=block.round, ops=len(block.payload)
        )
        for op in block.payload:
            self._resolve(operation_id(op), block.height, None)

    def _resolve(self, oid: bytes, height: int | None, error: str | None) -> None:
        for done, _ in self._waiters.pop(oid, []):
            done(height, error)

    def _expire_waiters(self) -> None:
        now = time.monotonic()
        late = [oid for oid, entries in self._waiters.items() if entries[0][1] < now]
        for oid in late:
            self._resolve(oid, None, f"not committed within {COMMIT_WAIT:g} s")

    async def _progress(self) -> None:
        last_ops, last_time = 0, time.monotonic()
        while True:
            await trio.sleep(PROGRESS_EVERY)
            self._expire_waiters()
            now = time.monotonic()
            rate = (self.committed_ops - last_ops) / (now - last_time)
            last_ops, last_time = self.committed_ops, now
            self.log.info(
                "consensus.progress",
                height=self.core.committed_height,
                round=self.core.round,
                ops=self.committed_ops,
                ops_per_s=round(rate, 1),
            )


async def serve_clients(
    listen: Address,
    driver: ConsensusDriver,
    log: EventLogger,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The local operations endpoint (see the module docstring)."""

    async def client(stream: trio.SocketStream) -> None:
        decoder = FrameDecoder(MAX_OP_BYTES + 1024)
        replies_send, replies = trio.open_memory_channel[dict[str, Any]](math.inf)
        outstanding = 0
        settled = trio.Event()

        def reply(message: dict[str, Any]) -> None:
            nonlocal outstanding
            replies_send.send_nowait(message)
            outstanding -= 1
            if outstanding == 0:
                settled.set()

        def answer(request_id: Any) -> Callable[[int | None, str | None], None]:
            def done(height: int | None, error: str | None) -> None:
                result: dict[str, Any] = {"id": request_id, "ok": error is None}
                result.update({"height": height} if error is None else {"error": error})
                reply(result)

            return done

        async def writer() -> None:
            async for message in replies:
                await stream.send_all(encode_frame(message))

        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            try:
                while data := await stream.receive_some(65536):
                    for request in decoder.feed(data):
                        outstanding += 1
                        settled = trio.Event()
                        op = request.get("op")
                        if not isinstance(op, bytes):
                            answer(request.get("id"))(None, "expected {'id': N, 'op': BYTES}")
                            continue
                        driver.submit(op, answer(request.get("id")))
            except (FrameError, trio.BrokenResourceError) as exc:
                log.info("clients.closed", error=str(exc))
            # The client finished sending: answer what it is waiting for, then close.
            if outstanding:
                with trio.move_on_after(COMMIT_WAIT + 1):
                    await settled.wait()
            replies_send.close()

    listeners = await trio.open_tcp_listeners(listen.port, host=listen.host)
    port = listeners[0].socket.getsockname()[1]
    task_status.started(port)
    await trio.serve_listeners(client, listeners)
