"""`trustchain restore`: rebuild a node's log and state from one region's archive.

Nothing is trusted because it is in the bucket.  In order:

1. the latest ``checkpoint`` must be cosigned by validators holding more than
   2/3 of the genesis power (their CT log keys from genesis ``[ca]``);
2. it must not be rolled back: if an archived ``checkpoints/<size>`` is larger
   (the pointer was rolled back, or the node writing it died before updating
   it), that one is restored instead if a quorum cosigned it, else the restore
   is refused; and it must not be smaller than a checkpoint already in DIR;
3. every tile of its tree is downloaded and checked: each full hash tile hashes
   to its entry one level up, the edge hashes to the checkpoint's root, every
   entry bundle matches its level-0 hashes, every precertificate in a bundle
   (not under the leaf hash) yields its entry's TBSCertificate, every issuer
   certificate its SHA-256 name; every archived checkpoint up to that size must
   have the root these hash tiles give (no fork in the history; one whose
   signatures fail is reported as tampered, a cosigned one as a fork);
4. the committed blocks (``state/<first>-<last>[.e<anchor>]`` segments,
   overlapping when several validators archive) are replayed through the state machine from
   genesis: each block must extend the state before it (its state commitment
   is the log size and root after its parent), and the log the replay ends
   with must be the checkpoint's tree.

Only then is anything written: DIR/ct/ (tiles, issuers, ``checkpoint`` and
``cosigned-checkpoint``) and DIR/state.db.  A failed check raises
`RestoreError` naming the object and what is wrong; DIR is left as it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgpack

from trustchain.consensus.core import Anchor
from trustchain.consensus.messages import Block, genesis_block
from trustchain.ct import merkle
from trustchain.ct.checkpoint import (
    CheckpointError,
    verify_cosigned,
)
from trustchain.ct.merkle import HASH_SIZE
from trustchain.ct.precert import precert_tbs
from trustchain.ct.store import TileFiles
from trustchain.ct.tiles import (
    DATA,
    TILE_HEIGHT,
    TILE_WIDTH,
    TileID,
    TileLeaf,
    TreeEdge,
    edge_widths,
    full_tiles,
    parse_data_tile,
    split_hashes,
    tiles_of,
)
from trustchain.infra.s3archive import S3Archive
from trustchain.node.archive import note_checkpoint, parse_state_key, snapshot_keys
from trustchain.node.epoch import FILE as EPOCH_FILE
from trustchain.node.epoch import epoch_chain_id, write_epoch
from trustchain.node.files import fsync_dir, write_durably
from trustchain.node.snapshot import FILE as SNAPSHOT_FILE
from trustchain.node.snapshot import SnapshotError
from trustchain.node.snapshot import encode as encode_snapshot
from trustchain.node.snapshot import load_into as load_snapshot
from trustchain.node.snapshot import take as take_snapshot
from trustchain.node.snapshot import verify as verify_snapshot
from trustchain.node.snapshot import write as write_snapshot

if TYPE_CHECKING:
    from trustchain.node.config import Genesis

Progress = Callable[[str], None]


class RestoreError(Exception):
    """The archive is incomplete, damaged or not this chain's; the message says which object."""


@dataclass(frozen=True)
class RestoreReport:
    """What a restore verified and wrote."""

    size: int
    """Entries in the restored log."""
    height: int
    """Committed blocks restored."""
    signers: tuple[str, ...]
    """Validators whose signatures on the checkpoint verified."""
    tiles: int
    """Tiles downloaded and verified."""
    seconds: float
    """Wall time of the restore."""
    snapshot: int = 0
    """Height of the signed snapshot the state was loaded from (0: replayed from genesis)."""
    warnings: tuple[str, ...] = ()
    """What was wrong in the archive but could be restored around (e.g. a rolled-back
    latest checkpoint with a newer cosigned one in the history)."""


