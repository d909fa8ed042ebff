"""`trustchain ct keygen / serve / verify` as a user runs them (real processes)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from ct_testlib import TLSFiles, connect, tls_files

from trustchain.ct import devcerts, merkle, sct
from trustchain.ct.sct import EntryType, LogEntry
from trustchain.ct.signer import load_p256_signer

ORIGIN = "ct.cli.example/log"


def trustchain(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustchain.node.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kw,  # type: ignore[call-overload]
    )


def test_keygen(tmp_path: Path) -> None:
    key = tmp_path / "log.key"
    r = trustchain("ct", "keygen", "--out", str(key), "--origin", ORIGIN)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    signer = load_p256_signer(key)
    assert "log id: " in r.stdout and "BEGIN PUBLIC KEY" in r.stdout
    assert f"checkpoint verifier key: {ORIGIN}+" in r.stdout
    again = trustchain("ct", "keygen", "--out", str(key))
    assert again.returncode == 2 and "exists" in again.stderr
    assert load_p256_signer(key).public_key() == signer.public_key()


def serve_args(data: Path, key: Path, roots: Path, tls: TLSFiles) -> list[str]:
    """`trustchain ct serve` on a free port of ::1 with these files."""
    return [
        "ct", "serve", "--data", str(data), "--roots", str(roots), "--log-key", str(key),
        "--origin", ORIGIN, "--listen", "[::1]:0",
        "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
    ]  # fmt: skip


class Server:
    def __init__(self, tmp: Path, data: Path, key: Path, roots: Path, tls: TLSFiles) -> None:
        self.args = [*serve_args(data, key, roots, tls), "--pool-interval", "10"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trustchain.node.cli", *self.args],
            stderr=subprocess.PIPE,
            text=True,
        )
        self.port = self._wait_port()

    def _wait_port(self) -> int:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"server exited: {self.proc.wait()}")
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "ct.listening":
                return int(event["urls"][0].rsplit(":", 1)[1])
        raise AssertionError("server did not report its port")

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code


@pytest.mark.slow
def test_serve_survives_sigkill_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    key = tmp_path / "log.key"
    assert trustchain("ct", "keygen", "--out", str(key)).returncode == 0
    root = devcerts.make_root()
    ca = devcerts.make_intermediate(root)
    roots = tmp_path / "roots.pem"
    roots.write_bytes(root.pem)
    tls = tls_files(tmp_path)
    data = tmp_path / "data"
    signer = load_p256_signer(key)
    leaves = [devcerts.make_leaf(ca, f"s{i}.example") for i in range(6)]

    async def submit(port: int, batch: list[devcerts.Issued]) -> tuple[int, bytes]:
        c = connect(port, tls, signer)
        for leaf in batch:
            s = await c.add_chain([leaf.der, ca.der])
            sct.verify_sct(s, LogEntry(EntryType.X509, leaf.der), signer.public_key())
        size, _, root_hash = await c.get_sth()
        await c.conn.aclose()
        return size, root_hash

    server = Server(tmp_path, data, key, roots, tls)
    size1, root1 = trio.run(submit, server.port, leaves[:3])
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL

    server = Server(tmp_path, data, key, roots, tls)

    async def after_restart(port: int) -> None:
        c = connect(port, tls, signer)
        assert await c.get_checkpoint(ORIGIN) == (size1, root1)
        got = [sct.parse_merkle_tree_leaf(li).entry.certificate for li, _ in await c.entries(0, 10)]
        assert sorted(got) == sorted(leaf.der for leaf in leaves[:3])
        await c.conn.aclose()
        size2, root2 = await submit(port, leaves[3:])
        c = connect(port, tls, signer)
        merkle.verify_consistency(size1, size2, root1, root2, await c.consistency(size1, size2))
        await c.conn.aclose()

    trio.run(after_restart, server.port)
    assert server.stop(signal.SIGTERM) == 0

    ok = trustchain("ct", "verify", "--data", str(data), "--log-key", str(key), "--origin", ORIGIN)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 6 entries"), ok
    tile = data / "tile" / "data" / "000.p" / "6"
    blob = tile.read_bytes()
    tile.write_bytes(blob[:-3])
    bad = trustchain("ct", "verify", "--data", str(data), "--log-key", str(key), "--origin", ORIGIN)
    assert bad.returncode == 1 and "DAMAGED: tile/data/000.p/6" in bad.stdout, bad
    # Another key than the one the directory was started with: said so, not "damaged".
    other = tmp_path / "other.key"
    assert trustchain("ct", "keygen", "--out", str(other)).returncode == 0
    wrong = trustchain(*serve_args(data, other, roots, tls))
    assert wrong.returncode == 2 and "Give the --log-key and --origin" in wrong.stderr, wrong
    # A file where the data folder is due.
    afile = tmp_path / "afile"
    afile.write_text("")
    not_dir = trustchain(*serve_args(afile, key, roots, tls))
    assert not_dir.returncode == 2 and f"--data: {afile}" in not_dir.stderr, not_dir
    assert "cannot serve on" not in not_dir.stderr
    # The server refuses the damaged store with a message, not a traceback.
    refused = trustchain(*serve_args(data, key, roots, tls))
    assert (
        refused.returncode == 2
        and "store is damaged" in refused.stderr
        and "Traceback" not in refused.stderr
    )


def test_serve_refuses_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trustchain.node.cli import main

    key = tmp_path / "log.key"
    assert main(["ct", "keygen", "--out", str(key)]) == 0
    rsa_key = tmp_path / "rsa.key"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key.write_bytes(
        rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tls = tls_files(tmp_path)
    roots = tmp_path / "roots.pem"
    roots.write_bytes(devcerts.make_root().pem)
    (tmp_path / "empty.pem").write_bytes(b"")
    base = {
        "--data": str(tmp_path / "d"),
        "--roots": str(roots),
        "--log-key": str(key),
        "--origin": ORIGIN,
        "--listen": "[::1]:0",
        "--tls-cert": str(tls.cert),
        "--tls-key": str(tls.key),
    }
    cases = [
        ({"--listen": "127.0.0.1:6962"}, "--listen"),
        ({"--listen": "[::ffff:127.0.0.1]:6962"}, "IPv4-mapped"),
        ({"--log-key": str(rsa_key)}, "holds an RSA key; a CT log key must be ECDSA P-256"),
        ({"--log-key": str(tls.cert)}, "not a PKCS #8"),
        ({"--roots": str(tmp_path / "missing.pem")}, "--roots"),
        ({"--roots": str(key)}, "holds no PEM certificates"),
        ({"--roots": str(tmp_path / "empty.pem")}, "holds no PEM certificates"),
        ({"--origin": "has space"}, "--origin"),
        ({"--tls-key": str(key)}, "--tls-cert/--tls-key"),
    ]
    for change, message in cases:
        args = {**base, **change}
        flat = [x for kv in args.items() for x in kv]
        capsys.readouterr()
        # In-process: every refusal happens before anything is served.
        assert main(["ct", "serve", *flat]) == 2, change
        err = capsys.readouterr().err
        assert message in err and err.startswith("trustchain: error:"), (change, err)
    assert not (tmp_path / "d").exists()
    assert os.path.exists(key)
