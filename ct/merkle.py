"""RFC 6962 / RFC 9162 Merkle trees: hashing, proofs and their verifiers (pure).

Hashing follows RFC 6962 section 2.1 (RFC 9162 section 2.1.1): a leaf hashes as
SHA-256(0x00 || data) and an interior node as SHA-256(0x01 || left || right), so a
leaf can never be confused with a node (second-preimage resistance).

Proof *generation* needs the hashes of complete subtrees.  This module does not
know where they are stored: callers pass a ``NodeReader`` (``node(level, index)``
returns the hash of the complete subtree of 2**level leaves starting at leaf
``index * 2**level``), the way Tessera's ``Integrate`` takes a tile fetcher.  The
verifiers are the RFC 9162 section 2.1.3.2 and 2.1.4.2 algorithms, strict in the
way transparency-dev/merkle is (see ../shared/testdata/merkle/README.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256() (RFC 6962 section 2.1)."""

NodeReader = Callable[[int, int], bytes]
"""``node(level, index)``: hash of the complete subtree of 2**level leaves that starts
at leaf ``index << level``.  Only ever called for subtrees complete in the tree the
proof is about."""


class ProofError(ValueError):
    """A proof does not verify, or its parameters are out of range (the message says which)."""


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 section 2.1: MTH({d0}) = SHA-256(0x00 || d0)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 section 2.1: SHA-256(0x01 || MTH(left) || MTH(right))."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly less than ``n`` (n >= 2): RFC 6962's k."""
    if n < 2:
        raise ValueError(f"split_point needs n >= 2, got {n}")
    return 1 << ((n - 1).bit_length() - 1)


def root_of(hashes: Sequence[bytes]) -> bytes:
    """MTH over a list of already-hashed leaves (or of subtree hashes of equal height).

    Used for tiles: a tile's hashes combine exactly as RFC 6962 leaves do.
    """
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    level = list(hashes)
    # Bottom-up pairing gives the same tree as RFC 6962's recursive split at the
    # largest power of two: an odd last node is carried up unchanged.
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


RangeHashes = MutableMapping[tuple[int, int], bytes]
"""Known MTH(D[start:end]) of ranges that are not one complete subtree, by (start, end).

A log only ever appends, so the hash of a range inside the tree never changes: a
caller that makes many proofs over one log may keep one of these across them
(the right edge of a tree of a given size is the same in every proof at that
size).  Only ever fill it with hashes of one log."""


