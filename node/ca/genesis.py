"""The ``[ca]`` section of the genesis file: policy, CT log keys, intermediates.

Every validator and every relying party reads the same section, so it holds what
they must agree on::

    [ca]
    zones = ["trust.hypermesh.online"]   # DNS suffixes; also the name constraints
    max_validity_days = 90
    allow_wildcards = false
    root_sha256 = "9f86d0..."            # optional pin of the root certificate
    # crl_url = "https://ca.trust.hypermesh.online/crl"

    [ca.validators.v1]                   # one table per [[validators]] name
    ct_log_key = "MFkwEwYHKoZIzj0CAQYI..." # base64 DER SubjectPublicKeyInfo, P-256
    intermediates = ['''
    -----BEGIN CERTIFICATE-----
    ...
    -----END CERTIFICATE-----
    ''']                                 # current intermediates, newest last

Voting power and the validator set come from ``[[validators]]`` (the genesis
file's own section, read by ``trustchain.node.config.load_genesis``); this module
reads only the fields it needs from it.  A validator without a ``[ca.validators]``
table still counts towards the total power, but cannot sign SCTs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trustchain.ct.checkpoint import RFC6962NoteVerifier, Voter
from trustchain.ct.sct import LogKey
from trustchain.ct.signer import PublicKey, spki_der
from trustchain.node.ca.certbuild import BuildError
from trustchain.node.ca.profiles import CACertificate, CAPolicy
from trustchain.node.config import ConfigError, Key, check_table, read_toml


@dataclass(frozen=True)
class LogValidator:
    """A validator as the CA sees it: power, CT log key, intermediates."""

    name: str
    """The validator's name in ``[[validators]]``."""
    power: int
    """Its voting power."""
    log_key: PublicKey | None
    """Its CT log key (ECDSA P-256), None if ``[ca.validators.NAME]`` is absent."""
    intermediates: tuple[CACertificate, ...] = ()
    """Its current intermediate CA certificates, oldest first."""
    log_id: bytes | None = field(init=False, repr=False, compare=False)
    """RFC 6962 section 3.2 LogID of its CT log key (None without one).  Derived
    from ``log_key`` once: a node asks for it per validator per certificate."""
    sct_key: LogKey | None = field(init=False, repr=False, compare=False)
    """Its CT log key prepared for checking SCTs (``LogKey.verify``: every check of
    ``verify_sct``), None without a key."""

    def __post_init__(self) -> None:
        # Derived fields of a frozen dataclass: set once here, left out of
        # equality and hashing (they follow from log_key, which is compared).
        key = LogKey(self.log_key) if self.log_key is not None else None
        object.__setattr__(self, "sct_key", key)
        object.__setattr__(self, "log_id", key.log_id if key is not None else None)


@dataclass(frozen=True)
class CAGenesis:
    """The CA's view of the genesis file."""

    source: str
    """The file it came from, for messages."""
    policy: CAPolicy
    """Issuance policy."""
    validators: tuple[LogValidator, ...]
    """Every validator of ``[[validators]]``, in file order."""
    root_sha256: bytes | None = None
    """SHA-256 of the root certificate's DER, if pinned."""
    _by_log_id: dict[bytes, LogValidator] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _total_power: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for v in self.validators:
            if v.log_id is not None:
                self._by_log_id[v.log_id] = v
        # Asked at every quorum check (per certificate); the set never changes.
        object.__setattr__(self, "_total_power", sum(v.power for v in self.validators))

    @property
    def total_power(self) -> int:
        return self._total_power

    def checkpoint_voters(self, origin: str) -> list[Voter]:
        """The validators whose CT log keys cosign the checkpoints of the log `origin`."""
        return [
            Voter(v.name, RFC6962NoteVerifier(origin, v.log_key), v.power)
            for v in self.validators
            if v.log_key is not None
        ]

    def validator_for_log_id(self, lid: bytes) -> LogValidator | None:
        return self._by_log_id.get(lid)

    def has_quorum(self, power: int) -> bool:
        """More than 2/3 of the total voting power (DESIGN.md section 4)."""
        return 3 * power > 2 * self.total_power

    def intermediates(self) -> list[tuple[LogValidator, CACertificate]]:
        return [(v, c) for v in self.validators for c in v.intermediates]


