"""Helpers for the CA tests (tests/ca/conftest.py puts this folder on sys.path)."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from trustchain.ct.sct import SignedCertificateTimestamp, issue_sct, leaf_index_extensions
from trustchain.ct.signer import SoftwareSigner
from trustchain.node.ca import certbuild, hsm, profiles
from trustchain.node.ca.genesis import CAGenesis, ca_section_toml, parse_ca_section
from trustchain.node.ca.issuance import (
    FinalCertificate,
    Precertificate,
    PrecertRequest,
    check_csr,
    issue_final,
    issue_precertificate,
)
from trustchain.node.ca.profiles import CACertificate, CAPolicy
from trustchain.node.ca.schemes import SignatureScheme, SoftwareCASigner


@dataclass(frozen=True)
class Ceremony:
    """The session's `trustchain ca init` output."""

    dir: Path
    genesis: Path
    """A full genesis file (validators v1..v4, power 1) with the [ca] section."""


@dataclass(frozen=True)
class Token:
    settings: hsm.Pkcs11Settings
    so_pin: str


async def make_softhsm_token(root: Path, label: str) -> Token:
    """A fresh SoftHSM2 token directory with one initialised token (no keys)."""
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "softhsm2.conf"
    hsm.write_softhsm_conf(conf, root / "tokens")
    pin_file = root / "pin"
    hsm.write_pin_file(pin_file, hsm.new_pin())
    settings = hsm.softhsm_settings(conf, label, pin_file)
    so_pin = hsm.new_pin()
    await hsm.init_softhsm_token(settings, so_pin)
    return Token(settings, so_pin)


def require_softhsm() -> None:
    if not hsm.SOFTHSM2_MODULE.exists():
        pytest.fail(
            f"{hsm.SOFTHSM2_MODULE} is missing: run infra/scripts/ensure-debs (installs softhsm2)"
        )


# --- a software cluster: the same code paths as the HSM, in-process keys ------------

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)

CSR_KEYS = pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate(),
        rsa.generate_private_key(65537, 2048),
    ],
    ids=["p256", "p384", "ed25519", "rsa2048"],
)
"""Parametrizes a test over one subscriber key of each type a CSR may carry."""


@dataclass
class SoftCluster:
    """A root, four validators' intermediates and CT log keys, and their genesis."""

    root: CACertificate
    root_signer: SoftwareCASigner
    issuers: dict[str, tuple[SoftwareCASigner, CACertificate]]
    logs: dict[str, SoftwareSigner]
    powers: dict[str, int]
    policy: CAPolicy
    genesis_text: str
    genesis: CAGenesis = field(init=False)

    def __post_init__(self) -> None:
        self.genesis = parse_ca_section("genesis.toml", tomllib.loads(self.genesis_text))

    @property
    def root_pem(self) -> bytes:
        return x509.load_der_x509_certificate(self.root.der).public_bytes(
            serialization.Encoding.PEM
        )


def validators_toml(powers: dict[str, int]) -> str:
    out = ['chain_id = "test"\n']
    for i, (name, power) in enumerate(powers.items()):
        key = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        out.append(
            f'[[validators]]\nname = "{name}"\naddress = "[::1]:{7001 + i}"\n'
            f'public_key = "{base64.b64encode(key).decode()}"\npower = {power}\n'
        )
    return "\n".join(out)


_ROOT_KEY: list[rsa.RSAPrivateKey] = []


async def soft_cluster(
    powers: dict[str, int] | None = None,
    policy: CAPolicy | None = None,
    now: dt.datetime = NOW,
    *,
    new_root_key: bool = False,
) -> SoftCluster:
    """A software cluster; the RSA root key is shared between calls unless ``new_root_key``."""
    powers = powers or {"v1": 1, "v2": 1, "v3": 1, "v4": 1}
    policy = policy or CAPolicy(zones=("trust.example", "other.example"), allow_wildcards=True)
    if not _ROOT_KEY:
        _ROOT_KEY.append(rsa.generate_private_key(65537, 2048))
    key = rsa.generate_private_key(65537, 2048) if new_root_key else _ROOT_KEY[0]
    root_signer = SoftwareCASigner(key, SignatureScheme.RSA_PKCS1_SHA384)
    start = now - dt.timedelta(days=30)
    root_der = await certbuild.sign_certificate(
        root_signer,
        profiles.root_tbs(
            root_signer.public_key(), root_signer.scheme, common_name="Test Root", not_before=start
        ),
    )
    root = CACertificate.from_der(root_der)
    issuers = {}
    logs = {}
    for name in powers:
        key = SoftwareCASigner(ec.generate_private_key(ec.SECP384R1()))
        tbs = profiles.intermediate_tbs(
            root,
            key.public_key(),
            common_name=f"Test Intermediate {name}",
            zones=policy.zones,
            not_before=start,
        )
        issuers[name] = (
            key,
            CACertificate.from_der(await certbuild.sign_certificate(root_signer, tbs)),
        )
        logs[name] = SoftwareSigner(ec.generate_private_key(ec.SECP256R1()))
    section = ca_section_toml(
        policy,
        {n: (logs[n].public_key(), [issuers[n][1].der]) for n in powers},
        root_der=root_der,
    )
    text = validators_toml(powers) + "\n" + section
    return SoftCluster(root, root_signer, issuers, logs, powers, policy, text)


def make_csr(names: list[str], key: Any = None, *, cn: str | None = None) -> tuple[bytes, Any]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    common = cn or (names[0] if names and len(names[0]) <= 64 else None)  # X.520: 64 at most
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)] if common else [])
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = builder.sign(key, algorithm)
    return csr.public_bytes(serialization.Encoding.PEM), key


async def scts_for(
    cluster: SoftCluster,
    precert: Precertificate,
    names: list[str],
    *,
    timestamp: int | None = None,
    index: int = 0,
) -> list[SignedCertificateTimestamp]:
    ts = timestamp if timestamp is not None else int(NOW.timestamp() * 1000)
    ext = leaf_index_extensions(index)
    return [await issue_sct(cluster.logs[n], precert.entry, ts, ext) for n in names]


async def issue(
    cluster: SoftCluster,
    names: list[str],
    *,
    issuer: str = "v1",
    signers: list[str] | None = None,
    now: dt.datetime = NOW,
    days: int = 30,
    index: int = 0,
) -> tuple[Precertificate, list[SignedCertificateTimestamp], FinalCertificate]:
    csr, _ = make_csr(names)
    checked = check_csr(csr, cluster.policy)
    request = PrecertRequest(
        checked,
        secrets.token_bytes(16),
        now,
        now + dt.timedelta(days=days) - dt.timedelta(seconds=1),
    )
    signer, cert = cluster.issuers[issuer]
    precert = await issue_precertificate(signer, cert, request, cluster.policy)
    scts = await scts_for(cluster, precert, signers or ["v1", "v2", "v3"], index=index)
    final = await issue_final(signer, precert, scts, cluster.genesis)
    return precert, scts, final
