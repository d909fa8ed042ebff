"""Codec strictness, the mempool's bounds, and the safety rules."""

from __future__ import annotations

import msgpack
import pytest
from consensus_kit import Cluster

from trustchain.consensus import codec
from trustchain.consensus.mempool import Mempool, MempoolLimits
from trustchain.consensus.messages import Operation, Proposal, QuorumCert, TimeoutCert
from trustchain.consensus.safety import MUTANTS, SafetyRules, SafetyState


def sample_messages() -> list[object]:
    c = Cluster(4)
    c.act("n1", c.cores["n1"].submit(Operation("alice", b"x"), c.now))
    c.run(until=4)
    return [m for _, _, m in c.sent]


def test_every_message_round_trips_through_msgpack() -> None:
    kinds = set()
    for message in sample_messages():
        wire = msgpack.packb(codec.encode(message), use_bin_type=True)  # type: ignore[arg-type]
        assert codec.decode(msgpack.unpackb(wire, raw=False)) == message
        kinds.add(type(message).__name__)
    assert {"Proposal", "Vote", "Operation"} <= kinds


def test_decoding_refuses_every_tampered_field() -> None:
    proposal = next(m for m in sample_messages() if isinstance(m, Proposal))
    encoded = codec.encode(proposal)
    bad_values: list[object] = [None, -1, "x", b"\x00" * 3, [], {}, 2**70, True, 1.5]
    refused = 0
    for key in encoded["block"]:
        for value in bad_values:
            if value == encoded["block"][key]:
                continue
            tampered = {**encoded, "block": {**encoded["block"], key: value}}
            try:
                decoded = codec.decode(tampered)
            except codec.CodecError:
                refused += 1
                continue
            # Well-typed but different: the block id changes, so the signature no longer fits.
            assert isinstance(decoded, Proposal) and decoded.block.id != proposal.block.id, key
    with pytest.raises(codec.CodecError, match="unexpected fields"):
        codec.decode({**encoded, "extra": 1})
    with pytest.raises(codec.CodecError, match="unknown kind"):
        codec.decode({"k": "nope"})
    with pytest.raises(codec.CodecError, match="parent is not the block its qc certifies"):
        codec.decode({**encoded, "block": {**encoded["block"], "parent": b"\x01" * 32}})
    assert refused > 50


def test_mempool_deduplicates_bounds_and_expires() -> None:
    pool = Mempool(MempoolLimits(total=3, per_submitter=2, ttl=10.0))
    assert pool.add(Operation("a", b"1"), 0) is None
    assert pool.add(Operation("a", b"1"), 0) == "duplicate"
    assert pool.add(Operation("a", b"2"), 0) is None
    assert pool.add(Operation("a", b"3"), 0) == "too many pending operations from a"
    assert pool.add(Operation("b", b"4"), 0) is None
    assert pool.add(Operation("c", b"5"), 0) == "mempool full"
    pool.committed(b"1")
    assert pool.add(Operation("a", b"1"), 1) == "already committed"
    assert pool.batch(10, set()) == (b"2", b"4")
    pool.expire(11.0)
    assert len(pool) == 0


def _qc(round: int) -> QuorumCert:
    return QuorumCert(b"\x01" * 32, round, round, ())


def _block(round: int, qc_round: int):  # type: ignore[no-untyped-def]
    from trustchain.consensus.messages import make_block

    return make_block(round=round, height=1, qc=_qc(qc_round), timestamp=1, state=b"",
                      payload=(), proposer="n0")  # fmt: skip


def test_safety_rules_refuse_what_they_must() -> None:
    rules = SafetyRules()
    state = SafetyState(highest_vote_round=5, highest_qc_round=4)
    assert rules.vote_refusal(state, _block(6, 5), None) is None
    assert "already voted" in (rules.vote_refusal(state, _block(5, 4), None) or "")
    assert "neither follows" in (rules.vote_refusal(state, _block(7, 4), None) or "")
    tc = TimeoutCert(6, (("n1", 4, b""), ("n2", 5, b"")))
    assert rules.vote_refusal(state, _block(7, 5), tc) is None
    assert "below the tc" in (rules.vote_refusal(state, _block(7, 4), tc) or "")
    assert rules.timeout_refusal(state, 4, 4) is not None
    assert rules.timeout_refusal(state, 6, 3) is not None  # would report a qc below our lock
    after = rules.after_timeout(state, 6)
    assert rules.vote_refusal(after, _block(6, 5), None) is not None  # no vote after timing out


def test_mutants_break_the_rules_they_claim_to() -> None:
    state = SafetyState(highest_vote_round=5, highest_qc_round=4)
    assert MUTANTS["no-lock"]().vote_refusal(state, _block(7, 2), None) is None
    assert MUTANTS["double-vote"]().vote_refusal(state, _block(5, 4), None) is None
    assert MUTANTS["weak-quorum"]().counts_repeated_signers()
    assert not MUTANTS["unpersisted"]().persists_before_sending()
