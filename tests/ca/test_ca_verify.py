"""`cert verify` checks: each failure the issue lists, offline and online."""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.server
import json
import socket
import threading
from collections.abc import Iterator

import pytest
import trio
from cakit import NOW, SoftCluster, issue, make_csr, scts_for, soft_cluster
from cryptography.hazmat.primitives.asymmetric import ec

from trustchain.ct import checkpoint as ctcp
from trustchain.ct.merkle import MemoryTree
from trustchain.ct.sct import SignedCertificateTimestamp, TimestampedEntry, merkle_tree_leaf
from trustchain.ct.signer import SoftwareSigner
from trustchain.node.ca import certbuild, profiles
from trustchain.node.ca.certbuild import TBSCertificate
from trustchain.node.ca.issuance import Precertificate, check_csr, final_tbs
from trustchain.node.ca.revocation import (
    CRLError,
    RevocationReason,
    RevocationRecord,
    check_crl,
    record_for,
    sign_crl,
)
from trustchain.node.ca.verify import Report, Verifier, check_online, http_fetch

LATER = NOW + dt.timedelta(hours=1)


@pytest.fixture
async def cluster() -> SoftCluster:
    return await soft_cluster()


async def forge(
    cluster: SoftCluster, precert: Precertificate, scts: list[SignedCertificateTimestamp]
) -> bytes:
    """A final certificate with exactly these SCTs (bypassing the issuance checks)."""
    signer, _ = cluster.issuers["v1"]
    return await certbuild.sign_tbs_bytes(signer, final_tbs(precert.der, scts), signer.scheme)


def check(cluster: SoftCluster, cert: bytes, at: dt.datetime = LATER, **kw: object) -> Report:
    report, _ = Verifier(cluster.root.der, cluster.genesis).verify([cert], at, **kw)  # type: ignore[arg-type]
    return report


def failure(report: Report) -> tuple[str, str]:
    assert report.failure is not None, [c.detail for c in report.checks]
    return report.failure.name, report.failure.detail


async def test_a_good_certificate_passes_every_check(cluster: SoftCluster) -> None:
    _, _, final = await issue(cluster, ["www.trust.example"])
    report = check(cluster, final.der)
    assert report.ok
    assert [c.name for c in report.checks] == [
        "certificate",
        "root",
        "issuer",
        "intermediate",
        "signature",
        "validity",
        "names",
        "scts",
        "quorum",
    ]


async def test_missing_sct_breaks_the_quorum(cluster: SoftCluster) -> None:
    precert, scts, _ = await issue(cluster, ["www.trust.example"])
    cert = await forge(cluster, precert, scts[:2])
    name, detail = failure(check(cluster, cert))
    assert name == "quorum" and "2 of 4 voting power" in detail


async def test_sct_from_a_non_validator(cluster: SoftCluster) -> None:
    precert, scts, _ = await issue(cluster, ["www.trust.example"])
    cluster.logs["mallory"] = SoftwareSigner(ec.generate_private_key(ec.SECP256R1()))
    foreign = await scts_for(cluster, precert, ["mallory"])
    cert = await forge(cluster, precert, [*scts, *foreign])
    name, detail = failure(check(cluster, cert))
    assert name == "scts" and "SCT 4 of 4" in detail and "not a validator's CT log" in detail


async def test_duplicate_sct_is_not_counted_twice(cluster: SoftCluster) -> None:
    precert, _, _ = await issue(cluster, ["www.trust.example"])
    scts = await scts_for(cluster, precert, ["v1", "v2", "v2"])
    cert = await forge(cluster, precert, scts)
    name, detail = failure(check(cluster, cert))
    assert name == "scts" and "second SCT from validator v2" in detail