def restore(
    archive: S3Archive,
    genesis_path: Path,
    directory: Path,
    *,
    progress: Progress = lambda text: None,
    workers: int = 16,
    new_cluster: bool = False,
) -> RestoreReport:
    """Verify one region's archive and write it into the node directory `directory`.

    The node's consensus history (``consensus.db``) is dropped: it rejoins its
    cluster at the last restored block.  With `new_cluster`, the node is one
    validator of a cluster rebuilt from this archive: ``epoch.toml`` anchors a
    new consensus epoch at the last restored block (`trustchain.node.epoch`);
    otherwise it names the epoch the archive's last blocks belong to, if any.
    """
    from trustchain.node.app import AppliedStore, decode_applied
    from trustchain.node.ca.genesis import load_ca_genesis
    from trustchain.node.config import load_genesis
    from trustchain.node.consensus_driver import validator_set
    from trustchain.node.state import ReplicatedState, state_commitment

    started = time.monotonic()
    genesis = load_genesis(genesis_path)
    ca = load_ca_genesis(genesis_path)
    origin = f"{genesis.chain_id}.ct.trustchain"
    voters = ca.checkpoint_voters(origin)
    if not voters:
        raise RestoreError(
            f"{genesis_path}: no validator with a CT log key (the [ca] section); give the "
            "cluster's genesis file, with the [ca] section `trustchain ca init` writes"
        )
    where = f"{archive.region}: s3://{archive.bucket}/{archive.prefix}"
    warnings: list[str] = []

    # 1. the checkpoint and its quorum
    note = archive.get("checkpoint")
    if note is None:
        raise RestoreError(f"{where}checkpoint: missing; nothing was archived under this prefix")
    try:
        cosigned = verify_cosigned(note, voters, origin=origin)
    except CheckpointError as exc:
        raise RestoreError(f"{where}checkpoint: {exc}") from None
    cp = cosigned.checkpoint
    progress(f"checkpoint: {cp.size} entries, cosigned by {', '.join(cosigned.signers)}")

    # 2. rollback
    history = sorted(
        int(k.split("/", 1)[1])
        for k in archive.keys("checkpoints/")
        if k.split("/", 1)[1].isdigit()
    )
    if history and history[-1] > cp.size:
        # The latest pointer is older than the history: it is written after the
        # history (and may not be yet, or its writer died), or it was rolled back.
        # Either way the newest checkpoint that a quorum cosigned is the one to restore.
        newer_key = f"checkpoints/{history[-1]}"
        newer = archive.get(newer_key)
        try:
            if newer is None:
                raise CheckpointError("vanished while restoring")
            cosigned = verify_cosigned(newer, voters, origin=origin)
        except CheckpointError as exc:
            raise RestoreError(
                f"{where}checkpoint: rolled back: it has {cp.size} entries but "
                f"{newer_key} was archived and does not verify ({exc}); the bucket was "
                "tampered with or an old version restored"
            ) from None
        warnings.append(
            f"checkpoint: the latest pointer has {cp.size} entries but {newer_key} is "
            "archived (the pointer follows the history, or it was rolled back): restoring "
            f"{newer_key}"
        )
        progress(warnings[-1])
        note, cp = newer, cosigned.checkpoint
    local = directory / "ct" / "cosigned-checkpoint"
    if local.exists():
        have = note_checkpoint(local.read_bytes()).size
        if have > cp.size:
            raise RestoreError(
                f"{where}checkpoint: rolled back: it has {cp.size} entries, {local} has {have}"
            )

    # 3. tiles
    wanted = tiles_of(cp.size)
    progress(f"downloading {len(wanted)} tiles")

    def fetch(key: str) -> tuple[str, bytes | None]:
        return key, archive.get(key)

    got: dict[str, bytes | None] = {}
    step = max(1000, len(wanted) // 20)
    with ThreadPoolExecutor(workers) as pool:
        for key, body in pool.map(fetch, [t.path() for t in wanted]):
            got[key] = body
            if len(got) % step == 0:
                progress(f"downloaded {len(got)} of {len(wanted)} tiles")
    tiles: dict[TileID, bytes] = {}
    for t in wanted:
        data = got[t.path()]
        if data is None:
            raise RestoreError(f"{where}{t.path()}: tile is missing")
        if t.level != DATA and len(data) != t.width * 32:
            raise RestoreError(f"{where}{t.path()}: {len(data)} bytes, expected {t.width * 32}")
        tiles[t] = data

    def read(t: TileID) -> bytes:
        return tiles[t]

    try:
        edge = TreeEdge.load(cp.size, read)
    except ValueError as exc:
        raise RestoreError(f"{where}{exc} (a corrupted edge tile)") from None
    if edge.root() != cp.root_hash:
        edge_tiles = [
            TileID(level, full_tiles(cp.size, level), width).path()
            for level, width in enumerate(edge_widths(cp.size))
            if width
        ]
        raise RestoreError(
            f"{where}{', '.join(edge_tiles)}: these edge tiles do not hash to the "
            "checkpoint's root (a corrupted tile)"
        )
    issuers: set[bytes] = set()
    # Precert entries that may have been signed by a Precertificate Signing Certificate
    # (checked once the issuers are downloaded).
    by_psc: list[tuple[TileID, int, TileLeaf]] = []
    for t, data in tiles.items():
        if t.level == DATA:
            hashes = split_hashes(tiles[TileID(0, t.index, t.width)], t.width)
            try:
                leaves = parse_data_tile(data, t.width)
            except ValueError as exc:
                raise RestoreError(f"{where}{t.path()}: {exc}") from None
            for i, leaf in enumerate(leaves):
                if leaf.leaf_hash() != hashes[i]:
                    raise RestoreError(
                        f"{where}{t.path()}: entry {t.index * TILE_WIDTH + i} does not match "
                        "its leaf hash (corrupted entry bundle)"
                    )
                # The submitted precertificate is not under the leaf hash (static-ct-api
                # PreCertExtraData): it must at least yield the logged TBSCertificate
                # (RFC 6962 section 3.2), or a corrupted one would be served.
                if leaf.pre_certificate and not _precert_matches(leaf, None):
                    if len(leaf.chain) < 2:
                        raise _bad_precert(where, t, t.index * TILE_WIDTH + i)
                    by_psc.append((t, t.index * TILE_WIDTH + i, leaf))
                issuers.update(leaf.chain)
            continue
        if not t.full:
            continue  # partial tiles are the edge, checked through the root above
        parent_level, parent_index = t.level + 1, t.index >> TILE_HEIGHT
        if parent_index < full_tiles(cp.size, parent_level):
            parent = split_hashes(tiles[TileID(parent_level, parent_index, TILE_WIDTH)], TILE_WIDTH)
        else:
            parent = edge.partial[parent_level]
        expect = parent[t.index % TILE_WIDTH]
        if merkle.root_of(split_hashes(data, TILE_WIDTH)) != expect:
            raise RestoreError(
                f"{where}{t.path()}: hashes do not match the level {parent_level} tile above "
                "(corrupted tile)"
            )
    issuer_der: dict[bytes, bytes] = {}
    for fp in sorted(issuers):
        der = archive.get(f"issuer/{fp.hex()}")
        if der is None:
            raise RestoreError(f"{where}issuer/{fp.hex()}: missing, but entries refer to it")
        if hashlib.sha256(der).digest() != fp:
            raise RestoreError(f"{where}issuer/{fp.hex()}: content does not match its name")
        issuer_der[fp] = der
    for t, index, leaf in by_psc:
        if not _precert_matches(leaf, issuer_der[leaf.chain[0]]):
            raise _bad_precert(where, t, index)
    # Every archived checkpoint must be a prefix of this tree.  Its root depends on
    # the hash tiles only (entry bundles are checked above), so they alone are cut.
    with ThreadPoolExecutor(workers) as pool:
        olds = list(pool.map(fetch, [f"checkpoints/{size}" for size in history if size]))
    for key, old in olds:
        if old is None:
            continue
        size = int(key.split("/", 1)[1])
        try:
            old_cp = note_checkpoint(old)
        except CheckpointError as exc:
            raise RestoreError(f"{where}{key}: {exc}") from None
        if old_cp.size != size:
            raise RestoreError(f"{where}{key}: holds a checkpoint of {old_cp.size} entries")
        if old_cp.origin != cp.origin:
            raise RestoreError(f"{where}{key}: a checkpoint of log {old_cp.origin!r}")
        try:
            old_root = _root_at(tiles, size)
        except (KeyError, ValueError) as exc:
            raise RestoreError(f"{where}{key}: cannot rebuild its tree: {exc}") from None
        if old_root != old_cp.root_hash:
            # Tell a tampered object from a fork: only a quorum-signed one is a fork
            # (signatures are checked here only, not for every history object).
            try:
                verify_cosigned(old, voters, origin=origin)
            except CheckpointError as exc:
                raise RestoreError(
                    f"{where}{key}: its root is not this tree's and {exc} (a tampered object)"
                ) from None
            raise RestoreError(
                f"{where}{key}: cosigned, but not consistent with the latest checkpoint "
                "(the log forked: the validators signed two histories)"
            )
    progress(f"tiles verified against the root ({len(tiles)} tiles, {len(issuers)} issuers)")

    # 4. the newest snapshot a quorum signed, checked against the verified tiles
    state = ReplicatedState(genesis, ca, validator_set(genesis))
    blocks: list[Block] = []
    epochs: dict[int, Anchor] = {}
    """Anchor height -> the anchor of the epoch that archived blocks after it."""
    snapshot = None
    for height, data, signers in _signed_snapshots(archive, genesis, warnings):
        candidate = ReplicatedState(genesis, ca, validator_set(genesis))
        try:
            loaded = load_snapshot(candidate, data)
        except SnapshotError as exc:
            raise RestoreError(f"{where}{snapshot_keys(height, '')[0]}: {exc}") from None
        published = {c.certificate_id: c for c in loaded.published}
        again = take_snapshot(candidate, loaded.block, published, loaded.epoch)
        if encode_snapshot(again) != data:
            raise RestoreError(
                f"{where}{snapshot_keys(height, '')[0]}: does not encode back to the same "
                "bytes (a snapshot this version of trustchain reads differently)"
            )
        if candidate.edge.size <= cp.size:  # newer than the checkpoint: an older one
            snapshot, state = (height, data, signers), candidate
            break
    if snapshot is not None:
        height, data, signers = snapshot
        snap_edge = state.edge
        if snap_edge.size and snap_edge.root() != _root_at(tiles, snap_edge.size):
            raise RestoreError(
                f"{where}{snapshot_keys(height, '')[0]}: signed by {', '.join(signers)}, but its "
                f"log of {snap_edge.size} entries is not this tree's (the validators signed a "
                "state that is not the committed one)"
            )
        blocks.append(decode_applied(loaded.block))
        if loaded.epoch is not None:
            epochs[loaded.epoch.height] = loaded.epoch
        progress(
            f"snapshot of block {height} ({len(data)} bytes, signed by {', '.join(signers)}) "
            f"matches the log at {snap_edge.size} entries"
        )

    # 5. the blocks after it
    keys = list(archive.keys("state/"))
    chain = segment_cover(keys, after=state.height)
    anchors = sorted({p[2] for k in keys if (p := parse_state_key(k)) and p[2]})
    with ThreadPoolExecutor(workers) as pool:
        raw_segments = list(pool.map(fetch, [key for _, key, _ in chain]))
    raw_blocks: list[tuple[str, bytes]] = []
    for (after, _, cut), (key, body) in zip(chain, raw_segments, strict=True):
        if body is None:
            raise RestoreError(f"{where}{key}: vanished while restoring")
        try:
            rows = msgpack.unpackb(body, raw=False)
            raw_blocks += [
                (f"{key} (block {int(h)})", bytes(b)) for h, b in rows if after < h <= cut
            ]
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise RestoreError(f"{where}{key}: not a state segment: {exc}") from None
    size, root = state.edge.size, state.edge.root()
    replayed = 0
    for key, data in raw_blocks:
        try:
            block = decode_applied(data)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise RestoreError(f"{where}{key}: not a block: {exc}") from None
        if block.height != state.height + 1:
            raise RestoreError(
                f"{where}{key}: holds block {block.height} where block {state.height + 1} "
                "belongs (a damaged state segment)"
            )
        if state.height in anchors:
            here = Anchor(state.height, state.timestamp, state.edge.commitment())
            epochs[state.height] = here
            expected = genesis_block(epoch_chain_id(genesis.chain_id, here), b"").id
        elif state.height == 0:
            expected = genesis_block(genesis.chain_id, b"").id
        else:
            expected = blocks[-1].id
        if block.id and expected and block.parent_id != expected:
            raise RestoreError(
                f"{where}{key}: block {block.height} does not follow block {state.height} "
                "(its parent is another block: a damaged or foreign state segment)"
            )
        try:
            state.apply(block)
        except ValueError as exc:
            raise RestoreError(f"{where}{key}: {exc}") from None
        if state.edge.size > cp.size:
            break  # beyond the cosigned checkpoint: the node gets it from peers
        size, root = state.edge.size, state.edge.root()
        blocks.append(block)
        replayed += 1
    if size != cp.size or root != cp.root_hash:
        covered = chain[-1][2] if chain else 0
        gap = f"; no archived state segment holds block {covered + 1}" if size < cp.size else ""
        raise RestoreError(
            f"{where}state/: the replayed blocks give a log of {size} entries, "
            f"not the checkpoint's {cp.size} (missing or damaged state objects{gap})"
        )
    progress(f"state verified: {replayed} blocks replayed")

    # write: durably (the CT store's own writer: write, fsync, rename, fsync directory)
    # into a staging directory, then moved into place
    stage = directory / ".restore"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    files = TileFiles(stage / "ct")
    files.write(tiles.items())
    for fp, der in issuer_der.items():
        files.put_issuer(fp, der)
    files.write_checkpoint(note)
    write_durably(stage / "ct" / "cosigned-checkpoint", note)
    if snapshot is not None:
        write_snapshot(stage, snapshot[1])
    store = AppliedStore(stage / "state.db")
    try:
        store.add_many(blocks)
    finally:
        store.close()
    db_fd = os.open(stage / "state.db", os.O_RDONLY)
    try:
        os.fsync(db_fd)
    finally:
        os.close(db_fd)
    fsync_dir(stage / "ct")
    fsync_dir(stage)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SNAPSHOT_FILE).unlink(missing_ok=True)
    for name in ("ct", "state.db", SNAPSHOT_FILE):
        if not (stage / name).exists():
            continue
        target = directory / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        if name == "state.db":
            # An old write-ahead log beside the new database would be replayed into it.
            for suffix in ("-wal", "-shm"):
                (directory / f"state.db{suffix}").unlink(missing_ok=True)
        os.replace(stage / name, target)
    shutil.rmtree(stage, ignore_errors=True)
    height = blocks[-1].height if blocks else 0
    # The node starts from the restored state: its consensus history (if any) is of
    # a chain it no longer holds; it rejoins at the last restored block (or, with
    # `new_cluster`, starts a new epoch there).
    for suffix in ("", "-wal", "-shm"):
        (directory / f"consensus.db{suffix}").unlink(missing_ok=True)
    epoch = max(
        (a for a in epochs.values() if a.height <= height), default=None, key=lambda a: a.height
    )
    if new_cluster:
        epoch = Anchor(height, blocks[-1].timestamp if blocks else 0, state_commitment(size, root))
        progress(f"new consensus epoch anchored at block {height}")
    if epoch is not None:
        write_epoch(directory, epoch)
    else:
        (directory / EPOCH_FILE).unlink(missing_ok=True)
    fsync_dir(directory)
    return RestoreReport(
        cp.size, height, cosigned.signers, len(tiles), time.monotonic() - started,
        snapshot[0] if snapshot else 0, tuple(warnings),
    )  # fmt: skip


