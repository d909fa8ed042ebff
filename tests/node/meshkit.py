"""Helpers for peer-network tests: identities, genesis files, in-process meshes."""

from __future__ import annotations

import socket
from pathlib import Path

from trustchain.node import identity
from trustchain.node.config import Address, Genesis, Validator, genesis_entry_toml, load_genesis
from trustchain.node.identity import Identity


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


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
