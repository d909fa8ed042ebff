"""Cutting a smaller tree's tiles out of a larger tree's: hash tiles by 32-byte hashes,
entry bundles by whole TileLeaf entries (which vary in length)."""

from __future__ import annotations

from pathlib import Path

from trustchain.ct import merkle
from trustchain.ct.sct import EntryType, LogEntry
from trustchain.ct.tiles import DATA, TILE_WIDTH, TileID, TileLeaf, TreeEdge, new_leaf
from trustchain.node.archive import read_tile
from trustchain.node.restore import _prefix, _root_at


def leaves(n: int) -> list[TileLeaf]:
    """Precert entries of different lengths (as real TBSCertificates are)."""
    return [
        new_leaf(
            LogEntry(EntryType.PRECERT, bytes([i % 256]) * (50 + i % 40), bytes([i % 256]) * 32),
            1_700_000_000_000 + i,
            i,
            b"\x30" * (90 + i % 13),
            (bytes([i % 256]) * 32,),
        )
        for i in range(n)
    ]


def grow(sizes: list[int]) -> tuple[dict[TileID, bytes], list[TileLeaf]]:
    """Every tile written while a tree grows through `sizes` (as a CT store writes them)."""
    all_leaves = leaves(sizes[-1])
    edge = TreeEdge.empty()
    tiles: dict[TileID, bytes] = {}
    for size in sizes:
        new = all_leaves[edge.size : size]
        writes, _ = edge.append([x.leaf_hash() for x in new], [x.encode() for x in new])
        tiles.update(writes)
    return tiles, all_leaves


def test_restore_cuts_an_entry_bundle_by_entries_not_by_hash_size() -> None:
    tiles, all_leaves = grow([1, 3])
    latest = {t: d for t, d in tiles.items() if t.width == 3}
    assert len(latest) == 2  # tile/0/000.p/3 and tile/data/000.p/3
    # The tree of size 1 as the history check sees it: its bundle is entry 0, whole.
    assert _prefix(latest, TileID(DATA, 0, 1)) == all_leaves[0].encode()
    assert _prefix(latest, TileID(DATA, 0, 2)) == b"".join(x.encode() for x in all_leaves[:2])
    assert _prefix(latest, TileID(0, 0, 1)) == all_leaves[0].leaf_hash()
    for size in (1, 2, 3):
        hashes = [x.leaf_hash() for x in all_leaves[:size]]
        assert _root_at(latest, size) == merkle.root_of(hashes)


def test_history_roots_across_a_full_tile() -> None:
    tiles, all_leaves = grow([100, TILE_WIDTH + 5])
    latest = {t: d for t, d in tiles.items() if t.full or t.width == 5 or t.width == 1}
    for size in (1, 100, TILE_WIDTH, TILE_WIDTH + 5):
        hashes = [x.leaf_hash() for x in all_leaves[:size]]
        assert _root_at(latest, size) == merkle.root_of(hashes)


def test_archiver_cuts_a_superseded_partial_bundle_from_the_wider_one(tmp_path: Path) -> None:
    tiles, all_leaves = grow([2, 7])
    for t, data in tiles.items():
        if t.width == 7:  # only the newest partial tiles are still on disk
            path = tmp_path / t.path()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    assert read_tile(tmp_path, TileID(DATA, 0, 2)) == tiles[TileID(DATA, 0, 2)]
    assert read_tile(tmp_path, TileID(0, 0, 2)) == tiles[TileID(0, 0, 2)]
    assert read_tile(tmp_path, TileID(DATA, 0, 7)) == b"".join(x.encode() for x in all_leaves)