def _signed_snapshots(
    archive: S3Archive, genesis: Genesis, warnings: list[str]
) -> Iterator[tuple[int, bytes, list[str]]]:
    """Archived snapshots that validators holding more than 2/3 of the power signed,
    newest first: (height, bytes, signers)."""
    signatures: dict[int, list[str]] = {}
    for key in archive.keys("snapshots/"):
        parts = key.split("/")
        if len(parts) == 4 and parts[1].isdigit() and parts[2] == "sig":
            signatures.setdefault(int(parts[1]), []).append(parts[3])
    power = {v.name: (v.public_key, v.power) for v in genesis.validators}
    total = sum(p for _, p in power.values())
    for height in sorted(signatures, reverse=True):
        state_key_ = snapshot_keys(height, "")[0]
        data = archive.get(state_key_)
        if data is None:
            continue
        signers = []
        for name in sorted(signatures[height]):
            sig = archive.get(snapshot_keys(height, name)[1])
            if name in power and sig is not None:
                if verify_snapshot(power[name][0], sig, genesis.chain_id, height, data):
                    signers.append(name)
        signed = sum(power[n][1] for n in signers)
        if 3 * signed <= 2 * total:
            warnings.append(
                f"{state_key_}: signed by {signed} of {total} voting power, not more than 2/3; "
                "not used"
            )
            continue
        yield height, data, signers


