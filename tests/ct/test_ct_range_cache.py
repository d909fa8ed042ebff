"""Proofs made with remembered range hashes (merkle.RangeHashes) equal proofs made
without, while the tree grows and the memo is shared across sizes."""

from __future__ import annotations

import random

import pytest

from trustchain.ct import merkle
from trustchain.ct.merkle import MemoryTree, ProofError


def test_proofs_with_a_shared_memo_equal_fresh_ones_as_the_tree_grows() -> None:
    rng = random.Random(3)
    tree = MemoryTree.empty()
    known: merkle.RangeHashes = {}
    for _ in range(400):
        for _ in range(rng.randint(1, 40)):
            tree.append(b"leaf %d" % tree.size)
        size = tree.size
        for _ in range(5):
            index = rng.randrange(size)
            with_memo = merkle.inclusion_proof(tree.node, index, size, known)
            assert with_memo == merkle.inclusion_proof(tree.node, index, size), (index, size)
            leaf = tree.node(0, index)
            merkle.verify_inclusion(index, size, leaf, with_memo, tree.root())
            # An older size, after the memo learned newer ones.
            old = rng.randint(1, size)
            index = rng.randrange(old)
            assert merkle.inclusion_proof(tree.node, index, old, known) == (
                merkle.inclusion_proof(tree.node, index, old)
            )
            first = rng.randint(1, size)
            proof = merkle.consistency_proof(tree.node, first, size, known)
            assert proof == merkle.consistency_proof(tree.node, first, size)
            merkle.verify_consistency(first, size, tree.root(first), tree.root(), proof)
    assert known, "ranges were remembered"
    for (start, end), h in known.items():
        assert h == merkle.root_of([tree.node(0, i) for i in range(start, end)])


def test_a_memo_never_answers_for_a_complete_subtree_or_a_bad_range() -> None:
    tree = MemoryTree.empty()
    for i in range(100):
        tree.append(b"%d" % i)
    known: merkle.RangeHashes = {(0, 64): b"\0" * 32}  # a complete subtree: read from node()
    assert merkle.subtree_hash(tree.node, 0, 64, known) == tree.node(6, 0)
    with pytest.raises(ValueError):
        merkle.subtree_hash(tree.node, 5, 5, known)
    with pytest.raises(ProofError):
        merkle.inclusion_proof(tree.node, 100, 100, known)
