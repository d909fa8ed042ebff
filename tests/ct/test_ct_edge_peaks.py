"""TreeEdge keeps the perfect-subtree roots of its partial rows as it grows: its root,
copies and reloads must agree with a tree hashed from scratch."""

from __future__ import annotations

import hashlib
import random

from trustchain.ct.merkle import EMPTY_ROOT, MemoryTree
from trustchain.ct.sct import EntryType, LogEntry
from trustchain.ct.tiles import TILE_WIDTH, TileID, TreeEdge, new_leaf


def _leaf(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest()


def test_root_after_every_batch_equals_a_tree_hashed_from_scratch() -> None:
    rng = random.Random(7)
    edge = TreeEdge.empty()
    tree = MemoryTree.empty()
    assert edge.root() == EMPTY_ROOT
    # Batches of random sizes, across level-0 and level-1 tile boundaries
    # (65,536 leaves fill a level-1 tile).
    while edge.size < TILE_WIDTH * TILE_WIDTH + 300:
        n = rng.choice([1, 1, 2, 3, 17, 255, 256, 257, 1000, 4000])
        hashes = [_leaf(edge.size + i) for i in range(n)]
        edge.append(hashes, [b"x"] * n)
        for h in hashes:
            tree.append_hash(h)
        assert edge.root() == tree.root(), edge.size


def test_a_copy_grows_apart_from_its_original() -> None:
    edge = TreeEdge.empty()
    edge.append([_leaf(i) for i in range(300)], [b"x"] * 300)
    before = edge.root()
    other = edge.copy()
    other.append([_leaf(300)], [b"y"])
    assert edge.root() == before and edge.size == 300
    tree = MemoryTree.empty()
    for i in range(301):
        tree.append_hash(_leaf(i))
    assert other.root() == tree.root()
    edge.append([_leaf(999)], [b"z"])
    assert edge.root() != other.root()


def test_an_edge_loaded_or_built_from_rows_has_the_same_root() -> None:
    edge = TreeEdge.empty()
    size = TILE_WIDTH * 3 + 77
    leaves = [
        new_leaf(LogEntry(EntryType.X509, b"cert%d" % i), 0, i, b"", ()).encode()
        for i in range(size)
    ]
    writes, _ = edge.append([_leaf(i) for i in range(size)], leaves)
    tiles = dict(writes)

    def read(tile: TileID) -> bytes:
        return tiles[tile]

    loaded = TreeEdge.load(size, read)
    assert loaded.root() == edge.root()
    built = TreeEdge(size, [list(p) for p in edge.partial], [])
    assert built.root() == edge.root()
    loaded.append([_leaf(size)], [b"x"])
    edge.append([_leaf(size)], [b"x"])
    assert loaded.root() == edge.root()
