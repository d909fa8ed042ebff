"""Per-epoch memory of the verifier: verified space/time proofs and committed requests.

Both are sans-IO state owned by one verifier (or one node's state machine) and
driven by `advance(now_epoch)` when the epoch changes.

* `EpochCache`: space and time proofs are made once per account per epoch and
  accepted in that epoch and the next (DESIGN.md section 5).  Verifying one
  costs milliseconds (the VDF's hash-to-prime and exponentiations), so a proof
  is verified once and remembered by the hash of everything it claims; later
  requests from the same account repeat the same proof and hit the cache.
  Only proofs that verified are stored, so an attacker cannot fill it without
  stake, work and a valid signature per entry, and it is bounded anyway.
  It also memoizes each account's VDF discriminant for the epoch: chiavdf's
  1024-bit hash-to-prime costs about 14 ms median (with a long tail), more
  than the rest of a cold check together, and it depends only on the beacon
  and the account, so a node can compute them for the staked accounts as
  soon as an epoch's beacon commits, off the request path (`add_discriminant`).
* `ReplayGuard`: digests of committed requests.  A request digest covers its
  epoch, and bundles older than the previous epoch are refused on their epoch
  alone, so a digest only needs remembering for two epochs.
"""

from __future__ import annotations

from collections.abc import Iterable

from trustchain.consensus.proofs.bundle import SpaceProof, TimeProof
from trustchain.consensus.proofs.hashing import TAG_CACHE_KEY, tagged_hash, u64
from trustchain.consensus.proofs.vdf import discriminant


def space_cache_key(beacon: bytes, account: bytes, epoch: int, proof: SpaceProof) -> bytes:
    return tagged_hash(
        TAG_CACHE_KEY,
        b"space",
        beacon,
        account,
        u64(epoch),
        proof.salt,
        proof.plot_id,
        u64(proof.k),
        u64(proof.index),
        proof.proof,
    )


def time_cache_key(beacon: bytes, account: bytes, epoch: int, proof: TimeProof) -> bytes:
    return tagged_hash(
        TAG_CACHE_KEY,
        b"time",
        beacon,
        account,
        u64(epoch),
        u64(proof.iterations),
        proof.output,
        proof.proof,
    )


class EpochCache:
    """Hashes of verified space and time proofs, each with the epoch it answers.

    Owned by one thread (the verifier's); nothing here locks.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        # key -> epoch; insertion-ordered, so the oldest entry is evicted first.
        self._entries: dict[bytes, int] = {}
        # (beacon, account) -> (epoch, discriminant); same bound and eviction.
        self._discriminants: dict[tuple[bytes, bytes], tuple[int, str]] = {}
        self._now = 0

    def __len__(self) -> int:
        return len(self._entries)

    def hit(self, key: bytes, now_epoch: int) -> bool:
        """True if `key` was verified for epoch `now_epoch` or the one before."""
        epoch = self._entries.get(key)
        return epoch is not None and now_epoch - 1 <= epoch <= now_epoch

    def add(self, key: bytes, epoch: int) -> None:
        if key not in self._entries and len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = epoch

    def discriminant(self, beacon: bytes, account: bytes, epoch: int) -> str:
        """The account's VDF discriminant for the epoch, computed once."""
        found = self._discriminants.get((beacon, account))
        if found is not None:
            return found[1]
        value = discriminant(beacon, account)
        self.add_discriminant(beacon, account, epoch, value)
        return value

    def add_discriminant(self, beacon: bytes, account: bytes, epoch: int, value: str) -> None:
        """Store a discriminant computed elsewhere (`vdf.discriminant(beacon, account)`).

        The cache belongs to one thread; to precompute off that thread, call
        `vdf.discriminant` in a worker and hand the results to this method.
        """
        if (beacon, account) not in self._discriminants:
            if len(self._discriminants) >= self.max_entries:
                del self._discriminants[next(iter(self._discriminants))]
            self._discriminants[(beacon, account)] = (epoch, value)

    def precompute_discriminants(
        self, beacon: bytes, epoch: int, accounts: Iterable[bytes]
    ) -> None:
        """Compute the discriminants of `accounts` for the epoch, in the calling thread."""
        for account in accounts:
            self.discriminant(beacon, account, epoch)

    def advance(self, now_epoch: int) -> None:
        """Forget everything no longer accepted in `now_epoch`."""
        if now_epoch != self._now:
            self._now = now_epoch
            self._entries = {k: e for k, e in self._entries.items() if e >= now_epoch - 1}
            self._discriminants = {
                k: v for k, v in self._discriminants.items() if v[0] >= now_epoch - 1
            }

    def clear_proofs(self) -> None:
        """Forget the verified proofs but keep the discriminants."""
        self._entries.clear()

    def clear(self) -> None:
        self._entries.clear()
        self._discriminants.clear()


class ReplayGuard:
    """Digests of committed requests, kept for as long as their bundles are accepted."""

    def __init__(self) -> None:
        self._digests: dict[bytes, int] = {}
        self._now = 0

    def __len__(self) -> int:
        return len(self._digests)

    def seen(self, digest: bytes) -> bool:
        return digest in self._digests

    def record(self, digest: bytes, epoch: int) -> None:
        """Remember a committed request's digest (call when its block commits)."""
        self._digests[digest] = epoch

    def export(self) -> tuple[int, list[tuple[bytes, int]]]:
        """(current epoch, sorted (digest, epoch) pairs): the whole state, for snapshots."""
        return self._now, sorted(self._digests.items())

    def load(self, now_epoch: int, digests: Iterable[tuple[bytes, int]]) -> None:
        """Replace the whole state by an `export` (a verified snapshot's)."""
        self._now, self._digests = now_epoch, dict(digests)

    def advance(self, now_epoch: int) -> None:
        if now_epoch != self._now:
            self._now = now_epoch
            self._digests = {d: e for d, e in self._digests.items() if e >= now_epoch - 1}
