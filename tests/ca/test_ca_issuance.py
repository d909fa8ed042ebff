"""Issuance: CSR checks, deterministic precertificates, final certificates from SCT quorums."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cakit import (
    CSR_KEYS,
    NOW,
    SoftCluster,
    issue,
    make_csr,
    scts_for,
    soft_cluster,
    validators_toml,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification

from trustchain.ct.precert import final_certificate_tbs, has_poison
from trustchain.ct.sct import SignedCertificateTimestamp, verify_sct
from trustchain.ct.signer import SoftwareSigner
from trustchain.node.ca import certbuild
from trustchain.node.ca.genesis import ca_section_toml
from trustchain.node.ca.issuance import (
    IssuanceError,
    PrecertRequest,
    check_csr,
    check_precertificate,
    final_tbs,
    issue_final,
    issue_precertificate,
    precertificate_tbs,
    serial_number,
)
from trustchain.node.ca.profiles import CAPolicy

POLICY = CAPolicy(zones=("trust.example", "other.example"), allow_wildcards=True)


@pytest.fixture
async def cluster() -> SoftCluster:
    return await soft_cluster()


# --- CSR checks -----------------------------------------------------------------------


@CSR_KEYS
def test_accepted_key_types(key: object) -> None:
    csr, _ = make_csr(["www.trust.example"], key)
    checked = check_csr(csr, POLICY)
    assert checked.dns_names == ("www.trust.example",)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (ec.generate_private_key(ec.SECP521R1()), "curve secp521r1 is not accepted"),
        (rsa.generate_private_key(65537, 1024), "RSA key of 1024 bits is too small"),
        (rsa.generate_private_key(3, 2048), "exponent must be 65537"),
    ],
    ids=["p521", "rsa1024", "rsa-e3"],
)
def test_refused_key_types(key: object, message: str) -> None:
    csr, _ = make_csr(["www.trust.example"], key)
    with pytest.raises(IssuanceError, match=message) as caught:
        check_csr(csr, POLICY)
    assert caught.value.check == "key"


def test_csr_signature_must_verify() -> None:
    csr_pem, _ = make_csr(["www.trust.example"])
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    tampered = der[:-3] + bytes([der[-3] ^ 0x01]) + der[-2:]
    with pytest.raises(IssuanceError, match="signature does not verify") as caught:
        check_csr(tampered, POLICY)
    assert caught.value.check == "csr"
    with pytest.raises(IssuanceError, match="not a PKCS #10"):
        check_csr(b"garbage", POLICY)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["www.evil.example"], "not under an allowed zone"),
        (["trust.example.evil"], "not under an allowed zone"),
        (["xtrust.example"], "not under an allowed zone"),
        (["a..trust.example"], "empty label"),
        (["-a.trust.example"], "not 1-63 letters"),
        (["a_b.trust.example"], "not 1-63 letters"),
        (["w*.trust.example"], "whole leftmost label"),
        (["xn--zz.trust.example"], "'xn--zz' is not a valid A-label"),
        (["xn--bcher-kva9.trust.example"], "is not a valid A-label"),
        (["*.trust.example"], "may not cover a whole zone"),
        (["a.trust.example", "A.trust.example"], "appears twice"),
        ([], "names no DNS name"),
    ],
)
def test_refused_names(names: list[str], message: str) -> None:
    csr, _ = make_csr(names)
    with pytest.raises(IssuanceError, match=message):
        check_csr(csr, POLICY)


def test_a_valid_a_label_is_certified() -> None:
    csr, _ = make_csr(["xn--bcher-kva.trust.example"])  # bücher
    assert check_csr(csr, POLICY).dns_names == ("xn--bcher-kva.trust.example",)


def test_wildcards_only_when_the_policy_allows() -> None:
    csr, _ = make_csr(["*.shop.trust.example"])
    assert check_csr(csr, POLICY).dns_names == ("*.shop.trust.example",)
    strict = dataclasses.replace(POLICY, allow_wildcards=False)
    with pytest.raises(IssuanceError, match="does not allow wildcards"):
        check_csr(csr, strict)


def test_names_are_lowercased_and_cn_must_be_a_san() -> None:
    csr, _ = make_csr(["WWW.Trust.Example"])
    assert check_csr(csr, POLICY).dns_names == ("www.trust.example",)
    csr, _ = make_csr(["www.trust.example"], cn="other.trust.example")
    with pytest.raises(IssuanceError, match=r"subject CN 'other\.trust\.example' is not in"):
        check_csr(csr, POLICY)


def test_only_dns_names_are_certified() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("a@trust.example")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(IssuanceError, match="only DNS names"):
        check_csr(csr.public_bytes(serialization.Encoding.PEM), POLICY)


# --- precertificates --------------------------------------------------------------------


def _request(names: list[str], nonce: bytes = b"n" * 16, days: int = 30) -> PrecertRequest:
    csr, _ = make_csr(names)
    end = NOW + dt.timedelta(days=days) - dt.timedelta(seconds=1)
    return PrecertRequest(check_csr(csr, POLICY), nonce, NOW, end)


async def test_precertificate_is_deterministic_and_serials_unique(cluster: SoftCluster) -> None:
    signer, issuer = cluster.issuers["v1"]
    request = _request(["a.trust.example"])
    again = dataclasses.replace(request)
    assert precertificate_tbs(issuer, request, POLICY).encode() == (
        precertificate_tbs(issuer, again, POLICY).encode()
    )
    other = dataclasses.replace(request, nonce=b"m" * 16)
    a = precertificate_tbs(issuer, request, POLICY)
    b = precertificate_tbs(issuer, other, POLICY)
    assert a.serial != b.serial
    assert 0 < a.serial < 1 << 127
    with pytest.raises(IssuanceError, match="at least 16 bytes"):
        serial_number(issuer.key_id, b"short")
    precert = await issue_precertificate(signer, issuer, request, POLICY)
    with pytest.raises(IssuanceError, match="already issued"):
        await issue_precertificate(signer, issuer, request, POLICY, issued_serials={a.serial})
    # A validator rebuilds it from the request and accepts it (DESIGN.md step 3)...
    assert check_precertificate(precert.der, issuer, request, POLICY).serial == a.serial
    # ...and refuses one that does not match the request.
    with pytest.raises(IssuanceError, match="does not match"):
        check_precertificate(precert.der, issuer, other, POLICY)


async def test_precertificate_profile(cluster: SoftCluster) -> None:
    signer, issuer = cluster.issuers["v1"]
    precert = await issue_precertificate(
        signer, issuer, _request(["a.trust.example", "b.other.example"]), POLICY
    )
    cert = x509.load_der_x509_certificate(precert.der)
    assert has_poison(cert)
    poison = cert.extensions.get_extension_for_class(x509.PrecertPoison)
    assert poison.critical
    cert.verify_directly_issued_by(issuer.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.trust.example", "b.other.example"]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == issuer.key_id
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha384"


async def test_names_too_long_for_a_common_name(cluster: SoftCluster) -> None:
    signer, issuer = cluster.issuers["v1"]
    long = f"{'a' * 50}.{'b' * 20}.trust.example"  # 86 characters: a CN holds 64
    mixed = await issue_precertificate(
        signer, issuer, _request([long, "short.trust.example"]), POLICY
    )
    cert = x509.load_der_x509_certificate(mixed.der)
    # BR 7.1.2.7.2: the CN repeats a SAN entry, here the first one that fits.
    assert cert.subject.rfc4514_string() == "CN=short.trust.example"
    assert not cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    request = _request([long])
    only_long = await issue_precertificate(signer, issuer, request, POLICY)
    cert = x509.load_der_x509_certificate(only_long.der)
    # RFC 5280 section 4.2.1.6: an empty subject makes the SAN extension critical.
    assert len(cert.subject) == 0
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.DNSName) == [long]
    assert check_precertificate(only_long.der, issuer, request, POLICY)  # validators agree


async def test_validity_limits(cluster: SoftCluster) -> None:
    _, issuer = cluster.issuers["v1"]
    with pytest.raises(IssuanceError, match="longer than the policy maximum of 90"):
        precertificate_tbs(issuer, _request(["a.trust.example"], days=91), POLICY)
    late = dataclasses.replace(
        _request(["a.trust.example"]), not_after=issuer.not_after + dt.timedelta(seconds=1)
    )
    late = dataclasses.replace(late, not_before=late.not_after - dt.timedelta(days=10))
    with pytest.raises(IssuanceError, match="rotate the intermediate"):
        precertificate_tbs(issuer, late, POLICY)


async def test_signer_must_hold_the_intermediate_key(cluster: SoftCluster) -> None:
    signer, _ = cluster.issuers["v2"]
    _, issuer = cluster.issuers["v1"]
    with pytest.raises(IssuanceError, match="not the intermediate certificate's key"):
        await issue_precertificate(signer, issuer, _request(["a.trust.example"]), POLICY)


# --- final certificates -------------------------------------------------------------------


async def test_final_certificate_embeds_a_quorum_of_scts(cluster: SoftCluster) -> None:
    precert, _, final = await issue(cluster, ["www.trust.example"], signers=["v3", "v1", "v2"])
    cert = x509.load_der_x509_certificate(final.der)
    assert not has_poison(cert)
    assert cert.serial_number == precert.serial
    # RFC 6962 section 3.3: without the SCT list it is the TBS the SCTs signed.
    assert final_certificate_tbs(final.der) == precert.entry.certificate
    embedded = cert.extensions.get_extension_for_class(
        x509.PrecertificateSignedCertificateTimestamps
    )
    assert not embedded.critical and len(embedded.value) == 3
    assert final.signers == ("v1", "v2", "v3")  # genesis order
    assert final.power == 3 and final.rejected == ()
    _, issuer = cluster.issuers["v1"]
    cert.verify_directly_issued_by(issuer.cert)
    for sct in final.scts:
        v = cluster.genesis.validator_for_log_id(sct.log_id)
        assert v is not None and v.log_key is not None
        verify_sct(sct, precert.entry, v.log_key)


async def test_two_of_four_is_not_a_quorum(cluster: SoftCluster) -> None:
    precert, _, _ = await issue(cluster, ["a.trust.example"])
    signer, _ = cluster.issuers["v1"]
    scts = await scts_for(cluster, precert, ["v1", "v2"])
    with pytest.raises(IssuanceError, match="hold 2 of 4 voting power") as caught:
        await issue_final(signer, precert, scts, cluster.genesis)
    assert caught.value.check == "sct quorum"


async def test_a_duplicate_sct_counts_once(cluster: SoftCluster) -> None:
    precert, _, _ = await issue(cluster, ["a.trust.example"])
    signer, _ = cluster.issuers["v1"]
    scts = await scts_for(cluster, precert, ["v1", "v2", "v2"])
    with pytest.raises(IssuanceError, match="second SCT from validator v2"):
        await issue_final(signer, precert, scts, cluster.genesis)


async def test_bad_scts_are_left_out_when_the_rest_is_a_quorum(cluster: SoftCluster) -> None:
    precert, _, _ = await issue(cluster, ["a.trust.example"])
    signer, _ = cluster.issuers["v1"]
    scts = await scts_for(cluster, precert, ["v1", "v2", "v3", "v4"])
    stranger = SoftwareSigner(ec.generate_private_key(ec.SECP256R1()))
    cluster.logs["stranger"] = stranger
    foreign = (await scts_for(cluster, precert, ["stranger"]))[0]
    bad_sig = bytearray(scts[3].signature.signature)
    bad_sig[-1] ^= 1
    tampered = dataclasses.replace(
        scts[3], signature=dataclasses.replace(scts[3].signature, signature=bytes(bad_sig))
    )
    final = await issue_final(
        signer, precert, [scts[0], foreign, scts[1], tampered, scts[2]], cluster.genesis
    )
    assert final.signers == ("v1", "v2", "v3")
    reasons = dict(final.rejected)
    assert "not a validator's CT log" in reasons[1]
    assert "validator v4" in reasons[3] and "does not verify" in reasons[3]


async def test_scts_must_commit_to_one_log_entry(cluster: SoftCluster) -> None:
    precert, _, _ = await issue(cluster, ["a.trust.example"])
    signer, _ = cluster.issuers["v1"]
    scts = await scts_for(cluster, precert, ["v1", "v2"], index=5)
    scts += await scts_for(cluster, precert, ["v3"], index=6)
    with pytest.raises(IssuanceError, match="another log entry"):
        await issue_final(signer, precert, scts, cluster.genesis)


async def test_quorum_is_weighted_by_voting_power() -> None:
    weighted = await soft_cluster(powers={"v1": 5, "v2": 1, "v3": 1, "v4": 1})
    precert, _, final = await issue(weighted, ["a.trust.example"], signers=["v1", "v2"])
    assert final.power == 6  # 6 of 8 > 2/3
    signer, _ = weighted.issuers["v1"]
    scts = await scts_for(weighted, precert, ["v2", "v3", "v4"])
    with pytest.raises(IssuanceError, match="hold 3 of 8"):
        await issue_final(signer, precert, scts, weighted.genesis)


async def test_final_tbs_replaces_the_poison_in_place(cluster: SoftCluster) -> None:
    precert, scts, _ = await issue(cluster, ["a.trust.example"])
    tbs = final_tbs(precert.der, scts)
    parts = certbuild.TBSParts.split(tbs)
    before = certbuild.TBSParts.split(certbuild.certificate_parts(precert.der)[0])
    assert len(parts.extensions) == len(before.extensions)
    assert parts.extensions[:-1] == before.extensions[:-1]


async def test_an_independent_verifier_accepts_the_chain(cluster: SoftCluster) -> None:
    # cryptography's RFC 5280 / CA-B Forum path validation, not our own checks.
    _, _, final = await issue(cluster, ["www.trust.example"])
    _, issuer = cluster.issuers["v1"]
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([cluster.root.cert]))
        .time(NOW + dt.timedelta(hours=1))
        .build_server_verifier(x509.DNSName("www.trust.example"))
    )
    chain = verifier.verify(x509.load_der_x509_certificate(final.der), [issuer.cert])
    assert len(chain) == 3


async def test_genesis_section_round_trips(cluster: SoftCluster) -> None:
    g = cluster.genesis
    assert [v.name for v in g.validators] == ["v1", "v2", "v3", "v4"]
    assert g.total_power == 4 and g.has_quorum(3) and not g.has_quorum(2)
    assert g.policy == cluster.policy
    v1 = g.validators[0]
    assert v1.intermediates[0].der == cluster.issuers["v1"][1].der
    section = ca_section_toml(
        g.policy, {"v.1": (cluster.logs["v1"].public_key(), [])}, root_der=cluster.root.der
    )
    assert '[ca.validators."v.1"]' in section
    assert validators_toml({"x": 1}).count("[[validators]]") == 1


def test_sct_type_is_shared_with_ct() -> None:
    assert SignedCertificateTimestamp.__module__ == "trustchain.ct.sct"
