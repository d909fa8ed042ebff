"""The one-pass certificate split, the SCT list fast path and prepared log keys.

Each fast path is checked against the straightforward code it stands in for,
on real certificates and on thousands of corrupted ones: same result, or the
same rejection.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from trustchain.ct import der, devcerts, precert, sct
from trustchain.ct._tls import DecodeError
from trustchain.ct.der import DERError
from trustchain.ct.precert import PrecertError
from trustchain.ct.sct import EntryType, LogEntry, LogKey, SCTError
from trustchain.ct.signer import SoftwareSigner, log_id

TS = 1_750_000_000_000


@pytest.fixture(scope="module")
def ca() -> devcerts.Issued:
    return devcerts.make_intermediate(devcerts.make_root())


@pytest.fixture(scope="module")
def signers() -> list[SoftwareSigner]:
    return [SoftwareSigner(ec.generate_private_key(ec.SECP256R1())) for _ in range(3)]


@pytest.fixture(scope="module")
def final(ca: devcerts.Issued, signers: list[SoftwareSigner]) -> x509.Certificate:
    """A final certificate with three embedded SCTs and a few other extensions."""
    key = ec.generate_private_key(ec.SECP256R1())
    pre = devcerts.make_leaf(ca, "split.example", precert=True)
    entry = precert.precert_entry([pre.der, ca.der], psc=False)
    ext = sct.leaf_index_extensions(7)

    async def sign_all() -> list[sct.SignedCertificateTimestamp]:
        return [await sct.issue_sct(s, entry, TS, ext) for s in signers]

    scts = trio.run(sign_all)
    builder = (
        devcerts.leaf_builder(ca, "split.example", key=key, serial=99)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(sct.sct_list_extension(scts), critical=False)
    )
    return builder.sign(ca.key, hashes.SHA256())


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _first_oid(ext: bytes) -> bytes:
    """The TLV opening an Extension, read alone as ``_TBS.ext_oid`` reads it."""
    tag, start, end = der.tlv_bounds(ext, 0)
    if tag != der.SEQUENCE or end != len(ext) or start == end:
        raise DERError("not an Extension")
    oid_tag, _, oid_end = der.tlv_bounds(ext, start)
    if oid_tag != 0x06:
        raise DERError("extension does not start with an OID")
    return ext[start:oid_end]


def _reference(cert_der: bytes) -> tuple[bytes, bytes, bytes, list[bytes], list[bytes]]:
    """The split done the plain way with ``der.content`` / ``der.elements``."""
    tbs, alg, sig = der.elements(der.content(cert_der, der.SEQUENCE, "Certificate"))
    fields = der.elements(der.content(tbs, der.SEQUENCE, "TBSCertificate"))
    if len(fields) < (7 if fields and fields[0][0] == 0xA0 else 6):
        raise DERError("TBSCertificate is missing fields")
    at = next((i for i, f in enumerate(fields) if f[0] == 0xA3), None)
    if at is None:
        return tbs, alg, sig, fields, []
    inner = der.content(fields[at], 0xA3, "extensions")
    exts = der.elements(der.content(inner, der.SEQUENCE, "Extensions"))
    return tbs, alg, sig, fields, exts


def test_split_matches_cryptography_and_the_plain_walk(final: x509.Certificate) -> None:
    data = _der(final)
    split = precert.split_certificate(data)
    tbs, alg, sig, fields, exts = _reference(data)
    assert (split.tbs, split.signature_algorithm, split.signature) == (tbs, alg, sig)
    assert list(split.fields) == fields and list(split.extensions) == exts
    assert split.tbs == final.tbs_certificate_bytes
    assert split.version_offset == 1
    assert split.issuer == final.issuer.public_bytes()
    assert split.subject == final.subject.public_bytes()
    assert split.signature[3:] == final.signature  # BIT STRING: tag, length, unused-bits octet
    assert [_first_oid(e) for e in exts] == list(split.extension_oids)
    # RFC 6962 section 3.3: the TBS the SCTs sign, and the SCT list itself.
    raw, precert_tbs = split.embedded_scts()
    assert precert_tbs == final.tbs_precertificate_bytes == precert.final_certificate_tbs(data)
    ext = final.extensions.get_extension_for_oid(sct.SCT_LIST_OID)
    assert raw == ext.value.public_bytes()
    assert split.find(precert.SCT_LIST_EXTENSION) == [len(exts) - 1]


def test_split_rejects_precertificates_and_missing_or_doubled_sct_lists(
    ca: devcerts.Issued, final: x509.Certificate
) -> None:
    pre = devcerts.make_leaf(ca, "p.example", precert=True)
    with pytest.raises(PrecertError, match="precertificate"):
        precert.split_certificate(pre.der).embedded_scts()
    plain = devcerts.make_leaf(ca, "q.example")
    with pytest.raises(PrecertError, match="found 0"):
        precert.split_certificate(plain.der).embedded_scts()
    # The same SCT list extension twice (cryptography will not build it: splice it in).
    split = precert.split_certificate(_der(final))
    at = split.find(precert.SCT_LIST_EXTENSION)[0]
    doubled = dataclasses.replace(
        split,
        extension_spans=(*split.extension_spans, split.extension_spans[at]),
        extension_oids=(*split.extension_oids, split.extension_oids[at]),
    )
    with pytest.raises(PrecertError, match="found 2"):
        doubled.embedded_scts()


def test_extension_value_rejects_a_malformed_extension(final: x509.Certificate) -> None:
    split = precert.split_certificate(_der(final))
    at = split.find(precert.SCT_LIST_EXTENSION)[0]
    oid = split.extension_oids[at]
    for bad, why in (
        (der.encode_tlv(der.SEQUENCE, oid), "extnID, \\[critical,\\] extnValue"),
        (der.encode_tlv(der.SEQUENCE, oid + b"\x02\x01\x00" + b"\x04\x00"), "extnID"),
        (der.encode_tlv(der.SEQUENCE, oid + b"\x05\x00"), "not an OCTET STRING"),
        (der.encode_tlv(der.SEQUENCE, oid + b"\x04\x05\x00"), "not valid DER"),
    ):
        broken = dataclasses.replace(split, der=bad, extension_spans=((0, len(bad)),))
        with pytest.raises(PrecertError, match=why):
            broken.extension_value(0)


def _mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:
        for _ in range(rng.randint(1, 3)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif kind == 1:
        del out[rng.randrange(len(out)) :]
    elif kind == 2:
        at = rng.randrange(len(out))
        out[at:at] = bytes([rng.randrange(256)])
    else:
        del out[rng.randrange(len(out))]
    return bytes(out)


def _outcome(fn: object, *args: object) -> tuple[str, object]:
    try:
        return "ok", fn(*args)  # type: ignore[operator]
    except (PrecertError, DERError, DecodeError, ValueError) as exc:
        return type(exc).__name__, str(exc).split(":")[0]


def test_split_agrees_with_the_plain_walk_on_corrupted_certificates(
    ca: devcerts.Issued, final: x509.Certificate
) -> None:
    """Every corruption is either rejected by both or read identically by both."""
    rng = random.Random(6962)
    samples = [_der(final), ca.der, devcerts.make_leaf(ca, "r.example", precert=True).der]
    accepted = 0
    for _ in range(3000):
        data = _mutate(rng.choice(samples), rng)
        try:
            split = precert.split_certificate(data)
        except PrecertError:
            split = None
        try:
            ref = _reference(data)
            # The plain walk also reads every extension's OID as the split does.
            oids = [_first_oid(e) for e in ref[4]]
        except (DERError, ValueError):
            ref = None
        assert (split is None) == (ref is None), data.hex()
        if split is None or ref is None:
            continue
        accepted += 1
        tbs, alg, sig, fields, exts = ref
        assert (split.tbs, split.signature_algorithm, split.signature) == (tbs, alg, sig)
        assert list(split.fields) == fields and list(split.extensions) == exts
        assert list(split.extension_oids) == oids
        assert _outcome(precert.final_certificate_tbs, data) == _outcome(
            lambda s=split: s.tbs_without(s.sct_list_index())
        )
    assert accepted > 100  # the corruptions did not all land in the framing


def test_spans_rejects_what_tlv_bounds_rejects() -> None:
    good = b"\x02\x01\x05" + b"\x04\x81\x80" + bytes(128)
    assert der.spans(good) == [(0x02, 0, 2, 3), (0x04, 3, 6, 134)]
    assert der.spans(good, 3, len(good)) == [(0x04, 3, 6, 134)]
    assert der.spans(good, most=1) == [(0x02, 0, 2, 3)]
    for bad, why in (
        (b"\x02", "truncated TLV header"),
        (b"\x1f\x01\x00", "high-tag-number"),
        (b"\x30\x80\x00\x00", "indefinite length"),
        (b"\x04\x85\x00\x00\x00\x00\x01", "bad long-form length"),
        (b"\x04\x82\x00", "bad long-form length"),
        (b"\x04\x82\x00\x80" + bytes(128), "non-minimal"),
        (b"\x04\x81\x05" + bytes(5), "long form used for a short length"),
        (b"\x04\x03\x00", "runs past the end"),
    ):
        with pytest.raises(DERError, match=why):
            der.spans(bad)
        with pytest.raises(DERError, match=why):
            der.tlv_bounds(bad, 0)
    # The end bound is honoured: a TLV may not run past it into later bytes.
    with pytest.raises(DERError, match="runs past the end"):
        der.spans(b"\x04\x02\x00\x00", 0, 3)
    with pytest.raises(DERError, match="outside"):
        der.spans(b"\x05\x00", 1, 5)


async def test_sct_list_fast_path_agrees_with_the_reader(signers: list[SoftwareSigner]) -> None:
    entry = LogEntry(EntryType.X509, b"\x30\x03\x02\x01\x01")
    rng = random.Random(3)
    lists = []
    for n in (1, 2, 4):
        scts = [
            await sct.issue_sct(s, entry, TS + i, sct.leaf_index_extensions(i) * (i % 2))
            for i, s in zip(range(n), signers * 2, strict=False)
        ]
        lists.append((sct.encode_sct_list(scts), scts))
    for data, scts in lists:
        assert sct.decode_sct_list(data) == scts
    for _ in range(4000):
        data = _mutate(rng.choice(lists)[0], rng)
        fast = sct._decode_sct_list_fast(data)
        assert _outcome(sct.decode_sct_list, data) == _outcome(sct._decode_sct_list_reader, data)
        if fast is not None:
            assert fast == sct._decode_sct_list_reader(data)
    with pytest.raises(DecodeError, match="sct_list"):
        sct.decode_sct_list(b"\x00\x00")
    with pytest.raises(DecodeError, match="unknown version"):
        raw = bytearray(lists[0][0])
        raw[4] = 1
        sct.decode_sct_list(bytes(raw))


async def test_log_key_makes_every_check_of_verify_sct(signers: list[SoftwareSigner]) -> None:
    signer = signers[0]
    entry = LogEntry(EntryType.X509, b"\x30\x03\x02\x01\x01")
    s = await sct.issue_sct(signer, entry, TS, b"")
    key = LogKey(signer.public_key())
    assert key.log_id == log_id(signer.public_key())
    for _ in range(2):  # prepared once, checked each time
        key.verify(s, entry)
    ds = s.signature
    cases = [
        (dataclasses.replace(s, version=1), "version 1 is not v1"),
        (dataclasses.replace(s, log_id=bytes(32)), "log id"),
        (dataclasses.replace(s, signature=dataclasses.replace(ds, hash_algorithm=5)), "hash"),
        (
            dataclasses.replace(s, signature=dataclasses.replace(ds, signature_algorithm=1)),
            "signature algorithm 1",
        ),
        (dataclasses.replace(s, timestamp=TS + 1), "does not verify"),
        (
            dataclasses.replace(s, signature=dataclasses.replace(ds, signature=b"\x30\x00")),
            "does not verify",
        ),
    ]
    for bad, why in cases:
        with pytest.raises(SCTError, match=why):
            key.verify(bad, entry)
        with pytest.raises(SCTError, match=why):
            sct.verify_sct(bad, entry, signer.public_key())
    with pytest.raises(SCTError, match="does not verify"):
        key.verify(s, LogEntry(EntryType.X509, b"\x30\x03\x02\x01\x02"))


async def test_log_key_refuses_keys_rfc6962_does_not_allow() -> None:
    entry = LogEntry(EntryType.X509, b"\x30\x03\x02\x01\x01")
    p384 = SoftwareSigner(ec.generate_private_key(ec.SECP384R1()))
    s = await sct.issue_sct(p384, entry, TS, b"")
    with pytest.raises(SCTError, match="must be P-256"):
        LogKey(p384.public_key()).verify(s, entry)
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(SCTError, match="ECDSA or RSA keys only"):
        LogKey(ed).verify(dataclasses.replace(s, log_id=log_id(ed)), entry)
    # RSA logs (PKCS #1 v1.5, SHA-256) take the general path.
    rsa_signer = SoftwareSigner(rsa.generate_private_key(65537, 2048))
    good = await sct.issue_sct(rsa_signer, entry, TS, b"")
    LogKey(rsa_signer.public_key()).verify(good, entry)
    with pytest.raises(SCTError, match="does not verify"):
        LogKey(rsa_signer.public_key()).verify(dataclasses.replace(good, timestamp=1), entry)


def test_log_entry_identity_is_computed_when_asked() -> None:
    entry = LogEntry(EntryType.PRECERT, b"tbs", bytes(32))
    expected = hashlib.sha256(b"\x00\x01" + bytes(32) + b"\x00\x00\x03tbs").digest()
    assert entry.identity() == expected == entry.identity()
    assert entry == LogEntry(EntryType.PRECERT, b"tbs", bytes(32))


def test_log_entry_remembers_only_the_signed_data_it_was_asked_for_last() -> None:
    entry = LogEntry(EntryType.PRECERT, b"tbs", bytes(32))
    for ts, ext in ((1, b""), (1, b""), (2, b""), (2, b"\x00"), (1, b"")):
        data = sct.sct_signed_data(ts, entry, ext)
        assert entry.sct_signed_data(ts, ext) == data
        assert entry.sct_signed_digest(ts, ext) == hashlib.sha256(data).digest()
        assert (
            entry.sct_signed_digest(ts + 1, ext)
            == hashlib.sha256(sct.sct_signed_data(ts + 1, entry, ext)).digest()
        )
    assert entry == LogEntry(EntryType.PRECERT, b"tbs", bytes(32))
    assert hash(entry) == hash(LogEntry(EntryType.PRECERT, b"tbs", bytes(32)))
