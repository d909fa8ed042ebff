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


def free_udp_ports(count: int) -> list[int]:
    """Distinct UDP ports on ::1 that were free a moment ago."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.bind(("::1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


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
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


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
                    raise UserError(
                        f"{n.name} exited with status {n.process.returncode}; see {n.log_path}"
                    )
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
