"""What a previous consensus epoch left in the archive past a restored cluster's anchor."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest
from test_archive_tiles import grow, leaves

from trustchain.consensus.core import Anchor
from trustchain.ct.checkpoint import Checkpoint
from trustchain.ct.note import NoteSignature, format_note
from trustchain.ct.tiles import DATA, TILE_WIDTH, TileID, TreeEdge
from trustchain.infra.s3archive import ArchiveConflict
from trustchain.node.archive import (
    RegionSettings,
    RegionState,
    archive_round,
    parse_state_key,
    state_key,
    tile_end,
)
from trustchain.node.drill import LocalRegion
from trustchain.node.restore import segment_cover
from trustchain.node.state import state_commitment

_n = itertools.count()


def test_state_keys_carry_the_epoch() -> None:
    assert parse_state_key(state_key(3, 9)) == (3, 9, 0)
    assert parse_state_key(state_key(3, 9, 59)) == (3, 9, 59)
    assert state_key(3, 9, 59).endswith(".e00000000000000000059")
    for bad in ("state/3-9", state_key(9, 3), state_key(0, 3), "state/x", "tile/0/000"):
        assert parse_state_key(bad) is None


def test_tile_end_counts_entries_under_the_tile() -> None:
    assert tile_end(TileID(0, 0, 7)) == 7
    assert tile_end(TileID(DATA, 2, 5)) == 2 * TILE_WIDTH + 5
    assert tile_end(TileID(1, 0, 3)) == 3 * TILE_WIDTH
    assert tile_end(TileID(0, 1, TILE_WIDTH)) == 2 * TILE_WIDTH


def test_the_cover_cuts_the_previous_epoch_at_the_next_anchor() -> None:
    old = [state_key(1, 40), state_key(41, 62)]  # 60..62: the old epoch's unarchived tail
    new = [state_key(1, 61, 59), state_key(62, 70, 59)]
    assert segment_cover(old) == [(0, old[0], 40), (40, old[1], 62)]
    assert segment_cover(old + new) == [(0, new[0], 61), (61, new[1], 70)]
    # Only the old epoch's first segment and the new epoch's second one: blocks 60 and
    # 61 come from nowhere rather than from the old epoch.
    assert segment_cover([old[0], old[1], new[1]]) == [(0, old[0], 40), (40, old[1], 59)]


def _store(directory: Path, tiles: dict[TileID, bytes], size: int) -> None:
    for t, data in tiles.items():
        if t.full or t.width == size % TILE_WIDTH:
            path = directory / t.path()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def _note(size: int, root: bytes) -> bytes:
    text = Checkpoint("epoch.test", size, root).text()
    return format_note(text, [NoteSignature("epoch.test", 1, b"sig")])


@pytest.mark.slow
def test_a_new_epoch_writes_over_the_previous_epochs_unarchived_tail(
    regions: dict[str, LocalRegion], tmp_path: Path
) -> None:
    region = regions["us-east-1"]
    archive = region.archive(f"epoch{next(_n)}")
    # The old epoch logged 7 entries; its tiles reached the bucket, its checkpoint of 7
    # did not (it stopped at 5).
    old_tiles, _ = grow([5, 7])
    for t in (TileID(0, 0, 7), TileID(DATA, 0, 7)):
        archive.put_immutable(t.path(), old_tiles[t])
    # The new epoch continued from 5 entries with other entries 5 and 6.
    mine = leaves(5) + leaves(9)[7:9]
    edge = TreeEdge.empty()
    writes, _ = edge.append([x.leaf_hash() for x in mine], [x.encode() for x in mine])
    new_tiles = dict(writes)
    ct_dir = tmp_path / "ct"
    _store(ct_dir, new_tiles, 7)
    state_db = tmp_path / "state.db"
    sqlite3.connect(state_db).execute("CREATE TABLE blocks (height INTEGER PRIMARY KEY, b BLOB)")
    note = _note(7, edge.root())
    settings = RegionSettings(region.name, region.bucket, region.endpoint, region.ca_bundle)

    # Without an anchor (or with one at or past the tile's end) this is a fork.
    for anchor in (None, Anchor(40, 1, state_commitment(7, edge.root()))):
        with pytest.raises(ArchiveConflict, match="already holds other data"):
            archive_round(ct_dir, state_db, RegionState(settings, archive), note, anchor)

    state = RegionState(settings, archive)
    anchor = Anchor(40, 1, state_commitment(5, bytes(32)))
    assert archive_round(ct_dir, state_db, state, note, anchor) == 7
    assert state.replaced == 2
    assert archive.get(TileID(0, 0, 7).path()) == new_tiles[TileID(0, 0, 7)]
    assert archive.get(TileID(DATA, 0, 7).path()) == new_tiles[TileID(DATA, 0, 7)]
    # The bucket's versioning kept what was written over.
    s3 = region.s3()
    versions = s3.list_object_versions(
        Bucket=region.bucket, Prefix=archive.prefix + TileID(0, 0, 7).path()
    )["Versions"]
    assert len(versions) == 2
