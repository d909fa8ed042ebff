"""The sans-IO sequencer core: rounds, pooling, deduplication, explicit time."""

from __future__ import annotations

import pytest

from trustchain.ct import merkle, sct
from trustchain.ct.sct import EntryType, LogEntry
from trustchain.ct.sequencer import PoolFull, Sequencer, Submission
from trustchain.ct.tiles import TreeEdge


def sub(i: int) -> Submission:
    return Submission(LogEntry(EntryType.X509, b"cert %d" % i))


def test_round_lifecycle_and_timing() -> None:
    core = Sequencer(TreeEdge.empty(), 0, interval=0.1, refresh_interval=5.0)
    assert core.next_deadline(0.0) == 0.0  # first round (a refresh) at once
    r0 = core.start_round(0.0, 1000)
    assert r0 is not None and r0.entries == () and r0.size == 0
    assert core.next_deadline(0.01) is None  # in flight
    core.finish_round(r0)
    assert core.next_deadline(0.01) == pytest.approx(5.0)  # idle: refresh later
    t = [core.submit(sub(i)) for i in range(3)]
    assert core.next_deadline(0.01) == pytest.approx(0.1)  # pending: one interval after start
    assert core.start_round(0.05, 1000) is None  # not due yet
    r1 = core.start_round(0.1, 2000)
    assert r1 is not None
    assert [e.ticket for e in r1.entries] == t
    assert [e.index for e in r1.entries] == [0, 1, 2]
    assert all(e.leaf.entry.timestamp == 2000 for e in r1.entries)
    assert [sct.leaf_index_of(e.leaf.entry.extensions) for e in r1.entries] == [0, 1, 2]
    tree = merkle.MemoryTree.empty()
    for e in r1.entries:
        tree.append(e.leaf.merkle_leaf())
    assert (r1.size, r1.root) == (3, tree.root())
    published = core.finish_round(r1)
    assert (published.size, published.root, published.timestamp) == (3, tree.root(), 2000)
    # A clock that steps back never makes checkpoint timestamps go backwards.
    core.submit(sub(9))
    r2 = core.start_round(1.0, 1500)
    assert r2 is not None and r2.timestamp == 2000


def test_full_batch_starts_at_once_and_pool_limit() -> None:
    core = Sequencer(TreeEdge.empty(), 0, pool_limit=5, max_batch=2, interval=10.0)
    core.finish_round(core.start_round(0.0, 1) or pytest.fail())
    for i in range(5):
        core.submit(sub(i))
    with pytest.raises(PoolFull):
        core.submit(sub(5))
    assert core.next_deadline(0.0) == 0.0  # max_batch waiting: no need to wait
    rnd = core.start_round(0.0, 2)
    assert rnd is not None and len(rnd.entries) == 2 and core.pending == 3
    core.finish_round(rnd)
    core.submit(sub(5))  # room again


def test_identical_submissions_share_a_ticket() -> None:
    core = Sequencer(TreeEdge.empty(), 0, interval=0.0)
    a = core.submit(sub(1))
    assert core.submit(sub(1)) == a
    rnd = core.start_round(0.0, 1)
    assert rnd is not None and len(rnd.entries) == 1
    # While the round is in flight the entry still dedups.
    assert core.submit(sub(1)) == a
    assert core.pending == 0
    core.finish_round(rnd)
    # After publication the log's index (not the core) answers duplicates.
    assert core.submit(sub(1)) != a


def test_failed_round_leaves_the_edge_alone() -> None:
    core = Sequencer(TreeEdge.empty(), 0, interval=0.0)
    tickets = [core.submit(sub(i)) for i in range(4)]
    rnd = core.start_round(0.0, 1)
    assert rnd is not None
    assert list(core.fail_round(rnd)) == tickets
    assert core.published.size == 0 and core.edge.size == 0
    with pytest.raises(ValueError):
        core.finish_round(rnd)
    core.submit(sub(7))
    again = core.start_round(1.0, 2)
    assert again is not None and again.entries[0].index == 0


def test_tiles_of_a_round_cover_the_new_tree() -> None:
    core = Sequencer(TreeEdge.empty(), 0, interval=0.0)
    for i in range(300):
        core.submit(sub(i))
    rnd = core.start_round(0.0, 1)
    assert rnd is not None
    paths = sorted(t.path() for t, _ in rnd.tiles)
    assert paths == [
        "tile/0/000",
        "tile/0/001.p/44",
        "tile/1/000.p/1",
        "tile/data/000",
        "tile/data/001.p/44",
    ]
