"""Each proof on its own: hashcash, chiapos space proofs, chiavdf time proofs."""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any

import pytest
from proofs_support import TEST_POLICY, PlotEnv

from trustchain.consensus.proofs.bundle import TimeProof
from trustchain.consensus.proofs.errors import ProofRejected, ProverError
from trustchain.consensus.proofs.hashing import (
    account_id,
    plot_id,
    space_challenge,
    tagged_hash,
    vdf_challenge,
)
from trustchain.consensus.proofs.space import (
    check_space_claims,
    make_space_proof,
    salt_from_memo,
    verify_space,
)
from trustchain.consensus.proofs.vdf import (
    INPUT_FORM,
    check_time_claims,
    discriminant,
    make_time_proof,
    verify_time,
)
from trustchain.consensus.proofs.work import check_work, leading_zero_bits, make_work, work_hash
from trustchain.node.cli_proofs import create_plot

# --- hashing -----------------------------------------------------------------------------


def test_tagged_hashes_are_domain_separated_and_injective() -> None:
    assert tagged_hash(b"a", b"bc") != tagged_hash(b"a", b"b", b"c")
    assert tagged_hash(b"a", b"b") != tagged_hash(b"ab")
    beacon, account = secrets.token_bytes(32), secrets.token_bytes(20)
    assert space_challenge(beacon, account, 0) != space_challenge(beacon, account, 1)
    assert space_challenge(beacon, account, 0) != vdf_challenge(beacon, account)
    assert len(account_id(b"k" * 32)) == 20


# --- work ------------------------------------------------------------------------------------


def test_work_meets_the_difficulty_and_is_bound_to_the_digest() -> None:
    digest = secrets.token_bytes(32)
    proof = make_work(digest, 12)
    assert leading_zero_bits(work_hash(digest, proof.nonce)) >= 12
    check_work(digest, proof, 12)
    with pytest.raises(ProofRejected) as info:
        check_work(secrets.token_bytes(32), proof, 12)  # another request's digest
    assert info.value.proof == "work"
    found = leading_zero_bits(work_hash(digest, proof.nonce))
    with pytest.raises(ProofRejected, match=f"has {found} leading zero bits, the policy requires"):
        check_work(digest, proof, found + 1)


def test_work_progress_is_reported() -> None:
    seen: list[int] = []
    make_work(secrets.token_bytes(32), 14, progress=seen.append, report_every=256)
    assert seen == sorted(seen) and all(n % 256 == 0 for n in seen)


def test_leading_zero_bits() -> None:
    assert leading_zero_bits(bytes(32)) == 256
    assert leading_zero_bits(b"\x80" + bytes(31)) == 0
    assert leading_zero_bits(b"\x00\x01" + bytes(30)) == 15


# --- space -----------------------------------------------------------------------------------


def test_space_proof_from_the_session_plot_verifies(plot_env: PlotEnv) -> None:
    owner = plot_env.owner
    beacon = secrets.token_bytes(32)
    proof = make_space_proof(plot_env.plot, owner.public_key, owner.id, beacon, TEST_POLICY)
    assert proof.k == 18 and len(proof.proof) == 144 and proof.index < 16
    check_space_claims(proof, owner.public_key, TEST_POLICY)
    quality = verify_space(proof, beacon, owner.id)
    challenge = space_challenge(beacon, owner.id, proof.index)
    assert quality in plot_env.plot.get_qualities_for_challenge(challenge)
    # The same proof answers nothing else: another beacon, account or index.
    for args in (
        (secrets.token_bytes(32), owner.id),
        (beacon, plot_env.other.id),
    ):
        with pytest.raises(ProofRejected, match="space: proof does not verify"):
            verify_space(proof, *args)
    with pytest.raises(ProofRejected, match="space: proof does not verify"):
        verify_space(replace(proof, index=(proof.index + 1) % 16), beacon, owner.id)


def test_space_claims_are_checked(plot_env: PlotEnv) -> None:
    owner = plot_env.owner
    proof = make_space_proof(
        plot_env.plot, owner.public_key, owner.id, secrets.token_bytes(32), TEST_POLICY
    )
    strict = replace(TEST_POLICY, min_k=19)
    with pytest.raises(ProofRejected, match="k=18 is below the policy minimum 19"):
        check_space_claims(proof, owner.public_key, strict)
    with pytest.raises(ProofRejected, match="plot id not bound to account"):
        check_space_claims(proof, plot_env.other.public_key, TEST_POLICY)
    narrow = replace(TEST_POLICY, space_index_limit=proof.index)
    if proof.index > 0:
        with pytest.raises(ProofRejected, match="is not below the policy limit"):
            check_space_claims(proof, owner.public_key, narrow)
    with pytest.raises(ProofRejected, match="a k=18 proof is 144 bytes"):
        check_space_claims(replace(proof, proof=proof.proof + b"x"), owner.public_key, TEST_POLICY)


