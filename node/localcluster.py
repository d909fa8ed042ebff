"""Run several validators as real processes on ::1 (demos, tests, benchmarks).

    cluster = LocalCluster.create(Path(".demo"), nodes=4)
    cluster.start()
    cluster.wait(lambda events: ..., timeout=30)
    cluster.stop()

Each node gets DIR/vK/ (keys, node.toml, node.log); the genesis file is
DIR/genesis.toml.  Node logs are the JSON lines of trustchain.node.log, which
`events()` reads back.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from trustchain.node import identity
from trustchain.node.config import Address, Validator, genesis_entry_toml
from trustchain.node.errors import UserError

STOP_TIMEOUT = 10.0


def _ephemeral_floor() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_HANDED_OUT: dict[tuple[socket.SocketKind, int], None] = {}
"""Ports free_ports returned lately, oldest first: free until their servers bind them,
so a later call must not return them again (a cluster asks several times: peer ports,
then DNS ports, ...)."""
_REMEMBER = 4096


def free_ports(count: int, kind: socket.SocketKind = socket.SOCK_DGRAM) -> list[int]:
    """Distinct ports on ::1 that are free now, for servers that bind them a moment later.

    They come from below the kernel's ephemeral range: a port the kernel handed out
    (bind to 0) could be handed out again to some process's client socket before our
    server binds it, and a node that cannot bind its port exits.  Nor is a port this
    process handed out lately returned again.
    """
    floor = min(_ephemeral_floor(), 32768)
    found: list[int] = []
    while len(found) < count:
        port = random.randrange(max(1024, floor - 12000), floor)
        if port in found or (kind, port) in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET6, kind) as s:
            try:
                s.bind(("::1", port))
            except OSError:
                continue
        found.append(port)
    for port in found:
        _HANDED_OUT[(kind, port)] = None
    while len(_HANDED_OUT) > _REMEMBER:
        del _HANDED_OUT[next(iter(_HANDED_OUT))]
    return found


def free_udp_ports(count: int) -> list[int]:
    """Distinct UDP ports on ::1 for QUIC listeners (see free_ports)."""
    return free_ports(count, socket.SOCK_DGRAM)


def write_node_config(node_dir: Path, name: str, listen: Address, extra: str = "") -> Path:
    """node.toml for a local node; `extra` is appended verbatim (keys, then tables)."""
    lines = [
        f'name = "{name}"',
        f'listen = "{listen}"',
        'data_dir = "."',
        'genesis = "../genesis.toml"',
    ]
    path = node_dir / "node.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def free_tcp_port() -> int:
    return free_ports(1, socket.SOCK_STREAM)[0]


@dataclass
class NodeProcess:
    name: str
    directory: Path
    client_port: int | None = None
    """TCP port of the node's local operations endpoint, if it has one."""
    process: subprocess.Popen[bytes] | None = None
    _log_offset: int = 0
    _terminated: bool = False
    _events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.directory / "node.toml"

    @property
    def log_path(self) -> Path:
        return self.directory / "node.log"

    def start(self, env: dict[str, str] | None = None) -> None:
        log: IO[bytes] = open(self.log_path, "ab")
        with log:
            self._terminated = False
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "trustchain.node.cli",
                    "node",
                    "run",
                    "--config",
                    str(self.config),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=None if env is None else {**os.environ, **env},
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.process is not None and self.running():
            self.process.kill()
            self.process.wait()

    def terminate(self) -> None:
        """Send SIGTERM once (a node that gets a second one while stopping dies of it)."""
        if self.process is not None and self.running() and not self._terminated:
            self.process.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status."""
        if self.process is None:
            return None
        if self.running():
            self.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def last_error(self) -> str | None:
        """The error the node printed when it last exited with one (`trustchain: error: ...`)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4096))
                tail = fh.read().decode(errors="replace")
        except FileNotFoundError:
            return None
        errors = [line for line in tail.splitlines() if line.startswith("trustchain: error: ")]
        return errors[-1].removeprefix("trustchain: error: ") if errors else None

    def events(self) -> list[dict[str, Any]]:
        """Every JSON event the node has logged so far (reads only what is new)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                chunk = fh.read()
        except FileNotFoundError:
            return self._events
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._log_offset += len(complete)
        for line in complete.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "node.output", "text": line.decode(errors="replace")}
            if isinstance(event, dict):
                self._events.append(event)
        return self._events


@dataclass
class LocalCluster:
    directory: Path
    nodes: list[NodeProcess]

    @classmethod
    def create(
        cls,
        directory: Path,
        nodes: int,
        *,
        fresh: bool = True,
        client_endpoints: bool = False,
        consensus: str = "",
    ) -> LocalCluster:
        """Make `nodes` validators v1..vN with keys, configs and a genesis file.

        `client_endpoints` gives each node a local operations endpoint
        (NodeProcess.client_port); `consensus` is the body of a [consensus] table.
        """
        if nodes < 1:
            raise UserError("--nodes: need at least one validator")
        if fresh and directory.exists():
            marker = directory / "genesis.toml"
            if any(directory.iterdir()) and not marker.exists():
                raise UserError(f"{directory} exists and is not a TrustChain cluster directory")
            shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ports = free_udp_ports(nodes)
        entries = []
        procs = []
        for i, port in enumerate(ports, start=1):
            name = f"v{i}"
            node_dir = directory / name
            ident = identity.generate(name)
            identity.save(ident, node_dir)
            listen = Address("::1", port)
            extra, client_port = "", None
            if client_endpoints:
                client_port = free_tcp_port()
                extra += f'client_listen = "[::1]:{client_port}"\n'
            if consensus:
                extra += f"[consensus]\n{consensus}\n"
            write_node_config(node_dir, name, listen, extra)
            entries.append(Validator(name, listen, ident.public_key_raw, 1))
            procs.append(NodeProcess(name, node_dir, client_port=client_port))
        genesis = f'chain_id = "local-{os.getpid()}-{int(time.time())}"\n\n'
        genesis += "\n".join(genesis_entry_toml(v) for v in entries)
        (directory / "genesis.toml").write_text(genesis)
        return cls(directory, procs)

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self) -> dict[str, int | None]:
        for node in self.nodes:
            node.terminate()  # all at once, then wait for each
        return {node.name: node.stop() for node in self.nodes}

    def node(self, name: str) -> NodeProcess:
        return next(n for n in self.nodes if n.name == name)

    def wait(
        self,
        done: Callable[[dict[str, list[dict[str, Any]]]], bool],
        timeout: float,
        *,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> bool:
        """Poll the nodes' logs until `done(events by node)` holds; False on timeout.

        Raises UserError if a node exits while waiting.
        """
        deadline = time.monotonic() + timeout
        seen = {n.name: 0 for n in self.nodes}
        while True:
            by_node = {n.name: n.events() for n in self.nodes}
            if on_event is not None:
                for name, events in by_node.items():
                    for event in events[seen[name] :]:
                        on_event(name, event)
                    seen[name] = len(events)
            if done(by_node):
                return True
            for n in self.nodes:
                if n.process is not None and not n.running():
                    error = n.last_error()
                    raise UserError(
                        f"{n.name} exited with status {n.process.returncode}"
                        + (f" ({error})" if error else "")
                        + f"; see {n.log_path}"
                    )
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


# --- a full cluster: CA ceremony, CT, DNS, HTTPS API ------------------------------------

DEMO_ZONE = "trust.hypermesh.online"
LAPTOP_POLICY = (
    "[policy]\nmin_stake = 100\nwork_bits = 12\nmin_k = 18\nspace_index_limit = 16\n"
    "vdf_iterations = 20000\nepoch_length = 100000\nunbonding_delay = 200000\n"
)
"""A policy sized for a laptop: k=18 plots (4 MB), a VDF of a fraction of a second,
and epochs long enough (hours of blocks) that a demo's proofs stay valid."""


