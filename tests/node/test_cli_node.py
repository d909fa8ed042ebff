"""The `trustchain` command line as a user runs it: real processes on ::1."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from trustchain.ct import devcerts
from trustchain.node import identity, localcluster
from trustchain.node.cli import build_parser
from trustchain.node.errors import UserError
from trustchain.node.localcluster import LocalCluster

BIN = Path(sys.executable).parent / "trustchain"


def trustchain(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def leaf_parsers() -> list[tuple[str, ...]]:
    """Every runnable command path, e.g. ("node", "init")."""
    found: list[tuple[str, ...]] = []

    def walk(parser: object, path: tuple[str, ...]) -> None:
        subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]  # type: ignore[attr-defined]
        if not subs:
            found.append(path)
        for action in subs:
            for name, child in action.choices.items():
                walk(child, (*path, name))

    walk(build_parser(), ())
    return found


@pytest.mark.parametrize("command", leaf_parsers(), ids=" ".join)
def test_every_command_has_help_with_an_example(command: tuple[str, ...]) -> None:
    result = trustchain(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "example" in result.stdout, f"`trustchain {' '.join(command)} --help` shows no example"


def test_node_init_creates_private_key_and_pinned_certificate(tmp_path: Path) -> None:
    result = trustchain(
        "node", "init", "--dir", str(tmp_path / "v1"), "--name", "v1", "--listen", "[::1]:7001"
    )
    assert result.returncode == 0, result.stderr
    key_path = tmp_path / "v1" / "consensus.key"
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    loaded = identity.load("v1", key_path, tmp_path / "v1" / "tls.pem")  # checks cert matches key
    entry = tomllib.loads(result.stdout)["validators"][0]
    assert entry["name"] == "v1" and entry["address"] == "[::1]:7001" and entry["power"] == 1
    import base64

    assert base64.b64decode(entry["public_key"]) == loaded.public_key_raw
    # A second init must not overwrite the key.
    again = trustchain(
        "node", "init", "--dir", str(tmp_path / "v1"), "--name", "v1", "--listen", "[::1]:7001"
    )
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


@pytest.mark.parametrize(
    ("listen", "message"),
    [("127.0.0.1:7001", "expected an IPv6 address"), ("[::ffff:10.0.0.1]:7001", "IPv4-mapped")],
)
def test_node_init_refuses_ipv4(tmp_path: Path, listen: str, message: str) -> None:
    result = trustchain(
        "node", "init", "--dir", str(tmp_path / "x"), "--name", "x", "--listen", listen
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_node_run_reports_bad_config_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text('name = "v1"\nlisten = "[::1]:7001"\nport = 3\n')
    result = trustchain("node", "run", "--config", str(tmp_path / "node.toml"))
    assert result.returncode == 2
    assert "unknown key 'port'" in result.stderr and "Traceback" not in result.stderr


def test_a_file_where_a_folder_is_due(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    for command in (("cluster", "up"), ("drill", "failover")):
        result = trustchain(*command, "--dir", str(afile))
        assert result.returncode == 2, result.stderr
        assert f"--dir {afile}: is a file" in result.stderr and "Traceback" not in result.stderr


def test_drill_arguments_are_checked_before_it_starts(tmp_path: Path) -> None:
    result = trustchain("drill", "failover", "--dir", str(tmp_path / "d"), "--timeout", "0")
    assert result.returncode == 2 and "--timeout must be positive" in result.stderr
    assert not (tmp_path / "d").exists()


def test_node_run_checks_its_files_before_it_starts(tmp_path: Path) -> None:
    ca, server = devcerts.make_tls_server()
    _, other = devcerts.make_tls_server()
    files = {
        "tls.pem": server.pem, "tls.key": server.key_pem, "other.key": other.key_pem,
        "ca.pem": ca.pem, "junk.pem": b"not a certificate\n", "afile": b"",
    }  # fmt: skip
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    good = {
        "data_dir": "data", "server_tls_cert": "tls.pem", "server_tls_key": "tls.key",
        "api_client_ca": "ca.pem",
    }  # fmt: skip
    cases = {
        "data_dir": ("afile", "afile: not a folder"),
        "server_tls_cert": ("missing.pem", "No such file or directory"),
        "server_tls_key": ("other.key", "the key is not the certificate's"),
        "api_client_ca": ("junk.pem", "api_client_ca"),
    }
    for key, (value, message) in cases.items():
        values = {**good, key: value}
        text = 'name = "v1"\nlisten = "[::1]:7001"\napi_listen = "[::1]:7002"\n'
        text += "".join(f'{k} = "{v}"\n' for k, v in values.items())
        (tmp_path / "node.toml").write_text(text)
        result = trustchain("node", "run", "--config", str(tmp_path / "node.toml"))
        assert result.returncode == 2, (key, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (key, result.stderr)
    (tmp_path / "node.toml").write_bytes(b'name = "v\xe9"\n')  # Latin-1, not UTF-8
    result = trustchain("node", "run", "--config", str(tmp_path / "node.toml"))
    assert result.returncode == 2 and "not UTF-8 text" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("key", "kind"), [("listen", socket.SOCK_DGRAM), ("client_listen", socket.SOCK_STREAM)]
)
def test_node_run_reports_a_busy_port(tmp_path: Path, key: str, kind: socket.SocketKind) -> None:
    """Another process holds the peer port (UDP, as for [dns]) or a TCP port (as for the
    API and 6962): the node says which address, exits 2, and shows no traceback."""
    cluster = LocalCluster.create(tmp_path / "c", 2, client_endpoints=True)
    config = cluster.node("v1").config
    address = tomllib.loads(config.read_text())[key]
    with socket.socket(socket.AF_INET6, kind) as holder:
        holder.bind(("::1", int(address.rsplit(":", 1)[1])))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        result = trustchain("node", "run", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert f"{address}: cannot listen: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_local_cluster_says_why_a_node_exited(tmp_path: Path) -> None:
    cluster = LocalCluster.create(tmp_path / "c", 2)
    address = tomllib.loads(cluster.node("v2").config.read_text())["listen"]
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as holder:
        holder.bind(("::1", int(address.rsplit(":", 1)[1])))
        cluster.start()
        try:
            with pytest.raises(UserError) as raised:
                cluster.wait(lambda events: False, timeout=60)
        finally:
            cluster.stop()
    message = str(raised.value)
    assert message.startswith("v2 exited with status 2 (UDP ")
    assert f"{address}: cannot listen: Address already in use" in message
    assert message.endswith(f"see {cluster.node('v2').log_path}")


def test_free_ports_are_not_handed_out_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster asks for ports several times (peers, then DNS, ...): a port that a
    first call returned is free until its server binds it, and must not come back."""
    a, b, c = localcluster.free_udp_ports(3)  # free ports of this machine, to draw from
    draws = iter([a, a, b, a, c])
    monkeypatch.setattr(localcluster.random, "randrange", lambda low, high: next(draws))
    monkeypatch.setattr(localcluster, "_HANDED_OUT", {})
    assert localcluster.free_udp_ports(1) == [a]
    assert localcluster.free_udp_ports(2) == [b, c]


