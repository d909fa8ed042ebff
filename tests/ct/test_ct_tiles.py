"""Tiles: path spelling, TileLeaf encoding, and the tree edge against a full tree."""

from __future__ import annotations

import random

import pytest

from trustchain.ct import merkle, sct, tiles
from trustchain.ct._tls import DecodeError
from trustchain.ct.sct import EntryType, LogEntry
from trustchain.ct.tiles import DATA, TileID, TreeEdge


def test_tile_paths() -> None:
    assert TileID(0, 1234067, 256).path() == "tile/0/x001/x234/067"
    assert TileID(1, 5, 17).path() == "tile/1/005.p/17"
    assert TileID(DATA, 1000, 256).path() == "tile/data/x001/000"
    for t in (TileID(0, 0, 1), TileID(5, 999_999_999, 256), TileID(DATA, 12, 255)):
        assert tiles.parse_tile_path(t.path()) == t
    for bad in (
        "tile/0/x000/005",  # not canonical
        "tile/0/5",
        "tile/6/000",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/017",
        "tile/data/000.p/",
        "tile/00/000",
        "tile//000",
        "tile/0/000/",
        "tile/0/x000",
    ):
        with pytest.raises(ValueError):
            tiles.parse_tile_path(bad)


def _leaf(i: int, precert: bool = False) -> tiles.TileLeaf:
    if precert:
        entry = LogEntry(EntryType.PRECERT, b"tbs %d" % i, bytes(32))
        return tiles.new_leaf(entry, 1000 + i, i, b"precert %d" % i, [bytes([i % 256]) * 32])
    return tiles.new_leaf(LogEntry(EntryType.X509, b"cert %d" % i), 1000 + i, i, b"", [])


def test_tile_leaf_roundtrip() -> None:
    leaves = [_leaf(i, precert=i % 2 == 1) for i in range(10)]
    blob = b"".join(leaf.encode() for leaf in leaves)
    assert tiles.parse_data_tile(blob, 10) == leaves
    assert sct.leaf_index_of(leaves[7].entry.extensions) == 7
    assert sct.parse_merkle_tree_leaf(leaves[3].merkle_leaf()) == leaves[3].entry
    for bad, width in ((blob[:-1], 10), (blob + b"\0", 10), (blob, 11), (blob, 9)):
        with pytest.raises(DecodeError):
            tiles.parse_data_tile(bad, width)


def _check_edge_against_tree(
    edge: TreeEdge, tree: merkle.MemoryTree, written: dict[TileID, bytes]
) -> None:
    assert edge.size == tree.size
    assert edge.root() == tree.root()
    # Every tile the tree of this size has was written, with the right hashes.
    expected = tiles.tiles_of(tree.size)
    for t in expected:
        assert t in written, t
        if t.level == DATA:
            continue
        got = tiles.split_hashes(written[t], t.width)
        height = tiles.TILE_HEIGHT * t.level
        want = [tree.node(height, t.index * 256 + i) for i in range(t.width)]
        assert got == want, t
    # The edge can be rebuilt from the written tiles alone.
    again = TreeEdge.load(tree.size, lambda t: written[t])
    assert again == edge


def test_edge_matches_memory_tree_over_random_batches() -> None:
    rng = random.Random(8)
    edge = TreeEdge.empty()
    tree = merkle.MemoryTree.empty()
    written: dict[TileID, bytes] = {}
    superseded_total: set[TileID] = set()
    i = 0
    while tree.size < 70_000:
        n = rng.choice([1, 2, 3, 17, 255, 256, 257, 600, 4000])
        leaves = [_leaf(i + k) for k in range(n)]
        i += n
        hashes = [leaf.leaf_hash() for leaf in leaves]
        writes, superseded = edge.append(hashes, [leaf.encode() for leaf in leaves])
        for h in hashes:
            tree.append_hash(h)
        for t, data in writes:
            # Full tiles are immutable: never written twice with different bytes.
            if t.full and t in written:
                assert written[t] == data
            written[t] = data
        for t in superseded:
            assert not t.full and TileID(t.level, t.index, 256) in written
        superseded_total.update(superseded)
        if rng.random() < 0.1 or tree.size >= 70_000:
            _check_edge_against_tree(edge, tree, written)
    # Every partial tile written is either still needed (its full tile does not
    # exist yet) or superseded by a full tile.
    for t in written:
        if not t.full:
            full = TileID(t.level, t.index, 256)
            assert (full in written) == (t in superseded_total), t


def test_edge_root_small_sizes() -> None:
    tree = merkle.MemoryTree.empty()
    edge = TreeEdge.empty()
    assert edge.root() == merkle.EMPTY_ROOT
    for n in range(1, 600):
        leaf = _leaf(n)
        edge.append([leaf.leaf_hash()], [leaf.encode()])
        tree.append_hash(leaf.leaf_hash())
        assert edge.root() == tree.root()


def test_tile_tree_nodes() -> None:
    hashes = [merkle.leaf_hash(b"%d" % i) for i in range(256)]
    tt = tiles.TileTree(hashes)
    assert tt.node(8, 0) == merkle.root_of(hashes)
    assert tt.node(3, 5) == merkle.root_of(hashes[40:48])
