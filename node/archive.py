"""The node's two-region archive (DESIGN.md section 8): every committed block's data to S3.

Each time this node's cosigned checkpoint advances (size N), one *round* per
region uploads, in this order, so that a checkpoint never reaches a bucket
before the data it covers:

1. issuer certificates (``issuer/<sha256>``) not uploaded yet;
2. the tiles of the tree of size N that the previous round did not cover
   (``tile/<L>/<N>[.p/<W>]``, ``tile/data/...``), read from the CT store (a
   partial tile the store already replaced by a wider one is cut from it);
3. the committed blocks applied since the last round, as one state segment
   ``state/<first>-<last>`` (the rows ``state.db`` holds, identical on every
   validator: validators archiving into the same bucket write the same bytes
   under the same key, or segments with other bounds);
4. the cosigned checkpoint, immutably under ``checkpoints/<N>`` and as the
   latest ``checkpoint`` (replaced only by a larger checkpoint whose tree
   contains the stored one: its root is recomputed from this node's tiles).

Every object except ``checkpoint`` is immutable and uploaded with
``If-None-Match: *`` (trustchain.infra.s3archive), so rounds are idempotent:
after a crash or a failed round the next one simply uploads again.

Durability modes (``[archive] mode``):

- ``both`` (default): `Archiver.durable` holds each issuance answer until a
  checkpoint covering its leaf is archived in *every* region.  An acknowledged
  certificate is therefore in both regions (RPO 0).  If a region stays down,
  issuance answers 503 ``not_archived`` after ``wait_timeout`` seconds; the
  certificate is committed (and archived once the region is back) but was never
  acknowledged.
- ``local``: the answer waits for the first region listed (the local one) only;
  the others catch up, and their lag (entries) is a metric.

Either way reads (status, CT, DNS) go on, rounds to a failing region are
retried with backoff for ever, and ``trustchain_archive_region_up`` drops to 0
(the alarm metric).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import msgpack
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustchain.consensus.core import Anchor
from trustchain.ct.checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from trustchain.ct.note import NoteError, parse_note
from trustchain.ct.tiles import (
    DATA,
    TILE_HEIGHT,
    TILE_WIDTH,
    TileID,
    TreeEdge,
    edge_widths,
    full_tiles,
    parse_data_tile,
)
from trustchain.infra.s3archive import ArchiveConflict, ArchiveError, Latest, S3Archive, s3_client
from trustchain.node.config import ConfigError, Key, check_table
from trustchain.node.log import EventLogger
from trustchain.node.snapshot import Snapshot
from trustchain.node.snapshot import encode as encode_snapshot
from trustchain.node.snapshot import sign as sign_snapshot
from trustchain.node.state import parse_commitment

Mode = Literal["both", "local"]
HASH_SIZE = 32
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


# --- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class RegionSettings:
    """One region's bucket."""

    name: str
    """AWS region (us-west-2)."""
    bucket: str
    """The CT archive bucket (``trustchain infra buckets`` prints it)."""
    endpoint: str | None = None
    """S3 endpoint URL (a moto server locally); None: AWS's."""
    ca_bundle: str | None = None
    """PEM file the endpoint's TLS certificate chains to; None: the system's."""


@dataclass(frozen=True)
class ArchiveSettings:
    """The ``[archive]`` table of node.toml."""

    regions: tuple[RegionSettings, ...]
    """Local region first."""
    prefix: str = ""
    """Key prefix inside each bucket (one log per prefix)."""
    mode: Mode = "both"
    """``both`` or ``local`` (module docstring)."""
    wait_timeout: float = 10.0
    """Seconds an issuance answer waits for the archive before 503 ``not_archived``."""
    snapshot_every: int = 10_000
    """Blocks between snapshots of the replicated state (trustchain.node.snapshot)."""