def subtree_hash(node: NodeReader, start: int, end: int, known: RangeHashes | None = None) -> bytes:
    """MTH(D[start:end]) from complete-subtree hashes (RFC 6962 section 2.1 recursion).

    ``start`` must be aligned so that the range decomposes as RFC 6962 does: this
    holds for every range that appears in an inclusion or consistency proof.
    With ``known``, hashes of ranges that are not complete subtrees are looked up
    there first and remembered there.
    """
    n = end - start
    if n <= 0:
        raise ValueError(f"empty range [{start}, {end})")
    if n & (n - 1) == 0 and start % n == 0:
        return node(n.bit_length() - 1, start // n)
    if known is not None:
        found = known.get((start, end))
        if found is not None:
            return found
    k = split_point(n)
    h = node_hash(
        subtree_hash(node, start, start + k, known), subtree_hash(node, start + k, end, known)
    )
    if known is not None:
        known[(start, end)] = h
    return h


def inclusion_proof(
    node: NodeReader, index: int, size: int, known: RangeHashes | None = None
) -> list[bytes]:
    """PATH(index, D[size]) of RFC 6962 section 2.1.1, leaf-to-root order (``known``:
    see ``subtree_hash``)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    proof: list[bytes] = []
    lo, hi = 0, size
    # Walk down from the root, remembering the sibling at each split; the list is
    # reversed at the end so that it reads from the leaf upwards.
    while hi - lo > 1:
        k = split_point(hi - lo)
        if index < lo + k:
            proof.append(subtree_hash(node, lo + k, hi, known))
            hi = lo + k
        else:
            proof.append(subtree_hash(node, lo, lo + k, known))
            lo = lo + k
    proof.reverse()
    return proof


def consistency_proof(
    node: NodeReader, size1: int, size2: int, known: RangeHashes | None = None
) -> list[bytes]:
    """PROOF(size1, D[size2]) of RFC 6962 section 2.1.2 (``known``: see ``subtree_hash``).

    A proof from the empty tree is meaningless (RFC 9162 section 2.1.4), so
    ``size1`` must be at least 1; ``size1 == size2`` gives the empty proof.
    """
    if not 0 < size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to size {size2}")
    proof: list[bytes] = []
    lo, hi, m, complete = 0, size2, size1, True
    # SUBPROOF(m, D[lo:hi], complete) unrolled; siblings are collected root-first.
    while m != hi - lo:
        k = split_point(hi - lo)
        if m <= k:
            proof.append(subtree_hash(node, lo + k, hi, known))
            hi = lo + k
        else:
            proof.append(subtree_hash(node, lo, lo + k, known))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        proof.append(subtree_hash(node, lo, hi, known))
    proof.reverse()
    return proof


def _check_hashes(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise ProofError(f"proof hash {i} is {len(h)} bytes, not {HASH_SIZE}")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 section 2.1.3.2)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    if len(leaf) != HASH_SIZE:
        raise ProofError(f"leaf hash is {len(leaf)} bytes, not {HASH_SIZE}")
    _check_hashes(proof)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless ``proof`` shows leaf hash ``leaf`` at ``index`` under ``root``."""
    got = root_from_inclusion(index, size, leaf, proof)
    if got != root:
        raise ProofError(f"inclusion proof for leaf {index} of {size} does not lead to the root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless ``proof`` shows tree (size1, root1) is a prefix of (size2, root2).

    RFC 9162 section 2.1.4.2, strict: size1 = 0 is rejected (the empty tree is
    trivially consistent with everything, so such a check proves nothing).
    """
    if size1 < 0 or size2 < 0:
        raise ProofError("tree sizes must not be negative")
    if size1 > size2:
        raise ProofError(f"size1 {size1} is larger than size2 {size2}")
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if size1 == size2:
        if proof:
            raise ProofError("equal tree sizes need an empty proof")
        if root1 != root2:
            raise ProofError(f"roots of the tree of size {size1} differ")
        return
    if not proof:
        raise ProofError("empty consistency proof for different tree sizes")
    _check_hashes(proof)
    path = list(proof)
    # If size1 is a power of two, the old root is itself a node of the new tree and
    # the proof omits it (RFC 9162 section 2.1.4.2 step 2).
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != root1:
        raise ProofError(f"consistency proof does not lead to the root of size {size1}")
    if sr != root2:
        raise ProofError(f"consistency proof does not lead to the root of size {size2}")


@dataclass
class MemoryTree:
    """A whole tree in memory: every level kept.  For tests, tools and small logs.

    ``levels[0]`` holds leaf hashes; ``levels[h][i]`` the hash of the complete
    subtree of 2**h leaves starting at leaf ``i << h``.
    """

    levels: list[list[bytes]]

    @classmethod
    def empty(cls) -> MemoryTree:
        return cls([[]])

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self.levels[0])

    def append_hash(self, h: bytes) -> None:
        """Append a leaf hash, completing whatever subtrees it completes."""
        self.levels[0].append(h)
        level = 0
        while len(self.levels[level]) % 2 == 0:
            pair = self.levels[level][-2:]
            if level + 1 == len(self.levels):
                self.levels.append([])
            self.levels[level + 1].append(node_hash(pair[0], pair[1]))
            level += 1

    def append(self, data: bytes) -> None:
        self.append_hash(leaf_hash(data))

    def node(self, level: int, index: int) -> bytes:
        return self.levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (all of them by default)."""
        n = self.size if size is None else size
        if not 0 <= n <= self.size:
            raise ValueError(f"tree size {n} is beyond the {self.size} leaves")
        return EMPTY_ROOT if n == 0 else subtree_hash(self.node, 0, n)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return inclusion_proof(self.node, index, size)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return consistency_proof(self.node, size1, size2)