async def test_tampered_sct(cluster: SoftCluster) -> None:
    precert, scts, _ = await issue(cluster, ["www.trust.example"])
    raw = bytearray(scts[1].signature.signature)
    raw[10] ^= 0x40
    bad = dataclasses.replace(
        scts[1], signature=dataclasses.replace(scts[1].signature, signature=bytes(raw))
    )
    cert = await forge(cluster, precert, [scts[0], bad, scts[2]])
    name, detail = failure(check(cluster, cert))
    assert name == "scts" and "SCT 2 from validator v2" in detail and "does not verify" in detail
    # An SCT signed over another certificate does not verify either.
    _, other_scts, _ = await issue(cluster, ["other.trust.example"])
    cert = await forge(cluster, precert, [scts[0], other_scts[1], scts[2]])
    assert failure(check(cluster, cert))[0] == "scts"


async def test_sct_from_the_future_and_scts_that_disagree(cluster: SoftCluster) -> None:
    precert, scts, _ = await issue(cluster, ["www.trust.example"])
    future = int((LATER + dt.timedelta(minutes=5)).timestamp() * 1000)
    late = await scts_for(cluster, precert, ["v1", "v2", "v3"], timestamp=future)
    name, detail = failure(check(cluster, await forge(cluster, precert, late)))
    assert name == "scts" and "dated in the future" in detail
    mixed = [scts[0], scts[1], (await scts_for(cluster, precert, ["v3"], index=9))[0]]
    name, detail = failure(check(cluster, await forge(cluster, precert, mixed)))
    assert name == "scts" and "different log entries" in detail


async def test_expired_and_not_yet_valid(cluster: SoftCluster) -> None:
    _, _, final = await issue(cluster, ["www.trust.example"], days=30)
    name, detail = failure(check(cluster, final.der, at=NOW + dt.timedelta(days=31)))
    assert name == "validity" and "the certificate expired at" in detail
    name, detail = failure(check(cluster, final.der, at=NOW - dt.timedelta(minutes=1)))
    assert name == "validity" and "not valid before" in detail


async def test_wrong_root(cluster: SoftCluster) -> None:
    _, _, final = await issue(cluster, ["www.trust.example"])
    other = await soft_cluster(new_root_key=True)
    # The genesis pins the cluster's root: another root is refused by name.
    report, _ = Verifier(other.root.der, cluster.genesis).verify([final.der], LATER)
    name, detail = failure(report)
    assert name == "root" and "is not the root the genesis pins" in detail
    # Without a pin, the intermediate does not chain to the root given.
    unpinned = dataclasses.replace(cluster.genesis, root_sha256=None)
    report, _ = Verifier(other.root.der, unpinned).verify([final.der], LATER)
    name, detail = failure(report)
    assert name == "intermediate" and "is not signed by the root" in detail


async def test_revoked_serial_on_the_crl(cluster: SoftCluster) -> None:
    _, _, final = await issue(cluster, ["www.trust.example"])
    _, _, kept = await issue(cluster, ["ok.trust.example"])
    signer, issuer = cluster.issuers["v1"]
    record = record_for(final.der, RevocationReason.KEY_COMPROMISE, NOW + dt.timedelta(minutes=1))
    crl = await sign_crl(signer, issuer, [record], this_update=NOW, number=1)
    name, detail = failure(check(cluster, final.der, crls=[crl]))
    assert name == "revocation" and "was revoked" in detail and "keyCompromise" in detail
    assert check(cluster, kept.der, crls=[crl]).ok
    # A CRL for this intermediate signed by another key proves nothing.
    other_signer, _ = cluster.issuers["v2"]
    forged = await certbuild.sign_tbs_bytes(
        other_signer,
        certbuild.certificate_parts(crl)[0],
        other_signer.scheme,
    )
    name, detail = failure(check(cluster, final.der, crls=[forged]))
    assert name == "revocation" and "signature does not verify" in detail
    name, detail = failure(check(cluster, final.der, at=NOW + dt.timedelta(days=8), crls=[crl]))
    assert name == "revocation" and "out of date" in detail
    with pytest.raises(CRLError, match="none of the CRLs"):
        check_crl([crl], cluster.issuers["v2"][1], 1, LATER)