@dataclass(frozen=True)
class NodeEndpoints:
    """Where a full node listens (all on ::1)."""

    name: str
    ct: Address
    """HTTPS: CT log (RFC 6962, static-ct-api) and the certificate status API."""
    dns: Address
    """DNS over QUIC."""
    api: Address
    """HTTPS API with mutual TLS."""

    @property
    def ct_url(self) -> str:
        return f"https://[{self.ct.host}]:{self.ct.port}"

    @property
    def api_url(self) -> str:
        return f"https://[{self.api.host}]:{self.api.port}"


def _tcp_ports(count: int) -> list[int]:
    return free_ports(count, socket.SOCK_STREAM)


def create_full_cluster(
    directory: Path,
    nodes: int,
    *,
    accounts: tuple[str, ...] = ("demo",),
    policy: str = LAPTOP_POLICY,
    consensus: str = "",
    node_extra: str = "",
    progress: Callable[[str], None] = lambda text: None,
) -> LocalCluster:
    """A cluster of full validators: everything `trustchain cluster up` sets up.

    DIR/ca/ (the SoftHSM key ceremony), DIR/genesis.toml (validators, [ca], a
    laptop [policy], [[accounts]] with bonded stake), DIR/accounts/NAME.key and
    NAME.plot (k=18), DIR/tls/ (the servers' TLS CA and certificate), DIR/client/
    (a client certificate from the TrustChain CA for the API), and per node
    node.toml with its HSM, CT, DNS and API endpoints (DIR/endpoints.json).
    `node_extra` adds top-level node.toml keys; `consensus` is a [consensus] body.
    """
    import json as _json

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from trustchain.consensus.proofs.hashing import account_id
    from trustchain.consensus.proofs.ledger import raw_public_key
    from trustchain.consensus.proofs.policy import AccountEntry, account_entry_toml
    from trustchain.ct.devcerts import make_tls_server
    from trustchain.node.cli import main as cli_main
    from trustchain.node.cli_proofs import create_plot
    from trustchain.node.identity import write_private_key

    cluster = LocalCluster.create(directory, nodes)
    names = [n.name for n in cluster.nodes]
    progress(f"key ceremony on SoftHSM2 for {', '.join(names)} (RSA-4096 root: a few seconds)")
    status = cli_main(
        [
            "ca", "init", "--dir", str(directory / "ca"), "--validators", ",".join(names),
            "--zones", DEMO_ZONE, "--genesis", str(directory / "genesis.toml"),
        ]
    )  # fmt: skip
    if status != 0:
        raise UserError("the key ceremony failed (see above)")
    genesis = (directory / "ca" / "genesis.toml").read_text() + "\n" + policy
    (directory / "accounts").mkdir()
    for name in accounts:
        key = Ed25519PrivateKey.generate()
        key_path = directory / "accounts" / f"{name}.key"
        write_private_key(key_path, key)
        public = raw_public_key(key)
        genesis += "\n" + account_entry_toml(AccountEntry(account_id(public), public, bonded=1000))
        progress(f"plotting k=18 for account {name}")
        create_plot(public, 18, directory / "accounts" / f"{name}.plot", buffer_mb=128)
    (directory / "genesis.toml").write_text(genesis)

    tls_dir = directory / "tls"
    tls_dir.mkdir()
    tls_ca, server = make_tls_server(("::1", "localhost"))
    (tls_dir / "ca.pem").write_bytes(tls_ca.pem)
    (tls_dir / "server.pem").write_bytes(server.pem)
    (tls_dir / "server.key").write_bytes(server.key_pem)
    (tls_dir / "server.key").chmod(0o600)
    progress("client certificate for the API from the TrustChain CA")
    make_client_certificate(directory, f"user.{DEMO_ZONE}")

    endpoints = {}
    tcp = _tcp_ports(2 * nodes)
    udp = free_udp_ports(nodes)
    for i, node in enumerate(cluster.nodes):
        ep = NodeEndpoints(
            node.name,
            Address("::1", tcp[2 * i]),
            Address("::1", udp[i]),
            Address("::1", tcp[2 * i + 1]),
        )
        endpoints[node.name] = {"ct": ep.ct_url, "api": ep.api_url, "dns": str(ep.dns)}
        extra = (
            f'hsm = "../ca/{node.name}/hsm.toml"\n'
            f'ct_listen = "{ep.ct}"\n'
            f'api_listen = "{ep.api}"\n'
            'server_tls_cert = "../tls/server.pem"\n'
            'server_tls_key = "../tls/server.key"\n'
            f'api_client_ca = "../ca/root.pem"\n'
            f"{node_extra}"
        )
        if consensus:
            extra += f"[consensus]\n{consensus}\n"
        extra += f'[dns]\nlisten = "{ep.dns}"\norigin = "{DEMO_ZONE}."\n'
        with open(node.config, "a") as fh:
            fh.write(extra)
    (directory / "endpoints.json").write_text(_json.dumps(endpoints, indent=2) + "\n")
    return cluster


