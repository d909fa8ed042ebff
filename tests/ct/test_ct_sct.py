"""SCTs, tree-head signatures, the SCT list extension and precertificate TBS."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trustchain.ct import devcerts, precert, sct
from trustchain.ct._tls import DecodeError
from trustchain.ct.precert import PrecertError
from trustchain.ct.sct import EntryType, LogEntry, SCTError, TimestampedEntry
from trustchain.ct.signer import SoftwareSigner, log_id


@pytest.fixture(scope="module")
def pki() -> tuple[devcerts.Issued, devcerts.Issued]:
    root = devcerts.make_root()
    return root, devcerts.make_intermediate(root)


@pytest.fixture
def signer() -> SoftwareSigner:
    return SoftwareSigner(ec.generate_private_key(ec.SECP256R1()))


async def test_sct_roundtrip_and_verify(
    pki: tuple[devcerts.Issued, devcerts.Issued], signer: SoftwareSigner
) -> None:
    _, ca = pki
    leaf = devcerts.make_leaf(ca, "a.example")
    entry = LogEntry(EntryType.X509, leaf.der)
    ext = sct.leaf_index_extensions(42)
    assert len(ext) == 8  # static-ct-api: a leaf_index-only extensions field is 8 bytes
    s = await sct.issue_sct(signer, entry, 1_700_000_000_000, ext)
    assert s.log_id == log_id(signer.public_key())
    back = sct.SignedCertificateTimestamp.decode(s.encode())
    assert back == s
    assert sct.SignedCertificateTimestamp.from_json(s.to_json()) == s
    sct.verify_sct(back, entry, signer.public_key())
    assert sct.leaf_index_of(back.extensions) == 42

    # Each field is covered by the signature.
    for bad in (
        dataclasses.replace(s, timestamp=s.timestamp + 1),
        dataclasses.replace(s, extensions=sct.leaf_index_extensions(43)),
    ):
        with pytest.raises(SCTError, match="does not verify"):
            sct.verify_sct(bad, entry, signer.public_key())
    with pytest.raises(SCTError, match="does not verify"):
        sct.verify_sct(s, LogEntry(EntryType.X509, leaf.der + b"\0"), signer.public_key())
    other = SoftwareSigner(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(SCTError, match="log id"):
        sct.verify_sct(s, entry, other.public_key())
    with pytest.raises(SCTError, match="hash algorithm"):
        sct.verify_sct(
            dataclasses.replace(s, signature=dataclasses.replace(s.signature, hash_algorithm=2)),
            entry,
            signer.public_key(),
        )


async def test_sct_decoding_rejects_garbage(signer: SoftwareSigner) -> None:
    entry = LogEntry(EntryType.X509, b"\x30\x00")
    s = await sct.issue_sct(signer, entry, 1, b"")
    raw = s.encode()
    for bad in (raw[:-1], raw + b"\0", b"\x01" + raw[1:], b""):
        with pytest.raises(DecodeError):
            sct.SignedCertificateTimestamp.decode(bad)
    for doc in (
        {},
        {"sct_version": 1},
        {**s.to_json(), "id": "!!"},
        {**s.to_json(), "timestamp": -1},
        [],
    ):
        with pytest.raises(DecodeError):
            sct.SignedCertificateTimestamp.from_json(doc)
    with pytest.raises(DecodeError, match="twice"):
        sct.parse_extensions(sct.leaf_index_extensions(1) * 2)


def test_merkle_leaf_roundtrip() -> None:
    entry = LogEntry(EntryType.PRECERT, b"tbs", b"k" * 32)
    te = TimestampedEntry(5, entry, sct.leaf_index_extensions(7))
    leaf = sct.merkle_tree_leaf(te)
    assert sct.parse_merkle_tree_leaf(leaf) == te
    for bad in (leaf[:-1], leaf + b"x", b"\x01" + leaf[1:], leaf[:1] + b"\x01" + leaf[2:]):
        with pytest.raises(DecodeError):
            sct.parse_merkle_tree_leaf(bad)
    with pytest.raises(ValueError):
        LogEntry(EntryType.PRECERT, b"tbs", b"short")


async def test_tree_head_signature(signer: SoftwareSigner) -> None:
    ds = await sct.sign_tree_head(signer, 10, 3, b"r" * 32)
    sct.verify_tree_head(signer.public_key(), 10, 3, b"r" * 32, ds)
    with pytest.raises(SCTError):
        sct.verify_tree_head(signer.public_key(), 10, 4, b"r" * 32, ds)
    with pytest.raises(SCTError):
        sct.verify_tree_head(signer.public_key(), 11, 3, b"r" * 32, ds)


async def test_sct_list_extension_parsed_by_cryptography(
    pki: tuple[devcerts.Issued, devcerts.Issued], signer: SoftwareSigner
) -> None:
    _, ca = pki
    pre = devcerts.make_leaf(ca, "b.example", precert=True)
    entry = precert.precert_entry([pre.der, ca.der], psc=False)
    signer2 = SoftwareSigner(ec.generate_private_key(ec.SECP256R1()))
    scts = [
        await sct.issue_sct(signer, entry, 1_700_000_000_123, sct.leaf_index_extensions(9)),
        await sct.issue_sct(signer2, entry, 1_700_000_000_456, sct.leaf_index_extensions(10)),
    ]
    # The final certificate: the same TBS fields, the SCT list instead of the poison.
    builder = devcerts.leaf_builder(
        ca,
        "b.example",
        key=pre.key,
        serial=pre.cert.serial_number,
        not_before=pre.cert.not_valid_before_utc,
        not_after=pre.cert.not_valid_after_utc,
    ).add_extension(sct.sct_list_extension(scts), critical=False)
    final = builder.sign(ca.key, hashes.SHA256())
    final_der = final.public_bytes(serialization.Encoding.DER)

    parsed = final.extensions.get_extension_for_class(
        x509.PrecertificateSignedCertificateTimestamps
    ).value
    assert [p.log_id for p in parsed] == [s.log_id for s in scts]
    assert [p.extension_bytes for p in parsed] == [s.extensions for s in scts]
    assert [int(p.timestamp.timestamp() * 1000) for p in parsed] == [s.timestamp for s in scts]

    # Our decoder reads what we wrote, and the embedded SCTs verify against the
    # TBS rebuilt from the final certificate (RFC 6962 section 3.3).
    ext = final.extensions.get_extension_for_oid(sct.SCT_LIST_OID)
    raw = ext.value.public_bytes()
    assert sct.parse_sct_list_extension(raw) == scts
    embedded = precert.embedded_sct_entry(final_der, ca.der)
    assert embedded == entry
    assert precert.final_certificate_tbs(final_der) == final.tbs_precertificate_bytes
    sct.verify_sct(scts[0], embedded, signer.public_key())
    sct.verify_sct(scts[1], embedded, signer2.public_key())
    with pytest.raises(DecodeError):
        sct.decode_sct_list(sct.encode_sct_list(scts)[:-1])


def test_precert_tbs_is_the_certificate_without_poison(
    pki: tuple[devcerts.Issued, devcerts.Issued],
) -> None:
    _, ca = pki
    key = ec.generate_private_key(ec.SECP256R1())
    base = devcerts.leaf_builder(ca, "c.example", key=key, serial=1234)
    pre = (
        base.add_extension(x509.PrecertPoison(), critical=True)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    # The same certificate built without the poison: what the TBS must equal.
    same = base.add_extension(x509.OCSPNoCheck(), critical=False).sign(ca.key, hashes.SHA256())
    ours = precert.precert_tbs(pre.public_bytes(serialization.Encoding.DER))
    assert ours == same.tbs_certificate_bytes
    spki = ca.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert precert.issuer_key_hash(ca.der) == hashlib.sha256(spki).digest()


def test_precert_via_precert_signing_certificate(
    pki: tuple[devcerts.Issued, devcerts.Issued],
) -> None:
    root, ca = pki
    psc = devcerts.make_intermediate(ca, "Precert Signer", precert_signing=True)
    assert precert.is_precert_signing_certificate(psc.cert)
    key = ec.generate_private_key(ec.SECP256R1())
    # Precertificate signed by the PSC: issuer = PSC subject, AKI = PSC key.
    via_psc = (
        devcerts.leaf_builder(psc, "d.example", key=key, serial=77)
        .add_extension(x509.PrecertPoison(), critical=True)
        .sign(psc.key, hashes.SHA256())
    )
    # The final certificate the CA signs: issuer = CA subject, AKI = CA key, no poison.
    direct = devcerts.leaf_builder(
        ca,
        "d.example",
        key=key,
        serial=77,
        not_before=via_psc.not_valid_before_utc,
        not_after=via_psc.not_valid_after_utc,
    ).sign(ca.key, hashes.SHA256())
    der = via_psc.public_bytes(serialization.Encoding.DER)
    entry = precert.precert_entry([der, psc.der, ca.der, root.der], psc=True)
    assert entry.certificate == direct.tbs_certificate_bytes
    assert entry.issuer_key_hash == precert.issuer_key_hash(ca.der)


def test_precert_rejections(pki: tuple[devcerts.Issued, devcerts.Issued]) -> None:
    _, ca = pki
    plain = devcerts.make_leaf(ca, "e.example")
    with pytest.raises(PrecertError, match="exactly one poison"):
        precert.precert_tbs(plain.der)
    with pytest.raises(PrecertError, match="not valid DER"):
        precert.precert_tbs(plain.der[:-5])
    with pytest.raises(PrecertError):
        precert.precert_tbs(b"\x30\x80\x00\x00")
    with pytest.raises(PrecertError, match="too short"):
        precert.precert_entry([plain.der], psc=False)
    pre = devcerts.make_leaf(ca, "f.example", precert=True)
    with pytest.raises(PrecertError, match="precertificate"):
        precert.final_certificate_tbs(pre.der)
