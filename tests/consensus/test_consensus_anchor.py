"""A cluster restored from an archive restarts consensus at an anchor (a new epoch)."""

from __future__ import annotations

import pytest
from consensus_kit import Cluster

from trustchain.consensus.core import Anchor, Core
from trustchain.consensus.messages import (
    Operation,
    Proposal,
    QuorumCert,
    SyncRequest,
    SyncResponse,
    Timeout,
    Vote,
)
from trustchain.consensus.storage import MemoryStorage
from trustchain.consensus.validators import InvalidMessage, Member, ValidatorSet

ANCHOR = Anchor(height=40, timestamp=5_000_000, state=b"s" * 32)


class AnchoredCluster(Cluster):
    """The kit's cluster, every core started at ANCHOR under the epoch's chain id."""

    def boot(self, name: str) -> None:
        if self.validators.chain_id == "test":
            members = [
                Member(m.name, m.public_key, m.power) for m in self.validators.members.values()
            ]
            self.validators = ValidatorSet("test/epoch-1", members)
        self.now = max(self.now, ANCHOR.timestamp / 1000)  # the new region's clock is later
        self.down.discard(name)
        core = Core(
            name, self.keys[name], self.validators, self.app, self.storage[name].load(),
            self.config, anchor=ANCHOR,
        )  # fmt: skip
        self.cores[name] = core
        self.act(name, core.start(self.now))


def test_an_anchored_cluster_continues_the_heights_from_the_anchor() -> None:
    c = AnchoredCluster()
    core = c.cores["n0"]
    assert core.committed_height == 40 and core.genesis.height == 40
    c.act("n0", core.submit(Operation("alice", b"first op of the epoch"), c.now))
    c.run(until=44)
    chains = [[b.id for b in c.commits[n]] for n in c.cores]
    assert all(chain[:3] == chains[0][:3] for chain in chains)
    first = c.commits["n0"][0]
    assert first.height == 41 and first.parent_id == core.genesis.id
    assert first.state == c.app.execute(ANCHOR.state, ())
    assert all(b.timestamp > ANCHOR.timestamp for b in c.commits["n0"])
    assert any(b"first op of the epoch" in b.payload for b in c.commits["n0"])


def test_the_anchor_qc_is_accepted_for_the_anchor_alone() -> None:
    core = AnchoredCluster().cores["n0"]
    core.validators.check_qc(core.genesis.qc, core.genesis.id, genesis_height=40)
    for forged in (
        QuorumCert(core.genesis.id, 0, 0, ()),  # the height of a fresh chain's genesis
        QuorumCert(core.genesis.id, 0, 41, ()),
        QuorumCert(b"x" * 32, 0, 40, ()),
    ):
        with pytest.raises(InvalidMessage):
            core.validators.check_qc(forged, core.genesis.id, genesis_height=40)


def test_messages_of_the_old_epoch_are_refused() -> None:
    old = Cluster()
    old.run(until=3)
    new = AnchoredCluster()
    proposal = next(m for _, _, m in old.sent if type(m).__name__ == "Proposal")
    out = new.cores["n1"].handle("n0", proposal, new.now)
    assert out.rejected and not out.send


def test_a_sync_request_below_the_anchor_stops_at_the_anchor() -> None:
    c = AnchoredCluster()
    c.run(until=45)
    core = c.cores["n0"]
    out = core.handle("n1", SyncRequest(0, core.committed_id), c.now)
    (response,) = [m for _, m in out.send if isinstance(m, SyncResponse)]
    assert response.blocks[0].height == 41
    assert response.blocks[0].parent_id == core.genesis.id


# --- a validator rejoining its own chain from an archive ------------------------------------


def _rejoin(c: Cluster, name: str, grace: float) -> Core:
    """Wipe `name`'s consensus store and start it at its last committed block."""
    last = c.commits[name][-1]
    c.storage[name] = MemoryStorage()
    anchor = Anchor(last.height, last.timestamp, c.app.execute(last.state, last.payload), last)
    core = Core(
        name, c.keys[name], c.validators, c.app, None, c.config, anchor=anchor
    )  # fmt: skip
    core.rejoin(c.now, grace)
    c.cores[name] = core
    c.act(name, core.start(c.now))
    return core


def test_a_rejoining_validator_catches_up_silently_then_votes_above_what_it_saw() -> None:
    c = Cluster()
    c.run(until=6)
    before = c.cores["n3"].safety.highest_vote_round
    assert before > 0
    sent = len(c.sent)
    core = _rejoin(c, "n3", grace=3.0)
    silent_until = c.now + 3.0
    anchor_height = core.committed_height
    assert core.genesis.id == c.commits["n3"][-1].id
    c.act("n0", c.cores["n0"].submit(Operation("alice", b"after the rejoin"), c.now))
    c.run(until=anchor_height + 12)
    assert core.committed_height >= anchor_height + 12
    ours = [m for who, _, m in c.sent[sent:] if who == "n3"]
    signed = [m for m in ours if isinstance(m, Vote | Timeout | Proposal)]
    assert signed, "it signs again after the grace period"
    assert all(isinstance(m, Vote) and m.round > before for m in signed if isinstance(m, Vote))
    assert core.silent_until is None and core.safety.highest_vote_round > before
    # The chain it committed after rejoining is everyone's.
    n0 = {b.height: b.id for b in c.commits["n0"]}
    assert all(n0.get(b.height) == b.id for b in c.commits["n3"])
    assert silent_until <= c.now


def test_a_silent_validator_signs_nothing() -> None:
    c = Cluster()
    c.run(until=4)
    sent = len(c.sent)
    _rejoin(c, "n3", grace=1e9)
    c.run(until=c.cores["n0"].committed_height + 6)
    ours = [m for who, _, m in c.sent[sent:] if who == "n3"]
    assert not [m for m in ours if isinstance(m, Vote | Timeout | Proposal)]
    assert c.cores["n3"].committed_height >= c.cores["n0"].committed_height - 2