def _regions(value: Any) -> tuple[RegionSettings, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("expected one or more [[archive.regions]] tables")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ValueError("expected [[archive.regions]] tables")
        v = check_table("", item, _REGION_KEYS, f"archive.regions[{i}]")
        out.append(RegionSettings(v["name"], v["bucket"], v["endpoint"], v["ca_bundle"]))
    if len({r.name for r in out}) != len(out):
        raise ValueError("each region may be listed once")
    return tuple(out)


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


_REGION_KEYS = {
    "name": Key(_str, required=True),
    "bucket": Key(_str, required=True),
    "endpoint": Key(_str, default=None),
    "ca_bundle": Key(_str, default=None),
}


def _mode(value: Any) -> Mode:
    if value not in ("both", "local"):
        raise ValueError(f"expected 'both' or 'local', got {value!r}")
    return "both" if value == "both" else "local"


def _timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 600:
        raise ValueError(f"expected seconds in (0, 600], got {value!r}")
    return float(value)


def _blocks(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**9:
        raise ValueError(f"expected a number of blocks in 1..10^9, got {value!r}")
    return value


_ARCHIVE_KEYS = {
    "regions": Key(_regions, required=True),
    "prefix": Key(lambda v: "" if v == "" else _str(v), default=""),
    "mode": Key(_mode, default="both"),
    "wait_timeout": Key(_timeout, default=10.0),
    "snapshot_every": Key(_blocks, default=10_000),
}


def parse_archive_section(source: str, table: Mapping[str, Any], base: Path) -> ArchiveSettings:
    """Check an ``[archive]`` table; raises ConfigError naming `source` and the key."""
    try:
        values = check_table(source, table, _ARCHIVE_KEYS, "archive")
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(": : ", ": ")) from None
    regions = tuple(
        RegionSettings(
            r.name,
            r.bucket,
            r.endpoint,
            None if r.ca_bundle is None else str((base / r.ca_bundle).resolve()),
        )
        for r in values["regions"]
    )
    return ArchiveSettings(
        regions, values["prefix"], values["mode"], values["wait_timeout"],
        values["snapshot_every"],
    )  # fmt: skip


# --- reading the CT store (pure file reads; no locks needed: tiles are immutable) ---------


def read_tile(ct_dir: Path, tile: TileID) -> bytes:
    """The bytes of `tile` from a tlog-tiles directory.

    A partial tile the store already replaced by a wider (or full) one is cut from
    that one: a tile's first W entries never change (C2SP tlog-tiles).
    Raises FileNotFoundError if neither exists.
    """
    path = ct_dir / tile.path()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    base = ct_dir / TileID(tile.level, tile.index, TILE_WIDTH).path()
    partials = base.with_name(base.name + ".p")
    candidates = [(base, TILE_WIDTH)]
    if partials.is_dir():
        widths = sorted((int(p.name) for p in partials.iterdir() if p.name.isdigit()), reverse=True)
        candidates += [(partials / str(w), w) for w in widths if w >= tile.width]
    for wider, width in candidates:
        try:
            data = wider.read_bytes()
        except FileNotFoundError:
            continue
        if tile.level != DATA:
            return data[: tile.width * HASH_SIZE]
        return b"".join(leaf.encode() for leaf in parse_data_tile(data, width)[: tile.width])
    raise FileNotFoundError(f"{tile.path()}: missing from {ct_dir}")


def tiles_between(old: int, new: int) -> list[TileID]:
    """Tiles of the tree of size `new` that the tree of size `old` did not have in full.

    Tiles are immutable, so only these need uploading once `old` is archived.
    """
    out: list[TileID] = []
    for level, width in enumerate(edge_widths(new)):
        for lv in [level, DATA] if level == 0 else [level]:
            first = full_tiles(old, lv)
            out.extend(TileID(lv, i, TILE_WIDTH) for i in range(first, full_tiles(new, lv)))
            if width:
                out.append(TileID(lv, full_tiles(new, lv), width))
    return out


def tree_root(size: int, read: Callable[[TileID], bytes]) -> bytes:
    """The RFC 6962 root of the tree of `size` leaves, from its edge tiles."""
    return TreeEdge.load(size, read).root()


def note_checkpoint(note: bytes) -> Checkpoint:
    """The checkpoint of a signed note (raises CheckpointError)."""
    try:
        return parse_checkpoint(parse_note(note).text)
    except NoteError as exc:
        raise CheckpointError(f"not a signed note: {exc}") from None


def latest_check(new_note: bytes, root_at: Callable[[int], bytes]) -> Callable[[bytes], Latest]:
    """The `check` of `S3Archive.put_latest` for a checkpoint: replace the stored one
    only by a larger one whose tree contains it (its root at the stored size, from our
    tiles, is the stored root), or by the same checkpoint with more signatures."""
    new = note_checkpoint(new_note)

    def check(stored_note: bytes) -> Latest:
        try:
            stored = note_checkpoint(stored_note)
        except CheckpointError as exc:
            raise ArchiveConflict(f"the stored checkpoint is unreadable ({exc})") from None
        if stored.origin != new.origin:
            raise ArchiveConflict(
                f"the stored checkpoint is for log {stored.origin!r}, not {new.origin!r}"
            )
        if stored.size > new.size:
            return "kept"
        if root_at(stored.size) != stored.root_hash:
            raise ArchiveConflict(
                f"the stored checkpoint (size {stored.size}) is not consistent with this "
                f"node's log: the log forked or the bucket holds another log"
            )
        if stored.size == new.size:
            more = len(parse_note(new_note).signatures) > len(parse_note(stored_note).signatures)
            return "replaced" if more else "kept"
        return "replaced"

    return check


def same_text(note: bytes) -> Callable[[bytes], bool]:
    """`put_immutable`'s `same` for ``checkpoints/<size>``: the same checkpoint text
    (the set of cosignatures may differ between validators)."""
    text = parse_note(note).text

    def same(stored: bytes) -> bool:
        try:
            return parse_note(stored).text == text
        except NoteError:
            return False

    return same


def state_key(first: int, last: int, epoch: int = 0) -> str:
    """The key of the state segment holding blocks `first`..`last` (lexical = numeric order)
    archived in the consensus epoch anchored at block `epoch` (0: the genesis epoch)."""
    key = f"state/{first:020d}-{last:020d}"
    return key + (f".e{epoch:020d}" if epoch else "")


def parse_state_key(key: str) -> tuple[int, int, int] | None:
    """(first, last, epoch) of a `state_key`, or None for another key."""
    m = re.fullmatch(r"state/(\d{20})-(\d{20})(?:\.e(\d{20}))?", key)
    if m is None or int(m[1]) < 1 or int(m[2]) < int(m[1]):
        return None
    return int(m[1]), int(m[2]), int(m[3] or 0)


def tile_end(tile: TileID) -> int:
    """One past the last log entry that `tile` covers."""
    level = 0 if tile.level == DATA else tile.level
    return (tile.index * TILE_WIDTH + tile.width) << (TILE_HEIGHT * level)


def read_blocks(state_db: Path, after: int, limit: int = 4096) -> list[tuple[int, bytes]]:
    """Committed blocks above height `after` from ``state.db`` (read-only)."""
    if not state_db.exists():
        return []
    db = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT height, b FROM blocks WHERE height > ? ORDER BY height LIMIT ?",
            (after, limit),
        ).fetchall()
    except sqlite3.OperationalError:
        return []  # the table is not there yet
    finally:
        db.close()
    return [(int(h), bytes(b)) for h, b in rows]


