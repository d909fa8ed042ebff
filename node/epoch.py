"""Consensus epochs: how a cluster restored from an archive restarts consensus.

A cluster that lost its region is rebuilt from the other region's archive
(`trustchain restore --new-cluster`, docs/durability.md).  Its validators have
the log and the state up to the last archived block but no consensus history:
no blocks with quorum certificates, no record of what they signed.  They start
a new epoch instead of resuming the old chain:

- the epoch's genesis is the *anchor*, the last archived block's height,
  timestamp and state commitment (`trustchain.consensus.core.Anchor`), which
  every validator restored from the same archive derives identically;
- the epoch has its own consensus chain id, ``<genesis chain id>/epoch-<height>-<hash>``,
  so that no vote, proposal, timeout or evidence signed in the old epoch is
  valid in the new one: a validator that signs round 7 again after the
  failover does not equivocate, and nothing replayed from the old region can
  certify a block of the new one.

The CT log's origin, the proofs' domain and the stake ledger stay bound to
the genesis chain id: the log and its state simply continue.

The anchor is written as ``epoch.toml`` in the node's data directory, last
and atomically, by the restore; the daemon reads it at every start.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustchain.consensus.core import Anchor
from trustchain.node.config import ConfigError, Key, check_table, read_toml
from trustchain.node.files import write_durably

FILE = "epoch.toml"


@dataclass(frozen=True)
class Epoch:
    """The consensus epoch a node's data directory belongs to."""

    chain_id: str
    """The consensus chain id of the epoch (signatures are bound to it)."""
    anchor: Anchor
    """Where the epoch's chain starts."""


def epoch_chain_id(genesis_chain_id: str, anchor: Anchor) -> str:
    digest = hashlib.sha256(
        b"trustchain-epoch-v1"
        + anchor.height.to_bytes(8, "big")
        + anchor.timestamp.to_bytes(8, "big")
        + anchor.state
    ).hexdigest()
    return f"{genesis_chain_id}/epoch-{anchor.height}-{digest[:16]}"


def write_epoch(directory: Path, anchor: Anchor) -> None:
    """Record the anchor in `directory`."""
    text = (
        "# The consensus epoch of this node's cluster: written by `trustchain restore\n"
        "# --new-cluster`; every validator of the cluster holds the same anchor.\n"
        f"height = {anchor.height}\n"
        f"timestamp = {anchor.timestamp}\n"
        f'state = "{anchor.state.hex()}"\n'
    )
    write_durably(directory / FILE, text.encode())


def _state(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"expected a hex string, got {type(value).__name__}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"expected a hex string, got {value!r}") from None
    if len(raw) != 40:
        raise ValueError(f"expected 40 bytes (log size and root), got {len(raw)}")
    return raw


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


def load_epoch(directory: Path, genesis_chain_id: str) -> Epoch | None:
    """The epoch of the data directory; None for the genesis epoch (no epoch.toml)."""
    path = directory / FILE
    if not path.exists():
        return None
    values = check_table(
        str(path),
        read_toml(path, "epoch file"),
        {"height": Key(_count, True), "timestamp": Key(_count, True), "state": Key(_state, True)},
    )
    anchor = Anchor(values["height"], values["timestamp"], values["state"])
    return Epoch(epoch_chain_id(genesis_chain_id, anchor), anchor)


def check_epoch_state(epoch: Epoch, height: int, commitment: bytes, path: Path) -> None:
    """The restored state must reach the anchor; raise a ConfigError saying what to do."""
    a = epoch.anchor
    if height < a.height or (height == a.height and commitment != a.state):
        raise ConfigError(
            f"{path / FILE}: the epoch starts at block {a.height} but {path / 'state.db'} "
            f"holds {height} blocks with another state; restore the directory again with "
            "`trustchain restore --new-cluster` from the archive the other validators used"
        )