async def test_precertificates_and_certificates_without_scts_are_refused(
    cluster: SoftCluster,
) -> None:
    precert, _, _ = await issue(cluster, ["www.trust.example"])
    name, detail = failure(check(cluster, precert.der))
    assert name == "certificate" and "precertificate" in detail
    # The precertificate's TBS without poison, signed: a certificate with no SCTs.
    parts = certbuild.TBSParts.split(certbuild.certificate_parts(precert.der)[0])
    at = parts.index_of(profiles.POISON.oid.dotted_string)
    assert at is not None
    del parts.extensions[at]
    signer, _ = cluster.issuers["v1"]
    bare = await certbuild.sign_tbs_bytes(signer, parts.encode(), signer.scheme)
    name, detail = failure(check(cluster, bare))
    assert name == "scts" and "no SCT list" in detail


async def test_name_outside_the_intermediates_constraints(cluster: SoftCluster) -> None:
    narrow = await soft_cluster()
    # An intermediate constrained to trust.example signs a name outside it,
    # bypassing the issuance checks that would refuse it.
    signer, _ = narrow.issuers["v1"]
    root_signer = narrow.root_signer
    tbs = profiles.intermediate_tbs(
        narrow.root,
        signer.public_key(),
        common_name="Narrow",
        zones=["trust.example"],
        not_before=NOW - dt.timedelta(days=1),
    )
    narrow_issuer = profiles.CACertificate.from_der(
        await certbuild.sign_certificate(root_signer, tbs)
    )
    csr, _ = make_csr(["x.other.example"])
    checked = check_csr(csr, narrow.policy)
    leaf = TBSCertificate(
        serial=12345,
        scheme=narrow_issuer.scheme,
        issuer=narrow_issuer.subject,
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=10),
        subject=profiles.leaf_subject(checked.dns_names),
        spki=checked.spki,
        extensions=(
            *profiles.leaf_extensions(
                narrow_issuer, checked.public_key, checked.dns_names, crl_url=None
            ),
            profiles.POISON,
        ),
    )
    from trustchain.ct.precert import precert_entry

    der = await certbuild.sign_certificate(signer, leaf)
    precert = Precertificate(
        der, 12345, narrow_issuer, precert_entry([der, narrow_issuer.der], psc=False)
    )
    scts = await scts_for(narrow, precert, ["v1", "v2", "v3"])
    cert = await certbuild.sign_tbs_bytes(signer, final_tbs(der, scts), signer.scheme)
    report, _ = Verifier(narrow.root.der, narrow.genesis).verify([cert, narrow_issuer.der], LATER)
    name, detail = failure(report)
    assert name == "names" and "x.other.example is outside" in detail


async def test_signature_by_the_wrong_key_and_unknown_issuer(cluster: SoftCluster) -> None:
    precert, scts, _ = await issue(cluster, ["www.trust.example"])
    wrong_signer, _ = cluster.issuers["v2"]
    cert = await certbuild.sign_tbs_bytes(
        wrong_signer, final_tbs(precert.der, scts), wrong_signer.scheme
    )
    name, detail = failure(check(cluster, cert))
    assert name == "signature" and "does not verify" in detail
    stranger = await soft_cluster()
    _, _, foreign = await issue(stranger, ["www.trust.example"])
    unpinned = dataclasses.replace(cluster.genesis, root_sha256=None)
    report, _ = Verifier(cluster.root.der, unpinned).verify([foreign.der], LATER)
    name, detail = failure(report)
    assert name == "issuer" and "neither in the file nor among the intermediates" in detail


def test_revocation_reasons_follow_the_baseline_requirements() -> None:
    assert RevocationReason.parse("keyCompromise") is RevocationReason.KEY_COMPROMISE
    with pytest.raises(ValueError, match=r"BR 7\.2\.2"):
        RevocationRecord(1, b"k", NOW, RevocationReason.CERTIFICATE_HOLD)
    with pytest.raises(ValueError, match="unknown revocation reason"):
        RevocationReason.parse("bored")
    for forbidden in ("removeFromCRL", "8", "certificateHold", "cACompromise", "aACompromise"):
        with pytest.raises(
            ValueError, match=r"not allowed for a subscriber certificate .*BR 7\.2\.2"
        ):
            RevocationReason.parse(forbidden)


# --- online ---------------------------------------------------------------------------------


