"""A validator's fast paths give exactly what the plain ones give (node/ca/issuance.py).

The validator builds a precertificate's log entry from the TBS it rebuilt
instead of cutting the poison out of the signed DER (RFC 6962 section 3.2), and
verifies an ECDSA CSR's signature with the key it already parsed instead of
``is_signature_valid``; these tests compare each with the plain way on many
requests, key types, policies and corrupted inputs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets

import pytest
from cakit import CSR_KEYS, NOW, SoftCluster, make_csr, soft_cluster
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from trustchain.ct.precert import precert_entry
from trustchain.node.ca import certbuild
from trustchain.node.ca.der import bit_string as der_bit_string
from trustchain.node.ca.der import seq as der_seq
from trustchain.node.ca.issuance import (
    IssuanceError,
    PrecertRequest,
    _check_csr,
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


# --- the CSR's proof of possession ----------------------------------------------------


def _der_csr(names: list[str], key: object = None) -> bytes:
    pem, _ = make_csr(names, key)
    return x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)


def _csr_verdict(data: bytes, *, fast: bool) -> object:
    try:
        return _check_csr(data, POLICY, fast=fast)
    except IssuanceError as exc:
        return (type(exc).__name__, exc.check, str(exc))


@CSR_KEYS
def test_proof_of_possession_fast_path_gives_the_plain_verdict(key: object) -> None:
    der = _der_csr(["a.trust.example", "b.other.example"], key)
    assert _csr_verdict(der, fast=True) == _csr_verdict(der, fast=False)
    assert not isinstance(_csr_verdict(der, fast=True), tuple)
    verdicts: set[str] = set()
    for at in range(len(der)):
        for bit in (0x01, 0x80):
            bad = der[:at] + bytes([der[at] ^ bit]) + der[at + 1 :]
            fast = _csr_verdict(bad, fast=True)
            assert fast == _csr_verdict(bad, fast=False), (at, bit)
            verdicts.add(fast[2].split(" (")[0] if isinstance(fast, tuple) else "accepted")
    for cut in range(len(der)):
        assert _csr_verdict(der[:cut], fast=True) == _csr_verdict(der[:cut], fast=False)
    # The corruptions reached the signature check, not only the DER parser.
    assert "csr: the CSR's signature does not verify with its own key" in verdicts


def test_a_signature_algorithm_of_another_key_type_is_refused_by_both() -> None:
    """An ECDSA key whose CSR names an RSA or Ed25519 algorithm goes the plain way."""
    ec_der = _der_csr(["a.trust.example"])
    ed_der = _der_csr(["a.trust.example"], ed25519.Ed25519PrivateKey.generate())
    ec_csr = x509.load_der_x509_csr(ec_der)
    ed_csr = x509.load_der_x509_csr(ed_der)
    # The EC request's info with the Ed25519 request's algorithm and signature.
    ed_alg = certbuild.certificate_parts(ed_der)[1]
    mixed = der_seq(ec_csr.tbs_certrequest_bytes, ed_alg, der_bit_string(ed_csr.signature))
    assert _csr_verdict(mixed, fast=True) == _csr_verdict(mixed, fast=False)
    assert _csr_verdict(mixed, fast=True)[1] == "csr"  # type: ignore[index]
