"""Published records: TLSA 3 1 1 for issued certificates, CAA at the apex, applied
in all-or-nothing batches; answered through the Authority."""

from __future__ import annotations

import datetime
import hashlib

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from doqkit import name, query, sample_zone

from trustchain.dns.authority import Authority
from trustchain.dns.records import (
    CaaPolicy,
    CaaRecord,
    CertificateIssued,
    CertificateRevoked,
    PublishedRecords,
    RecordError,
    certificate_issued,
)
from trustchain.dns.zones import default_zone

APEX = name("trust.hypermesh.online.")


def issued(cid: str, *names: str, key: bytes = b"k") -> CertificateIssued:
    return CertificateIssued(cid, tuple(name(n) for n in names), hashlib.sha256(key).digest())


def ask(authority: Authority, qname: str, rdtype: str) -> dns.message.Message:
    message = query(qname, rdtype)
    return dns.message.from_wire(authority.respond(message, message.to_wire()))


def tlsa(authority: Authority, host: str) -> list[str]:
    response = ask(authority, f"_443._tcp.{host}", "TLSA")
    return sorted(rr.to_text() for rrset in response.answer for rr in rrset)


def make_certificate(*names: str, serial: int = 0x1A2B) -> x509.Certificate:
    key = ed25519.Ed25519PrivateKey.generate()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, None)
    )


def test_tlsa_from_a_real_certificate_is_3_1_1_over_the_spki() -> None:
    certificate = make_certificate("www.trust.hypermesh.online", "api.trust.hypermesh.online")
    change = certificate_issued(certificate)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    assert change.spki_sha256 == digest.finalize()
    assert change.certificate_id == "1a2b"

    authority = Authority([default_zone()])
    authority.apply([change])
    expected = [f"3 1 1 {change.spki_sha256.hex()}"]
    assert tlsa(authority, "www.trust.hypermesh.online.") == expected
    assert tlsa(authority, "api.trust.hypermesh.online.") == expected
    response = ask(authority, "_443._tcp.www.trust.hypermesh.online.", "TLSA")
    assert response.flags & dns.flags.AA and response.answer[0].ttl == 300


def test_revocation_withdraws_and_shared_keys_stay_while_live() -> None:
    authority = Authority([default_zone()])
    authority.apply(
        [issued("1", "www.trust.hypermesh.online."), issued("2", "www.trust.hypermesh.online.")]
    )
    one_record = tlsa(authority, "www.trust.hypermesh.online.")
    assert len(one_record) == 1, "two certificates with one key publish one record"
    authority.apply([CertificateRevoked("1")])
    assert tlsa(authority, "www.trust.hypermesh.online.") == one_record
    authority.apply([CertificateRevoked("2")])
    gone = ask(authority, "_443._tcp.www.trust.hypermesh.online.", "TLSA")
    assert gone.rcode() == dns.rcode.NXDOMAIN, "no owner left, no empty non-terminal either"
    assert ask(authority, "_tcp.www.trust.hypermesh.online.", "TXT").rcode() == dns.rcode.NXDOMAIN


def test_renewal_publishes_both_keys_until_the_old_is_revoked() -> None:
    authority = Authority([default_zone()])
    authority.apply([issued("a", "www.trust.hypermesh.online.", key=b"old")])
    authority.apply([issued("b", "www.trust.hypermesh.online.", key=b"new")])
    assert len(tlsa(authority, "www.trust.hypermesh.online.")) == 2
    authority.apply([CertificateRevoked("a")])
    assert tlsa(authority, "www.trust.hypermesh.online.") == [
        f"3 1 1 {hashlib.sha256(b'new').hexdigest()}"
    ]


def test_published_names_create_empty_non_terminals() -> None:
    authority = Authority([default_zone()])
    assert ask(authority, "www.trust.hypermesh.online.", "AAAA").rcode() == dns.rcode.NXDOMAIN
    authority.apply([issued("1", "www.trust.hypermesh.online.")])
    for ent in ("www.trust.hypermesh.online.", "_tcp.www.trust.hypermesh.online."):
        response = ask(authority, ent, "AAAA")
        assert response.rcode() == dns.rcode.NOERROR and not response.answer, "NODATA (RFC 8020)"
        assert response.authority[0].rdtype == dns.rdatatype.SOA


def test_names_outside_the_zones_and_wildcards_are_not_published() -> None:
    authority = Authority([default_zone()])
    authority.apply(
        [issued("1", "example.com.", "*.trust.hypermesh.online.", "trust.hypermesh.online.")]
    )
    published = authority.published
    assert list(published.nodes) == [name("_443._tcp.trust.hypermesh.online.")]
    # Still known, so that its revocation is accepted.
    authority.apply([CertificateRevoked("1")])
    assert not authority.published.nodes


