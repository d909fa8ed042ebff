"""The replicated state machine (node/state.py): validate, execute, apply, refusals."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trio
from clusterkit import (
    PlotEnv,
    SoftCA,
    genesis_text,
    issue_op,
    make_bundle_for,
    make_csr,
    soft_ca,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustchain.consensus.core import Evidence, evidence_operation
from trustchain.consensus.messages import Block, genesis_block, make_block, vote_digest
from trustchain.consensus.validators import Member, ValidatorSet
from trustchain.ct.checkpoint import parse_checkpoint
from trustchain.ct.merkle import MemoryTree, verify_inclusion
from trustchain.ct.note import parse_note
from trustchain.ct.sct import issue_sct, leaf_index_extensions, verify_sct
from trustchain.ct.signer import PublicKey, Signer
from trustchain.dns.records import CertificateIssued, CertificateRevoked
from trustchain.node.app import ReplicatedLog
from trustchain.node.ca.genesis import load_ca_genesis
from trustchain.node.config import load_genesis
from trustchain.node.state import (
    TAG_ISSUE,
    TAG_REVOKE,
    ReplicatedState,
    decode_issue,
    encode_issue,
    epoch_beacon,
    sign_revoke,
)

NOW = dt.datetime.now(dt.UTC)
NAMES = ["v1", "v2", "v3", "v4"]


@dataclass
class World:
    ca: SoftCA
    keys: dict[str, Ed25519PrivateKey]
    genesis_path: Path
    env: PlotEnv
    chain_id: str

    def state(self) -> ReplicatedState:
        genesis = load_genesis(self.genesis_path)
        members = [Member(v.name, v.public_key, v.power) for v in genesis.validators]
        return ReplicatedState(
            genesis, load_ca_genesis(self.genesis_path), ValidatorSet(self.chain_id, members)
        )

    @property
    def beacon(self) -> bytes:
        from trustchain.ct.merkle import EMPTY_ROOT

        return epoch_beacon(self.chain_id, 0, EMPTY_ROOT)

    def op(self, names: list[str] | None = None, issuer: str = "v1") -> bytes:
        csr, _ = make_csr(names or ["www.trust.example"])
        bundle = make_bundle_for(self.env, self.chain_id, self.beacon, csr)
        return trio.run(issue_op, self.ca, issuer, csr, bundle, NOW)


@pytest.fixture(scope="module")
def world(plot_env: PlotEnv, tmp_path_factory: pytest.TempPathFactory) -> World:
    ca = trio.run(soft_ca, NAMES, NOW)
    keys = {n: Ed25519PrivateKey.generate() for n in NAMES}
    chain_id = f"state-test-{secrets.token_hex(4)}"
    path = tmp_path_factory.mktemp("state") / "genesis.toml"
    raw = {n: k.public_key().public_bytes_raw() for n, k in keys.items()}
    path.write_text(genesis_text(chain_id, raw, [plot_env.owner, plot_env.other], ca.section))
    return World(ca, keys, path, plot_env, chain_id)


def _block(state: ReplicatedState, parent: Block, payload: tuple[bytes, ...]) -> Block:
    return make_block(
        round=parent.round + 1,
        height=parent.height + 1,
        qc=parent.qc,
        timestamp=int(NOW.timestamp() * 1000) + parent.height + 1,
        state=state.execute_at(parent.state, parent.payload, parent.timestamp),
        payload=payload,
        proposer="v1",
    )


def _genesis(state: ReplicatedState) -> Block:
    return genesis_block(state.chain_id, state.genesis_state())


def test_issue_is_validated_logged_and_published(world: World) -> None:
    state = world.state()
    op = world.op()
    assert state.validate(op) is None
    b1 = _block(state, _genesis(state), (op,))
    # The SCT every validator sends for b1: the block's timestamp, leaf index 0.
    (entry,) = state.entries_of(b1)
    assert entry.leaf.entry.timestamp == b1.timestamp
    assert entry.leaf.entry.extensions == leaf_index_extensions(0)
    sct = trio.run(
        issue_sct, world.ca.logs["v2"], entry.decoded.precert.entry, b1.timestamp,
        leaf_index_extensions(0),
    )  # fmt: skip
    verify_sct(sct, entry.decoded.precert.entry, world.ca.logs["v2"].public_key())

    after = state.execute_at(b1.state, b1.payload, b1.timestamp)
    tree = MemoryTree.empty()
    tree.append_hash(entry.leaf.leaf_hash())
    assert after == (1).to_bytes(8, "big") + tree.root()

    applied = state.apply(b1)
    assert [e.op_id for e in applied.entries] == [entry.op_id]
    (change,) = applied.dns
    assert isinstance(change, CertificateIssued)
    assert str(change.names[0]) == "www.trust.example."
    record = state.certificates[entry.decoded.precert.serial]
    assert record.account == world.env.owner.id and record.leaf_index == 0
    verify_inclusion(0, 1, record.leaf_hash, [], state.edge.root())
    # Committed: the same request again is a replay, the same serial a duplicate.
    again = state.validate(op)
    assert again is not None and "serial" in again


def test_every_validator_computes_the_same_commitment(world: World) -> None:
    ops = (world.op(), world.op(["a.trust.example", "b.trust.example"], issuer="v3"))
    first, second = world.state(), world.state()
    g = _genesis(first)
    b1 = _block(first, g, ops)
    b2 = _block(first, b1, ())
    assert second.execute_at(b1.state, b1.payload, b1.timestamp) == b2.state
    # Another timestamp is another log (the SCTs sign it).
    assert second.execute_at(b1.state, b1.payload, b1.timestamp + 1) != b2.state
    # Without a known parent, execute never guesses.
    assert second.execute(b"\x00" * 40, ops) == b"unknown-parent"


def test_replayed_bundle_is_refused(world: World) -> None:
    state = world.state()
    op = world.op()
    state.apply(_block(state, _genesis(state), (op,)))
    # A new precertificate (new nonce) for the same CSR and bundle: a replay.
    request = decode_issue(op)
    replay = trio.run(issue_op, world.ca, "v2", request.csr, request.bundle, NOW)
    reason = state.validate(replay)
    assert reason == "request: replayed: this request was already committed"


@pytest.mark.parametrize(
    "tamper, expected",
    [
        ("bundle_for_other_csr", "request: bundle was made for another certificate request"),
        ("precert_for_other_csr", "precertificate: it does not match the CSR"),
        ("wrong_issuer", "precertificate: it does not match the CSR"),
        ("unknown_issuer", "issuer: 'v9' is not a validator with an intermediate"),
        ("name_outside_policy", "names:"),
        ("garbage", "not valid msgpack"),
        ("unknown_tag", "operation: unknown kind"),
        ("oversized", "exceeds"),
    ],
)
def test_bad_issue_requests_are_refused(world: World, tamper: str, expected: str) -> None:
    state = world.state()
    good = decode_issue(world.op())
    if tamper == "bundle_for_other_csr":
        other_csr, _ = make_csr(["other.trust.example"])
        op = trio.run(issue_op, world.ca, "v1", other_csr, good.bundle, NOW)
    elif tamper == "precert_for_other_csr":
        other = decode_issue(world.op(["x.trust.example"]))
        op = encode_issue(replace(good, precertificate=other.precertificate))
    elif tamper == "wrong_issuer":
        op = encode_issue(replace(good, issuer="v2"))
    elif tamper == "unknown_issuer":
        op = encode_issue(replace(good, issuer="v9"))
    elif tamper == "name_outside_policy":
        csr, _ = make_csr(["www.elsewhere.example"])
        op = encode_issue(replace(good, csr=csr))
    elif tamper == "garbage":
        op = TAG_ISSUE + b"\xc1\xc1"
    elif tamper == "unknown_tag":
        op = b"hello"
    else:
        op = TAG_ISSUE + b"\x00" * 70_000
    reason = state.validate(op)
    assert reason is not None and expected in reason, reason
    # Refused operations change nothing.
    assert state.certificates == {} and state.edge.size == 0


def test_unknown_account_is_refused(world: World) -> None:
    state = world.state()
    genesis = load_genesis(world.genesis_path)
    assert genesis.accounts[0].account_id == world.env.owner.id
    stranger = ReplicatedState(
        replace(genesis, accounts=genesis.accounts[1:]), state.ca, state.validators
    )
    reason = stranger.validate(world.op())
    assert reason is not None and reason.startswith("stake: unknown account"), reason


def test_revocation_by_the_requesting_account_only(world: World) -> None:
    state = world.state()
    op = world.op()
    state.apply(_block(state, _genesis(state), (op,)))
    serial = next(iter(state.certificates))
    chain = world.chain_id
    by_other = sign_revoke(world.env.other.key, chain, world.env.other.id, serial, 1)
    reason = state.validate(by_other)
    assert reason == "revoke: only the account that requested it may revoke it"
    forged = sign_revoke(world.env.other.key, chain, world.env.owner.id, serial, 1)
    assert state.validate(forged) == "revoke: signature does not verify with the account key"
    unknown = sign_revoke(world.env.owner.key, chain, world.env.owner.id, serial + 1, 1)
    assert "is not a certificate of this log" in (state.validate(unknown) or "")
    # BR 7.2.2: certificateHold, cACompromise, removeFromCRL and aACompromise never go
    # on a subscriber certificate's CRL entry (one would break every later CRL).
    for code, label in ((6, "certificateHold"), (2, "cACompromise"), (8, "removeFromCRL"),
                        (10, "aACompromise")):  # fmt: skip
        refused = sign_revoke(world.env.owner.key, chain, world.env.owner.id, serial, code)
        assert state.validate(refused) == (
            f"revoke: reason {label} is not allowed for a subscriber certificate (BR 7.2.2)"
        )
    unknown_code = sign_revoke(world.env.owner.key, chain, world.env.owner.id, serial, 7)
    assert state.validate(unknown_code) == "revoke: 7 is not an allowed reason code"
    good = sign_revoke(world.env.owner.key, chain, world.env.owner.id, serial, 1)
    assert state.validate(good) is None
    parent = _block(state, _genesis(state), (op,))
    applied = state.apply(_block(state, parent, (good,)))
    assert applied.revoked[0].serial == serial and applied.revoked[0].reason == 1
    assert applied.dns == (CertificateRevoked(format(serial, "x")),)
    assert state.validate(good) == f"revoke: serial {serial:x} is already revoked"
    assert state.validate(TAG_REVOKE + b"\x80") is not None


def test_equivocation_evidence(world: World) -> None:
    state = world.state()
    key = world.keys["v3"]
    a, b = secrets.token_bytes(32), secrets.token_bytes(32)
    sig_a = key.sign(vote_digest(world.chain_id, a, 7, 3))
    sig_b = key.sign(vote_digest(world.chain_id, b, 7, 3))
    op = evidence_operation(Evidence("v3", 7, "vote", (a, 3, sig_a), (b, 3, sig_b)))
    assert state.validate(op) is None
    forged = evidence_operation(Evidence("v2", 7, "vote", (a, 3, sig_a), (b, 3, sig_b)))
    assert "does not verify" in (state.validate(forged) or "")
    state.apply(_block(state, _genesis(state), (op,)))
    assert state.slashed == {"v3"}
    assert "already punished" in (state.validate(op) or "")


def test_published_records_match_the_precertificate(world: World) -> None:
    """The TLSA change and leaf hash are taken from the checked request and the cached
    entry; they must be exactly what the precertificate itself gives."""
    from cryptography import x509

    from trustchain.ct.merkle import leaf_hash
    from trustchain.ct.sct import merkle_tree_leaf
    from trustchain.dns.records import certificate_issued

    state = world.state()
    ops = (world.op(["a.trust.example", "b.trust.example"]), world.op(issuer="v2"))
    b1 = _block(state, _genesis(state), ops)
    entries = state.entries_of(b1)
    assert state.entries_of(b1) == entries  # the same entries every time they are asked for
    applied = state.apply(b1)
    assert applied.entries == tuple(entries)
    for entry, change in zip(applied.entries, applied.dns, strict=True):
        precert = x509.load_der_x509_certificate(entry.decoded.request.precertificate)
        assert change == certificate_issued(precert)
        record = state.certificates[precert.serial_number]
        assert record.leaf_hash == leaf_hash(merkle_tree_leaf(entry.leaf.entry))
        assert state.by_leaf_hash[record.leaf_hash] == precert.serial_number


class _CountingSigner:
    """A CT log signer that counts its signatures (the HSM round trips a node makes)."""

    def __init__(self, inner: Signer) -> None:
        self.inner, self.calls = inner, 0

    def public_key(self) -> PublicKey:
        return self.inner.public_key()

    async def sign(self, message: bytes) -> bytes:
        self.calls += 1
        return await self.inner.sign(message)


def test_the_store_round_takes_the_signature_made_at_commit(world: World, tmp_path: Path) -> None:
    """A validator cosigns a committed tree before its CT store round; the round's own
    checkpoint reuses that signature instead of asking the HSM again."""
    state = world.state()
    b1 = _block(state, _genesis(state), (world.op(),))
    first = state.apply(b1)
    b2 = _block(state, b1, (world.op(),))
    second = state.apply(b2)
    signer = _CountingSigner(world.ca.logs["v1"])

    async def run() -> None:
        log = await ReplicatedLog.open_replicated(tmp_path / "ct", signer, "trust.example/log")
        assert signer.calls == 1  # the empty tree, once, when the store is new
        size, root = first.edge.size, first.edge.root()

        # A tree this store never reaches is not used, and is forgotten once passed.
        await log.sign_tree(size, b"\x01" * 32, first.timestamp)
        note = await log.sign_tree(size, root, first.timestamp)
        assert signer.calls == 3
        await log.append(first.entries, first.timestamp, root)
        assert signer.calls == 3
        assert log.checkpoint() == note  # no cosigned checkpoint yet: its own
        assert log.size == size and log.root == root
        cp = parse_checkpoint(parse_note(note).text)
        assert (cp.size, cp.root_hash) == (size, root)

        # Without a signature made beforehand, the round signs its checkpoint itself.
        await log.append(second.entries, second.timestamp, second.edge.root())
        assert signer.calls == 4
        assert log.size == second.edge.size
        log.close()

    trio.run(run)