# --- one region ---------------------------------------------------------------------------


@dataclass
class RegionState:
    """What one region holds, as far as this node knows."""

    settings: RegionSettings
    """The region."""
    archive: S3Archive
    """Its bucket."""
    size: int = -1
    """Size of the latest checkpoint this node archived there (-1: none yet)."""
    height: int = 0
    """Highest block archived under ``state/``."""
    issuers: set[str] = field(default_factory=set)
    """Issuer keys uploaded."""
    up: bool = True
    """False while rounds fail (the alarm)."""
    errors: int = 0
    """Failed rounds."""
    objects: int = 0
    """Objects uploaded (created, not already there)."""
    replaced: int = 0
    """Tiles of a previous epoch's unacknowledged tail written over."""
    changed: trio.Event = field(default_factory=trio.Event)
    """Set (and replaced) whenever `size` advances."""
    snapshots: list[SignedSnapshot] = field(default_factory=list)
    """Signed snapshots waiting to be uploaded."""


UPLOAD_THREADS = 8
"""Concurrent S3 uploads of one region's round."""


def archive_round(
    ct_dir: Path, state_db: Path, region: RegionState, note: bytes, anchor: Anchor | None = None
) -> int:
    """One upload round to one region (blocking: runs in a worker thread).

    Returns the archived size.  Raises ArchiveError (the caller retries later) or
    ArchiveConflict (the region holds data inconsistent with this log).

    In a consensus epoch started from the archive (`anchor`), a tile that covers
    entries past the anchor's log size and holds other data is the previous
    epoch's tail: entries its cluster logged but never got archived under a
    checkpoint, so never acknowledged.  It is written over (versioning keeps
    it).  State segments carry the epoch in their key, so a restore can tell
    the previous epoch's blocks past the anchor from this one's.
    """
    cp = note_checkpoint(note)
    a = region.archive
    anchor_size = parse_commitment(anchor.state)[0] if anchor else None
    # Everything the checkpoint covers goes up at once, in parallel (S3 calls are
    # round trips; boto3 clients are thread-safe); the checkpoint only after it.
    jobs: list[Callable[[], str]] = []
    issuer_dir = ct_dir / "issuer"
    new_issuers = []
    if issuer_dir.is_dir():
        for path in sorted(issuer_dir.iterdir()):
            key = f"issuer/{path.name}"
            if not path.name.startswith(".") and key not in region.issuers:
                jobs.append(partial(a.put_immutable, key, path.read_bytes()))
                new_issuers.append(key)

    def put_tile(tile: TileID, data: bytes) -> str:
        try:
            return a.put_immutable(tile.path(), data)
        except ArchiveConflict:
            if anchor_size is None or tile_end(tile) <= anchor_size:
                raise
            a.put_over(tile.path(), data)
            return "replaced"

    for tile in tiles_between(max(region.size, 0), cp.size):
        jobs.append(partial(put_tile, tile, read_tile(ct_dir, tile)))
    blocks = read_blocks(state_db, region.height)
    if blocks:
        # One object per round: blocks (height, state.db bytes) since the last round.
        first, last = blocks[0][0], blocks[-1][0]
        body = msgpack.packb([[h, b] for h, b in blocks], use_bin_type=True)
        key = state_key(first, last, anchor.height if anchor else 0)
        jobs.append(partial(a.put_immutable, key, body))
    with ThreadPoolExecutor(min(UPLOAD_THREADS, max(len(jobs), 1))) as pool:
        results = list(pool.map(lambda job: job(), jobs))
    region.objects += results.count("created")
    region.replaced += results.count("replaced")
    region.issuers.update(new_issuers)
    if blocks:
        region.height = blocks[-1][0]

    # The immutable history object makes the round durable: a restore takes the
    # largest cosigned one.  The `checkpoint` pointer follows (`archive_pointer`).
    if a.put_immutable(f"checkpoints/{cp.size}", note, same=same_text(note)) == "created":
        region.objects += 1
    return cp.size