def test_caa_at_the_apex_replaced_and_removed() -> None:
    authority = Authority([default_zone()])
    policy = (
        CaaRecord(0, "issue", "trust.hypermesh.online"),
        CaaRecord(0, "iodef", "mailto:ops@x"),
    )
    authority.apply([CaaPolicy(APEX, policy)])
    response = ask(authority, "trust.hypermesh.online.", "CAA")
    assert sorted(rr.to_text() for rr in response.answer[0]) == [
        '0 iodef "mailto:ops@x"',
        '0 issue "trust.hypermesh.online"',
    ]
    # The rest of the apex is untouched.
    assert ask(authority, "trust.hypermesh.online.", "AAAA").answer
    authority.apply([CaaPolicy(APEX, (CaaRecord(128, "issue", ";"),))])
    assert [rr.to_text() for rr in ask(authority, "trust.hypermesh.online.", "CAA").answer[0]] == [
        '128 issue ";"'
    ]
    authority.apply([CaaPolicy(APEX, ())])
    removed = ask(authority, "trust.hypermesh.online.", "CAA")
    assert removed.rcode() == dns.rcode.NOERROR and not removed.answer


def test_published_rrsets_replace_zone_file_rrsets_of_the_same_type() -> None:
    zone = default_zone()
    from trustchain.dns.zones import DefaultZoneSettings

    zone = default_zone(DefaultZoneSettings(extra=('@ CAA 0 issue "other.example"',)))
    authority = Authority([zone])
    assert "other.example" in ask(authority, "trust.hypermesh.online.", "CAA").to_text()
    authority.apply([CaaPolicy(APEX, (CaaRecord(0, "issue", "trust.hypermesh.online"),))])
    text = ask(authority, "trust.hypermesh.online.", "CAA").to_text()
    assert "other.example" not in text and 'trust.hypermesh.online"' in text


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (issued("01", "www.trust.hypermesh.online."), "without leading zeros"),
        (issued("XYZ", "www.trust.hypermesh.online."), "lowercase hex"),
        (issued("f" * 41, "www.trust.hypermesh.online."), "at most"),
        (CertificateIssued("9", (name("www.trust.hypermesh.online."),), b"short"), "32 bytes"),
        (
            CertificateIssued("9", (dns.name.from_text("www", origin=None),), b"x" * 32),
            "absolute",
        ),
        (issued("1", "again.trust.hypermesh.online."), "already published"),
        (CertificateRevoked("77"), "not published"),
        (CaaPolicy(name("example.com."), ()), "not a served zone apex"),
        (CaaPolicy(name("www.trust.hypermesh.online."), ()), "not a served zone apex"),
        (CaaPolicy(APEX, (CaaRecord(0, "is sue", "x"),)), "1..15 letters"),
        (CaaPolicy(APEX, (CaaRecord(256, "issue", "x"),)), "out of range"),
        (CaaPolicy(APEX, (CaaRecord(0, "issue", "caf\u00e9"),)), "CAA issue"),
    ],
)
def test_a_bad_change_rejects_the_whole_batch(bad: object, fragment: str) -> None:
    import dns.name  # noqa: F401  (used in the parameters above)

    authority = Authority([default_zone()])
    authority.apply([issued("1", "again.trust.hypermesh.online.")], version=5)
    before = authority.published
    good = issued("2", "good.trust.hypermesh.online.")
    with pytest.raises(RecordError, match=fragment) as failure:
        authority.apply([good, bad], version=6)  # type: ignore[list-item]
    assert "change 1" in str(failure.value) and "nothing of the batch" in str(failure.value)
    assert authority.published is before, "not half applied"
    assert tlsa(authority, "good.trust.hypermesh.online.") == []


def test_versions_only_move_forward_and_move_the_serial() -> None:
    published = PublishedRecords.empty([APEX])
    later = published.apply([], version=10)
    assert later.serial(1) == 11 and published.serial(1) == 1
    with pytest.raises(RecordError, match="not newer"):
        later.apply([], version=10)
    with pytest.raises(RecordError, match="integer"):
        later.apply([], version=True)
    assert later.apply([]).version == 11
    assert PublishedRecords.empty([APEX]).apply([], version=2**32 + 5).serial(4) == 9, "RFC 1982"


def test_snapshots_are_immutable_values() -> None:
    first = PublishedRecords.empty([APEX])
    second = first.apply([issued("1", "www.trust.hypermesh.online.")])
    third = second.apply([CertificateRevoked("1")])
    assert not first.nodes and not first.certificates
    assert name("_443._tcp.www.trust.hypermesh.online.") in second.nodes
    assert not third.nodes and "1" in second.certificates


def test_zone_file_zones_get_published_records_too() -> None:
    authority = Authority([sample_zone(), default_zone()])
    authority.apply([issued("1", "host.example.test.", "www.trust.hypermesh.online.")])
    assert tlsa(authority, "host.example.test.")
    assert tlsa(authority, "www.trust.hypermesh.online.")


def test_response_cache_never_serves_an_older_view() -> None:
    authority = Authority([default_zone()])
    assert tlsa(authority, "www.trust.hypermesh.online.") == []
    assert tlsa(authority, "www.trust.hypermesh.online.") == []  # now cached
    authority.apply([issued("1", "www.trust.hypermesh.online.")])
    assert len(tlsa(authority, "www.trust.hypermesh.online.")) == 1
