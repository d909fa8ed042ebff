"""One Byzantine validator of four cannot get a bad certificate issued nor stop good ones.

v4 runs the test-only misbehaviour of trustchain.node.app (BYZANTINE_ENV): it
signs SCTs for another leaf than the committed one ("bad-scts") and sends 32 junk
SCTs per request with them, half in the honest validators' names ("flood-scts"), it accepts,
proposes and votes for requests that fail validation ("accept-invalid"), or it
signs two proposals in each of its rounds ("equivocate").
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from clusterkit import start_with_faults

from trustchain.consensus.proofs.codec import decode_bundle
from trustchain.node.cli import main
from trustchain.node.cli_cert import (
    ApiClient,
    ApiError,
    cluster_client,
    load_account,
    make_bundle_for,
    make_key_and_csr,
    request_certificate,
)
from trustchain.node.localcluster import load_endpoints

pytestmark = pytest.mark.slow
ZONE = "trust.hypermesh.online"


def test_one_byzantine_validator(tmp_path: Path) -> None:
    d = tmp_path / "c"
    cluster = start_with_faults(
        d, "v4", "bad-scts,flood-scts,accept-invalid", consensus="round_timeout = 0.3"
    )
    try:
        account = load_account(d / "accounts" / "demo.key")
        plot = d / "accounts" / "demo.plot"

        def issue(node: str, name: str) -> dict[str, object]:
            _, csr = make_key_and_csr([name])
            return request_certificate(cluster_client(d, node), account, plot, csr)

        # Good requests are issued, without the liar's SCTs.
        good = issue("v1", f"good.{ZONE}")
        assert good["signers"] == ["v1", "v2", "v3"], good["signers"]
        pem = d / "good.pem"
        pem.write_text(str(good["certificate"]))
        ct = load_endpoints(d)["v2"].ct_url
        args = ["--root", str(d / "ca" / "root.pem"), "--online", ct]
        args += ["--online-cafile", str(d / "tls" / "ca.pem")]
        assert main(["cert", "verify", str(pem), "--genesis", str(d / "genesis.toml"), *args]) == 0
        size = cluster_client(d, "v1").call("GET", "/health")["log_size"]

        # A request with a bundle made for another CSR, through the Byzantine node,
        # which submits it and proposes it: the honest validators never vote for it.
        byz = cluster_client(d, "v4")
        _, csr = make_key_and_csr([f"bad.{ZONE}"])
        _, other = make_key_and_csr([f"other.{ZONE}"])
        bundle = make_bundle_for(byz, account, plot, other)
        body = {
            "csr": base64.b64encode(csr).decode(),
            "account": decode_bundle(bundle).account.hex(),
            "bundle": base64.b64encode(bundle).decode(),
        }
        short = ApiClient(byz.url, byz.cafile, byz.client_cert, byz.client_key, timeout=8)
        with pytest.raises(ApiError):
            short.call("POST", "/v1/issue", body)

        # Meanwhile and afterwards, good requests through honest nodes go on.
        after = issue("v2", f"after.{ZONE}")
        assert after["signers"] == ["v1", "v2", "v3"]
        for node in ("v1", "v2", "v3"):
            health = cluster_client(d, node).call("GET", "/health")
            assert health["log_size"] == size + 1, (node, health)
        # The variant really ran.
        modes = [
            e for e in cluster.node("v4").events() if e.get("event") == "node.byzantine_test_mode"
        ]
        assert modes and modes[0]["modes"] == ["accept-invalid", "bad-scts", "flood-scts"]
    finally:
        statuses = cluster.stop()
    assert statuses == {"v1": 0, "v2": 0, "v3": 0, "v4": 0}, statuses


def test_equivocating_leader_is_caught_and_issuance_goes_on(tmp_path: Path) -> None:
    d = tmp_path / "c"
    cluster = start_with_faults(d, "v4", "equivocate", consensus="round_timeout = 0.3")
    try:
        # v4 signs two proposals in each of its rounds: every honest node sees both,
        # submits the evidence, and the committed evidence names v4 everywhere.
        deadline = time.monotonic() + 30
        while True:
            punished = {
                n: cluster_client(d, n).call("GET", "/health")["punished"]
                for n in ("v1", "v2", "v3")
            }
            if all(p == ["v4"] for p in punished.values()):
                break
            assert time.monotonic() < deadline, punished
            time.sleep(0.3)
        _, csr = make_key_and_csr([f"still.{ZONE}"])
        account = load_account(d / "accounts" / "demo.key")
        doc = request_certificate(
            cluster_client(d, "v2"), account, d / "accounts" / "demo.plot", csr
        )
        assert len(doc["signers"]) >= 3
        warnings = [
            e for e in cluster.node("v1").events() if e.get("event") == "consensus.equivocation"
        ]
        assert warnings and warnings[0]["validator"] == "v4"
    finally:
        statuses = cluster.stop()
    assert statuses == {"v1": 0, "v2": 0, "v3": 0, "v4": 0}, statuses
