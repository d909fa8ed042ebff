"""Checking a request's proof bundle: the order of the checks and why.

A validator runs `BundleVerifier.check` on every request before voting for a
block that holds it.  Checks run cheapest first, and every expensive check sits
behind ones an attacker cannot pass for free:

1. decode (``bundle``): strict msgpack, exact fields, canonical bytes;
2. ``request``: made for this certificate request, not already committed;
3. ``epoch``: answers the current or the previous epoch, whose beacon we know;
4. ``stake``: the account exists and has at least the minimum bonded;
5. cheap claims of ``space`` (k, index, length, plot id bound to the account)
   and ``time`` (iteration count);
6. ``work``: one hash; makes every bundle cost 2**work_bits hashes to make;
7. ``stake``: the account's Ed25519 signature over the digest and the proofs,
   so only the stake holder can get the steps below to run;
8. ``space``: chiapos verification (about 0.1 ms), unless cached;
9. ``time``: the account's discriminant (memoized per epoch, and computable
   ahead of time) and the Wesolowski check (milliseconds), unless cached.

Any failure raises `ProofRejected(proof, reason)`.  Nothing here does I/O or
reads a clock: the epoch, the beacons and the stake view are arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trustchain.consensus.proofs.bundle import (
    ProofBundle,
    SpaceProof,
    TimeProof,
    signed_message,
)
from trustchain.consensus.proofs.cache import (
    EpochCache,
    ReplayGuard,
    space_cache_key,
    time_cache_key,
)
from trustchain.consensus.proofs.codec import decode_bundle
from trustchain.consensus.proofs.errors import ProofRejected
from trustchain.consensus.proofs.ledger import AccountState
from trustchain.consensus.proofs.policy import Policy
from trustchain.consensus.proofs.space import check_space_claims, verify_space
from trustchain.consensus.proofs.vdf import check_time_claims, verify_time
from trustchain.consensus.proofs.work import check_work


class StakeView(Protocol):
    """Read access to the stake ledger (StakeLedger satisfies it)."""

    def account(self, account: bytes) -> AccountState | None: ...


@dataclass(frozen=True)
class CheckedBundle:
    """A bundle that passed every check."""

    bundle: ProofBundle
    """The decoded bundle."""
    digest: bytes
    """Its request digest; record it in the ReplayGuard when the request commits."""
    space_cached: bool
    """The space proof was found in the epoch cache (not re-verified)."""
    time_cached: bool
    """The time proof was found in the epoch cache (not re-verified)."""


_KEY_CACHE_LIMIT = 10_000
_CLAIMS_CACHE_LIMIT = 10_000


class BundleVerifier:
    """Checks bundles against one chain's policy; owns the epoch cache it is given."""

    def __init__(self, chain_id: str, policy: Policy, *, cache: EpochCache | None = None) -> None:
        self.chain_id = chain_id
        self.policy = policy
        self.cache = cache if cache is not None else EpochCache()
        # Parsed Ed25519 keys by raw bytes: parsing costs about as much as a hash.
        self._keys: dict[bytes, Ed25519PublicKey] = {}
        # (account key, beacon, epoch, space proof, time proof) that passed the
        # claim checks -> their epoch-cache keys.
        self._claims: dict[
            tuple[bytes, bytes, bytes, int, SpaceProof, TimeProof], tuple[bytes, bytes]
        ] = {}

    def check(
        self,
        data: bytes,
        *,
        request: bytes,
        now_epoch: int,
        beacons: Mapping[int, bytes],
        stake: StakeView,
        replay: ReplayGuard | None = None,
    ) -> CheckedBundle:
        """Check an encoded bundle for `request` (the certificate request hash).

        `now_epoch` is the epoch of the block being voted on; `beacons` maps an
        epoch to its beacon (at least `now_epoch` and the one before).
        """
        try:
            return self._check(data, request, now_epoch, beacons, stake, replay)
        except ProofRejected:
            raise
        except Exception as exc:
            # A bundle must never take a validator down.  Tests assert that this
            # branch is unreachable; if a library surprises us, the request is
            # refused and the validator keeps running.
            raise ProofRejected("bundle", f"could not be checked ({type(exc).__name__})") from exc

    def _check(
        self,
        data: bytes,
        request: bytes,
        now_epoch: int,
        beacons: Mapping[int, bytes],
        stake: StakeView,
        replay: ReplayGuard | None,
    ) -> CheckedBundle:
        policy = self.policy
        bundle = decode_bundle(data)

        if bundle.request != request:
            raise ProofRejected("request", "bundle was made for another certificate request")
        digest = bundle.digest(self.chain_id)
        if replay is not None and replay.seen(digest):
            raise ProofRejected("request", "replayed: this request was already committed")

        if bundle.epoch > now_epoch:
            raise ProofRejected(
                "epoch",
                f"bundle answers epoch {bundle.epoch}, which has not begun (now {now_epoch})",
            )
        if bundle.epoch < now_epoch - 1:
            raise ProofRejected(
                "epoch",
                f"bundle answers epoch {bundle.epoch}; only epochs {max(now_epoch - 1, 0)} and "
                f"{now_epoch} are accepted now; make new space and time proofs",
            )
        beacon = beacons.get(bundle.epoch)
        if beacon is None:
            raise ProofRejected("epoch", f"no beacon is known for epoch {bundle.epoch}")

        account = stake.account(bundle.account)
        if account is None:
            raise ProofRejected("stake", f"unknown account {bundle.account.hex()}")
        if account.bonded < policy.min_stake:
            raise ProofRejected(
                "stake",
                f"bonded stake {account.bonded} is below the policy minimum {policy.min_stake}",
            )

        # Steps 5 and the cache keys depend on the account, epoch and proofs, not on
        # the request: every request of an account in an epoch repeats them.  They
        # are kept by their exact inputs (the policy is this verifier's own).
        claims = (
            account.public_key,
            bundle.account,
            beacon,
            bundle.epoch,
            bundle.space,
            bundle.time,
        )
        keys = self._claims.get(claims)
        if keys is None:
            check_space_claims(bundle.space, account.public_key, policy)
            check_time_claims(bundle.time, policy)
            keys = (
                space_cache_key(beacon, bundle.account, bundle.epoch, bundle.space),
                time_cache_key(beacon, bundle.account, bundle.epoch, bundle.time),
            )
            if len(self._claims) >= _CLAIMS_CACHE_LIMIT:
                self._claims.clear()
            self._claims[claims] = keys
        space_key, time_key = keys
        check_work(digest, bundle.work, policy.work_bits)

        message = signed_message(digest, bundle.work, bundle.space, bundle.time)
        if not self._signature_ok(account.public_key, bundle.stake.signature, message):
            raise ProofRejected("stake", "signature does not verify with the account key")

        space_cached = self.cache.hit(space_key, now_epoch)
        if not space_cached:
            verify_space(bundle.space, beacon, bundle.account)
            self.cache.add(space_key, bundle.epoch)

        time_cached = self.cache.hit(time_key, now_epoch)
        if not time_cached:
            disc = self.cache.discriminant(beacon, bundle.account, bundle.epoch)
            verify_time(bundle.time, beacon, bundle.account, disc=disc)
            self.cache.add(time_key, bundle.epoch)

        return CheckedBundle(bundle, digest, space_cached, time_cached)

    def _signature_ok(self, public_key: bytes, signature: bytes, message: bytes) -> bool:
        key = self._keys.get(public_key)
        if key is None:
            try:
                key = Ed25519PublicKey.from_public_bytes(public_key)
            except ValueError:
                return False
            if len(self._keys) >= _KEY_CACHE_LIMIT:
                self._keys.clear()
            self._keys[public_key] = key
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True
