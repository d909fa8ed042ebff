"""The log driver: runs the sequencer core over a store, on trio.

``CTLog`` owns the store, the ``Sequencer`` and the published state (the edge,
the checkpoint, the STH); nothing else mutates them.  Writes happen in a worker
thread, one round at a time, in the publishing order documented in
sequencer.py.  Reads (proofs, entries, tiles) only see published state.

Errors split as in Sunlight: a bad request raises ``LogRequestError`` (the
caller's fault, answered with 4xx) and the log keeps running; a storage failure
while publishing is fatal: waiting submitters get ``LogUnavailable`` and
``run`` raises, so the process stops and restarts from its data directory
(crash-only: ``open_store`` recovers every crash point).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from trustchain.ct import _tls, merkle
from trustchain.ct._log import Events
from trustchain.ct.chain import ChainValidator, SubmissionError
from trustchain.ct.checkpoint import (
    Checkpoint,
    RFC6962NoteSigner,
    RFC6962NoteVerifier,
    sign_checkpoint,
)
from trustchain.ct.sct import (
    DigitallySigned,
    EntryType,
    SignedCertificateTimestamp,
    issue_sct,
    leaf_index_extensions,
)
from trustchain.ct.sequencer import PoolFull, Round, Sequencer, Submission
from trustchain.ct.signer import Signer, log_id
from trustchain.ct.store import (
    Check,
    OpenedStore,
    Progress,
    StagedCheckpoint,
    StoreCorrupt,
    TreeReader,
    open_store,
    read_entries,
)
from trustchain.ct.tiles import (
    DATA,
    TILE_WIDTH,
    TileLeaf,
    fingerprint,
    full_tiles,
    parse_tile_path,
    split_hashes,
)

__all__ = ["CTLog", "LogParams", "LogRequestError", "LogUnavailable", "PoolFull"]


class LogRequestError(ValueError):
    """A read or write the log refuses because of its parameters (HTTP 4xx)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class LogUnavailable(Exception):
    """The log cannot take submissions now (storage failure; it is restarting)."""


@dataclass(frozen=True)
class LogParams:
    """Tunables of a log (defaults suit one log on a small machine)."""

    pool_limit: int = 4096
    """Submissions waiting for a round; past it add-chain answers 503."""
    max_batch: int = 4096
    """Most entries in one round."""
    interval: float = 0.05
    """Seconds between the starts of two rounds (the pool interval)."""
    refresh_interval: float = 60.0
    """Seconds without entries after which the checkpoint is re-signed."""
    max_get_entries: int = 256
    """Most entries one get-entries answer carries (RFC 6962 section 4.6 allows a cap)."""
    tile_cache: int = 4096
    """Full hash tiles kept in memory for proofs, with their inner nodes (16 KiB each:
    64 MiB covers every level-0 tile of a million-entry log)."""


@dataclass
class _Waiter:
    event: trio.Event = field(default_factory=trio.Event)
    result: tuple[int, int] | None = None
    error: str | None = None


@dataclass
class Metrics:
    """Counters exposed at /metrics (Prometheus text)."""

    submissions: int = 0
    duplicates: int = 0
    pool_full: int = 0
    rejected: int = 0
    rounds: int = 0
    entries: int = 0
    round_seconds: float = 0.0


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def _signed_checkpoint(
    signer: Signer, origin: str, size: int, root: bytes, timestamp: int
) -> tuple[bytes, DigitallySigned]:
    """The checkpoint note signed by this log alone, and the STH signature in it
    (the note's one signature is ``timestamp`` and that, RFC 6962 section 3.5):
    the caller keeps both without parsing the note it just made."""
    note_signer = RFC6962NoteSigner(origin, signer, timestamp)
    signed = await sign_checkpoint(Checkpoint(origin, size, root), [note_signer])
    assert note_signer.tree_head_signature is not None  # sign_checkpoint signed once
    return signed, note_signer.tree_head_signature


