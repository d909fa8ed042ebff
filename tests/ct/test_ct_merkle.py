"""Merkle tree: conformance vectors and a comparison with a naive RFC 6962 reference."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

from trustchain.ct import merkle
from trustchain.ct.merkle import MemoryTree, ProofError

TESTDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "merkle"


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _proof(value: list[str] | None) -> list[bytes]:
    return [_b64(p) for p in value or []]


def _cases(kind: str) -> list[Any]:
    files = sorted((TESTDATA / kind).rglob("*.json"))
    assert files, f"no {kind} vectors under {TESTDATA}"
    return [pytest.param(json.loads(f.read_text()), id=str(f.relative_to(TESTDATA))) for f in files]


@pytest.mark.parametrize("case", _cases("inclusion"))
def test_inclusion_vectors(case: dict[str, Any]) -> None:
    def check() -> None:
        merkle.verify_inclusion(
            case["leafIdx"],
            case["treeSize"],
            _b64(case["leafHash"]),
            _proof(case["proof"]),
            _b64(case["root"]),
        )

    if case["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


@pytest.mark.parametrize("case", _cases("consistency"))
def test_consistency_vectors(case: dict[str, Any]) -> None:
    def check() -> None:
        merkle.verify_consistency(
            case["size1"],
            case["size2"],
            _b64(case["root1"]),
            _b64(case["root2"]),
            _proof(case["proof"]),
        )

    if case["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


def test_vector_counts() -> None:
    # Every vector file is exercised: a refactor that silently drops a folder fails here.
    assert len(list(TESTDATA.rglob("*.json"))) == len(_cases("inclusion")) + len(
        _cases("consistency")
    )


# --- naive reference, written straight from RFC 6962 section 2.1 -----------------


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def _leaves(n: int) -> list[bytes]:
    return [b"leaf %d" % i for i in range(n)]


@pytest.fixture(scope="module")
def tree64() -> tuple[list[bytes], MemoryTree]:
    data = _leaves(64)
    tree = MemoryTree.empty()
    for d in data:
        tree.append(d)
    return data, tree


def test_roots_match_reference(tree64: tuple[list[bytes], MemoryTree]) -> None:
    data, tree = tree64
    for n in range(65):
        assert tree.root(n) == ref_mth(data[:n])


def test_every_inclusion_proof_up_to_64(tree64: tuple[list[bytes], MemoryTree]) -> None:
    data, tree = tree64
    for size in range(1, 65):
        root = ref_mth(data[:size])
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            assert proof == ref_path(index, data[:size])
            merkle.verify_inclusion(index, size, merkle.leaf_hash(data[index]), proof, root)


def test_every_consistency_proof_up_to_64(tree64: tuple[list[bytes], MemoryTree]) -> None:
    data, tree = tree64
    for size2 in range(1, 65):
        root2 = ref_mth(data[:size2])
        for size1 in range(1, size2 + 1):
            proof = tree.consistency_proof(size1, size2)
            assert proof == ref_subproof(size1, data[:size2], True)
            merkle.verify_consistency(size1, size2, ref_mth(data[:size1]), root2, proof)


class _MemoRef:
    """The naive reference over a virtual log of 2**20 leaves, memoised by range.

    ``mth(start, end)`` is RFC 6962's recursion verbatim; the memo only keeps the
    test inside its time budget.
    """

    def __init__(self) -> None:
        self.memo: dict[tuple[int, int], bytes] = {}

    def mth(self, start: int, end: int) -> bytes:
        key = (start, end)
        h = self.memo.get(key)
        if h is None:
            n = end - start
            if n == 1:
                h = hashlib.sha256(b"\x00" + b"virtual leaf %d" % start).digest()
            else:
                k = 1
                while k * 2 < n:
                    k *= 2
                h = hashlib.sha256(
                    b"\x01" + self.mth(start, start + k) + self.mth(start + k, end)
                ).digest()
            self.memo[key] = h
        return h

    def path(self, m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = 1
        while k * 2 < n:
            k *= 2
        if m < k:
            return [*self.path(m, start, start + k), self.mth(start + k, end)]
        return [*self.path(m - k, start + k, end), self.mth(start, start + k)]

    def subproof(self, m: int, start: int, end: int, b: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if b else [self.mth(start, end)]
        k = 1
        while k * 2 < n:
            k *= 2
        if m <= k:
            return [*self.subproof(m, start, start + k, b), self.mth(start + k, end)]
        return [*self.subproof(m - k, start + k, end, False), self.mth(start, start + k)]

    def node(self, level: int, index: int) -> bytes:
        return self.mth(index << level, (index + 1) << level)


def test_random_proofs_up_to_2_pow_20() -> None:
    rng = random.Random(6962)
    ref = _MemoRef()
    for _ in range(40):
        size = rng.randint(1, 1 << 20)
        index = rng.randrange(size)
        root = ref.mth(0, size)
        assert merkle.subtree_hash(ref.node, 0, size) == root
        proof = merkle.inclusion_proof(ref.node, index, size)
        assert proof == ref.path(index, 0, size)
        merkle.verify_inclusion(index, size, ref.node(0, index), proof, root)
        size1 = rng.randint(1, size)
        cproof = merkle.consistency_proof(ref.node, size1, size)
        assert cproof == ref.subproof(size1, 0, size, True)
        merkle.verify_consistency(size1, size, ref.mth(0, size1), root, cproof)
        # A proof never verifies against a neighbouring tree or a neighbouring leaf.
        if 1 < size1 < size:
            with pytest.raises(ProofError):
                merkle.verify_consistency(size1, size, ref.mth(0, size1 - 1), root, cproof)
        if size > 1:
            other = ref.node(0, (index + 1) % size)
            with pytest.raises(ProofError):
                merkle.verify_inclusion(index, size, other, proof, root)


def test_reference_agrees_on_small_random_trees() -> None:
    rng = random.Random(1)
    for _ in range(20):
        n = rng.randint(1, 300)
        data = [rng.randbytes(rng.randint(0, 40)) for _ in range(n)]
        tree = MemoryTree.empty()
        for d in data:
            tree.append(d)
        assert tree.root() == ref_mth(data)
        assert merkle.root_of([merkle.leaf_hash(d) for d in data]) == ref_mth(data)


def test_tampered_proofs_are_rejected(tree64: tuple[list[bytes], MemoryTree]) -> None:
    data, tree = tree64
    root = tree.root(37)
    proof = tree.inclusion_proof(20, 37)
    leaf = merkle.leaf_hash(data[20])
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        with pytest.raises(ProofError):
            merkle.verify_inclusion(20, 37, leaf, bad, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(20, 37, leaf, [*proof, proof[0]], root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(20, 37, leaf, proof[:-1], root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(37, 37, leaf, proof, root)
    with pytest.raises(ProofError, match="not in a tree"):
        tree.inclusion_proof(37, 37)
    with pytest.raises(ProofError):
        tree.consistency_proof(0, 5)