def make_client_certificate(directory: Path, name: str) -> Path:
    """A client certificate for `name` issued by the cluster's CA (ceremony tokens, v1).

    Written as DIR/client/user.pem (certificate and intermediate) and user.key.
    """
    import datetime as dt

    import trio
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from trustchain.node.ca.ceremony import issue_locally

    out = directory / "client"
    out.mkdir(exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
        .sign(key, hashes.SHA256())
    )
    der = csr.public_bytes(serialization.Encoding.DER)
    validators = sorted(p.name for p in (directory / "ca").iterdir() if (p / "hsm.toml").exists())
    validators = [v for v in validators if v != "root"]
    chain = trio.run(
        lambda: issue_locally(
            directory / "ca", validators[0], validators, der,
            now=dt.datetime.now(dt.UTC), days=30,
        )
    )  # fmt: skip
    (out / "user.pem").write_bytes(chain)
    key_path = out / "user.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return out / "user.pem"


def load_endpoints(directory: Path) -> dict[str, NodeEndpoints]:
    """The endpoints `create_full_cluster` wrote."""
    import json as _json

    from trustchain.node.config import parse_address

    try:
        doc = _json.loads((directory / "endpoints.json").read_text())
    except FileNotFoundError:
        raise UserError(
            f"{directory}: not a cluster directory (no endpoints.json); "
            "run `trustchain cluster up` first"
        ) from None

    def addr(url: str) -> Address:
        return parse_address(url.removeprefix("https://"))

    return {
        name: NodeEndpoints(name, addr(e["ct"]), parse_address(e["dns"]), addr(e["api"]))
        for name, e in doc.items()
    }