def _zones(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(z, str) for z in value):
        raise ValueError("expected a list of DNS zone strings")
    return tuple(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _int(low: int, high: int) -> Any:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected an integer in {low}..{high}, got {value!r}")
        return value

    return check


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _sha256_hex(value: Any) -> bytes:
    text = _string(value)
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ValueError("expected 64 hex digits (a SHA-256 fingerprint)") from None
    if len(raw) != 32:
        raise ValueError("expected 64 hex digits (a SHA-256 fingerprint)")
    return raw


def _table(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("expected a table")
    return value


_CA_KEYS = {
    "zones": Key(_zones, default=("trust.hypermesh.online",)),
    "max_validity_days": Key(_int(1, 398), default=90),
    "allow_wildcards": Key(_bool, default=False),
    "min_rsa_bits": Key(_int(2048, 16384), default=2048),
    "max_names": Key(_int(1, 1000), default=100),
    "crl_url": Key(_string),
    "root_sha256": Key(_sha256_hex),
    "validators": Key(_table, default={}),
}

_CA_VALIDATOR_KEYS = {
    "ct_log_key": Key(_string, required=True),
    "intermediates": Key(lambda v: v, default=[]),
}


def parse_log_key(text: str) -> PublicKey:
    """A base64 DER SubjectPublicKeyInfo holding an ECDSA P-256 key (RFC 6962 2.1.4)."""
    try:
        key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        raise ValueError("expected a base64 DER SubjectPublicKeyInfo") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("a CT log key must be ECDSA P-256")
    return key


def _intermediates(value: Any) -> tuple[CACertificate, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError("expected a list of PEM certificates")
    out = []
    for i, pem in enumerate(value):
        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
            out.append(CACertificate.from_der(cert.public_bytes(serialization.Encoding.DER)))
        except (ValueError, BuildError) as exc:
            raise ValueError(f"entry {i}: not a CA certificate in PEM ({exc})") from None
    return tuple(out)


def parse_policy(source: str, raw: Any) -> tuple[CAPolicy, dict[str, Any]]:
    """Check a ``[ca]`` table; returns the policy and the remaining checked values."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: key 'ca': expected a table [ca]")
    values = check_table(source, raw, _CA_KEYS, "ca")
    try:
        policy = CAPolicy(
            zones=values["zones"],
            max_validity_days=values["max_validity_days"],
            allow_wildcards=values["allow_wildcards"],
            min_rsa_bits=values["min_rsa_bits"],
            max_names=values["max_names"],
            crl_url=values["crl_url"],
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: [ca]: {exc}") from None
    return policy, values


def parse_ca_section(source: str, doc: Mapping[str, Any]) -> CAGenesis:
    """Read ``[ca]`` and the names and powers of ``[[validators]]`` from a genesis document."""
    policy, values = parse_policy(source, doc.get("ca", {}))

    entries = doc.get("validators")
    if (
        not isinstance(entries, list)
        or not entries
        or not all(isinstance(e, dict) for e in entries)
    ):
        raise ConfigError(f"{source}: key 'validators': expected [[validators]] tables")
    ca_tables: dict[str, Any] = values["validators"]
    known = set()
    validators = []
    for i, entry in enumerate(entries):
        name = entry.get("name")
        power = entry.get("power", 1)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}: key 'validators[{i}].name': expected a name")
        if isinstance(power, bool) or not isinstance(power, int) or power < 1:
            raise ConfigError(f"{source}: key 'validators[{i}].power': expected a positive integer")
        if name in known:
            raise ConfigError(f"{source}: validator {name!r} is listed twice")
        known.add(name)
        table = ca_tables.get(name)
        if table is None:
            validators.append(LogValidator(name, power, None))
            continue
        where = f"ca.validators.{name}"
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: key '{where}': expected a table")
        v = check_table(source, table, _CA_VALIDATOR_KEYS, where)
        try:
            key = parse_log_key(v["ct_log_key"])
        except ValueError as exc:
            raise ConfigError(f"{source}: key '{where}.ct_log_key': {exc}") from None
        try:
            intermediates = _intermediates(v["intermediates"])
        except ValueError as exc:
            raise ConfigError(f"{source}: key '{where}.intermediates': {exc}") from None
        validators.append(LogValidator(name, power, key, intermediates))
    for name in ca_tables:
        if name not in known:
            raise ConfigError(
                f"{source}: key 'ca.validators.{name}': no validator named {name!r} "
                "in [[validators]]"
            )
    log_ids = [v.log_id for v in validators if v.log_id is not None]
    if len(set(log_ids)) != len(log_ids):
        raise ConfigError(f"{source}: two validators share one CT log key")
    return CAGenesis(source, policy, tuple(validators), values["root_sha256"])


def load_ca_genesis(path: str | Path) -> CAGenesis:
    """Read the CA's part of a genesis file; ConfigError naming the key on any problem."""
    path = Path(path)
    return parse_ca_section(str(path), read_toml(path, "genesis file"))


def _toml_string(text: str) -> str:
    # A TOML basic string; our values are base64, hex and URLs.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def log_key_text(key: PublicKey) -> str:
    return base64.b64encode(spki_der(key)).decode()


def ca_section_toml(
    policy: CAPolicy,
    validators: Mapping[str, tuple[PublicKey, Sequence[bytes]]],
    *,
    root_der: bytes | None = None,
) -> str:
    """The ``[ca]`` section for a genesis file (``trustchain ca init`` writes it).

    ``validators`` maps a name to its CT log key and intermediate certificates
    (DER, oldest first).
    """
    lines = [
        "[ca]",
        f"zones = [{', '.join(_toml_string(z) for z in policy.zones)}]",
        f"max_validity_days = {policy.max_validity_days}",
        f"allow_wildcards = {'true' if policy.allow_wildcards else 'false'}",
    ]
    if policy.min_rsa_bits != 2048:
        lines.append(f"min_rsa_bits = {policy.min_rsa_bits}")
    if policy.max_names != 100:
        lines.append(f"max_names = {policy.max_names}")
    if policy.crl_url:
        lines.append(f"crl_url = {_toml_string(policy.crl_url)}")
    if root_der is not None:
        lines.append(f'root_sha256 = "{hashlib.sha256(root_der).hexdigest()}"')
    for name, (key, certs) in validators.items():
        table = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _toml_string(name)
        lines += ["", f"[ca.validators.{table}]", f"ct_log_key = {_toml_string(log_key_text(key))}"]
        pems = []
        for cert_der in certs:
            pem = x509.load_der_x509_certificate(cert_der).public_bytes(serialization.Encoding.PEM)
            pems.append("'''\n" + pem.decode() + "'''")
        lines.append(f"intermediates = [{', '.join(pems)}]")
    return "\n".join(lines) + "\n"