def test_node_run_says_what_to_do_about_a_damaged_database(tmp_path: Path) -> None:
    cluster = LocalCluster.create(tmp_path / "c", 2)
    (cluster.directory / "v1" / "consensus.db").write_bytes(bytes(8192))
    result = trustchain("node", "run", "--config", str(cluster.node("v1").config))
    assert result.returncode == 2, result.stderr
    assert "is damaged" in result.stderr and "consensus.db away to rejoin" in result.stderr
    assert "Traceback" not in result.stderr


def test_node_run_refuses_key_that_genesis_does_not_list(tmp_path: Path) -> None:
    cluster = LocalCluster.create(tmp_path / "c", 2)
    other = tmp_path / "other"
    identity.save(identity.generate("v1"), other)
    for name in ("consensus.key", "tls.pem"):
        (cluster.directory / "v1" / name).unlink()
        (cluster.directory / "v1" / name).write_bytes((other / name).read_bytes())
    result = trustchain("node", "run", "--config", str(cluster.node("v1").config))
    assert result.returncode == 2 and "is not this node's key" in result.stderr


@pytest.mark.slow
def test_node_processes_form_mesh_survive_sigkill_and_stop_on_sigterm(tmp_path: Path) -> None:
    cluster = LocalCluster.create(tmp_path / "c", 4)
    cluster.start()
    try:

        def pongs_from_all(events: dict[str, list[dict[str, object]]], after: float = 0) -> bool:
            return all(
                {
                    e.get("peer")
                    for e in evs
                    if e.get("event") == "mesh.pong" and float(e["ts"]) > after
                }  # type: ignore[arg-type]
                == {n.name for n in cluster.nodes} - {name}
                for name, evs in events.items()
            )

        assert cluster.wait(pongs_from_all, timeout=30)
        assert cluster.wait(
            lambda ev: all(any(e.get("event") == "node.ready" for e in evs) for evs in ev.values()),
            timeout=30,
        )
        # Crash v2 with SIGKILL, restart it from its directory: the mesh heals.
        cluster.node("v2").kill()
        import time

        restarted_at = time.time()
        cluster.node("v2").start()
        assert cluster.wait(lambda ev: pongs_from_all(ev, after=restarted_at + 0.5), timeout=30)
    finally:
        statuses = cluster.stop()
    assert statuses == {"v1": 0, "v2": 0, "v3": 0, "v4": 0}
    for node in cluster.nodes:
        assert node.events()[-1]["event"] == "node.stopped"


@pytest.mark.slow
def test_mesh_command_shows_four_peers_talking(tmp_path: Path) -> None:
    result = trustchain("mesh", "--nodes", "4", "--dir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every pair authenticated over QUIC" in result.stdout
    for name in ("v1", "v2", "v3", "v4"):
        assert f"{name}: authenticated" in result.stdout


@pytest.mark.slow
def test_node_speaks_systemd_notify(tmp_path: Path) -> None:
    """READY=1 once following the chain, STATUS lines, WATCHDOG=1, STOPPING=1 on SIGTERM."""
    import socket as socketlib

    cluster = LocalCluster.create(tmp_path / "c", 4)
    listener = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))
    listener.settimeout(30)
    v1 = cluster.node("v1")
    v1.start(env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "2000000"})
    received: list[str] = []

    def wait_for(line: str) -> None:
        while not any(line in m for m in received):
            received.append(listener.recv(4096).decode())

    try:
        for node in cluster.nodes[1:]:
            node.start()
        wait_for("READY=1")
        assert any("STATUS=height" in m for m in received)
        wait_for("WATCHDOG=1")
        v1.terminate()
        wait_for("STOPPING=1")
    finally:
        cluster.stop()
        listener.close()
    assert v1.process is not None and v1.process.returncode == 0
