"""Four real validator processes on ::1: issue, verify, revoke, refusals, crash and catch-up.

One cluster per module (the key ceremony on SoftHSM2 and the plot take seconds);
every request goes through the HTTPS API with mutual TLS, as a subscriber's would.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from clusterkit import issued_leaf_hash
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustchain.ct.checkpoint import parse_checkpoint
from trustchain.ct.devcerts import make_tls_server
from trustchain.ct.merkle import verify_inclusion
from trustchain.ct.note import parse_note
from trustchain.node.cli import main
from trustchain.node.cli_cert import (
    ApiClient,
    ApiError,
    cluster_client,
    load_account,
    make_bundle_for,
    make_key_and_csr,
    request_certificate,
    revoke_body,
)
from trustchain.node.localcluster import (
    LocalCluster,
    NodeEndpoints,
    create_full_cluster,
    free_tcp_port,
    load_endpoints,
)

pytestmark = pytest.mark.slow
ZONE = "trust.hypermesh.online"


@dataclass
class Running:
    dir: Path
    cluster: LocalCluster
    endpoints: dict[str, NodeEndpoints]
    starts: dict[str, int]
    """Times each node was started (node.ready events to wait for)."""
    first_checkpoint: str = ""
    """The cosigned checkpoint of the module's first certificate."""

    @property
    def account(self) -> Path:
        return self.dir / "accounts" / "demo.key"

    @property
    def plot(self) -> Path:
        return self.dir / "accounts" / "demo.plot"

    def client(self, node: str = "v1") -> ApiClient:
        return cluster_client(self.dir, node)

    def request(self, names: list[str], node: str = "v1") -> tuple[dict[str, Any], Path]:
        _, csr = make_key_and_csr(names)
        doc = request_certificate(self.client(node), load_account(self.account), self.plot, csr)
        pem = self.dir / f"{names[0]}-{doc['serial']}.pem"
        pem.write_text(doc["certificate"])
        return doc, pem

    def ct_get(self, node: str, path: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.dir / "tls" / "ca.pem"))
        url = self.endpoints[node].ct_url + path
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            data: bytes = response.read()
        return data

    def wait_ready(self, names: list[str], timeout: float = 30) -> None:
        def ready(events: dict[str, list[dict[str, Any]]]) -> bool:
            return all(
                sum(e.get("event") == "node.ready" for e in events[n]) >= self.starts.get(n, 1)
                for n in names
            )

        assert self.cluster.wait(ready, timeout)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("cluster") / "c"
    cluster = create_full_cluster(directory, 4)
    # v3 allows only a network we are not in; v4 allows 5 requests per minute.
    for name, extra in (
        ("v3", 'api_allow = ["2001:db8::/32"]\n'),
        ("v4", "api_rate_limit = 5\n"),
    ):
        config = directory / name / "node.toml"
        config.write_text(config.read_text().replace("[dns]", extra + "[dns]"))
    run = Running(directory, cluster, load_endpoints(directory), {})
    cluster.start()
    try:
        run.wait_ready(["v1", "v2", "v3", "v4"])
        yield run
    finally:
        statuses = cluster.stop()
    assert set(statuses.values()) <= {0, -signal.SIGKILL}, statuses


def _verify(run: Running, pem: Path, node: str = "v2") -> int:
    return main(
        [
            "cert", "verify", str(pem), "--genesis", str(run.dir / "genesis.toml"),
            "--root", str(run.dir / "ca" / "root.pem"), "--online", run.endpoints[node].ct_url,
            "--online-cafile", str(run.dir / "tls" / "ca.pem"),
        ]
    )  # fmt: skip