def test_space_prover_refuses_plots_it_cannot_use(plot_env: PlotEnv) -> None:
    other = plot_env.other
    beacon = secrets.token_bytes(32)
    with pytest.raises(ProverError, match="made for another account"):
        make_space_proof(plot_env.plot, other.public_key, other.id, beacon, TEST_POLICY)
    with pytest.raises(ProverError, match="requires at least k=19"):
        owner = plot_env.owner
        make_space_proof(
            plot_env.plot, owner.public_key, owner.id, beacon, replace(TEST_POLICY, min_k=19)
        )
    assert salt_from_memo(b"chia pool and farmer keys") is None


def test_a_plot_with_a_foreign_memo_is_refused(plot_env: PlotEnv) -> None:
    """A plot whose memo is not TrustChain's (e.g. a Chia farming plot) is not used.

    The session's real plot is read through a view that reports a Chia-style
    memo, instead of spending CPU on a second plot.
    """

    class ForeignMemo:
        def __init__(self, plot: Any) -> None:
            self.plot = plot

        def __getattr__(self, name: str) -> Any:
            return getattr(self.plot, name)

        def get_memo(self) -> bytes:
            return bytes(128)  # pool key, farmer key, master secret key in Chia

    owner = plot_env.owner
    with pytest.raises(ProverError, match="no TrustChain memo"):
        make_space_proof(
            ForeignMemo(plot_env.plot), owner.public_key, owner.id, bytes(32), TEST_POLICY
        )


def test_plot_ids_bind_key_and_salt(plot_env: PlotEnv) -> None:
    salt = salt_from_memo(plot_env.plot.get_memo())
    assert salt is not None
    assert plot_id(plot_env.owner.public_key, salt) == plot_env.plot.get_id()
    assert plot_id(plot_env.other.public_key, salt) != plot_env.plot.get_id()


def test_create_plot_refuses_bad_arguments(plot_env: PlotEnv) -> None:
    from trustchain.node.errors import UserError

    with pytest.raises(UserError, match=r"k=18\.\.50"):
        create_plot(plot_env.owner.public_key, 17, plot_env.folder / "x.plot")
    with pytest.raises(UserError, match="refusing to overwrite"):
        create_plot(plot_env.owner.public_key, 18, plot_env.plot_path)
    with pytest.raises(UserError, match="no such directory"):
        create_plot(plot_env.owner.public_key, 18, plot_env.folder / "nope" / "x.plot")


# --- time ------------------------------------------------------------------------------------


def test_time_proof_verifies_only_for_its_beacon_account_and_iterations() -> None:
    beacon, account = secrets.token_bytes(32), secrets.token_bytes(20)
    proof = make_time_proof(beacon, account, 1500)
    assert (proof.iterations, len(proof.output), len(proof.proof)) == (1500, 100, 100)
    verify_time(proof, beacon, account)
    verify_time(proof, beacon, account, disc=discriminant(beacon, account))
    bad = [
        (proof, secrets.token_bytes(32), account),
        (proof, beacon, secrets.token_bytes(20)),
        (replace(proof, iterations=1501), beacon, account),
        (TimeProof(1500, proof.proof, proof.output), beacon, account),
    ]
    for p, b, a in bad:
        with pytest.raises(ProofRejected) as info:
            verify_time(p, b, a)
        assert info.value.proof == "time"


def test_the_vdf_input_is_never_taken_from_the_bundle() -> None:
    """With input = output = proof = identity, Wesolowski holds trivially; we refuse it."""
    beacon, account = secrets.token_bytes(32), secrets.token_bytes(20)
    identity = bytes([0x04]) + bytes(99)
    import chiavdf

    disc = discriminant(beacon, account)
    assert chiavdf.verify_wesolowski(disc, identity, identity, identity, 1000)
    assert INPUT_FORM != identity
    with pytest.raises(ProofRejected, match="time: VDF proof does not verify"):
        verify_time(TimeProof(1000, identity, identity), beacon, account)


def test_garbage_forms_are_rejected_cleanly() -> None:
    beacon, account = secrets.token_bytes(32), secrets.token_bytes(20)
    disc = discriminant(beacon, account)
    for output in (bytes(100), b"\xff" * 100, secrets.token_bytes(100), INPUT_FORM):
        with pytest.raises(ProofRejected) as info:
            verify_time(
                TimeProof(1000, output, secrets.token_bytes(100)), beacon, account, disc=disc
            )
        assert info.value.proof == "time"


def test_iteration_count_is_policy() -> None:
    proof = TimeProof(TEST_POLICY.vdf_iterations + 1, bytes(100), bytes(100))
    with pytest.raises(ProofRejected, match="time: wrong iteration count"):
        check_time_claims(proof, TEST_POLICY)
    check_time_claims(replace(proof, iterations=TEST_POLICY.vdf_iterations), TEST_POLICY)


def test_a_cancelled_vdf_raises() -> None:
    with pytest.raises(ProverError, match="cancelled"):
        make_time_proof(bytes(32), bytes(20), 10**9, keep_running_file="/nonexistent/running")