@dataclass(frozen=True)
class SignedSnapshot:
    height: int
    data: bytes
    """The canonical encoding (trustchain.node.snapshot.encode)."""
    signer: str
    signature: bytes


def snapshot_keys(height: int, signer: str) -> tuple[str, str]:
    """The keys of a snapshot's state and of one validator's signature on it."""
    base = f"snapshots/{height:020d}"
    return f"{base}/state", f"{base}/sig/{signer}"


def archive_snapshots(region: RegionState) -> None:
    """Upload the region's waiting snapshots (blocking)."""
    while region.snapshots:
        snap = region.snapshots[0]
        state_key_, sig_key = snapshot_keys(snap.height, snap.signer)
        for key, data in ((state_key_, snap.data), (sig_key, snap.signature)):
            if region.archive.put_immutable(key, data) == "created":
                region.objects += 1
        region.snapshots.pop(0)


def archive_pointer(ct_dir: Path, region: RegionState, note: bytes) -> None:
    """Move the region's ``checkpoint`` pointer to `note` unless it holds a newer one
    (blocking).  Raises ArchiveConflict if the stored one is not a prefix of our tree."""
    cp = note_checkpoint(note)

    def root_at(size: int) -> bytes:
        if size > cp.size:
            raise ArchiveConflict(f"size {size} is beyond {cp.size}")
        return tree_root(size, lambda t: read_tile(ct_dir, t))

    region.archive.put_latest("checkpoint", note, latest_check(note, root_at))


# --- the driver ---------------------------------------------------------------------------


