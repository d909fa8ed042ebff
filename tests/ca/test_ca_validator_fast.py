"""A validator's fast paths give exactly what the plain ones give (node/ca/issuance.py).

The validator builds a precertificate's log entry from the TBS it rebuilt
instead of cutting the poison out of the signed DER (RFC 6962 section 3.2);
these tests compare the two on many requests, key types and policies.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets

import pytest
from cakit import NOW, SoftCluster, make_csr, soft_cluster
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from trustchain.ct.precert import precert_entry
from trustchain.node.ca import certbuild
from trustchain.node.ca.issuance import (
    IssuanceError,
    PrecertRequest,
    check_csr,
    check_precertificate,
    issue_precertificate,
    precertificate_tbs,
)
from trustchain.node.ca.profiles import CAPolicy

POLICY = CAPolicy(zones=("trust.example", "other.example"), allow_wildcards=True)
WITH_CRL = dataclasses.replace(POLICY, crl_url="http://crl.trust.example/")

KEYS = [
    lambda: ec.generate_private_key(ec.SECP256R1()),
    lambda: ec.generate_private_key(ec.SECP384R1()),
    ed25519.Ed25519PrivateKey.generate,
    lambda: rsa.generate_private_key(65537, 2048),
]
NAMES = [
    ["a.trust.example"],
    ["*.shop.trust.example"],
    ["x.other.example", "y.trust.example", "z.trust.example"],
    [f"h{i}.trust.example" for i in range(20)],
]


@pytest.fixture
async def cluster() -> SoftCluster:
    return await soft_cluster(policy=POLICY)


@pytest.mark.parametrize("policy", [POLICY, WITH_CRL], ids=["no-crl", "crl"])
async def test_precert_entry_from_the_rebuilt_tbs_equals_the_cut_one(
    cluster: SoftCluster, policy: CAPolicy
) -> None:
    for i in range(len(KEYS) * len(NAMES)):
        key = KEYS[i % len(KEYS)]()
        csr, _ = make_csr(NAMES[i // len(KEYS)], key)
        start = NOW.replace(microsecond=0) - dt.timedelta(seconds=i)
        request = PrecertRequest(
            check_csr(csr, policy),
            secrets.token_bytes(16 + i % 3),
            start,
            start + dt.timedelta(days=1 + i) - dt.timedelta(seconds=1),
        )
        signer, issuer = cluster.issuers[f"v{1 + i % 4}"]
        issued = await issue_precertificate(signer, issuer, request, policy)
        plain = precert_entry([issued.der, issuer.der], psc=False)
        assert issued.entry == plain
        checked = check_precertificate(issued.der, issuer, request, policy)
        assert checked.entry == plain
        assert checked.serial == issued.serial == precertificate_tbs(issuer, request, policy).serial
        signed, logged = precertificate_tbs(issuer, request, policy).encode_precertificate()
        assert signed == precertificate_tbs(issuer, request, policy).encode()
        assert certbuild.certificate_parts(issued.der)[0] == signed
        assert logged == plain.certificate


async def test_a_tbs_without_extensions_is_no_precertificate(cluster: SoftCluster) -> None:
    _, issuer = cluster.issuers["v1"]
    csr, _ = make_csr(["a.trust.example"])
    end = NOW + dt.timedelta(days=1)
    tbs = precertificate_tbs(
        issuer, PrecertRequest(check_csr(csr, POLICY), b"n" * 16, NOW, end), POLICY
    )
    with pytest.raises(certbuild.BuildError, match="poison"):
        dataclasses.replace(tbs, extensions=()).encode_precertificate()
    # With only the poison, the logged TBS has no [3] at all (SIZE (1..MAX)).
    only = dataclasses.replace(tbs, extensions=tbs.extensions[-1:])
    signed, logged = only.encode_precertificate()
    assert signed == only.encode()
    assert logged == dataclasses.replace(tbs, extensions=()).encode()


async def test_a_corrupted_precertificate_is_refused_as_before(cluster: SoftCluster) -> None:
    signer, issuer = cluster.issuers["v2"]
    csr, _ = make_csr(["a.trust.example"])
    end = NOW + dt.timedelta(days=1)
    request = PrecertRequest(check_csr(csr, POLICY), secrets.token_bytes(16), NOW, end)
    der = (await issue_precertificate(signer, issuer, request, POLICY)).der
    for at in range(0, len(der), 7):
        bad = der[:at] + bytes([der[at] ^ 0x01]) + der[at + 1 :]
        with pytest.raises(IssuanceError, match=r"^precertificate: "):
            check_precertificate(bad, issuer, request, POLICY)
    for cut in range(0, len(der), 13):
        with pytest.raises(IssuanceError, match=r"^precertificate: "):
            check_precertificate(der[:cut], issuer, request, POLICY)
