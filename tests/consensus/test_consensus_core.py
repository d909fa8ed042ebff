"""Scenario tests of the consensus core with explicit time and direct delivery."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from consensus_kit import Cluster

from trustchain.consensus.core import (
    Config,
    Evidence,
    check_evidence,
    evidence_operation,
)
from trustchain.consensus.mempool import MempoolLimits
from trustchain.consensus.messages import (
    Operation,
    Proposal,
    QuorumCert,
    SyncResponse,
    Vote,
    make_block,
    proposal_digest,
    vote_digest,
)
from trustchain.consensus.storage import BlockRecord
from trustchain.consensus.validators import InvalidMessage


def test_happy_path_commits_the_same_chain_everywhere() -> None:
    c = Cluster(4)
    c.act("n1", c.cores["n1"].submit(Operation("alice", b"op-1"), c.now))
    c.run(until=10)
    chains = {name: [b.id for b in blocks[:10]] for name, blocks in c.commits.items()}
    assert len({tuple(chain) for chain in chains.values()}) == 1
    ops = [op for b in c.commits["n0"] for op in b.payload]
    assert ops == [b"op-1"]  # gossiped, proposed once, committed once


def test_silent_leader_is_skipped_by_timeout_certificates() -> None:
    c = Cluster(4)
    c.down.add("n2")  # leader of rounds 2, 6, 10, ...
    c.run(until=8)
    for name in ("n0", "n1", "n3"):
        assert c.height(name) >= 8
    assert any(core.last_tc is not None for name, core in c.cores.items() if name != "n2")


def test_no_progress_without_a_quorum_then_recovery() -> None:
    c = Cluster(4)
    c.run(until=3)
    c.down.update({"n2", "n3"})
    before = {n: c.height(n) for n in ("n0", "n1")}
    c.run(steps=500)
    assert all(c.height(n) <= before[n] + 1 for n in ("n0", "n1"))
    c.down.clear()
    c.run(until=before["n0"] + 5)
    assert min(c.height(n) for n in c.cores) >= before["n0"] + 5


def test_restarted_node_keeps_its_votes_and_catches_up(tmp_path: Path) -> None:
    c = Cluster(4, tmp=tmp_path)
    c.run(until=5)
    c.down.add("n3")
    c.run(until=25)
    votes_before = {
        (m.round, m.block_id) for s, _, m in c.sent if s == "n3" and isinstance(m, Vote)
    }
    c.boot("n3")  # a new Core from SQLite, like a process restart
    c.run(until=30)
    assert c.height("n3") >= 30  # caught up through sync
    rounds: dict[int, bytes] = {}
    for sender, _, m in c.sent:
        if sender == "n3" and isinstance(m, Vote):
            assert rounds.setdefault(m.round, m.block_id) == m.block_id, "n3 voted twice in a round"
    assert votes_before


def test_a_leader_restarted_after_proposing_does_not_propose_again_in_that_round(
    tmp_path: Path,
) -> None:
    # A leader that crashes after its proposal left (its own vote is on disk, the QC
    # of its round is not) comes back in the same round: a second block for that
    # round, e.g. with a later timestamp, would be equivocation by an honest node.
    c = Cluster(4, tmp=tmp_path)
    c.run(until=3)
    last = next(m for _, _, m in reversed(c.sent) if isinstance(m, Proposal))
    leader = last.block.proposer
    c.queue.clear()  # it crashed before anything else happened
    c.now += 0.5  # a later timestamp: the same round's block would differ
    c.boot(leader)
    assert c.cores[leader].round == last.block.round  # back in the round it proposed in
    c.run(until=8)
    blocks: dict[int, bytes] = {}
    for sender, _, m in c.sent:
        if sender == leader and isinstance(m, Proposal):
            assert blocks.setdefault(m.block.round, m.block.id) == m.block.id, (
                f"{leader} proposed twice in round {m.block.round}"
            )
    assert min(c.height(n) for n in c.cores) >= 8
    assert not any(core.accused for core in c.cores.values())


def test_operations_that_became_invalid_leave_the_mempool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Operations valid when they arrived and not any more (e.g. evidence against a
    # validator punished meanwhile) must not hold newer ones out of blocks until they expire.
    c = Cluster(4, config=Config(round_timeout=1.0, max_batch=2))
    c.run(until=2)
    stale = [b"stale-%d" % i for i in range(6)]
    for op in stale:
        c.act("n1", c.cores["n1"].submit(Operation("n1", op), c.now))
    monkeypatch.setattr(c.app, "validate", lambda op: "gone stale" if op in stale else None)
    c.act("n1", c.cores["n1"].submit(Operation("n1", b"fresh"), c.now))
    start = c.now
    c.run(steps=3000, until=12)
    committed = [op for b in c.commits["n0"] for op in b.payload]
    assert committed == [b"fresh"]
    assert c.now - start < 30  # long before the stale ones' 120 s expiry
    assert all(len(core.mempool) == 0 for core in c.cores.values())


def test_a_peer_answers_for_the_operations_it_gossips() -> None:
    c = Cluster(4, config=Config(mempool=MempoolLimits(per_submitter=1)))
    core = c.cores["n0"]
    # n1 sends an operation in n2's name: it counts against n1's share, not n2's.
    core.handle("n1", Operation("n2", b"from n1"), c.now)
    core.handle("n2", Operation("n2", b"from n2"), c.now)
    core.handle("n1", Operation("n3", b"more from n1"), c.now)  # n1's share is spent
    assert set(core.mempool.batch(10, set())) == {b"from n1", b"from n2"}


def test_a_validator_signing_many_conflicting_votes_is_reported_once() -> None:
    c = Cluster(4)
    c.run(until=2)
    core = c.cores["n0"]
    key = c.keys["n3"]

    def vote(round: int, block: bytes) -> Vote:
        signature = key.sign(vote_digest("test", block, round, 5))
        return Vote(block, round, 5, "n3", signature)

    # Rounds whose next leader is n0, some near, some far ahead.
    near = [r for r in range(core.round, core.round + 40) if core.validators.leader(r + 1) == "n0"]
    far = (
        core.round
        + 10_000
        + next(i for i in range(8) if core.validators.leader(core.round + 10_001 + i) == "n0")
    )
    evidence = []
    for r in [*near, far]:
        for block in (b"\x01" * 32, b"\x02" * 32):
            evidence += core.handle("n3", vote(r, block), c.now).evidence
    # One report for the offender (one evidence operation, not one per round)...
    assert [e.validator for e in evidence] == ["n3"]
    # ...and nothing kept for a round far ahead of ours.
    assert far not in core.votes and all(k[1] != far for k in core.seen_signed)


@pytest.mark.parametrize("stored", ["sqlite", "memory"])
def test_a_node_further_behind_than_the_blocks_kept_in_memory_catches_up(
    tmp_path: Path, stored: str
) -> None:
    # Peers keep only the last `keep_committed` committed blocks in memory; older ones
    # come from their stores.  (16 here instead of 1024, to stay quick.)
    config = Config(round_timeout=1.0, keep_committed=16)
    c = Cluster(4, tmp=tmp_path if stored == "sqlite" else None, config=config)
    c.run(until=3)
    c.down.add("n3")
    c.run(until=300)
    assert min(len(core.blocks) for n, core in c.cores.items() if n != "n3") < 200
    c.boot("n3")
    c.run(until=310)
    assert c.height("n3") >= 310
    at = {n: {b.height: b.id for b in c.commits[n]} for n in c.cores}
    assert all(at[n][h] == at["n0"][h] for n in c.cores for h in range(1, 311))


def test_a_sync_response_cannot_slip_in_an_uncertified_block() -> None:
    c = Cluster(4)
    c.run(until=3)
    core = c.cores["n0"]
    parent = core.blocks[core.high_qc.block_id]
    made_up = make_block(
        round=parent.round + 1000, height=parent.height + 1, qc=core.high_qc,
        timestamp=parent.timestamp + 1, state=b"garbage-state", payload=(b"not an op",),
        proposer="n2",
    )  # fmt: skip
    out = core.handle("n1", SyncResponse((made_up,), None), c.now)
    assert made_up.id not in core.blocks
    assert not any(isinstance(r, BlockRecord) for r in out.persist)


def test_invalid_operation_gets_no_vote() -> None:
    c = Cluster(4)
    c.run(until=2)
    leader = c.cores["n0"].validators.leader(c.cores["n0"].round)
    core = c.cores[leader]
    parent = core.blocks[core.high_qc.block_id]
    bad = make_block(
        round=core.round, height=parent.height + 1, qc=core.high_qc,
        timestamp=int(c.now * 1000) + 1, state=c.app.execute(parent.state, parent.payload),
        payload=(b"BAD op",), proposer=leader,
    )  # fmt: skip
    proposal = Proposal(
        bad, None, c.keys[leader].sign(proposal_digest("test", bad.id, bad.round, bad.height))
    )
    voter = next(n for n in c.cores if n != leader)
    out = c.cores[voter].handle(leader, proposal, c.now)
    assert not any(isinstance(m, Vote) for _, m in out.send)
    assert any("invalid operation: operation is marked bad" in r for r in out.rejected)


def test_equivocating_proposals_yield_evidence_and_one_vote() -> None:
    c = Cluster(4)
    c.queue.clear()  # drop the real round-1 proposal: we play the leader
    voter = c.cores["n0"]
    leader = voter.validators.leader(voter.round)
    parent = voter.blocks[voter.high_qc.block_id]
    proposals = []
    for tag in (b"a", b"b"):
        block = make_block(
            round=voter.round, height=parent.height + 1, qc=voter.high_qc,
            timestamp=int(c.now * 1000) + 1, state=c.app.execute(parent.state, parent.payload),
            payload=(tag,), proposer=leader,
        )  # fmt: skip
        signature = c.keys[leader].sign(
            proposal_digest("test", block.id, block.round, block.height)
        )
        proposals.append(Proposal(block, None, signature))
    first = voter.handle(leader, proposals[0], c.now)
    second = voter.handle(leader, proposals[1], c.now)
    assert [isinstance(m, Vote) for _, m in first.send] == [True]
    assert not any(isinstance(m, Vote) for _, m in second.send)
    assert any("already voted" in r for r in second.rejected)
    assert [(e.validator, e.kind) for e in second.evidence] == [(leader, "proposal")]
    # The evidence travels as an operation anyone can verify...
    op = evidence_operation(second.evidence[0])
    assert check_evidence(voter.validators, op) == second.evidence[0]
    # ...and a forged or doctored one is refused.
    doctored = dataclasses.replace(
        second.evidence[0], second=(b"\x07" * 32, 1, second.evidence[0].second[2])
    )
    with pytest.raises(InvalidMessage, match="does not verify"):
        check_evidence(voter.validators, evidence_operation(doctored))
    same = dataclasses.replace(second.evidence[0], second=second.evidence[0].first)
    with pytest.raises(InvalidMessage, match="same block"):
        check_evidence(voter.validators, evidence_operation(same))
    with pytest.raises(InvalidMessage, match="malformed"):
        check_evidence(voter.validators, op[:-3])


def test_two_honest_proposals_of_different_rounds_are_no_evidence() -> None:
    # A Byzantine validator collects two proposals a leader made in two rounds and
    # claims they were one round's: the signatures bind each proposal's round.
    c = Cluster(4)
    c.run(until=12)
    by_leader: dict[str, list[Proposal]] = {}
    for sender, _, m in c.sent:
        if isinstance(m, Proposal) and m.block.proposer == sender:
            by_leader.setdefault(sender, []).append(m)
    leader, proposals = next((n, ps) for n, ps in by_leader.items() if len(ps) >= 2)
    a, b = proposals[0], proposals[-1]
    assert a.block.round != b.block.round
    for claimed in (a.block.round, b.block.round):
        forged = Evidence(
            leader, claimed, "proposal",
            (a.block.id, a.block.height, a.signature), (b.block.id, b.block.height, b.signature),
        )  # fmt: skip
        with pytest.raises(InvalidMessage, match="does not verify"):
            check_evidence(c.cores["n0"].validators, evidence_operation(forged))


def test_forged_and_under_quorum_certificates_are_refused() -> None:
    c = Cluster(4)
    c.run(until=3)
    core = c.cores["n0"]
    target = core.blocks[core.high_qc.block_id]
    digest = vote_digest("test", target.id, target.round, target.height)
    one = ("n1", c.keys["n1"].sign(digest))
    two = ("n2", c.keys["n2"].sign(digest))
    cases = {
        "signed twice": (one, one, two),
        "not more than 2/3": (one, two),
        "not a validator": (one, two, ("mallory", c.keys["n3"].sign(digest))),
        "bad signature": (one, two, ("n3", c.keys["n1"].sign(digest))),
    }
    for reason, votes in cases.items():
        qc = QuorumCert(target.id, target.round + 5, target.height, votes)  # round not signed
        if reason in ("signed twice", "not more than 2/3", "not a validator"):
            qc = dataclasses.replace(qc, round=target.round)
        try:
            core.validators.check_qc(qc, core.genesis.id)
        except Exception as exc:
            assert type(exc).__name__ == "InvalidMessage"
            assert reason in str(exc) or "bad signature" in str(exc), (reason, exc)
        else:
            raise AssertionError(f"{reason}: forged QC accepted")


def test_proposal_with_clock_skew_is_refused() -> None:
    c = Cluster(4, config=Config(round_timeout=1.0, max_clock_skew=2.0))
    c.run(until=2)
    core = c.cores["n0"]
    leader = core.validators.leader(core.round)
    voter = next(n for n in c.cores if n != leader)
    core = c.cores[voter]
    parent = core.blocks[core.high_qc.block_id]
    block = make_block(
        round=core.round, height=parent.height + 1, qc=core.high_qc,
        timestamp=int((c.now + 60) * 1000), state=c.app.execute(parent.state, parent.payload),
        payload=(), proposer=leader,
    )  # fmt: skip
    proposal = Proposal(
        block,
        None,
        c.keys[leader].sign(proposal_digest("test", block.id, block.round, block.height)),
    )
    out = core.handle(leader, proposal, c.now)
    assert any("from our clock" in r for r in out.rejected)
    assert not any(isinstance(m, Vote) for _, m in out.send)
    # An invalid message names its sender for the operator's log (the driver warns).
    assert [peer for peer, _ in out.invalid] == [leader]
    # A signature over another round (other code, or a forgery) is invalid too.
    signed_elsewhere = dataclasses.replace(
        proposal, signature=c.keys[leader].sign(proposal_digest("test", block.id, 1, 1))
    )
    out = core.handle(leader, signed_elsewhere, c.now)
    assert [r for _, r in out.invalid] == [
        f"proposal from {leader}: proposal: bad signature from {leader}"
    ]