class _StatusServer(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    documents: dict[str, object]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _StatusServer

    def do_GET(self) -> None:
        doc = self.server.documents.get(self.path)
        body = json.dumps(doc).encode()
        self.send_response(200 if doc is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def status_server() -> Iterator[_StatusServer]:
    server = _StatusServer(("::1", 0), _Handler)
    server.documents = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


async def _logged(cluster: SoftCluster, cosigners: list[str]) -> tuple[bytes, dict[str, object]]:
    """Issue a certificate at leaf 3 of a 6-leaf log and build its status answer."""
    precert, scts, final = await issue(cluster, ["www.trust.example"], index=3)
    tree = MemoryTree.empty()
    for i in range(6):
        if i == 3:
            tree.append(
                merkle_tree_leaf(
                    TimestampedEntry(scts[0].timestamp, precert.entry, scts[0].extensions)
                )
            )
        else:
            tree.append(b"other leaf %d" % i)
    origin = "trust.example/ct"
    cp = ctcp.Checkpoint(origin, tree.size, tree.root())
    ts = int(LATER.timestamp() * 1000)
    signers = [ctcp.RFC6962NoteSigner(origin, cluster.logs[n], ts) for n in cosigners]
    note = await ctcp.sign_checkpoint(cp, signers)
    import base64

    doc: dict[str, object] = {
        "serial": f"{precert.serial:x}",
        "revoked": False,
        "inclusion_proof": [base64.b64encode(h).decode() for h in tree.inclusion_proof(3, 6)],
        "checkpoint": note.decode(),
    }
    return final.der, doc


async def _online(cluster: SoftCluster, cert: bytes, url: str) -> Report:
    report, verified = Verifier(cluster.root.der, cluster.genesis).verify([cert], LATER)
    assert verified is not None
    return await trio.to_thread.run_sync(
        check_online, report, verified, cluster.genesis, url, http_fetch(timeout=5)
    )


async def test_online_inclusion_and_status(
    cluster: SoftCluster, status_server: _StatusServer
) -> None:
    cert, doc = await _logged(cluster, ["v1", "v2", "v4"])
    serial = doc["serial"]
    url = f"http://[::1]:{status_server.server_address[1]}"
    status_server.documents[f"/ca/v1/status/{serial}"] = doc
    report = await _online(cluster, cert, url)
    assert report.ok, report.failure
    assert [c.name for c in report.checks][-4:] == [
        "online",
        "checkpoint",
        "inclusion",
        "revocation",
    ]

    status_server.documents[f"/ca/v1/status/{serial}"] = {
        **doc,
        "revoked": True,
        "revocation": {"reason": "keyCompromise", "time": "2025-06-01T13:00:00Z"},
    }
    name, detail = failure(await _online(cluster, cert, url))
    assert name == "revocation" and "keyCompromise" in detail

    proof = list(doc["inclusion_proof"])  # type: ignore[call-overload]
    proof[0], proof[1] = proof[1], proof[0]
    status_server.documents[f"/ca/v1/status/{serial}"] = {**doc, "inclusion_proof": proof}
    name, detail = failure(await _online(cluster, cert, url))
    assert name == "inclusion" and "does not lead to the root" in detail


async def test_online_checkpoint_needs_a_quorum(
    cluster: SoftCluster, status_server: _StatusServer
) -> None:
    cert, doc = await _logged(cluster, ["v1", "v2"])
    status_server.documents[f"/ca/v1/status/{doc['serial']}"] = doc
    url = f"http://[::1]:{status_server.server_address[1]}"
    name, detail = failure(await _online(cluster, cert, url))
    assert name == "checkpoint" and "2 of 4" in detail


async def test_online_server_missing_or_unknown_serial(
    cluster: SoftCluster, status_server: _StatusServer
) -> None:
    cert, _ = await _logged(cluster, ["v1", "v2", "v3"])
    url = f"http://[::1]:{status_server.server_address[1]}"
    name, detail = failure(await _online(cluster, cert, url))
    assert name == "online" and "HTTP 404" in detail
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        closed = s.getsockname()[1]
    name, detail = failure(await _online(cluster, cert, f"http://[::1]:{closed}"))
    assert name == "online" and "cannot reach" in detail
