"""A verifier that has seen an account's proofs judges every other bundle as a new one.

`BundleVerifier` keeps what an account's space and time proofs of an epoch
passed (the claim checks and their epoch-cache keys) by their exact inputs;
these tests check that a verifier warmed by a good bundle gives each tampered
bundle exactly the verdict a fresh verifier gives.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest
from proofs_support import CHAIN, EPOCH, TEST_POLICY, Made, redo_work
from test_proofs_bundle import _flip, _third_party_tampers

from trustchain.consensus.proofs.bundle import ProofBundle, TimeProof
from trustchain.consensus.proofs.codec import encode_bundle
from trustchain.consensus.proofs.errors import ProofRejected
from trustchain.consensus.proofs.verifier import BundleVerifier


def _verdict(made: Made, verifier: BundleVerifier, data: bytes) -> str:
    try:
        verifier.check(
            data,
            request=made.request,
            now_epoch=EPOCH,
            beacons=made.beacons,
            stake=made.ledger(),
        )
    except ProofRejected as exc:
        return str(exc)
    return "accepted"


def _evil(made: Made) -> list[ProofBundle]:
    b, s, t = made.bundle, made.bundle.space, made.bundle.time
    return [
        replace(b, space=replace(s, plot_id=secrets.token_bytes(32))),
        replace(b, space=replace(s, salt=_flip(s.salt))),
        replace(b, space=replace(s, k=17)),
        replace(b, space=replace(s, index=(s.index + 1) % 16)),
        replace(b, space=replace(s, proof=_flip(s.proof, 9))),
        replace(b, time=replace(t, iterations=t.iterations + 1)),
        replace(b, time=TimeProof(t.iterations, t.proof, t.output)),
        replace(b, time=replace(t, output=_flip(t.output, 30))),
    ]


def test_a_warm_verifier_gives_every_tampered_bundle_the_verdict_of_a_fresh_one(
    made: Made,
) -> None:
    warm = BundleVerifier(CHAIN, TEST_POLICY)
    assert _verdict(made, warm, made.data) == "accepted"
    datas = [encode_bundle(bundle) for _, bundle, _ in _third_party_tampers(made)]
    # The account holder re-signs bad proofs (work redone): only the proof is wrong.
    datas += [made.resign(redo_work(bundle)) for bundle in _evil(made)]
    for data in datas:
        fresh = _verdict(made, BundleVerifier(CHAIN, TEST_POLICY), data)
        assert fresh != "accepted"
        assert _verdict(made, warm, data) == fresh
        # ...and the good bundle, checked after the bad one, still passes.
        assert _verdict(made, warm, made.data) == "accepted"


def test_another_policy_is_another_verifier(made: Made) -> None:
    """The claims kept depend on the verifier's policy; no two policies share them."""
    strict = BundleVerifier(CHAIN, replace(TEST_POLICY, min_k=19))
    assert _verdict(made, BundleVerifier(CHAIN, TEST_POLICY), made.data) == "accepted"
    with pytest.raises(ProofRejected, match="below the policy minimum 19"):
        strict.check(
            made.data,
            request=made.request,
            now_epoch=EPOCH,
            beacons=made.beacons,
            stake=made.ledger(),
        )