def segment_cover(keys: Iterable[str], after: int = 0) -> list[tuple[int, str, int]]:
    """Which state segments to read for the blocks above `after`, in order:
    (blocks after, key, blocks up to).

    Every validator archives its own segments (bounds differ between validators;
    a committed block is the same everywhere), so segments overlap and any one
    validator's series may stop (it crashed).  Interval cover: at each height
    take, of the segments holding the next block, the one reaching furthest.

    A cluster restored from the archive starts a new consensus epoch at its last
    archived block (trustchain.node.epoch) and tags its segments with it.  The
    previous epoch's segments may hold blocks past that anchor that were never
    archived under a checkpoint: they are cut at the next epoch's anchor.
    """
    parsed = [(p, key) for key in keys if (p := parse_state_key(key))]
    anchors = sorted({e for (_, _, e), _ in parsed})
    segments: list[tuple[int, int, str]] = []
    for (first, last, epoch), key in parsed:
        later = [a for a in anchors if a > epoch]
        last = min(last, later[0]) if later else last
        if first <= last:
            segments.append((first, last, key))
    segments.sort()
    chain: list[tuple[int, str, int]] = []
    height, at = after, 0
    while True:
        best: tuple[int, str] | None = None
        while at < len(segments) and segments[at][0] <= height + 1:
            first, last, key = segments[at]
            if last > height and (best is None or last > best[0]):
                best = (last, key)
            at += 1
        if best is None:
            return chain
        chain.append((height, best[1], best[0]))
        height = best[0]


