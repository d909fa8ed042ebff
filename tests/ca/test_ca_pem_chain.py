"""The issuance answer's PEM chain is what cryptography writes for each certificate."""

from __future__ import annotations

import ssl

import pytest
from cakit import SoftCluster, issue, soft_cluster
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trustchain.node.app import pem_chain


@pytest.fixture
async def cluster() -> SoftCluster:
    return await soft_cluster()


def _reference(chain: list[bytes]) -> bytes:
    return b"".join(
        x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM) for d in chain
    )


async def test_pem_chain_is_cryptographys_pem_for_every_length(cluster: SoftCluster) -> None:
    _, issuer = cluster.issuers["v1"]
    lengths = set()
    # Names of growing length give DER of many lengths modulo 48 (base64 lines end
    # exactly at the last character, or one to 63 characters short of it): the
    # first name is also the CN (two bytes a character), the second one only a SAN.
    for n in range(1, 40):
        for k in (1, 2):
            names = [f"{'a' * n}.trust.example", f"{'b' * k}.trust.example"]
            _, _, final = await issue(cluster, names)
            lengths.add(len(final.der) % 48)
            chain = [final.der, issuer.der]
            text = pem_chain(chain)
            assert text == _reference(chain)
            loaded = x509.load_pem_x509_certificates(text)
            assert [c.public_bytes(serialization.Encoding.DER) for c in loaded] == chain
            assert all(len(line) <= 64 for line in text.splitlines())
    assert len(lengths) >= 16  # ECDSA signatures vary in length: not every class each run
    # Every length modulo 48, lines ending exactly at the last character included, on
    # blobs of each length (the PEM writer does not parse; ssl writes the same layout).
    blobs = [bytes(range(256))[:n] for n in range(1, 200)]
    for blob in blobs:
        assert ssl.DER_cert_to_PEM_cert(blob).encode() == pem_chain([blob])
    assert {len(b) % 48 for b in blobs} == set(range(48))
    assert pem_chain(blobs[:3]) == b"".join(pem_chain([b]) for b in blobs[:3])
    assert pem_chain([]) == b""
    assert pem_chain([cluster.root.der]) == _reference([cluster.root.der])