def _tlsa(run: Running, node: str, name: str) -> str:
    out = subprocess.run(
        [
            sys.executable, "-m", "trustchain.node.cli", "dns", "query", f"_443._tcp.{name}",
            "TLSA", "--server", str(run.endpoints[node].dns), "--ca",
            str(run.dir / "tls" / "ca.pem"),
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return "\n".join(line for line in out.stdout.splitlines() if "TLSA" in line and "IN" in line)


def _cosigned(run: Running, node: str) -> tuple[str, int]:
    note = parse_note(run.ct_get(node, "/checkpoint"))
    return note.text, len(note.signatures)


def test_issue_verify_and_identical_logs(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    doc, pem = running.request([f"demo.{ZONE}", f"www.demo.{ZONE}"])
    running.first_checkpoint = doc["checkpoint"]
    # The demo account's VDF discriminant was ready before its first (cold) check.
    for node in running.cluster.nodes:
        assert any(e.get("event") == "app.discriminants" for e in node.events())
    # SCTs from more than 2/3 of the power: any three of the four, whichever came first.
    assert len(set(doc["signers"])) >= 3 and len(doc["scts"]) >= 3
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    assert f"{cert.serial_number:x}" == doc["serial"]
    assert parse_checkpoint(parse_note(doc["checkpoint"]).text).size > doc["leaf_index"]
    assert _verify(running, pem) == 0
    assert "inclusion     leaf" in capsys.readouterr().out
    # Right after the answer every node's status proves the entry's inclusion in a
    # cosigned checkpoint: the answer waited for a quorum's cosignatures, not for the
    # nodes' CT stores, and a lookup waits for its node's store to catch up.
    leaf = issued_leaf_hash(doc)
    for node in running.endpoints:
        status = json.loads(running.ct_get(node, f"/ca/v1/status/{doc['serial']}"))
        cp = parse_checkpoint(parse_note(status["checkpoint"]).text)
        proof = [base64.b64decode(h) for h in status["inclusion_proof"]]
        verify_inclusion(doc["leaf_index"], cp.size, leaf, proof, cp.root_hash)
    # Status by serial and by the certificate's leaf hash, from another node.
    by_serial = running.client("v2").call("GET", f"/v1/status/{doc['serial']}")
    assert by_serial["revoked"] is False and by_serial["leaf_index"] == doc["leaf_index"]
    by_hash = running.client("v2").call("GET", f"/v1/status?leaf_hash={leaf.hex()}")
    assert by_hash == by_serial
    with pytest.raises(ApiError) as unknown:
        running.client("v2").call("GET", f"/v1/status?leaf_hash={'00' * 32}")
    assert unknown.value.status == 404
    # Every node ends with the same cosigned checkpoint and the same TLSA answer.
    deadline = time.monotonic() + 10
    while True:
        texts = {n: _cosigned(running, n) for n in running.endpoints}
        if len({t for t, _ in texts.values()}) == 1:
            break
        assert time.monotonic() < deadline, texts
        time.sleep(0.2)
    assert all(signatures >= 3 for _, signatures in texts.values())
    answers = {n: _tlsa(running, n, f"demo.{ZONE}") for n in running.endpoints}
    assert len(set(answers.values())) == 1 and "3 1 1" in answers["v1"], answers


def test_revoke_end_to_end(running: Running, capsys: pytest.CaptureFixture[str]) -> None:
    doc, pem = running.request([f"revoked.{ZONE}"], node="v2")
    serial = int(doc["serial"], 16)
    client = running.client("v2")
    chain_id = client.call("GET", "/v1/beacon")["chain_id"]
    # Only the requesting account may revoke: a signature by another key is refused.
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(ApiError) as refused:
        client.call("POST", "/v1/revoke", revoke_body(stranger, chain_id, serial, "keyCompromise"))
    assert refused.value.status == 400
    body = revoke_body(load_account(running.account), chain_id, serial, "keyCompromise")
    # Malformed fields are named; reasons BR 7.2.2 does not allow are refused.
    for bad, message in [
        ({**body, "serial": serial}, "field 'serial': missing or not a string"),
        ({**body, "signature": None}, "field 'signature': missing or not a string"),
        ({**body, "reason": "removeFromCRL"}, "reason removeFromCRL is not allowed"),
    ]:
        got = _post_raw(client, "/v1/revoke", bad)
        assert (got[0], got[1]["error"]) == (400, "bad_request"), got
        assert message in got[1]["message"], got
    answer = client.call("POST", "/v1/revoke", body)
    assert answer["revoked"] is True
    status = running.client("v1").call("GET", f"/v1/status/{serial:x}")
    deadline = time.monotonic() + 10
    while not status["revoked"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
        status = running.client("v1").call("GET", f"/v1/status/{serial:x}")
    assert status["revocation"]["reason"] == "keyCompromise"
    capsys.readouterr()
    assert _verify(running, pem, node="v1") == 1
    assert "revocation" in capsys.readouterr().out
    with pytest.raises(ApiError) as again:
        client.call("POST", "/v1/revoke", body)
    assert again.value.code == "revoke" and "already revoked" in str(again.value)
    crl = running.client("v2").call("GET", "/v1/crl")
    revoked = x509.load_der_x509_crl(crl).get_revoked_certificate_by_serial_number(serial)
    assert revoked is not None


def _issue_body(running: Running, csr: bytes, bundle: bytes) -> dict[str, Any]:
    from trustchain.consensus.proofs.codec import decode_bundle

    return {
        "csr": base64.b64encode(csr).decode(),
        "account": decode_bundle(bundle).account.hex(),
        "bundle": base64.b64encode(bundle).decode(),
    }


def test_bad_requests_get_4xx_and_change_nothing(running: Running) -> None:
    client = running.client("v1")
    account = load_account(running.account)
    before = client.call("GET", "/health")["log_size"]
    _, csr = make_key_and_csr([f"bad.{ZONE}"])
    bundle = make_bundle_for(client, account, running.plot, csr)
    _, other_csr = make_key_and_csr([f"other.{ZONE}"])
    _, outside = make_key_and_csr(["www.example.org"])
    outside_bundle = make_bundle_for(client, account, running.plot, outside)
    cases: list[tuple[dict[str, Any] | bytes, int, str]] = [
        (b"{not json", 400, "bad_json"),
        (b"[]", 400, "bad_json"),
        (b"[" * 60_000, 400, "bad_json"),
        ({"csr": "!!", "account": "00", "bundle": "AA=="}, 400, "bad_request"),
        ({**_issue_body(running, csr, bundle), "csr": "AAAA"}, 400, "bad_csr"),
        (_issue_body(running, other_csr, bundle), 400, "bad_proof"),
        (_issue_body(running, outside, outside_bundle), 400, "name_outside_policy"),
        ({**_issue_body(running, csr, bundle), "account": "00" * 20}, 400, "bad_request"),
        (b"{" + b" " * 70_000 + b"}", 413, "body_too_large"),
    ]
    for body, status, code in cases:
        got = _post_raw(client, "/v1/issue", body)
        assert (got[0], got[1]["error"]) == (status, code), (
            body if len(str(body)) < 200 else "",
            got,
        )
    # An account the ledger does not know: refused before any proof is checked.
    stranger = Ed25519PrivateKey.generate()
    from trustchain.consensus.proofs.codec import decode_bundle, encode_bundle
    from trustchain.consensus.proofs.prover import sign_bundle

    b = decode_bundle(bundle)
    forged = encode_bundle(
        sign_bundle(stranger, client.call("GET", "/v1/beacon")["chain_id"], epoch=b.epoch,
                    request=b.request, work=b.work, space=b.space, time=b.time)
    )  # fmt: skip
    got = _post_raw(client, "/v1/issue", _issue_body(running, csr, forged))
    assert (got[0], got[1]["error"]) == (400, "unknown_account"), got
    # The good request once; the same bundle again is a replay.
    ok = _post_raw(client, "/v1/issue", _issue_body(running, csr, bundle))
    assert ok[0] == 200, ok
    replay = _post_raw(client, "/v1/issue", _issue_body(running, csr, bundle))
    assert (replay[0], replay[1]["error"]) == (400, "replay"), replay
    assert client.call("GET", "/health")["log_size"] == before + 1
    # Methods: a 405 names the one the endpoint takes (RFC 9110 15.5.6); no endpoint: 404.
    for method, path, status, allow in [
        ("GET", "/v1/issue", 405, "POST"), ("PUT", "/v1/revoke", 405, "POST"),
        ("POST", "/v1/beacon", 405, "GET"), ("DELETE", "/v1/status/ab", 405, "GET"),
        ("POST", "/nothing", 404, None), ("GET", "/v1/nothing", 404, None),
    ]:  # fmt: skip
        got = _post_raw(client, path, b"", method)
        assert (got[0], got[2]) == (status, allow), (method, path, got)
        assert got[1]["error"] == ("method_not_allowed" if status == 405 else "not_found")


def _post_raw(
    client: ApiClient, path: str, body: dict[str, Any] | bytes, method: str = "POST"
) -> tuple[int, Any, str | None]:
    """Status, JSON answer and Allow header of one request."""
    import http.client

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    host, port = client.url.removeprefix("https://[").split("]:")
    conn = http.client.HTTPSConnection(host, int(port), context=client.context(), timeout=60)
    try:
        conn.request(method, path, body=data, headers={"content-type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read()), response.getheader("allow")
    finally:
        conn.close()


def test_tls_and_client_refusals(running: Running, tmp_path: Path) -> None:
    good = running.client("v1")
    # No client certificate: the TLS 1.3 handshake is refused.
    context = ssl.create_default_context(cafile=str(good.cafile))
    host, port = good.url.removeprefix("https://[").split("]:")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
                if not tls.recv(100):
                    raise ConnectionError("closed")
    # A client certificate from another CA: refused too.
    _, leaf = make_tls_server(("client.example",))
    (tmp_path / "other.pem").write_bytes(leaf.pem)
    (tmp_path / "other.key").write_bytes(leaf.key_pem)
    other = ApiClient(good.url, good.cafile, tmp_path / "other.pem", tmp_path / "other.key")
    with pytest.raises(ApiError) as foreign:
        other.call("GET", "/health")
    assert foreign.value.code == "unreachable"
    # IPv4: the API listens on IPv6 only.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(port)), timeout=5).close()
    # Outside the allowlist (v3 allows 2001:db8::/32 only): 403.
    with pytest.raises(ApiError) as forbidden:
        running.client("v3").call("GET", "/health")
    assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden_address")
    # Past the rate limit (v4: 5 per minute): 429 with Retry-After.
    import http.client

    limited = running.client("v4")
    statuses = []
    retry_after = None
    for _ in range(7):
        h, p = limited.url.removeprefix("https://[").split("]:")
        conn = http.client.HTTPSConnection(h, int(p), context=limited.context(), timeout=10)
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
        retry_after = response.getheader("retry-after") or retry_after
        conn.close()
    assert statuses[:5] == [200] * 5 and statuses[5:] == [429, 429], statuses
    assert retry_after is not None and int(retry_after) >= 1


def test_killed_validator_then_catch_up(running: Running) -> None:
    v4 = running.cluster.node("v4")
    v4.kill()
    doc, pem = running.request([f"while-down.{ZONE}"], node="v1")
    assert "v4" not in doc["signers"] and len(doc["signers"]) == 3
    assert _verify(running, pem) == 0
    # A damaged CT store: one line saying what to do, not a traceback.
    ct = running.dir / "v4" / "ct"
    tile = max((ct / "tile").rglob("*"), key=lambda t: (t.is_file(), t.stat().st_mtime))
    blob = tile.read_bytes()
    tile.write_bytes(blob[:-3])
    refused = _trustchain("node", "run", "--config", str(v4.config))
    tile.write_bytes(blob)
    assert refused.returncode == 2 and "Move the ct folder away" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    # A damaged copy of the last cosigned checkpoint is only a cache: it is replaced.
    (ct / "cosigned-checkpoint").write_bytes(bytes(64))
    running.starts["v4"] = 2
    v4.start()
    running.wait_ready(["v4"])
    size = running.client("v1").call("GET", "/health")["log_size"]
    deadline = time.monotonic() + 30
    while True:
        health = running.client("v2").call("GET", "/health")
        text, _ = _cosigned(running, "v4")
        if parse_checkpoint(text).size >= size and health["log_size"] >= size:
            break
        assert time.monotonic() < deadline, (text, size)
        time.sleep(0.3)
    # And it signs again: a new certificate carries its SCT.
    doc2, _ = running.request([f"after.{ZONE}"], node="v2")
    assert "v4" in doc2["signers"], doc2["signers"]
    # Every node's checkpoints are consistent: the first one this module saw is a
    # prefix of each node's latest, by each node's own consistency proof.
    from trustchain.ct.merkle import verify_consistency

    first = parse_checkpoint(parse_note(running.first_checkpoint).text)
    for node in running.endpoints:
        latest = parse_checkpoint(_cosigned(running, node)[0])
        answer = json.loads(
            running.ct_get(
                node, f"/ct/v1/get-sth-consistency?first={first.size}&second={latest.size}"
            )
        )
        proof = [base64.b64decode(h) for h in answer["consistency"]]
        verify_consistency(first.size, latest.size, first.root_hash, latest.root_hash, proof)


def _trustchain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustchain.node.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cert_commands(running: Running, tmp_path: Path) -> None:
    d = str(running.dir)
    out = tmp_path / "cli.pem"
    base = ["--cluster", d, "--node", "v2"]
    request = _trustchain(
        "cert", "request", *base, "--account", str(running.account), "--plot",
        str(running.plot), "--name", f"cli.{ZONE},www.cli.{ZONE}", "--out", str(out),
    )  # fmt: skip
    assert request.returncode == 0, request.stderr
    assert "space proof (k=18" in request.stderr and "SCTs from:" in request.stdout
    assert (tmp_path / "cli.key").stat().st_mode & 0o077 == 0
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [f"cli.{ZONE}", f"www.cli.{ZONE}"]
    status = _trustchain("cert", "status", *base, str(out))
    assert status.returncode == 0 and ": valid" in status.stdout, status.stdout + status.stderr
    revoke = _trustchain(
        "cert", "revoke", *base, "--account", str(running.account), str(out),
        "--reason", "superseded",
    )  # fmt: skip
    assert revoke.returncode == 0, revoke.stderr
    status = _trustchain("cert", "status", "--cluster", d, "--serial", f"{cert.serial_number:x}")
    assert status.returncode == 1 and "superseded" in status.stdout, status.stdout
    # Mistakes get a message and exit status 2, no traceback.
    missing = _trustchain(
        "cert", "request", *base, "--account", str(running.account), "--plot",
        str(running.plot), "--out", str(tmp_path / "x.pem"),
    )  # fmt: skip
    assert missing.returncode == 2 and "give --name" in missing.stderr
    outside = _trustchain(
        "cert", "request", *base, "--account", str(running.account), "--plot",
        str(running.plot), "--name", "www.example.org", "--out", str(tmp_path / "y.pem"),
    )  # fmt: skip
    assert outside.returncode == 2 and "name_outside_policy" in outside.stderr, outside.stderr
    assert not (tmp_path / "y.key").exists()  # refused: its new key is gone again
    # A name longer than a CN may be (64 characters) is certified in subjectAltName only.
    long_name = f"{'a' * 50}.{'b' * 20}.{ZONE}"
    long = _trustchain(
        "cert", "request", *base, "--account", str(running.account), "--plot",
        str(running.plot), "--name", long_name, "--out", str(tmp_path / "long.pem"),
    )  # fmt: skip
    assert long.returncode == 0, long.stderr
    issued = x509.load_pem_x509_certificate((tmp_path / "long.pem").read_bytes())
    assert issued.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName) == [long_name]
    assert len(issued.subject) == 0
    assert _verify(running, tmp_path / "long.pem") == 0
    # Where the certificate or its key cannot be saved, nothing is requested.
    size = running.client("v2").call("GET", "/health")["log_size"]
    (tmp_path / "taken.key").write_text("an older key\n")
    unsaved = {
        str(tmp_path / "no" / "such.pem"): "no folder",
        str(tmp_path): "is a directory",
        str(tmp_path / "taken.pem"): "taken.key exists",
        str(tmp_path / "both.key"): "name the certificate .pem",
    }
    for target, message in unsaved.items():
        r = _trustchain(
            "cert", "request", *base, "--account", str(running.account), "--plot",
            str(running.plot), "--name", f"unsaved.{ZONE}", "--out", target,
        )  # fmt: skip
        assert r.returncode == 2 and message in r.stderr, (target, r.stderr)
        assert "Traceback" not in r.stderr
    assert (tmp_path / "taken.key").read_text() == "an older key\n"
    assert running.client("v2").call("GET", "/health")["log_size"] == size
    (tmp_path / "junk.plot").write_bytes(b"not a plot" * 100)
    mistakes = {
        ("--name", f"bücher.{ZONE}"): "not ASCII; write internationalised names as A-labels",
        ("--name", f"{'x' * 70}.{ZONE}"): "is not 1-63 letters",
        ("--csr", str(tmp_path / "none.csr")): "No such file or directory",
        ("--plot", str(tmp_path / "junk.plot"), "--name", f"p.{ZONE}"): "not a plot",
        ("--plot", "/dev/null", "--name", f"p.{ZONE}"): "/dev/null: not a plot file",
    }
    for extra, message in mistakes.items():
        plot = [] if "--plot" in extra else ["--plot", str(running.plot)]
        r = _trustchain(
            "cert", "request", *base, "--account", str(running.account), *plot, *extra,
            "--out", str(tmp_path / "m.pem"),
        )  # fmt: skip
        assert r.returncode == 2 and message in r.stderr, (extra, r.stderr)
        assert "Traceback" not in r.stderr
    folder = _trustchain("cert", "status", *base, str(tmp_path))
    assert folder.returncode == 2 and "Is a directory" in folder.stderr, folder.stderr
    bad_serial = _trustchain("cert", "status", "--cluster", d, "--serial", "zz")
    assert bad_serial.returncode == 2 and "--serial zz: not a serial number in hex" in (
        bad_serial.stderr
    )
    negative = _trustchain("cert", "status", "--cluster", d, "--serial", "-5")
    assert negative.returncode == 2 and "--serial -5: not a serial number" in negative.stderr
    # A node that does not answer is not a node that refused.
    port = free_tcp_port()
    nobody = _trustchain(
        "cert", "status", "--api", f"https://[::1]:{port}", "--cacert", f"{d}/tls/ca.pem",
        "--client-cert", f"{d}/client/user.pem", "--client-key", f"{d}/client/user.key", str(out),
    )  # fmt: skip
    assert nobody.returncode == 2
    down = _trustchain(
        "cert", "request", "--api", f"https://[::1]:{port}", "--cacert", f"{d}/tls/ca.pem",
        "--client-cert", f"{d}/client/user.pem", "--client-key", f"{d}/client/user.key",
        "--account", str(running.account), "--plot", str(running.plot), "--name", f"n.{ZONE}",
        "--out", str(tmp_path / "n.pem"),
    )  # fmt: skip
    assert down.returncode == 2 and "is the node up?" in down.stderr, down.stderr
    assert "Traceback" not in down.stderr
    assert (
        f"cannot reach https://[::1]:{port}" in nobody.stderr and "is the node up?" in nobody.stderr
    )
    assert "refused:" not in nobody.stderr
    assert "Traceback" not in missing.stderr + outside.stderr + nobody.stderr + bad_serial.stderr
