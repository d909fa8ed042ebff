"""Snapshots of the replicated state, signed by the validators (DESIGN.md section 8).

Every `every` blocks each validator encodes its replicated state at that height
(`take` on the node's task, `encode` in a worker thread), signs the digest with
its consensus key and archives both (``snapshots/<height>/state`` and
``snapshots/<height>/sig/<validator>``, immutable).  The encoding is canonical,
so every honest validator archives the same bytes and the same digest.

A restore takes the newest snapshot that validators holding more than 2/3 of
the power signed, checks its log size and root against the verified tiles (the
committed state), loads it and replays only the blocks after it: its time no
longer grows with the whole history.  The restored node keeps it as
``DIR/snapshot`` and starts from it.

What a snapshot holds: the height, timestamp and the block at that height (its
row of state.db, so a restored node can rejoin at it), the log edge, the stake
ledger, the replay guard, the epoch beacons, every certificate record, the
revocations, the punished validators, the certificates whose TLSA records are
published, and the consensus epoch the cluster is in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import dns.name
import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trustchain.consensus.core import Anchor
from trustchain.consensus.proofs.ledger import AccountState, Unbonding
from trustchain.dns.records import CertificateIssued
from trustchain.node.files import write_durably
from trustchain.node.state import CertificateRecord, ReplicatedState, Revocation, TreeEdge

VERSION = 1
FILE = "snapshot"
"""The snapshot a restored node starts from, in its data directory."""


class SnapshotError(ValueError):
    """A snapshot that does not decode or does not match what it claims."""


@dataclass(frozen=True)
class Snapshot:
    """The replicated state at one height (immutable copies, safe to encode elsewhere)."""

    chain_id: str
    height: int
    block: bytes
    """The state.db row of the block at `height` (trustchain.node.app.encode_applied)."""
    state: dict[str, Any]


def take(
    state: ReplicatedState,
    block: bytes,
    published: Mapping[str, CertificateIssued],
    epoch: Anchor | None,
) -> Snapshot:
    """Copy what the snapshot needs from `state` (cheap: records are immutable)."""
    return Snapshot(
        state.chain_id,
        state.height,
        block,
        {
            "timestamp": state.timestamp,
            "edge": state.edge,
            "ledger": state.ledger.export(),
            "replay": state.replay.export(),
            "beacons": sorted(state.beacons.items()),
            "certificates": dict(state.certificates),
            "revocations": dict(state.revocations),
            "slashed": sorted(state.slashed),
            "published": dict(published),
            "epoch": epoch,
        },
    )


def _row(record: Any) -> list[Any]:
    return [getattr(record, f.name) for f in fields(record)]


def _serial_row(record: CertificateRecord | Revocation) -> list[Any]:
    """The record's fields; its serial (up to 160 bits, RFC 5280) as hex text."""
    return [format(record.serial, "x"), *_row(record)[1:]]


def encode(snapshot: Snapshot) -> bytes:
    """The canonical bytes of `snapshot` (every map as a list sorted by key)."""
    s = snapshot.state
    height, supply, accounts, evidence = s["ledger"]
    epoch: Anchor | None = s["epoch"]
    body = [
        VERSION, snapshot.chain_id, snapshot.height, snapshot.block, s["timestamp"],
        [s["edge"].size, list(s["edge"].peaks)],
        [height, supply, [[a.account_id, a.public_key, a.balance, a.bonded,
                           [_row(u) for u in a.unbonding], a.seq] for a in accounts], evidence],
        list(s["replay"]),
        s["beacons"],
        [_serial_row(r) for _, r in sorted(s["certificates"].items())],
        [_serial_row(r) for _, r in sorted(s["revocations"].items())],
        s["slashed"],
        [[c.certificate_id, [n.to_text() for n in c.names], c.spki_sha256]
         for _, c in sorted(s["published"].items())],
        None if epoch is None else [epoch.height, epoch.timestamp, epoch.state],
    ]  # fmt: skip
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


def digest(chain_id: str, height: int, data: bytes) -> bytes:
    """What a validator signs for the snapshot `data` of block `height`."""
    return hashlib.sha256(
        b"trustchain-snapshot-v1\0"
        + chain_id.encode()
        + b"\0"
        + height.to_bytes(8, "big")
        + hashlib.sha256(data).digest()
    ).digest()


def sign(key: Ed25519PrivateKey, chain_id: str, height: int, data: bytes) -> bytes:
    return key.sign(digest(chain_id, height, data))


def verify(public_key: bytes, signature: bytes, chain_id: str, height: int, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, digest(chain_id, height, data)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Loaded:
    height: int
    block: bytes
    """The state.db row of the block at `height`."""
    published: list[CertificateIssued]
    epoch: Anchor | None


def load_into(state: ReplicatedState, data: bytes) -> Loaded:
    """Replace `state` (a fresh one of the same genesis) by the snapshot `data`.

    Raises SnapshotError naming what is wrong; `state` is untouched then.
    """
    try:
        (version, chain_id, height, block, timestamp, edge, ledger, replay, beacons, certs,
         revocations, slashed, published, epoch) = msgpack.unpackb(data, raw=False)  # fmt: skip
        if version != VERSION:
            raise SnapshotError(f"snapshot version {version}, this node reads {VERSION}")
        if chain_id != state.chain_id:
            raise SnapshotError(f"snapshot of chain {chain_id!r}, not {state.chain_id!r}")
        ledger_height, supply, accounts, evidence = ledger
        account_states = [
            AccountState(
                bytes(a[0]), bytes(a[1]), int(a[2]), int(a[3]),
                tuple(Unbonding(int(u[0]), int(u[1])) for u in a[4]), int(a[5]),
            )
            for a in accounts
        ]  # fmt: skip
        records = {
            int(r[0], 16): CertificateRecord(
                int(r[0], 16), bytes(r[1]), str(r[2]), int(r[3]), int(r[4]), bytes(r[5]), int(r[6]),
                tuple(str(n) for n in r[7]), int(r[8]), bytes(r[9]),
            )
            for r in certs
        }  # fmt: skip
        revoked = {
            int(r[0], 16): Revocation(int(r[0], 16), int(r[1]), int(r[2]), int(r[3]))
            for r in revocations
        }
        issued = [
            CertificateIssued(str(c[0]), tuple(dns.name.from_text(n) for n in c[1]), bytes(c[2]))
            for c in published
        ]
        anchor = None if epoch is None else Anchor(int(epoch[0]), int(epoch[1]), bytes(epoch[2]))
        new_edge = TreeEdge(int(edge[0]), tuple(bytes(p) for p in edge[1]))
        replay_now, digests = int(replay[0]), [(bytes(d), int(e)) for d, e in replay[1]]
        new_beacons = {int(e): bytes(b) for e, b in beacons}
    except SnapshotError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, msgpack.UnpackException) as exc:
        raise SnapshotError(f"snapshot does not decode: {exc}") from None
    state.restore(new_edge, int(height), int(timestamp))
    state.ledger.load(int(ledger_height), int(supply), account_states, map(bytes, evidence))
    state.replay.load(replay_now, digests)
    state.beacons = new_beacons
    state.certificates = records
    state.by_leaf_hash = {r.leaf_hash: serial for serial, r in records.items()}
    state.revocations = revoked
    state.slashed = {str(v) for v in slashed}
    state.verifier.cache.advance(state.policy.epoch_of(state.height + 1))
    return Loaded(int(height), bytes(block), issued, anchor)


def write(directory: Path, data: bytes) -> None:
    """Keep `data` as the node's starting snapshot."""
    write_durably(directory / FILE, data)
