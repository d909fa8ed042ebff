"""Helpers for peer-network tests: identities, genesis files, in-process meshes."""

from __future__ import annotations

from pathlib import Path

from trustchain.node import identity
from trustchain.node.config import Address, Genesis, Validator, genesis_entry_toml, load_genesis
from trustchain.node.identity import Identity
from trustchain.node.localcluster import free_udp_ports


def free_udp_port() -> int:
    return free_udp_ports(1)[0]


def make_cluster(tmp: Path, n: int) -> tuple[list[Identity], Genesis]:
    """n identities named v1..vn on free ports of ::1, and their genesis file."""
    idents = [identity.generate(f"v{i + 1}") for i in range(n)]
    entries = [
        Validator(ident.name, Address("::1", free_udp_port()), ident.public_key_raw, 1)
        for ident in idents
    ]
    path = tmp / "genesis.toml"
    path.write_text('chain_id = "test"\n\n' + "\n".join(genesis_entry_toml(v) for v in entries))
    return idents, load_genesis(path)
