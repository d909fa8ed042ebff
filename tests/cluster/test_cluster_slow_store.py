"""An issuing node answers once a quorum cosigned the tree, not once its own CT store
caught up; its status lookups still prove inclusion, waiting for its store.

v1 runs the test-only fault "slow-store" of trustchain.node.app (BYZANTINE_ENV):
each of its CT store rounds starts half a second late.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
from pathlib import Path

import pytest
from clusterkit import issued_leaf_hash, start_with_faults

from trustchain.ct.checkpoint import parse_checkpoint
from trustchain.ct.merkle import verify_inclusion
from trustchain.ct.note import parse_note
from trustchain.node.cli_cert import (
    cluster_client,
    load_account,
    make_key_and_csr,
    request_certificate,
)
from trustchain.node.localcluster import load_endpoints

pytestmark = pytest.mark.slow
ZONE = "trust.hypermesh.online"


def test_answer_before_the_slow_store_and_status_waits_for_it(tmp_path: Path) -> None:
    d = tmp_path / "c"
    cluster = start_with_faults(d, "v1", "slow-store")
    try:
        account = load_account(d / "accounts" / "demo.key")
        _, csr = make_key_and_csr([f"slow.{ZONE}"])
        plot = d / "accounts" / "demo.plot"
        doc = request_certificate(cluster_client(d, "v1"), account, plot, csr)
        leaf_index = int(str(doc["leaf_index"]))
        answered = parse_checkpoint(parse_note(str(doc["checkpoint"])).text)
        assert answered.size > leaf_index

        # At once, v1's public status answer proves the entry against a cosigned
        # checkpoint its store holds (the lookup waited for the late store round).
        ct = load_endpoints(d)["v1"].ct_url
        context = ssl.create_default_context(cafile=str(d / "tls" / "ca.pem"))
        url = f"{ct}/ca/v1/status/{doc['serial']}"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            status = json.loads(response.read())
        cp = parse_checkpoint(parse_note(status["checkpoint"]).text)
        assert cp.size > leaf_index, (cp.size, leaf_index)
        proof = [base64.b64decode(h) for h in status["inclusion_proof"]]
        verify_inclusion(leaf_index, cp.size, issued_leaf_hash(doc), proof, cp.root_hash)

        # The answer left before v1's store held the entry: its node log says so.
        events = cluster.node("v1").events()
        issued = next(e for e in events if e.get("event") == "app.issued")
        logged = next(
            e for e in events if e.get("event") == "app.logged" and e["log_size"] > leaf_index
        )
        assert issued["ts"] < logged["ts"], (issued, logged)
    finally:
        statuses = cluster.stop()
    assert statuses == {"v1": 0, "v2": 0, "v3": 0, "v4": 0}, statuses