class CTLog:
    """One RFC 6962 log over one data directory, signing with one ``Signer``."""

    def __init__(
        self,
        store: OpenedStore,
        signer: Signer,
        origin: str,
        validator: ChainValidator | None,
        params: LogParams,
    ) -> None:
        self.origin = origin
        self.params = params
        self.validator = validator
        self.metrics = Metrics()
        self._store = store
        self._files = store.files
        self._index = store.index
        self._signer = signer
        self._log_id = log_id(signer.public_key())
        self._core = Sequencer(
            store.edge,
            store.timestamp,
            pool_limit=params.pool_limit,
            max_batch=params.max_batch,
            interval=params.interval,
            refresh_interval=params.refresh_interval,
        )
        self._reader = TreeReader(store.files, store.edge.copy(), params.tile_cache)
        self._checkpoint = store.checkpoint or b""
        self._sth_timestamp = store.timestamp
        self._sth_signature = store.signature
        self._waiters: dict[int, _Waiter] = {}
        self._wake = trio.Event()
        # One writer thread at a time: the publishing order must not interleave.
        # The index has its own writer, so that it can catch up while tiles sync.
        self._io = trio.CapacityLimiter(1)
        self._index_io = trio.CapacityLimiter(1)
        self._issuers: dict[bytes, bytes] = {}
        self._issuer_writes: dict[bytes, trio.Event] = {}
        self._events = Events("log")
        self._stopped: str | None = None

    # --- opening -----------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        signer: Signer,
        origin: str,
        validator: ChainValidator | None = None,
        params: LogParams | None = None,
        *,
        check: Check = "quick",
        progress: Progress | None = None,
    ) -> CTLog:
        """Open (or create) the log in ``data_dir``; verifies the store first."""
        verifier = RFC6962NoteVerifier(origin, signer.public_key())
        store = await trio.to_thread.run_sync(
            lambda: open_store(data_dir, verifier, check=check, progress=progress)
        )
        if store.checkpoint is None:
            # A new log publishes the empty tree at once so that monitors can start.
            timestamp = _wall_ms()
            signed, signature = await _signed_checkpoint(
                signer, origin, 0, merkle.EMPTY_ROOT, timestamp
            )
            await trio.to_thread.run_sync(store.files.write_checkpoint, signed)
            store.checkpoint = signed
            store.timestamp, store.signature = timestamp, signature
        return cls(store, signer, origin, validator, params or LogParams())

    def close(self) -> None:
        self._store.close()

    # --- the sequencing loop --------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Cut and publish rounds until cancelled; raises on a fatal storage error."""
        task_status.started()
        while True:
            now = trio.current_time()
            deadline = self._core.next_deadline(now)
            if deadline is not None and deadline > now:
                with trio.move_on_at(deadline):
                    await self._wake.wait()
                self._wake = trio.Event()
                continue
            rnd = self._core.start_round(now, _wall_ms())
            if rnd is None:
                continue
            # A started round finishes even if we are being cancelled, so that a
            # clean shutdown never leaves a half-published round behind.
            with trio.CancelScope(shield=True):
                await self._publish(rnd)

    async def _commit(self, rnd: Round) -> tuple[bytes, DigitallySigned]:
        """Steps 1-3 of the publishing order (sequencer.py), with the independent waits
        overlapped; returns the signed checkpoint, and the STH signature in it, once it
        is durable and the round's entries are indexed.  Raises the first failure (the
        checkpoint is then not written unless every tile was durable)."""
        failures: list[Exception] = []

        async def guarded(step: Callable[[], Awaitable[None]]) -> None:
            try:
                await step()
            except Exception as exc:
                failures.append(exc)

        signed = b""
        signature: DigitallySigned | None = None
        staged: StagedCheckpoint | None = None

        async def index() -> None:
            # Concurrent with everything below, so the index may run ahead of the
            # checkpoint: lookups ignore indices at or beyond the published size
            # (``submit``) and open_store truncates an index that is ahead.
            rows = [
                (e.index, e.leaf_hash, e.leaf.entry.entry.identity(), rnd.timestamp)
                for e in rnd.entries
            ]
            if rows:
                await trio.to_thread.run_sync(
                    self._index.add, rows, rnd.size, limiter=self._index_io
                )

        async def tiles() -> None:
            # Step 1: tiles, durably.  Crash during or after it (before step 2's
            # rename): tiles beyond the checkpoint, never acknowledged; the next
            # open_store deletes them.
            await trio.to_thread.run_sync(self._files.write, rnd.tiles, limiter=self._io)

        async def sign() -> None:
            # Step 2, first half, while the tiles sync: sign (an HSM round trip)
            # and sync the checkpoint under a temporary name.  Crash here: the old
            # checkpoint stands; open_store removes the temporary file.
            nonlocal signed, signature, staged
            signed, signature = await self._sign_tree(rnd.size, rnd.root, rnd.timestamp)
            staged = await trio.to_thread.run_sync(self._files.stage_checkpoint, signed)

        async def publish() -> None:
            assert staged is not None
            await trio.to_thread.run_sync(self._files.publish_checkpoint, staged, limiter=self._io)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guarded, index)
            async with trio.open_nursery() as before_commit:
                before_commit.start_soon(guarded, tiles)
                before_commit.start_soon(guarded, sign)
            if not failures:
                # Step 2, second half: the commit point, only now that every tile
                # is durable.  Crash after it: the entries are logged but
                # unanswered; a resubmission gets an SCT for the logged entry.
                await guarded(publish)
            if failures and staged is not None:
                await guarded(
                    lambda: trio.to_thread.run_sync(self._files.discard_checkpoint, staged)
                )
        if failures:
            raise failures[0]
        assert signature is not None  # sign() succeeded, or there was a failure
        return signed, signature

    async def _sign_tree(
        self, size: int, root: bytes, timestamp: int
    ) -> tuple[bytes, DigitallySigned]:
        """A round's checkpoint signed by this log (an HSM round trip), and its STH signature."""
        return await _signed_checkpoint(self._signer, self.origin, size, root, timestamp)

    async def _publish(self, rnd: Round) -> None:
        started = trio.current_time()
        try:
            signed, signature = await self._commit(rnd)
        except Exception as exc:
            self._stopped = f"storage failure: {exc}"
            self._events.error("ct.round.failed", round=rnd.number, error=str(exc))
            # The index may have taken the round's entries before the failure: drop
            # them, so that no lookup ever finds an unpublished entry (best effort;
            # open_store truncates an index that is ahead of the checkpoint too).
            with contextlib.suppress(Exception):
                await trio.to_thread.run_sync(
                    self._index.truncate, self._core.published.size, limiter=self._index_io
                )
            for ticket in self._core.fail_round(rnd):
                self._resolve(ticket, None, self._stopped)
            for ticket in list(self._waiters):
                self._resolve(ticket, None, self._stopped)
            raise
        # Readers see the new checkpoint, STH and tree together: no await between.
        self._core.finish_round(rnd)
        self._reader.edge = rnd.edge
        self._checkpoint = signed
        # The note's one signature is the STH at the round's timestamp.
        self._sth_timestamp, self._sth_signature = rnd.timestamp, signature
        for e in rnd.entries:
            self._resolve(e.ticket, (e.index, rnd.timestamp), None)
        self.metrics.rounds += 1
        self.metrics.entries += len(rnd.entries)
        self.metrics.round_seconds += trio.current_time() - started
        # Step 4: superseded partial tiles.  Crash here: they linger until the
        # next start removes them.
        if rnd.superseded:
            await trio.to_thread.run_sync(self._files.delete, rnd.superseded, limiter=self._io)

    def _resolve(self, ticket: int, result: tuple[int, int] | None, error: str | None) -> None:
        waiter = self._waiters.pop(ticket, None)
        if waiter is not None:
            waiter.result, waiter.error = result, error
            waiter.event.set()

    # --- submissions -----------------------------------------------------------------

    async def submit(self, sub: Submission) -> SignedCertificateTimestamp:
        """Log ``sub`` and return its SCT once it is durable (no merge delay)."""
        if self._stopped:
            raise LogUnavailable(self._stopped)
        self.metrics.submissions += 1
        found = self._index.find_identity(sub.entry.identity())
        if found is not None and found[0] >= self.size:
            # Indexed by the round in flight, not yet published: wait for it (the
            # core hands out that round's ticket for the same identity).
            found = None
        if found is not None:
            self.metrics.duplicates += 1
            index, timestamp = found
        else:
            try:
                ticket = self._core.submit(sub)
            except PoolFull:
                self.metrics.pool_full += 1
                raise
            waiter = self._waiters.setdefault(ticket, _Waiter())
            self._wake.set()
            await waiter.event.wait()
            if waiter.result is None:
                raise LogUnavailable(waiter.error or "the log stopped")
            index, timestamp = waiter.result
        return await issue_sct(
            self._signer,
            sub.entry,
            timestamp,
            leaf_index_extensions(index),
            signer_log_id=self._log_id,
        )

    async def add_chain(
        self, ders: Sequence[bytes], *, precert: bool, now: dt.datetime | None = None
    ) -> SignedCertificateTimestamp:
        """RFC 6962 add-chain / add-pre-chain: validate, store issuers, log, sign."""
        if self.validator is None:
            raise LogRequestError("no_submissions", "this log does not take submissions", 403)
        try:
            accepted = self.validator.validate(
                ders, precert_chain=precert, now=now or dt.datetime.now(dt.UTC)
            )
        except SubmissionError:
            self.metrics.rejected += 1
            raise
        fps = []
        for der in accepted.issuers:
            fp = fingerprint(der)
            fps.append(fp)
            await self._store_issuer(fp, der)
        return await self.submit(Submission(accepted.entry, accepted.pre_certificate, tuple(fps)))

    async def _store_issuer(self, fp: bytes, der: bytes) -> None:
        """static-ct-api: every issuer an entry refers to is served, so it is on disk
        before the entry can be sequenced.  Concurrent submissions of a new issuer
        wait for the one that writes it."""
        while fp not in self._issuers:
            pending = self._issuer_writes.get(fp)
            if pending is not None:
                await pending.wait()
                continue
            done = self._issuer_writes[fp] = trio.Event()
            try:
                await trio.to_thread.run_sync(self._files.put_issuer, fp, der)
                self._issuers[fp] = der
            finally:
                del self._issuer_writes[fp]
                done.set()

    # --- reads (published state only) --------------------------------------------------

    @property
    def size(self) -> int:
        return self._reader.size

    @property
    def root(self) -> bytes:
        return self._core.published.root

    def checkpoint(self) -> bytes:
        return self._checkpoint

    def sth(self) -> tuple[int, int, bytes, DigitallySigned]:
        """(tree_size, timestamp, root, signature) of the published checkpoint."""
        assert self._sth_signature is not None
        published = self._core.published
        return published.size, self._sth_timestamp, published.root, self._sth_signature

    def _check_tree_size(self, tree_size: int, what: str) -> None:
        if not 1 <= tree_size <= self.size:
            raise LogRequestError(
                "bad_tree_size",
                f"{what} {tree_size} is not between 1 and the tree size {self.size}",
            )

    def consistency(self, first: int, second: int) -> list[bytes]:
        self._check_tree_size(second, "second")
        if not 1 <= first <= second:
            raise LogRequestError(
                "bad_tree_size", f"first {first} must be between 1 and second {second}"
            )
        return merkle.consistency_proof(
            self._reader.node, first, second, self._reader.known_ranges()
        )

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        """PATH(index, D[tree_size]) (RFC 6962 section 2.1.1) of a published entry."""
        self._check_tree_size(tree_size, "tree_size")
        return merkle.inclusion_proof(
            self._reader.node, index, tree_size, self._reader.known_ranges()
        )

    def proof_by_hash(self, leaf_hash: bytes, tree_size: int) -> tuple[int, list[bytes]]:
        self._check_tree_size(tree_size, "tree_size")
        if len(leaf_hash) != merkle.HASH_SIZE:
            raise LogRequestError("bad_hash", "hash must be 32 bytes of base64")
        index = self._index.index_of(leaf_hash)
        if index is None or index >= self.size:
            raise LogRequestError("not_found", "no entry with that leaf hash", 404)
        if index >= tree_size:
            raise LogRequestError(
                "not_found",
                f"the entry is at index {index}, not in the tree of size {tree_size}",
                404,
            )
        return index, merkle.inclusion_proof(
            self._reader.node, index, tree_size, self._reader.known_ranges()
        )

    def entry_range(self, start: int, end: int) -> tuple[int, int]:
        """Clamp a get-entries range (RFC 6962 section 4.6) or refuse it."""
        if start < 0 or end < 0:
            raise LogRequestError("bad_range", "start and end must not be negative")
        if start > end:
            raise LogRequestError("bad_range", f"start {start} is after end {end}")
        if start >= self.size:
            raise LogRequestError(
                "bad_range", f"start {start} is not below the tree size {self.size}"
            )
        # RFC 6962 section 4.6: a partial answer for end >= tree_size, and at most
        # the permitted number of entries.
        return start, min(end, self.size - 1, start + self.params.max_get_entries - 1)

    async def entries(self, start: int, end: int) -> list[tuple[bytes, bytes]]:
        """(leaf_input, extra_data) for ``start..end`` inclusive, clamped by ``entry_range``."""
        reader = self._reader.snapshot()
        start, end = self.entry_range(start, end)
        leaves = await trio.to_thread.run_sync(read_entries, self._files, reader, start, end)
        return [(leaf.merkle_leaf(), await self._extra_data(leaf)) for _, leaf in leaves]

    async def entry_and_proof(self, index: int, tree_size: int) -> tuple[bytes, bytes, list[bytes]]:
        self._check_tree_size(tree_size, "tree_size")
        if not 0 <= index < tree_size:
            raise LogRequestError(
                "bad_range", f"leaf_index {index} is not in the tree of size {tree_size}"
            )
        proof = merkle.inclusion_proof(
            self._reader.node, index, tree_size, self._reader.known_ranges()
        )
        ((leaf_input, extra),) = await self.entries(index, index)
        return leaf_input, extra, proof

    async def _issuer(self, fp: bytes) -> bytes:
        der = self._issuers.get(fp)
        if der is None:
            der = await trio.to_thread.run_sync(self._files.get_issuer, fp)
            if der is None:
                raise StoreCorrupt(f"issuer/{fp.hex()}: missing, but an entry refers to it")
            self._issuers[fp] = der
        return der

    async def _extra_data(self, leaf: TileLeaf) -> bytes:
        """RFC 6962 section 4.6 extra_data: the chain, or PrecertChainEntry."""
        chain = b"".join([_tls.opaque(await self._issuer(fp), 3, minimum=1) for fp in leaf.chain])
        chain_field = _tls.opaque(chain, 3, what="certificate chain")
        if leaf.entry.entry.entry_type == EntryType.PRECERT:
            return _tls.opaque(leaf.pre_certificate, 3, minimum=1) + chain_field
        return chain_field

    def roots(self) -> list[bytes]:
        return [] if self.validator is None else list(self.validator.root_ders)

    async def static(self, path: str) -> bytes | None:
        """A static-ct-api read path (tile/..., issuer/...), or None if not published."""
        if path.startswith("issuer/"):
            hexfp = path[len("issuer/") :]
            if len(hexfp) != 64 or any(c not in "0123456789abcdef" for c in hexfp):
                return None
            return await trio.to_thread.run_sync(self._files.get_issuer, bytes.fromhex(hexfp))
        try:
            tile = parse_tile_path(path)
        except ValueError:
            return None
        edge = self._reader.edge
        level = 0 if tile.level == DATA else tile.level
        full = full_tiles(edge.size, level)
        if tile.full:
            if tile.index >= full:
                return None
        elif tile.index > full or (
            tile.index == full and tile.width > (edge.size >> (8 * level)) % TILE_WIDTH
        ):
            return None
        reader = self._reader.snapshot()
        if tile.level == DATA:
            first = tile.index * TILE_WIDTH
            leaves = await trio.to_thread.run_sync(
                read_entries, self._files, reader, first, first + tile.width - 1
            )
            return b"".join(leaf.encode() for _, leaf in leaves)
        data = await trio.to_thread.run_sync(self._files.read, tile)
        if data is None:
            return None  # a superseded partial: clients fall back to the full tile
        # Check what we serve against the rest of the published tree (the level
        # above, or the in-memory edge), so that damage is reported, not served.
        try:
            hashes = split_hashes(data, tile.width)
        except ValueError:
            raise StoreCorrupt(
                f"{tile.path()}: {len(data)} bytes, not {tile.width} hashes"
            ) from None
        height = 8 * tile.level
        if tile.full:
            ok = merkle.root_of(hashes) == reader.node(height + 8, tile.index)
        else:
            first = tile.index * TILE_WIDTH
            ok = hashes == [reader.node(height, first + i) for i in range(tile.width)]
        if not ok:
            raise StoreCorrupt(f"{tile.path()}: does not match the published tree")
        return data

    def pool_pending(self) -> int:
        return self._core.pending