def _precert_matches(leaf: TileLeaf, psc: bytes | None) -> bool:
    """The precertificate, poison removed (and the issuer fields of the Precertificate
    Signing Certificate `psc` put in, if one signed it), is the entry's TBSCertificate."""
    try:
        return precert_tbs(leaf.pre_certificate, psc) == leaf.entry.entry.certificate
    except ValueError:
        return False


def _bad_precert(where: str, t: TileID, index: int) -> RestoreError:
    return RestoreError(
        f"{where}{t.path()}: entry {index}: its pre_certificate does not yield the logged "
        "TBSCertificate (corrupted entry bundle)"
    )


def _root_at(tiles: dict[TileID, bytes], size: int) -> bytes:
    """The root of the tree of the first `size` leaves, from the restored hash tiles."""
    partial: list[list[bytes]] = []
    for level, width in enumerate(edge_widths(size)):
        tile = TileID(level, full_tiles(size, level), width) if width else None
        partial.append([] if tile is None else split_hashes(_prefix(tiles, tile), width))
    return TreeEdge(size, partial, []).root()


def _prefix(tiles: dict[TileID, bytes], t: TileID) -> bytes:
    """Tile `t` of a smaller tree, cut from the restored tree's tile at that place.

    A tile's first W entries never change (C2SP tlog-tiles), so the narrower tile
    is the first W entries of the wider one: W hashes of a hash tile, but W
    *TileLeaf structures* of an entry bundle, whose lengths vary (a precert entry
    holds a TBSCertificate), so those are decoded and re-encoded, not cut at
    W * 32 bytes.
    """
    for width in (TILE_WIDTH, *range(TILE_WIDTH - 1, t.width - 1, -1)):
        have = tiles.get(TileID(t.level, t.index, width))
        if have is None:
            continue
        if t.level != DATA:
            return have[: t.width * HASH_SIZE]
        return b"".join(leaf.encode() for leaf in parse_data_tile(have, width)[: t.width])
    raise KeyError(t.path())
