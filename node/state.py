"""The replicated state machine of a TrustChain cluster (DESIGN.md sections 4 to 7).

Everything that decides whether an operation may enter a block, what a block
does to the state commitment and what a committed block changes lives in this
module, and nothing here does I/O or reads a clock (the node's driver,
`trustchain.node.app`, owns the CT store, the DNS server, the HSM and SQLite).

Operations are byte strings with a tag prefix (one per kind) and a strictly
decoded msgpack body:

- **issue** (`IssueRequest`): a CSR, the requester's proof bundle, and the
  precertificate the issuing node built for it (DESIGN.md section 6 step 2);
- **revoke** (`RevokeRequest`): signed by the account that requested the
  certificate;
- **evidence**: two conflicting signed votes or proposals of one validator
  (`trustchain.consensus.core.evidence_operation`);
- **ledger**: a signed stake-ledger operation (transfer, bond, unbond).

The state commitment a block carries is ``u64 log size || log root`` (40
bytes): every QC therefore certifies a CT checkpoint.  Each issue operation
of a block becomes one log entry, in block order, with the block's timestamp
and the static-ct-api leaf index ``size in the block's state + position``,
which is exactly what every validator's SCT for it signs.

`Core.execute(state, ops)` is not told the block's timestamp, so the node runs
`AppCore`, which tells the application which block it is working on
(`ReplicatedState.enter`) before the core executes or validates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from trustchain.consensus.core import EVIDENCE_TAG, Core, check_evidence
from trustchain.consensus.messages import (
    Block,
    Operation,
    Proposal,
    TimeoutCert,
    make_block,
    operation_id,
    proposal_digest,
)
from trustchain.consensus.proofs.cache import ReplayGuard
from trustchain.consensus.proofs.codec import decode_signed_operation, msgpack_problem
from trustchain.consensus.proofs.errors import LedgerError, ProofRejected
from trustchain.consensus.proofs.ledger import StakeLedger
from trustchain.consensus.proofs.verifier import BundleVerifier, CheckedBundle
from trustchain.consensus.validators import InvalidMessage, ValidatorSet
from trustchain.ct.merkle import EMPTY_ROOT, node_hash
from trustchain.ct.tiles import TileLeaf, new_leaf
from trustchain.dns.records import CertificateIssued, CertificateRevoked, Change
from trustchain.node.ca.genesis import CAGenesis
from trustchain.node.ca.issuance import (
    CheckedCSR,
    IssuanceError,
    Precertificate,
    PrecertRequest,
    check_csr,
    check_precertificate,
)
from trustchain.node.ca.revocation import SUBSCRIBER_REASONS, RevocationReason
from trustchain.node.config import Genesis

TAG_ISSUE = b"trustchain-issue-v1:"
TAG_REVOKE = b"trustchain-revoke-v1:"
TAG_LEDGER = b"trustchain-ledger-v1:"
MAX_OP_BYTES = 64 * 1024
"""A CSR, a bundle and a precertificate fit in a few KiB; anything this large is refused unread."""
STATE_BYTES = 40
_CACHE = 4096
_ENTRY_CACHE = 256
"""Blocks whose log entries are kept: a block's entries are needed when it is executed
(its child's state), when this validator signs its SCTs and when it is applied."""


class OperationError(ValueError):
    """An operation is malformed or refused; the message names the part that is wrong."""


# --- operations ---------------------------------------------------------------------


@dataclass(frozen=True)
class IssueRequest:
    """A certificate request as it travels in a block (DESIGN.md section 6 step 2)."""

    csr: bytes
    """The subscriber's CSR (DER)."""
    bundle: bytes
    """The encoded proof bundle, made over `request_hash(csr)`."""
    precertificate: bytes
    """The precertificate (DER) the issuing node signed with its intermediate."""
    issuer: str
    """The issuing validator's name: it collects the SCTs and signs the final certificate."""
    nonce: bytes
    """The issuing node's 16 random bytes that fix the serial."""
    not_before: int
    """Start of validity, Unix seconds."""
    not_after: int
    """End of validity (inclusive), Unix seconds."""


@dataclass(frozen=True)
class RevokeRequest:
    """Revocation of a certificate, signed by the account that requested it."""

    serial: int
    """The certificate's serial number."""
    reason: int
    """RFC 5280 CRLReason code (BR 7.2.2 subset, see `RevocationReason`)."""
    account: bytes
    """The requesting account's 20-byte id."""
    signature: bytes
    """Ed25519 signature by the account key over `revoke_message`."""


def request_hash(csr_der: bytes) -> bytes:
    """The request hash a bundle is made over: SHA-256 of everything the requester asks for."""
    return hashlib.sha256(b"trustchain-request-v1\x00" + csr_der).digest()


def revoke_message(chain_id: str, serial: int, reason: int) -> bytes:
    return b"trustchain-revoke-v1\x00" + bytes(msgpack.packb([chain_id, f"{serial:x}", reason]))


def _pack(tag: bytes, body: dict[str, Any]) -> bytes:
    return tag + bytes(msgpack.packb(body, use_bin_type=True))


def _unpack(tag: bytes, op: bytes, keys: dict[str, type]) -> dict[str, Any]:
    what = tag.decode().rstrip(":")
    try:
        body = msgpack.unpackb(op[len(tag) :], raw=False, strict_map_key=True)
    except Exception as exc:
        raise OperationError(f"{what}: not valid msgpack: {msgpack_problem(exc)}") from None
    if not isinstance(body, dict) or set(body) != set(keys):
        raise OperationError(f"{what}: expected exactly the fields {', '.join(sorted(keys))}")
    for key, kind in keys.items():
        value = body[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise OperationError(f"{what}: field '{key}' must be {kind.__name__}")
    if _pack(tag, body) != op:
        raise OperationError(f"{what}: not in canonical encoding")
    return body


_ISSUE_KEYS: dict[str, type] = {
    "csr": bytes,
    "bundle": bytes,
    "precert": bytes,
    "issuer": str,
    "nonce": bytes,
    "not_before": int,
    "not_after": int,
}
_REVOKE_KEYS: dict[str, type] = {"serial": bytes, "reason": int, "account": bytes, "sig": bytes}


def encode_issue(r: IssueRequest) -> bytes:
    return _pack(
        TAG_ISSUE,
        {
            "csr": r.csr,
            "bundle": r.bundle,
            "precert": r.precertificate,
            "issuer": r.issuer,
            "nonce": r.nonce,
            "not_before": r.not_before,
            "not_after": r.not_after,
        },
    )


def decode_issue(op: bytes) -> IssueRequest:
    if len(op) > MAX_OP_BYTES:
        raise OperationError(f"issue: {len(op)} bytes exceeds {MAX_OP_BYTES}")
    b = _unpack(TAG_ISSUE, op, _ISSUE_KEYS)
    return IssueRequest(
        b["csr"], b["bundle"], b["precert"], b["issuer"], b["nonce"], b["not_before"],
        b["not_after"],
    )  # fmt: skip


def encode_revoke(r: RevokeRequest) -> bytes:
    return _pack(
        TAG_REVOKE,
        {
            "serial": r.serial.to_bytes(20, "big"),
            "reason": r.reason,
            "account": r.account,
            "sig": r.signature,
        },
    )


def decode_revoke(op: bytes) -> RevokeRequest:
    b = _unpack(TAG_REVOKE, op, _REVOKE_KEYS)
    # RFC 5280 section 4.1.2.2: positive, at most 20 octets.
    if len(b["serial"]) != 20 or not any(b["serial"]) or b["serial"][0] & 0x80:
        raise OperationError("revoke: serial must be a positive number of at most 20 octets")
    return RevokeRequest(int.from_bytes(b["serial"], "big"), b["reason"], b["account"], b["sig"])


def sign_revoke(
    key: Ed25519PrivateKey, chain_id: str, account: bytes, serial: int, reason: int
) -> bytes:
    """The revoke operation for `serial`, signed by the requesting account's key."""
    signature = key.sign(revoke_message(chain_id, serial, reason))
    return encode_revoke(RevokeRequest(serial, reason, account, signature))


def encode_ledger(signed_operation: bytes) -> bytes:
    """Wrap an encoded stake-ledger operation (proofs.codec.encode_signed_operation)."""
    return TAG_LEDGER + signed_operation


# --- the Merkle tree's right edge ---------------------------------------------------


@dataclass(frozen=True)
class TreeEdge:
    """The roots of the perfect subtrees of an RFC 6962 tree, left to right.

    Enough to append leaves and compute the root (RFC 9162 section 2.1.1):
    at most 64 hashes whatever the size.
    """

    size: int = 0
    """Number of leaves."""
    peaks: tuple[bytes, ...] = ()
    """Subtree roots for the set bits of `size`, largest first."""

    def append(self, leaf_hashes: Iterable[bytes]) -> TreeEdge:
        peaks, size = list(self.peaks), self.size
        for h in leaf_hashes:
            s = size
            while s & 1:
                h = node_hash(peaks.pop(), h)
                s >>= 1
            peaks.append(h)
            size += 1
        return TreeEdge(size, tuple(peaks))

    def root(self) -> bytes:
        if not self.peaks:
            return EMPTY_ROOT
        r = self.peaks[-1]
        for p in reversed(self.peaks[:-1]):
            r = node_hash(p, r)
        return r

    def commitment(self) -> bytes:
        return state_commitment(self.size, self.root())


def state_commitment(size: int, root: bytes) -> bytes:
    return struct.pack(">Q", size) + root


def parse_commitment(state: bytes) -> tuple[int, bytes]:
    if len(state) != STATE_BYTES:
        raise ValueError(f"state commitment of {len(state)} bytes, expected {STATE_BYTES}")
    return struct.unpack(">Q", state[:8])[0], state[8:]


def epoch_beacon(chain_id: str, epoch: int, root: bytes) -> bytes:
    """The beacon of `epoch`: derived from the log root committed at its boundary height.

    The chain id is hashed in so that two clusters' epoch 0 (both an empty log)
    have different beacons.
    """
    return hashlib.sha256(
        b"trustchain-beacon-v1\x00" + bytes(msgpack.packb([chain_id, epoch])) + root
    ).digest()


# --- what the state keeps -------------------------------------------------------------


@dataclass(frozen=True)
class DecodedIssue:
    """An issue operation whose precertificate matches its CSR (checked once, cached)."""

    request: IssueRequest
    csr: CheckedCSR
    precert: Precertificate


@dataclass(frozen=True)
class CertificateRecord:
    """A logged certificate, as the replicated state remembers it."""

    serial: int
    account: bytes
    """The requesting account."""
    issuer: str
    """The issuing validator."""
    leaf_index: int
    timestamp: int
    """The SCT / leaf timestamp (the block's), milliseconds."""
    leaf_hash: bytes
    """RFC 6962 leaf hash, for inclusion proofs."""
    height: int
    """The committed block that holds it."""
    names: tuple[str, ...]
    not_after: int
    issuer_key_id: bytes = b""
    """Key identifier of the intermediate that signed it (its CRL lists it)."""


@dataclass(frozen=True)
class Revocation:
    serial: int
    reason: int
    time: int
    """The committing block's timestamp, milliseconds."""
    height: int


@dataclass(frozen=True)
class LoggedEntry:
    """A log entry a committed block adds (the driver appends it to the CT store)."""

    op_id: bytes
    leaf: TileLeaf
    issuer_der: bytes
    decoded: DecodedIssue


@dataclass(frozen=True)
class Applied:
    """What a committed block changed; the driver carries it out (CT, DNS, waiters)."""

    height: int
    timestamp: int
    entries: tuple[LoggedEntry, ...]
    """New log entries, in index order."""
    dns: tuple[Change, ...]
    """TLSA changes for the DNS server."""
    revoked: tuple[Revocation, ...]
    refused: tuple[tuple[bytes, str], ...]
    """(operation id, reason) for operations that had no effect when applied."""
    edge: TreeEdge
    """The log after the block."""


@dataclass
class _Context:
    parent: Block | None = None
    height: int | None = None


class ReplicatedState:
    """The consensus `Application`: validate, execute and apply TrustChain operations.

    Owned by the consensus driver's task; `apply` must see committed blocks in
    height order, once each.
    """

    def __init__(
        self,
        genesis: Genesis,
        ca: CAGenesis,
        validators: ValidatorSet,
        *,
        accept_invalid: bool = False,
    ) -> None:
        self.accept_invalid = accept_invalid
        """Test-only Byzantine variant: `validate` accepts every operation."""
        self.chain_id = genesis.chain_id
        self.policy = genesis.policy
        self.ca = ca
        self.validators = validators
        self.ledger = StakeLedger(genesis.chain_id, genesis.policy, genesis.accounts)
        self.replay = ReplayGuard()
        self.verifier = BundleVerifier(genesis.chain_id, genesis.policy)
        self.beacons: dict[int, bytes] = {0: epoch_beacon(self.chain_id, 0, EMPTY_ROOT)}
        self.height = 0
        """Height of the last applied block."""
        self.timestamp = 0
        self.edge = TreeEdge()
        """The committed log."""
        self.certificates: dict[int, CertificateRecord] = {}
        self.by_leaf_hash: dict[bytes, int] = {}
        """RFC 6962 leaf hash -> serial, for status lookups by hash."""
        self.revocations: dict[int, Revocation] = {}
        self.slashed: set[str] = set()
        self._edges: OrderedDict[bytes, TreeEdge] = OrderedDict()
        self._edges[self.edge.commitment()] = self.edge
        self._results: OrderedDict[tuple[bytes, int, bytes], bytes] = OrderedDict()
        self._decoded: OrderedDict[bytes, DecodedIssue | str] = OrderedDict()
        self._bundles: OrderedDict[tuple[bytes, int], CheckedBundle] = OrderedDict()
        self._block_entries: OrderedDict[
            tuple[bytes, int, bytes], tuple[list[LoggedEntry], list[bytes]]
        ] = OrderedDict()
        self._context = _Context()
        self.find_block: Callable[[bytes, tuple[bytes, ...]], Block | None] = lambda s, o: None
        """Set by the driver: a block with this state and payload (for execute without context)."""

    # --- context from AppCore -------------------------------------------------------

    def enter(self, parent: Block | None, height: int | None) -> None:
        """The core is about to execute `parent` and validate ops for a block at `height`."""
        self._context = _Context(parent, height)

    # --- Application: genesis_state / validate / execute ----------------------------

    def genesis_state(self) -> bytes:
        return TreeEdge().commitment()

    def validate(self, op: bytes) -> str | None:
        if self.accept_invalid:
            return None
        try:
            self.check(op)
        except (OperationError, IssuanceError, ProofRejected, InvalidMessage, LedgerError) as exc:
            return str(exc)
        return None

    def check(self, op: bytes, height: int | None = None) -> DecodedIssue | None:
        """Raise a refusal naming the problem if `op` may not go into a block at `height`."""
        if len(op) > MAX_OP_BYTES:
            raise OperationError(f"operation of {len(op)} bytes exceeds {MAX_OP_BYTES}")
        if height is None:
            height = self._context.height or self.height + 1
        if op.startswith(TAG_ISSUE):
            decoded = self.decode_issue(op)
            if isinstance(decoded, str):
                raise OperationError(decoded)
            if decoded.precert.serial in self.certificates:
                raise OperationError(f"serial: {decoded.precert.serial:x} was already issued")
            self._check_bundle(decoded, height, replay=True)
            return decoded
        if op.startswith(TAG_REVOKE):
            self._check_revoke(decode_revoke(op))
            return None
        if op.startswith(EVIDENCE_TAG):
            evidence = check_evidence(self.validators, op)
            if evidence.validator in self.slashed:
                raise OperationError(f"evidence: {evidence.validator} was already punished")
            return None
        if op.startswith(TAG_LEDGER):
            decode_signed_operation(op[len(TAG_LEDGER) :])
            return None
        raise OperationError("operation: unknown kind (no known tag)")

    def _check_bundle(self, d: DecodedIssue, height: int, *, replay: bool) -> CheckedBundle:
        """The four proofs of a request for a block at `height`.

        A bundle that passed once for an epoch passes again, except for what
        depends on the state: the replay guard and the account's bonded stake,
        which are checked every time; so the signatures and hashes are checked
        once per epoch and node, not at admission, proposal, vote and commit.
        """
        epoch = self.policy.epoch_of(height)
        key = (hashlib.sha256(d.request.bundle).digest(), epoch)
        done = self._bundles.get(key)
        if done is None:
            done = self.verifier.check(
                d.request.bundle,
                request=request_hash(d.csr.der),
                now_epoch=epoch,
                beacons=self.beacons,
                stake=self.ledger,
                replay=self.replay if replay else None,
            )
            self._bundles[key] = done
            if len(self._bundles) > _CACHE:
                self._bundles.popitem(last=False)
            return done
        if replay and self.replay.seen(done.digest):
            raise ProofRejected("request", "replayed: this request was already committed")
        account = self.ledger.account(done.bundle.account)
        if account is None:
            raise ProofRejected("stake", f"unknown account {done.bundle.account.hex()}")
        minimum = self.policy.min_stake
        if account.bonded < minimum:
            raise ProofRejected(
                "stake", f"bonded stake {account.bonded} is below the policy minimum {minimum}"
            )
        return done

    def _check_revoke(self, r: RevokeRequest) -> None:
        cert = self.certificates.get(r.serial)
        if cert is None:
            raise OperationError(f"revoke: serial {r.serial:x} is not a certificate of this log")
        if r.serial in self.revocations:
            raise OperationError(f"revoke: serial {r.serial:x} is already revoked")
        try:
            reason = RevocationReason(r.reason)
        except ValueError:
            raise OperationError(f"revoke: {r.reason} is not an allowed reason code") from None
        if reason not in SUBSCRIBER_REASONS:
            # Every later CRL of the intermediate would carry it: BR 7.2.2 lets a
            # subscriber certificate's entry carry only these.
            raise OperationError(
                f"revoke: reason {reason.label} is not allowed for a subscriber certificate "
                "(BR 7.2.2)"
            )
        if r.account != cert.account:
            raise OperationError("revoke: only the account that requested it may revoke it")
        account = self.ledger.account(r.account)
        if account is None:
            raise OperationError(f"revoke: unknown account {r.account.hex()}")
        try:
            Ed25519PublicKey.from_public_bytes(account.public_key).verify(
                r.signature, revoke_message(self.chain_id, r.serial, r.reason)
            )
        except (InvalidSignature, ValueError):
            raise OperationError("revoke: signature does not verify with the account key") from None

    def decode_issue(self, op: bytes) -> DecodedIssue | str:
        """Decode an issue operation and check its precertificate (pure; cached by op id)."""
        oid = operation_id(op)
        found = self._decoded.get(oid)
        if found is not None:
            self._decoded.move_to_end(oid)
            return found
        try:
            result: DecodedIssue | str = self._decode_issue(op)
        except (OperationError, IssuanceError) as exc:
            result = str(exc)
        self._decoded[oid] = result
        if len(self._decoded) > _CACHE:
            self._decoded.popitem(last=False)
        return result

    def remember_issue(self, op: bytes, decoded: DecodedIssue) -> None:
        """Record what `op` decodes to, for an issue operation this node built itself.

        The issuing node made the precertificate from the CSR it checked, so
        decoding its own operation again would only re-check its own HSM's
        signature; every other validator still checks everything.
        """
        oid = operation_id(op)
        self._decoded[oid] = decoded
        if len(self._decoded) > _CACHE:
            self._decoded.popitem(last=False)

    def _decode_issue(self, op: bytes) -> DecodedIssue:
        r = decode_issue(op)
        csr = check_csr(r.csr, self.ca.policy)
        validator = next((v for v in self.ca.validators if v.name == r.issuer), None)
        if validator is None or not validator.intermediates:
            raise OperationError(f"issuer: {r.issuer!r} is not a validator with an intermediate")
        try:
            request = PrecertRequest(
                csr,
                r.nonce,
                dt.datetime.fromtimestamp(r.not_before, dt.UTC),
                dt.datetime.fromtimestamp(r.not_after, dt.UTC),
            )
        except (ValueError, OverflowError, OSError):
            raise OperationError("issue: validity out of range") from None
        error: IssuanceError | None = None
        for issuer in reversed(validator.intermediates):
            try:
                precert = check_precertificate(r.precertificate, issuer, request, self.ca.policy)
            except IssuanceError as exc:
                error = exc
                continue
            return DecodedIssue(r, csr, precert)
        assert error is not None
        raise error

    def execute(self, state: bytes, ops: tuple[bytes, ...]) -> bytes:
        timestamp = 0
        parent = self._context.parent
        if any(op.startswith(TAG_ISSUE) for op in ops):
            if parent is None or parent.state != state or parent.payload != ops:
                parent = self.find_block(state, ops)
            if parent is None:
                # Cannot happen for blocks the core holds; an unknown timestamp must
                # not yield a commitment anyone could agree with.
                return b"unknown-parent"
            timestamp = parent.timestamp
        return self.execute_at(state, ops, timestamp)

    def execute_at(self, state: bytes, ops: Sequence[bytes], timestamp: int) -> bytes:
        """The state after a block with `ops` and `timestamp` whose own state is `state`."""
        key = (state, timestamp, hashlib.sha256(b"".join(operation_id(o) for o in ops)).digest())
        done = self._results.get(key)
        if done is not None:
            return done
        edge = self._edges.get(state)
        if edge is None:
            return b"unknown-state"
        _, leaves = self._entries_and_hashes(state, edge, ops, timestamp)
        after = edge.append(leaves)
        result = after.commitment()
        self._remember(result, after)
        self._results[key] = result
        if len(self._results) > _CACHE:
            self._results.popitem(last=False)
        return result

    def _remember(self, commitment: bytes, edge: TreeEdge) -> None:
        self._edges[commitment] = edge
        self._edges.move_to_end(commitment)
        if len(self._edges) > _CACHE:
            self._edges.popitem(last=False)

    def _entries_and_hashes(
        self, state: bytes, edge: TreeEdge, ops: Sequence[bytes], timestamp: int
    ) -> tuple[list[LoggedEntry], list[bytes]]:
        """`_entries` of a block whose own state is `state` (= `edge`), with their leaf
        hashes; remembered, since every block needs them up to three times."""
        key = (state, timestamp, hashlib.sha256(b"".join(operation_id(o) for o in ops)).digest())
        found = self._block_entries.get(key)
        if found is None:
            entries = self._entries(edge, ops, timestamp)
            found = (entries, [e.leaf.leaf_hash() for e in entries])
            self._block_entries[key] = found
            if len(self._block_entries) > _ENTRY_CACHE:
                self._block_entries.popitem(last=False)
        return found

    def _entries(self, edge: TreeEdge, ops: Sequence[bytes], timestamp: int) -> list[LoggedEntry]:
        """The log entries of a block: its issue operations that decode, in order."""
        out: list[LoggedEntry] = []
        for op in ops:
            if not op.startswith(TAG_ISSUE):
                continue
            d = self.decode_issue(op)
            if isinstance(d, str):
                continue
            index = edge.size + len(out)
            issuer = d.precert.issuer
            leaf = new_leaf(
                d.precert.entry,
                timestamp,
                index,
                d.request.precertificate,
                (hashlib.sha256(issuer.der).digest(),),
            )
            out.append(LoggedEntry(operation_id(op), leaf, issuer.der, d))
        return out

    def entries_of(self, block: Block) -> list[LoggedEntry]:
        """The log entries `block` adds (leaf index and timestamp as its SCTs sign)."""
        edge = self._edges.get(block.state)
        if edge is None:
            return []
        return self._entries_and_hashes(block.state, edge, block.payload, block.timestamp)[0]

    # --- committed blocks ---------------------------------------------------------

    def apply(self, block: Block) -> Applied:
        """Apply a committed block (height order, once each); returns what changed."""
        if block.height != self.height + 1:
            raise ValueError(f"block {block.height} applied after {self.height}")
        if block.state != self.edge.commitment():
            raise ValueError(f"block {block.height} does not extend the applied log")
        entries, hashes = self._entries_and_hashes(
            block.state, self.edge, block.payload, block.timestamp
        )
        by_op = {e.op_id: (e, h) for e, h in zip(entries, hashes, strict=True)}
        changes: list[Change] = []
        revoked: list[Revocation] = []
        refused: list[tuple[bytes, str]] = []
        self.ledger.advance_to(block.height)
        for op in block.payload:
            oid = operation_id(op)
            try:
                if op.startswith(TAG_ISSUE):
                    logged = by_op.get(oid)
                    if logged is None:
                        raise OperationError("issue: not logged (malformed)")
                    changes.extend(self._apply_issue(*logged, block))
                elif op.startswith(TAG_REVOKE):
                    r = decode_revoke(op)
                    self._check_revoke(r)
                    rec = Revocation(r.serial, r.reason, block.timestamp, block.height)
                    self.revocations[r.serial] = rec
                    revoked.append(rec)
                    changes.append(CertificateRevoked(format(r.serial, "x")))
                elif op.startswith(EVIDENCE_TAG):
                    evidence = check_evidence(self.validators, op)
                    # Validators hold no ledger account in genesis: the offender is
                    # recorded (and reported); stake slashing needs an account link.
                    self.slashed.add(evidence.validator)
                elif op.startswith(TAG_LEDGER):
                    self.ledger.apply(decode_signed_operation(op[len(TAG_LEDGER) :]))
            except (OperationError, InvalidMessage, LedgerError, ValueError) as exc:
                refused.append((oid, str(exc)))
        self.edge = self.edge.append(hashes)
        self._remember(self.edge.commitment(), self.edge)
        self.height, self.timestamp = block.height, block.timestamp
        if block.height % self.policy.epoch_length == 0:
            epoch = self.policy.epoch_of(block.height)
            self.beacons[epoch] = epoch_beacon(self.chain_id, epoch, self.edge.root())
            for old in [e for e in self.beacons if e < epoch - 1]:
                del self.beacons[old]
            self.replay.advance(epoch)
            self.verifier.cache.advance(epoch)
        return Applied(
            block.height, block.timestamp, tuple(entries), tuple(changes), tuple(revoked),
            tuple(refused), self.edge,
        )  # fmt: skip

    def _apply_issue(self, entry: LoggedEntry, leaf: bytes, block: Block) -> list[Change]:
        d = entry.decoded
        serial = d.precert.serial
        try:
            bundle = self._check_bundle(d, block.height, replay=False)
            account = bundle.bundle.account
            self.replay.record(bundle.digest, bundle.bundle.epoch)
        except ProofRejected:
            # Logged by the quorum that voted for it; this node's view differs
            # (e.g. an evicted cache).  Keep the record with an unknown account.
            account = b""
        if serial in self.certificates:
            raise OperationError(f"issue: serial {serial:x} was already issued")
        tbs = entry.leaf.entry
        self.certificates[serial] = CertificateRecord(
            serial=serial,
            account=account,
            issuer=d.request.issuer,
            leaf_index=_index_of(entry),
            timestamp=tbs.timestamp,
            leaf_hash=leaf,
            height=block.height,
            names=d.csr.dns_names,
            not_after=d.request.not_after,
            issuer_key_id=d.precert.issuer.key_id,
        )
        self.by_leaf_hash[self.certificates[serial].leaf_hash] = serial
        issued = _tlsa_change(d)
        return [issued] if issued is not None else []

    def restore(self, edge: TreeEdge, height: int, timestamp: int) -> None:
        """Start from an applied log edge (used only when nothing else is replayed)."""
        self.edge, self.height, self.timestamp = edge, height, timestamp
        self._remember(edge.commitment(), edge)


def _index_of(entry: LoggedEntry) -> int:
    from trustchain.ct.sct import leaf_index_of

    index = leaf_index_of(entry.leaf.entry.extensions)
    return index if index is not None else 0


def _tlsa_change(d: DecodedIssue) -> CertificateIssued | None:
    """What `trustchain.dns.records.certificate_issued` makes of the precertificate.

    Built from the checked CSR instead of parsing the certificate again: the
    precertificate was checked to be exactly the one its request determines,
    so its subjectAltName is the CSR's names and its key the CSR's key.
    """
    import dns.exception
    import dns.name

    try:
        names = tuple(dns.name.from_text(n) for n in d.csr.dns_names)
    except dns.exception.DNSException:
        return None
    return CertificateIssued(
        certificate_id=format(d.precert.serial, "x"),
        names=names,
        spki_sha256=hashlib.sha256(d.csr.spki).digest(),
    )


# --- the core, told which block it works on ---------------------------------------------


class AppCore(Core):
    """`Core` that tells a `ReplicatedState` which block it executes and validates.

    The core's Application protocol passes (state, ops) only; a log entry also
    needs its block's timestamp (DESIGN.md section 6 step 3), so this subclass
    hands the application the parent block just before the core uses it.
    """

    app: ReplicatedState
    on_vote: Callable[[Block], None] | None = None
    """Called with each block this validator votes for (its SCTs go out then)."""

    equivocate: bool = False
    """Test-only Byzantine variant: every proposal of this validator has a twin."""

    def _maybe_propose(self, now: float) -> None:
        before = self.proposed_round
        super()._maybe_propose(now)
        if not self.equivocate or self.proposed_round == before:
            return
        first = next(m for _, m in reversed(self._out.send) if isinstance(m, Proposal))
        b = first.block
        twin = make_block(
            round=b.round, height=b.height, qc=b.qc, timestamp=b.timestamp + 1, state=b.state,
            payload=b.payload, proposer=b.proposer,
        )  # fmt: skip
        signature = self._sign(proposal_digest(self.chain_id, twin.id, twin.round, twin.height))
        self._out.send.append((None, Proposal(twin, first.tc, signature)))

    def _on_proposal(self, sender: str, proposal: Proposal, now: float) -> None:
        before = self.safety.highest_vote_round
        super()._on_proposal(sender, proposal, now)
        block = proposal.block
        if self.on_vote is not None and before < block.round == self.safety.highest_vote_round:
            self.on_vote(block)

    def _check_block(self, block: Block, parent: Block, now: float) -> None:
        self.app.enter(parent, block.height)
        try:
            super()._check_block(block, parent, now)
        finally:
            self.app.enter(None, None)

    def _proposal_basis(self) -> tuple[Block, TimeoutCert | None] | None:
        basis = super()._proposal_basis()
        if basis is not None:
            self.app.enter(basis[0], basis[0].height + 1)
        return basis

    def _admit(self, op: Operation, now: float) -> str | None:
        self.app.enter(None, None)
        return super()._admit(op, now)
