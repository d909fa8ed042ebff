"""One Verifier for many certificates: what it keeps never stands in for a check.

A Verifier keeps, per intermediate (by its exact DER), whether the root signed
it and its key, and per validator its prepared CT log key.  Each certificate's
own signature, every SCT, the validity and the quorum are checked on every
call; these tests interleave good and bad certificates on one Verifier.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cakit import NOW, SoftCluster, issue, soft_cluster

from trustchain.ct.sct import SignedCertificateTimestamp
from trustchain.node.ca import certbuild
from trustchain.node.ca.issuance import Precertificate, final_tbs
from trustchain.node.ca.verify import Report, Verifier

LATER = NOW + dt.timedelta(hours=1)


async def forge(
    cluster: SoftCluster, precert: Precertificate, scts: list[SignedCertificateTimestamp]
) -> bytes:
    """A final certificate by v1 with exactly these SCTs (bypassing the issuance checks)."""
    signer, _ = cluster.issuers["v1"]
    return await certbuild.sign_tbs_bytes(signer, final_tbs(precert.der, scts), signer.scheme)


def failure(report: Report) -> tuple[str, str]:
    assert report.failure is not None, [c.detail for c in report.checks]
    return report.failure.name, report.failure.detail


@pytest.fixture
async def cluster() -> SoftCluster:
    return await soft_cluster()


def _flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


async def test_bad_certificates_fail_after_good_ones_from_the_same_intermediate(
    cluster: SoftCluster,
) -> None:
    verifier = Verifier(cluster.root.der, cluster.genesis)
    precert, scts, final = await issue(cluster, ["a.trust.example"], signers=["v1", "v2", "v3"])
    _, _, other = await issue(cluster, ["b.trust.example"], signers=["v2", "v3", "v4"])
    assert verifier.verify([final.der], LATER)[0].ok
    assert verifier.verify([other.der], LATER)[0].ok

    # The leaf's signature: the last byte of its signature value.
    report, verified = verifier.verify([_flip(final.der, len(final.der) - 1)], LATER)
    assert failure(report)[0] == "signature" and verified is None

    # A tampered SCT, and an SCT over another certificate, from validators seen before.
    raw = bytearray(scts[2].signature.signature)
    raw[12] ^= 0x20
    bad = dataclasses.replace(
        scts[2], signature=dataclasses.replace(scts[2].signature, signature=bytes(raw))
    )
    name, detail = failure(
        verifier.verify([await forge(cluster, precert, [*scts[:2], bad])], LATER)[0]
    )
    assert name == "scts" and "SCT 3 from validator v3" in detail and "does not verify" in detail
    _, foreign, _ = await issue(cluster, ["c.trust.example"])
    mixed = await forge(cluster, precert, [scts[0], foreign[1], scts[2]])
    name, detail = failure(verifier.verify([mixed], LATER)[0])
    assert name == "scts" and "SCT 2 from validator v2" in detail

    # Quorum and validity are per certificate too.
    name, detail = failure(verifier.verify([await forge(cluster, precert, scts[:2])], LATER)[0])
    assert name == "quorum"
    name, _ = failure(verifier.verify([final.der], NOW + dt.timedelta(days=31))[0])
    assert name == "validity"

    # And the good certificates still pass.
    assert verifier.verify([final.der], LATER)[0].ok
    assert verifier.verify([other.der], LATER)[0].ok


async def test_a_forged_copy_of_a_known_intermediate_is_checked_on_its_own(
    cluster: SoftCluster,
) -> None:
    """Same subject and key identifier, different bytes: not the intermediate seen before."""
    verifier = Verifier(cluster.root.der, cluster.genesis)
    _, _, final = await issue(cluster, ["a.trust.example"])
    assert verifier.verify([final.der], LATER)[0].ok
    genuine = cluster.issuers["v1"][1].der
    forged = _flip(genuine, len(genuine) - 1)  # its signature by the root
    name, detail = failure(verifier.verify([final.der, forged], LATER)[0])
    assert name == "intermediate" and "is not signed by the root" in detail
    # The genuine one, in the file or from the genesis, still works.
    assert verifier.verify([final.der, genuine], LATER)[0].ok
    assert verifier.verify([final.der], LATER)[0].ok


async def test_a_certificate_signed_by_another_intermediate_key(cluster: SoftCluster) -> None:
    verifier = Verifier(cluster.root.der, cluster.genesis)
    precert, scts, final = await issue(cluster, ["a.trust.example"])
    assert verifier.verify([final.der], LATER)[0].ok
    wrong, _ = cluster.issuers["v2"]
    cert = await certbuild.sign_tbs_bytes(wrong, final_tbs(precert.der, scts), wrong.scheme)
    name, detail = failure(verifier.verify([cert], LATER)[0])
    assert name == "signature" and "does not verify" in detail


async def test_malformed_certificates_are_named_not_crashed_on(cluster: SoftCluster) -> None:
    verifier = Verifier(cluster.root.der, cluster.genesis)
    _, _, final = await issue(cluster, ["a.trust.example"])
    for data in (b"", final.der[:-10], final.der + b"\x00", b"\x30\x03\x02\x01\x01"):
        report, verified = verifier.verify([data], LATER)
        assert failure(report)[0] == "certificate" and verified is None
    assert verifier.verify([final.der], LATER)[0].ok
