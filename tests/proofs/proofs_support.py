"""Helpers shared by the proof tests (the fixtures using them are in conftest.py).

A uniquely named module, not conftest, so that `import` finds this one and
never another area's conftest.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import chiapos
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustchain.consensus.proofs.bundle import ProofBundle
from trustchain.consensus.proofs.codec import encode_bundle
from trustchain.consensus.proofs.hashing import account_id
from trustchain.consensus.proofs.ledger import StakeLedger, raw_public_key
from trustchain.consensus.proofs.policy import AccountEntry, Policy
from trustchain.consensus.proofs.prover import make_bundle, sign_bundle
from trustchain.consensus.proofs.space import make_space_proof
from trustchain.consensus.proofs.vdf import make_time_proof
from trustchain.consensus.proofs.work import make_work
from trustchain.node.cli import main

CHAIN = "proofs-test"
EPOCH = 5

TEST_POLICY = Policy(
    min_stake=100,
    work_bits=8,
    min_k=18,
    space_index_limit=16,
    vdf_iterations=2000,
    epoch_length=10,
    unbonding_delay=20,
)


@dataclass(frozen=True)
class Account:
    key: Ed25519PrivateKey
    public_key: bytes
    id: bytes
    key_path: Path


@dataclass(frozen=True)
class PlotEnv:
    """The session's account, its k=18 plot, and a second account without a plot."""

    owner: Account
    other: Account
    plot_path: Path
    plot: Any  # chiapos.DiskProver
    folder: Path


def _load_account(path: Path) -> Account:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    pk = raw_public_key(key)
    return Account(key, pk, account_id(pk), path)


def make_plot_env(folder: Path) -> PlotEnv:
    for name in ("owner", "other"):
        assert main(["account", "new", "--out", str(folder / f"{name}.key")]) == 0
    plot_path = folder / "owner.plot"
    status = main(
        [
            "proof",
            "plot",
            "--account",
            str(folder / "owner.key"),
            "--k",
            "18",
            "--out",
            str(plot_path),
            "--buffer-mb",
            "128",
        ]
    )
    assert status == 0
    return PlotEnv(
        owner=_load_account(folder / "owner.key"),
        other=_load_account(folder / "other.key"),
        plot_path=plot_path,
        plot=chiapos.DiskProver(str(plot_path)),
        folder=folder,
    )


@dataclass(frozen=True)
class Made:
    """A valid bundle and everything needed to check it."""

    env: PlotEnv
    beacon: bytes
    request: bytes
    bundle: ProofBundle
    data: bytes

    @property
    def beacons(self) -> dict[int, bytes]:
        return {EPOCH: self.beacon}

    def ledger(self, bonded: int = 1000, *, other_bonded: int = 1000) -> StakeLedger:
        return StakeLedger(
            CHAIN,
            TEST_POLICY,
            [
                AccountEntry(self.env.owner.id, self.env.owner.public_key, bonded=bonded),
                AccountEntry(self.env.other.id, self.env.other.public_key, bonded=other_bonded),
            ],
        )

    def resign(self, bundle: ProofBundle, key: Ed25519PrivateKey | None = None) -> bytes:
        """Re-sign a (tampered) bundle as its account holder would: an evil client."""
        signed = sign_bundle(
            key or self.env.owner.key,
            CHAIN,
            epoch=bundle.epoch,
            request=bundle.request,
            work=bundle.work,
            space=bundle.space,
            time=bundle.time,
        )
        return encode_bundle(signed)


def make_made(plot_env: PlotEnv) -> Made:
    """A valid bundle by the plot's owner for a fresh beacon and request."""
    beacon = secrets.token_bytes(32)
    request = secrets.token_bytes(32)
    owner = plot_env.owner
    space = make_space_proof(plot_env.plot, owner.public_key, owner.id, beacon, TEST_POLICY)
    time_proof = make_time_proof(beacon, owner.id, TEST_POLICY.vdf_iterations)
    bundle = make_bundle(
        owner.key,
        CHAIN,
        epoch=EPOCH,
        request=request,
        space=space,
        time=time_proof,
        work_bits=TEST_POLICY.work_bits,
    )
    return Made(plot_env, beacon, request, bundle, encode_bundle(bundle))


def redo_work(bundle: ProofBundle) -> ProofBundle:
    """The bundle with a nonce meeting the test policy for its (possibly new) digest."""
    return replace(bundle, work=make_work(bundle.digest(CHAIN), TEST_POLICY.work_bits))