class Archiver:
    """Uploads the node's committed data to every region; holds issuance answers in mode both.

    `cosigned` returns the node's latest cosigned checkpoint (signed note) or None.
    Runs in the node's trio thread; S3 calls run in worker threads, one per region.
    """

    def __init__(
        self,
        settings: ArchiveSettings,
        data_dir: Path,
        cosigned: Callable[[], bytes | None],
        log: EventLogger,
        *,
        clients: Mapping[str, Any] | None = None,
        poll: float = 0.005,
        anchor: Anchor | None = None,
        signer: tuple[str, Ed25519PrivateKey] | None = None,
    ) -> None:
        self.settings = settings
        self.signer = signer
        """(validator name, consensus key) that signs this node's snapshots."""
        self.anchor = anchor
        """Where this node's consensus epoch started, if it was restored (node.epoch)."""
        self.ct_dir = data_dir / "ct"
        self.state_db = data_dir / "state.db"
        self.cosigned = cosigned
        self.log = log
        self.poll = poll
        self.regions: list[RegionState] = []
        for r in settings.regions:
            client = (clients or {}).get(r.name) or s3_client(
                r.name, r.endpoint, ca_bundle=r.ca_bundle
            )
            self.regions.append(RegionState(r, S3Archive(client, r.bucket, settings.prefix)))
        self.latest_size = -1
        """Size of the newest cosigned checkpoint seen."""
        self._snapshots_send, self._snapshots = trio.open_memory_channel[Snapshot](16)

    # --- answers --------------------------------------------------------------------------

    def _waited_for(self) -> list[RegionState]:
        return self.regions if self.settings.mode == "both" else self.regions[:1]

    async def wait_archived(self, size: int, timeout: float) -> bool:
        """True once a checkpoint of at least `size` entries is archived in every region
        the mode waits for; False after `timeout` seconds."""
        with trio.move_on_after(timeout):
            for region in self._waited_for():
                while region.size < size:
                    await region.changed.wait()
            return True
        return False

    def durable(self, issue: F) -> F:
        """Wrap `NodeApp.issue`: the answer comes once the archive holds its leaf."""
        from trustchain.node.app import RequestRefused

        async def issue_durably(*args: Any, **kwargs: Any) -> Any:
            result = await issue(*args, **kwargs)
            # The checkpoint in the answer is acknowledged too: a failover must not
            # fork the log under a tree head a client was given.
            size = max(result.leaf_index + 1, note_checkpoint(result.checkpoint.encode()).size)
            if not await self.wait_archived(size, self.settings.wait_timeout):
                waiting = [
                    r.settings.name for r in self._waited_for() if r.size <= result.leaf_index
                ]
                raise RequestRefused(
                    "not_archived",
                    f"certificate {result.leaf_index} is committed but not yet archived in "
                    f"{', '.join(waiting)} (durability mode {self.settings.mode}); it is not "
                    "acknowledged: check its status later or retry",
                    503,
                )
            return result

        return cast(F, issue_durably)

    # --- tasks ------------------------------------------------------------------------------

    def snapshot(self, snap: Snapshot) -> None:
        """Archive a snapshot taken at a committed block (encoded and signed off the loop);
        dropped with a warning if earlier ones are still being encoded."""
        try:
            self._snapshots_send.send_nowait(snap)
        except trio.WouldBlock:
            self.log.warning("archive.snapshot_dropped", height=snap.height)

    async def _snapshot_loop(self) -> None:
        async for snap in self._snapshots:
            if self.signer is None:
                continue
            name, key = self.signer
            try:
                data = await trio.to_thread.run_sync(encode_snapshot, snap)
            except Exception as exc:  # a snapshot must never stop the node
                self.log.error("archive.snapshot_failed", height=snap.height, error=repr(exc))
                continue
            signed = SignedSnapshot(
                snap.height, data, name, sign_snapshot(key, snap.chain_id, snap.height, data)
            )
            for region in self.regions:
                region.snapshots.append(signed)
            self.log.info("archive.snapshot", height=snap.height, bytes=len(data))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._snapshot_loop)
            for region in self.regions:
                nursery.start_soon(self._region_loop, region)
            task_status.started()

    async def _region_loop(self, region: RegionState) -> None:
        name = region.settings.name
        delay = 0.1
        while True:
            note = self.cosigned()
            if note is None:
                await trio.sleep(self.poll)
                continue
            try:
                size = note_checkpoint(note).size
            except CheckpointError:
                await trio.sleep(self.poll)
                continue
            self.latest_size = max(self.latest_size, size)
            if size <= region.size:
                if region.snapshots and region.up:
                    try:
                        await trio.to_thread.run_sync(
                            archive_snapshots, region, abandon_on_cancel=True
                        )
                    except (ArchiveError, ArchiveConflict, OSError) as exc:
                        self.log.warning("archive.snapshot_failed", region=name, error=str(exc))
                        await trio.sleep(1.0)
                await trio.sleep(self.poll)
                continue
            started = time.monotonic()
            try:
                replaced = region.replaced
                archived = await trio.to_thread.run_sync(
                    archive_round, self.ct_dir, self.state_db, region, note, self.anchor,
                    abandon_on_cancel=True,
                )  # fmt: skip
                region.size = archived
                region.changed.set()
                region.changed = trio.Event()
                await trio.to_thread.run_sync(
                    archive_pointer, self.ct_dir, region, note, abandon_on_cancel=True
                )
                await trio.to_thread.run_sync(archive_snapshots, region, abandon_on_cancel=True)
                if region.replaced > replaced:
                    self.log.warning(
                        "archive.previous_epoch_tail_replaced", region=name,
                        tiles=region.replaced - replaced,
                    )  # fmt: skip
            except ArchiveConflict as exc:
                region.up, region.errors = False, region.errors + 1
                self.log.error("archive.conflict", region=name, error=str(exc))
                await trio.sleep(30)
                continue
            except (ArchiveError, OSError, CheckpointError, ValueError) as exc:
                region.errors += 1
                if region.up:
                    self.log.warning("archive.region_down", region=name, error=str(exc))
                region.up = False
                await trio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            if not region.up:
                self.log.info("archive.region_up", region=name, size=archived)
            region.up, delay = True, 0.1
            self.log.debug(
                "archive.round", region=name, size=archived, height=region.height,
                ms=round((time.monotonic() - started) * 1000, 1),
            )  # fmt: skip

    # --- metrics ----------------------------------------------------------------------------

    def lag(self, region: RegionState) -> int:
        """Entries cosigned here but not yet archived in `region`."""
        return max(0, self.latest_size - max(region.size, 0))

    def prometheus(self) -> str:
        """Prometheus text for the archive (append to the node's /metrics)."""
        lines = [
            "# HELP trustchain_archive_lag_entries Cosigned log entries not yet in the region.",
            "# TYPE trustchain_archive_lag_entries gauge",
        ]
        for r in self.regions:
            lines.append(
                f'trustchain_archive_lag_entries{{region="{r.settings.name}"}} {self.lag(r)}'
            )
        lines += [
            "# HELP trustchain_archive_region_up 0 while uploads to the region fail (alarm).",
            "# TYPE trustchain_archive_region_up gauge",
        ]
        for r in self.regions:
            lines.append(f'trustchain_archive_region_up{{region="{r.settings.name}"}} {int(r.up)}')
        lines += [
            "# HELP trustchain_archive_objects_total Objects uploaded to the region.",
            "# TYPE trustchain_archive_objects_total counter",
        ]
        for r in self.regions:
            lines.append(
                f'trustchain_archive_objects_total{{region="{r.settings.name}"}} {r.objects}'
            )
        return "\n".join(lines) + "\n"

    def cloudwatch_data(self, now: float) -> list[dict[str, Any]]:
        """Archive lag and region alarm as CloudWatch MetricData (namespace TrustChain/CA)."""
        import datetime as dt

        stamp = dt.datetime.fromtimestamp(now, dt.UTC)
        data: list[dict[str, Any]] = []
        for r in self.regions:
            dims = [{"Name": "Region", "Value": r.settings.name}]
            data.append(
                {"MetricName": "ArchiveLag", "Dimensions": dims, "Timestamp": stamp,
                 "Value": float(self.lag(r)), "Unit": "Count"}
            )  # fmt: skip
            data.append(
                {"MetricName": "ArchiveRegionUp", "Dimensions": dims, "Timestamp": stamp,
                 "Value": float(r.up), "Unit": "None"}
            )  # fmt: skip
        return data


def issuer_key(der: bytes) -> str:
    return f"issuer/{hashlib.sha256(der).hexdigest()}"
