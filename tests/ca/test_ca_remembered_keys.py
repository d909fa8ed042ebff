"""What the CA works out once per key must equal what it would compute each time,
and must refuse what the per-call computation refused (log ids, SCT keys, the
signer's key against the intermediate's)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cakit import NOW, SoftCluster, issue, make_csr, scts_for, soft_cluster
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from trustchain.ct.sct import (
    SCTError,
    SignedCertificateTimestamp,
    leaf_index_extensions,
    verify_sct,
)
from trustchain.ct.signer import PublicKey, SoftwareSigner, log_id, spki_der
from trustchain.node.ca.genesis import LogValidator
from trustchain.node.ca.issuance import (
    IssuanceError,
    PrecertRequest,
    check_csr,
    issue_final,
    issue_precertificate,
    select_scts,
)
from trustchain.node.ca.profiles import CAPolicy
from trustchain.node.ca.schemes import SoftwareCASigner

POLICY = CAPolicy(zones=("trust.example", "other.example"), allow_wildcards=True)


@pytest.fixture
async def cluster() -> SoftCluster:
    return await soft_cluster()


async def test_validator_log_ids_are_those_of_their_keys(cluster: SoftCluster) -> None:
    genesis = cluster.genesis
    assert genesis.total_power == sum(cluster.powers.values()) == 4
    for v in genesis.validators:
        assert v.log_key is not None and v.sct_key is not None
        assert v.log_id == log_id(v.log_key) == log_id(cluster.logs[v.name].public_key())
        assert v.sct_key.log_id == v.log_id and v.sct_key.public_key is v.log_key
        assert genesis.validator_for_log_id(v.log_id) is v
    keyless = LogValidator("v9", 1, None)
    assert keyless.log_id is None and keyless.sct_key is None


async def test_derived_fields_follow_the_key_and_stay_out_of_equality(
    cluster: SoftCluster,
) -> None:
    v1, v2 = cluster.genesis.validators[:2]
    assert v1.log_key is not None and v2.log_key is not None
    again = LogValidator(v1.name, v1.power, v1.log_key, v1.intermediates)
    assert again == v1 and again.log_id == v1.log_id
    moved = dataclasses.replace(v1, log_key=v2.log_key)
    assert moved != v1
    assert moved.log_id == log_id(v2.log_key) != v1.log_id
    assert moved.sct_key is not None and moved.sct_key.public_key is v2.log_key
    with pytest.raises(ValueError):
        dataclasses.replace(v1, log_id=b"\x00" * 32)  # type: ignore[call-arg]


def _tampered(
    sct: SignedCertificateTimestamp, **signature: int | bytes
) -> SignedCertificateTimestamp:
    return dataclasses.replace(sct, signature=dataclasses.replace(sct.signature, **signature))


async def test_select_scts_refuses_what_verify_sct_refuses_with_its_message(
    cluster: SoftCluster,
) -> None:
    precert, _, _ = await issue(cluster, ["a.trust.example"])
    good = await scts_for(cluster, precert, ["v1", "v2", "v3", "v4"])
    flipped = bytearray(good[0].signature.signature)
    flipped[-1] ^= 1
    bad = [
        _tampered(good[0], signature=bytes(flipped)),
        _tampered(good[1], hash_algorithm=2),
        _tampered(good[2], signature_algorithm=1),
        dataclasses.replace(good[3], version=1),
        dataclasses.replace(good[3], timestamp=good[3].timestamp + 1),
        dataclasses.replace(good[3], extensions=leaf_index_extensions(1)),
        _tampered(good[1], signature=b""),
    ]
    for sct in bad:
        validator = cluster.genesis.validator_for_log_id(sct.log_id)
        assert validator is not None and validator.log_key is not None
        with pytest.raises(SCTError) as caught:
            verify_sct(sct, precert.entry, validator.log_key)
        chosen, rejected = select_scts([sct], precert.entry, cluster.genesis)
        assert chosen == []
        assert rejected == [(0, f"SCT from validator {validator.name}: {caught.value}")]
    # The good ones still verify, each counted once.
    chosen, rejected = select_scts(good, precert.entry, cluster.genesis)
    assert [v.name for v, _ in chosen] == ["v1", "v2", "v3", "v4"] and rejected == []


async def test_an_sct_signed_by_another_key_under_a_validators_log_id_is_refused(
    cluster: SoftCluster,
) -> None:
    precert, _, _ = await issue(cluster, ["a.trust.example"])
    (own,) = await scts_for(cluster, precert, ["v2"])
    cluster.logs["v2"] = SoftwareSigner(ec.generate_private_key(ec.SECP256R1()))
    (forged,) = await scts_for(cluster, precert, ["v2"])
    claimed = dataclasses.replace(forged, log_id=own.log_id)
    _, rejected = select_scts([claimed], precert.entry, cluster.genesis)
    assert rejected == [
        (0, "SCT from validator v2: SCT: signature does not verify with the log's key")
    ]


# --- the issuing signer's key ---------------------------------------------------------


def _request() -> PrecertRequest:
    csr, _ = make_csr(["a.trust.example"])
    return PrecertRequest(check_csr(csr, POLICY), b"n" * 16, NOW, NOW + dt.timedelta(days=10))


async def test_a_signer_whose_key_is_not_the_intermediates_is_refused_every_time(
    cluster: SoftCluster,
) -> None:
    right, issuer = cluster.issuers["v1"]
    wrong, _ = cluster.issuers["v2"]
    request = _request()
    # The right signer first, then the wrong one, twice: refused every time.
    precert = await issue_precertificate(right, issuer, request, POLICY)
    for _ in range(2):
        with pytest.raises(IssuanceError, match="not the intermediate certificate's key"):
            await issue_precertificate(wrong, issuer, request, POLICY)
    scts = await scts_for(cluster, precert, ["v1", "v2", "v3"])
    with pytest.raises(IssuanceError, match="not the intermediate certificate's key") as caught:
        await issue_final(wrong, precert, scts, cluster.genesis)
    assert caught.value.check == "issuer"
    final = await issue_final(right, precert, scts, cluster.genesis)
    assert final.signers == ("v1", "v2", "v3")


class _FreshKeySigner:
    """A signer that hands out a new key object at every call."""

    def __init__(self, inner: SoftwareCASigner) -> None:
        self.inner = inner
        self.scheme = inner.scheme

    def public_key(self) -> PublicKey:
        key = self.inner.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return ec.EllipticCurvePublicNumbers(
            key.public_numbers().x, key.public_numbers().y, key.curve
        ).public_key()

    async def sign(self, message: bytes) -> bytes:
        return await self.inner.sign(message)


async def test_signers_with_new_key_objects_and_many_keys_are_checked_alike(
    cluster: SoftCluster,
) -> None:
    right, issuer = cluster.issuers["v1"]
    fresh = _FreshKeySigner(right)
    request = _request()
    for _ in range(3):
        await issue_precertificate(fresh, issuer, request, POLICY)
    # Many wrong keys around the right one: each checked against the intermediate's.
    others = [SoftwareCASigner(ec.generate_private_key(ec.SECP384R1())) for _ in range(80)]
    others += [  # and keys of other types and curves: never equal to the intermediate's
        SoftwareCASigner(ec.generate_private_key(ec.SECP256R1())),
        SoftwareCASigner(ed25519.Ed25519PrivateKey.generate()),
    ]
    for signer in [*others, right, *others]:
        if signer is right:
            await issue_precertificate(signer, issuer, request, POLICY)
            continue
        assert spki_der(signer.public_key()) != issuer.spki
        with pytest.raises(IssuanceError, match="not the intermediate certificate's key"):
            await issue_precertificate(signer, issuer, request, POLICY)
