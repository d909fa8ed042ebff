"""Helpers for the node/cluster tests: a software CA, a plotted account, requests.

A uniquely named module (tests/cluster/conftest.py puts this folder on sys.path).
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from proofs_support import Account, PlotEnv  # the proof tests' plot helpers

from trustchain.consensus.proofs.codec import encode_bundle
from trustchain.consensus.proofs.policy import AccountEntry, Policy, account_entry_toml, policy_toml
from trustchain.consensus.proofs.prover import make_bundle
from trustchain.consensus.proofs.space import make_space_proof
from trustchain.consensus.proofs.vdf import make_time_proof
from trustchain.ct.signer import SoftwareSigner
from trustchain.node.ca import certbuild, profiles
from trustchain.node.ca.genesis import ca_section_toml
from trustchain.node.ca.issuance import PrecertRequest, check_csr, issue_precertificate
from trustchain.node.ca.profiles import CACertificate, CAPolicy
from trustchain.node.ca.schemes import SignatureScheme, SoftwareCASigner
from trustchain.node.localcluster import LocalCluster, create_full_cluster
from trustchain.node.state import IssueRequest, encode_issue, request_hash

TEST_POLICY = Policy(
    min_stake=100,
    work_bits=8,
    min_k=18,
    space_index_limit=16,
    vdf_iterations=2000,
    epoch_length=1000,
    unbonding_delay=2000,
)
ZONE = "trust.example"


@dataclass
class SoftCA:
    root: CACertificate
    issuers: dict[str, tuple[SoftwareCASigner, CACertificate]]
    logs: dict[str, SoftwareSigner]
    policy: CAPolicy
    section: str


async def soft_ca(names: list[str], now: dt.datetime) -> SoftCA:
    policy = CAPolicy(zones=(ZONE,))
    root_signer = SoftwareCASigner(
        rsa.generate_private_key(65537, 2048), SignatureScheme.RSA_PKCS1_SHA384
    )
    start = now - dt.timedelta(days=1)
    root = CACertificate.from_der(
        await certbuild.sign_certificate(
            root_signer,
            profiles.root_tbs(
                root_signer.public_key(), root_signer.scheme, common_name="Root", not_before=start
            ),
        )
    )
    issuers, logs = {}, {}
    for name in names:
        key = SoftwareCASigner(ec.generate_private_key(ec.SECP384R1()))
        tbs = profiles.intermediate_tbs(
            root, key.public_key(), common_name=f"Int {name}", zones=policy.zones, not_before=start
        )
        cert = await certbuild.sign_certificate(root_signer, tbs)
        issuers[name] = (key, CACertificate.from_der(cert))
        logs[name] = SoftwareSigner(ec.generate_private_key(ec.SECP256R1()))
    section = ca_section_toml(
        policy, {n: (logs[n].public_key(), [issuers[n][1].der]) for n in names}, root_der=root.der
    )
    return SoftCA(root, issuers, logs, policy, section)


def genesis_text(
    chain_id: str,
    validators: dict[str, bytes],
    accounts: list[Account],
    ca_section: str,
    policy: Policy = TEST_POLICY,
) -> str:
    out = [f'chain_id = "{chain_id}"\n']
    for i, (name, key) in enumerate(validators.items()):
        out.append(
            f'[[validators]]\nname = "{name}"\naddress = "[::1]:{7001 + i}"\n'
            f'public_key = "{base64.b64encode(key).decode()}"\npower = 1\n'
        )
    out.append(policy_toml(policy))
    for a in accounts:
        out.append(account_entry_toml(AccountEntry(a.id, a.public_key, bonded=1000)))
    out.append(ca_section)
    return "\n".join(out)


def make_csr(names: list[str]) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER), key


def make_bundle_for(
    env: PlotEnv, chain_id: str, beacon: bytes, csr_der: bytes, *, epoch: int = 0
) -> bytes:
    owner = env.owner
    space = make_space_proof(env.plot, owner.public_key, owner.id, beacon, TEST_POLICY)
    time_proof = make_time_proof(beacon, owner.id, TEST_POLICY.vdf_iterations)
    bundle = make_bundle(
        owner.key,
        chain_id,
        epoch=epoch,
        request=request_hash(csr_der),
        space=space,
        time=time_proof,
        work_bits=TEST_POLICY.work_bits,
    )
    return encode_bundle(bundle)


async def issue_op(
    ca: SoftCA,
    issuer: str,
    csr_der: bytes,
    bundle: bytes,
    now: dt.datetime,
    *,
    days: int = 30,
) -> bytes:
    checked = check_csr(csr_der, ca.policy)
    nonce = secrets.token_bytes(16)
    not_before = now.replace(microsecond=0)
    not_after = not_before + dt.timedelta(days=days) - dt.timedelta(seconds=1)
    signer, cert = ca.issuers[issuer]
    precert = await issue_precertificate(
        signer, cert, PrecertRequest(checked, nonce, not_before, not_after), ca.policy
    )
    return encode_issue(
        IssueRequest(
            csr_der,
            bundle,
            precert.der,
            issuer,
            nonce,
            int(not_before.timestamp()),
            int(not_after.timestamp()),
        )
    )


def issued_leaf_hash(doc: dict[str, Any]) -> bytes:
    """The RFC 6962 leaf hash of a certificate from an issuance answer (the certificate,
    its intermediate, an SCT's timestamp and the leaf index), as a monitor computes it."""
    from trustchain.ct.merkle import leaf_hash
    from trustchain.ct.precert import embedded_sct_entry
    from trustchain.ct.sct import TimestampedEntry, leaf_index_extensions, merkle_tree_leaf

    der, issuer = (base64.b64decode(c) for c in doc["chain"][:2])
    extensions = leaf_index_extensions(doc["leaf_index"])
    logged = embedded_sct_entry(der, issuer)
    return leaf_hash(
        merkle_tree_leaf(TimestampedEntry(doc["scts"][0]["timestamp"], logged, extensions))
    )


def start_with_faults(d: Path, faulty: str, modes: str, *, consensus: str = "") -> LocalCluster:
    """Four validators in `d`, ready, whose `faulty` one runs the test-only `modes`
    (trustchain.node.app.BYZANTINE_ENV, comma-separated).  The caller stops it."""
    from trustchain.node.app import BYZANTINE_ENV

    cluster = create_full_cluster(d, 4, consensus=consensus)
    for node in cluster.nodes:
        node.start(env={BYZANTINE_ENV: modes} if node.name == faulty else None)
    if not cluster.wait(
        lambda ev: all(any(e.get("event") == "node.ready" for e in evs) for evs in ev.values()),
        60,
    ):
        cluster.stop()
        raise AssertionError(f"the cluster in {d} was not ready within 60 s")
    return cluster
