"""Key ceremony and intermediate rotation.

``run_ceremony`` is ``trustchain ca init``: on SoftHSM2 it creates, under DIR,

    root/                  the root token (SoftHSM2 config, token files, PIN files)
    root/hsm.toml          PKCS#11 settings and key label of the root
    root.pem               the self-signed RSA-4096 root certificate
    NAME/                  one token per validator, holding
                             intermediate-1   ECDSA P-384 intermediate CA key
                             ct-log           ECDSA P-256 CT log key
    NAME/hsm.toml          the PKCS#11 settings the node uses
    NAME/intermediate.pem  its current intermediate certificate (signed by the root)
    NAME/intermediates/    every intermediate it was given, by key label
    NAME/ct-log-key.pub.pem
    genesis-ca.toml        the [ca] section for the genesis file

Each step is a function of its own (``root_certificate``, ``generate_key``,
``key_csr``, ``certify_intermediate``) so that an operator with a real HSM runs the
same steps one by one (``trustchain ca keygen``, ``ca root-cert``, ``ca csr``,
``ca certify``): the tokens then come from the HSM vendor's tools, and the
intermediate's CSR travels to the offline root and the certificate back.

Rotation (``rotate_intermediate``): a new P-384 key is generated in the
validator's token, certified by the root, and becomes the key new certificates
are issued with; the old certificate stays valid until it expires, and the
genesis section lists every intermediate that has not expired.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trustchain.ct.sct import issue_sct, leaf_index_extensions
from trustchain.ct.signer import PublicKey, spki_der
from trustchain.node.ca import certbuild, hsm, issuance, profiles
from trustchain.node.ca.genesis import (
    CAGenesis,
    ca_section_toml,
    parse_ca_section,
    parse_policy,
)
from trustchain.node.ca.profiles import CACertificate, CAPolicy
from trustchain.node.ca.revocation import RevocationRecord, sign_crl
from trustchain.node.ca.schemes import SignatureScheme, parse_scheme
from trustchain.node.config import ConfigError, Key, check_table, read_toml
from trustchain.node.errors import UserError

Progress = Callable[[str], None]

ROOT_LABEL = "root"
CT_LOG_LABEL = "ct-log"
INTERMEDIATE_PREFIX = "intermediate-"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,28}")


class CeremonyError(UserError):
    """A ceremony step that cannot go ahead; says why and what to do."""


# --- hsm.toml ----------------------------------------------------------------------


@dataclass(frozen=True)
class HsmConfig:
    """An ``hsm.toml``: a token's PKCS#11 settings and what its keys are for."""

    path: Path
    """The file."""
    settings: hsm.Pkcs11Settings
    """How to reach and log in to the token."""
    keys: dict[str, str] = field(default_factory=dict)
    """Role -> value: intermediate, ct_log, root (labels); root_scheme."""
    intermediate_certificate: Path | None = None
    """The current intermediate's certificate (PEM)."""
    root_certificate: Path | None = None
    """The root certificate (PEM), for a root token."""

    def label(self, role: str) -> str:
        value = self.keys.get(role)
        if not value:
            raise ConfigError(f"{self.path}: key 'keys.{role}' is missing")
        return value

    @property
    def root_scheme(self) -> SignatureScheme:
        return parse_scheme(self.keys.get("root_scheme", SignatureScheme.RSA_PKCS1_SHA384.value))


def _label(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a key label, got {value!r}")
    return value


def _scheme_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a scheme name")
    return parse_scheme(value).value


_KEYS_TABLE = {
    "intermediate": Key(_label),
    "intermediate_certificate": Key(_label),
    "ct_log": Key(_label),
    "root": Key(_label),
    "root_scheme": Key(_scheme_text),
    "root_certificate": Key(_label),
}


def load_hsm_config(path: str | Path) -> HsmConfig:
    """Read an ``hsm.toml``; paths in it are relative to its folder."""
    path = Path(path)
    doc = read_toml(path, "HSM settings file")
    check_table(
        str(path),
        doc,
        {"pkcs11": Key(lambda v: v, required=True), "keys": Key(lambda v: v, default={})},
    )
    table = doc["pkcs11"]
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: key 'pkcs11': expected a table [pkcs11]")
    base = path.parent
    settings = hsm.parse_pkcs11_table(str(path), table, base)
    keys_raw = doc.get("keys", {})
    if not isinstance(keys_raw, dict):
        raise ConfigError(f"{path}: key 'keys': expected a table [keys]")
    keys = {k: v for k, v in check_table(str(path), keys_raw, _KEYS_TABLE, "keys").items() if v}
    inter = keys.pop("intermediate_certificate", None)
    root = keys.pop("root_certificate", None)
    return HsmConfig(
        path=path,
        settings=settings,
        keys=keys,
        intermediate_certificate=(base / inter).resolve() if inter else None,
        root_certificate=(base / root).resolve() if root else None,
    )


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_hsm_config(
    path: Path,
    *,
    module: Path,
    token_label: str,
    pin_file: str = "pin",
    softhsm2_conf: str | None = "softhsm2.conf",
    keys: dict[str, str],
    timeout: float = hsm.DEFAULT_TIMEOUT,
) -> None:
    lines = [
        "# PKCS#11 settings written by `trustchain ca` (docs/ca.md).",
        "# The PIN is never stored here: it is read from pin_file (mode 0600), or set",
        '# pin_env = "VAR" instead to read it from an environment variable.',
        "[pkcs11]",
        f"module = {_q(str(module))}",
        f"token_label = {_q(token_label)}",
        f"pin_file = {_q(pin_file)}",
    ]
    if softhsm2_conf:
        lines.append(f"softhsm2_conf = {_q(softhsm2_conf)}")
    lines += [f"timeout = {timeout}", "", "[keys]"]
    lines += [f"{role} = {_q(value)}" for role, value in keys.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


# --- PEM files ---------------------------------------------------------------------


def pem_certificate(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def read_certificate(path: Path) -> bytes:
    """The DER of the first certificate in a PEM (or DER) file; UserError if unusable."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CeremonyError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if b"-----BEGIN" in data:
            cert = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CeremonyError(f"{path} is not a certificate ({exc})") from None
    return cert.public_bytes(serialization.Encoding.DER)


def write_new(path: Path, data: bytes) -> None:
    """Write a file that must not exist yet (certificates are never overwritten)."""
    try:
        with open(path, "xb") as f:
            f.write(data)
    except FileExistsError:
        raise CeremonyError(f"{path} already exists; refusing to overwrite it") from None


# --- the steps -----------------------------------------------------------------------


async def setup_softhsm_token(directory: Path, token_label: str) -> hsm.Pkcs11Settings:
    """A new SoftHSM2 token directory (config, token, PIN files); local ceremonies only."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = directory / "softhsm2.conf"
    if conf.exists():
        raise CeremonyError(f"{conf} already exists: {directory} already holds a token")
    hsm.write_softhsm_conf(conf, directory / "tokens")
    hsm.write_pin_file(directory / "pin", hsm.new_pin())
    # The security officer PIN is only needed to reset the user PIN; move it to
    # the key custodians after the ceremony.
    so_pin = hsm.new_pin()
    hsm.write_pin_file(directory / "so-pin", so_pin)
    settings = hsm.softhsm_settings(conf, token_label, directory / "pin")
    await hsm.init_softhsm_token(settings, so_pin)
    return settings


async def root_certificate(
    settings: hsm.Pkcs11Settings,
    label: str,
    *,
    scheme: SignatureScheme,
    common_name: str,
    now: dt.datetime,
    days: int = profiles.ROOT_DAYS,
) -> bytes:
    """The self-signed root certificate for the root key ``label`` (DER)."""
    signer = await hsm.Pkcs11Signer.open(settings, label, scheme=scheme)
    tbs = profiles.root_tbs(
        signer.public_key(), scheme, common_name=common_name, not_before=now, days=days
    )
    der = await certbuild.sign_certificate(signer, tbs)
    cert = x509.load_der_x509_certificate(der)
    cert.verify_directly_issued_by(cert)  # the HSM's signature, checked before anyone relies on it
    return der


async def key_csr(settings: hsm.Pkcs11Settings, label: str, common_name: str) -> bytes:
    """A CSR for the key ``label``, signed inside its token (proof of possession)."""
    signer = await hsm.Pkcs11Signer.open(settings, label)
    return await certbuild.sign_csr(
        signer, profiles.ca_name(common_name), spki_der(signer.public_key())
    )


async def certify_intermediate(
    root_settings: hsm.Pkcs11Settings,
    root_label: str,
    root_der: bytes,
    csr_der: bytes,
    *,
    zones: Sequence[str],
    now: dt.datetime,
    days: int = profiles.INTERMEDIATE_DAYS,
    root_scheme: SignatureScheme | None = None,
    crl_url: str | None = None,
) -> bytes:
    """The root signs an intermediate CA certificate for the key in ``csr_der``."""
    try:
        csr = x509.load_der_x509_csr(csr_der)
    except ValueError:
        try:
            csr = x509.load_pem_x509_csr(csr_der)
        except ValueError as exc:
            raise CeremonyError(f"not a certificate request: {exc}") from None
    if not csr.is_signature_valid:
        raise CeremonyError("the CSR's signature does not verify: its key holder did not sign it")
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
        public.curve, ec.SECP384R1
    ):
        raise CeremonyError("an intermediate CA key must be ECDSA P-384")
    cns = csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    common_name = str(cns[0].value) if cns else "TrustChain Intermediate"
    root = CACertificate.from_der(root_der)
    signer = await hsm.Pkcs11Signer.open(
        root_settings, root_label, scheme=root_scheme or root.scheme
    )
    if spki_der(signer.public_key()) != spki_der(root.public_key()):
        raise CeremonyError(f"key {root_label!r} is not the key of the root certificate given")
    try:
        tbs = profiles.intermediate_tbs(
            root,
            public,
            common_name=common_name,
            zones=zones,
            not_before=now,
            days=days,
            root_scheme=signer.scheme,
            crl_url=crl_url,
        )
    except (ValueError, certbuild.BuildError) as exc:
        raise CeremonyError(str(exc)) from None
    der = await certbuild.sign_certificate(signer, tbs)
    x509.load_der_x509_certificate(der).verify_directly_issued_by(root.cert)
    return der


def public_key_pem(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- the whole local ceremony ---------------------------------------------------------


@dataclass(frozen=True)
class CeremonyResult:
    """What ``run_ceremony`` made."""

    root_der: bytes
    """The root certificate."""
    intermediates: dict[str, bytes]
    """Validator name -> its intermediate certificate (DER)."""
    log_keys: dict[str, PublicKey]
    """Validator name -> its CT log public key."""
    genesis_section: str
    """The [ca] section written to DIR/genesis-ca.toml."""


def check_validator_names(validators: Sequence[str]) -> None:
    if not validators:
        raise CeremonyError("name at least one validator (--validators v1,v2,v3,v4)")
    for name in validators:
        if not _NAME.fullmatch(name):
            raise CeremonyError(
                f"validator name {name!r}: use 1 to 29 letters, digits, '-', '_' or '.' "
                "(it becomes part of a 32-byte token label)"
            )
    if len(set(validators)) != len(validators):
        raise CeremonyError("a validator name appears twice in --validators")


async def run_ceremony(
    directory: Path,
    validators: Sequence[str],
    policy: CAPolicy,
    *,
    now: dt.datetime,
    progress: Progress = lambda _: None,
    root_common_name: str = "TrustChain Root CA",
    root_scheme: SignatureScheme = SignatureScheme.RSA_PKCS1_SHA384,
    root_kind: str = "rsa4096",
    root_days: int = profiles.ROOT_DAYS,
    intermediate_days: int = profiles.INTERMEDIATE_DAYS,
) -> CeremonyResult:
    """``trustchain ca init``: the whole ceremony on local SoftHSM2 tokens."""
    check_validator_names(validators)
    taken = [
        p
        for p in [directory / "root", directory / "root.pem", *(directory / v for v in validators)]
        if p.exists()
    ]
    if taken:
        raise CeremonyError(
            f"{taken[0]} already exists; a ceremony never overwrites keys (use a new --dir)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    steps = 2 + 2 * len(validators) + 1
    step = iter(range(1, steps + 1))

    def say(text: str) -> None:
        progress(f"[{next(step)}/{steps}] {text}")

    say(
        f"root token: initialising and generating the {root_kind} root key in the HSM "
        "(RSA-4096 can take a minute)"
    )
    root_dir = directory / "root"
    root_settings = await setup_softhsm_token(root_dir, "tc-root")
    await hsm.generate_key(root_settings, ROOT_LABEL, root_kind)
    say("root certificate: self-signing in the HSM")
    root_der = await root_certificate(
        root_settings,
        ROOT_LABEL,
        scheme=root_scheme,
        common_name=root_common_name,
        now=now,
        days=root_days,
    )
    write_new(directory / "root.pem", pem_certificate(root_der))
    write_hsm_config(
        root_dir / "hsm.toml",
        module=root_settings.module,
        token_label=root_settings.token_label,
        keys={
            "root": ROOT_LABEL,
            "root_scheme": root_scheme.value,
            "root_certificate": "../root.pem",
        },
    )

    csrs: dict[str, bytes] = {}
    log_keys: dict[str, PublicKey] = {}
    label = INTERMEDIATE_PREFIX + "1"
    for name in validators:
        say(f"{name}: token, P-384 intermediate key, P-256 CT log key, CSR")
        vdir = directory / name
        settings = await setup_softhsm_token(vdir, f"tc-{name}")
        await hsm.generate_key(settings, label, "p384")
        log_keys[name] = await hsm.generate_key(settings, CT_LOG_LABEL, "p256")
        csrs[name] = await key_csr(settings, label, f"TrustChain Intermediate {name}")
        write_new(vdir / "ct-log-key.pub.pem", public_key_pem(log_keys[name]))
        (vdir / "intermediates").mkdir()

    intermediates: dict[str, bytes] = {}
    for name in validators:
        say(f"{name}: root certifies the intermediate (zones: {', '.join(policy.zones)})")
        der = await certify_intermediate(
            root_settings,
            ROOT_LABEL,
            root_der,
            csrs[name],
            zones=policy.zones,
            now=now,
            days=intermediate_days,
            root_scheme=root_scheme,
            crl_url=policy.crl_url,
        )
        intermediates[name] = der
        vdir = directory / name
        write_new(vdir / "intermediates" / f"{label}.pem", pem_certificate(der))
        write_new(vdir / "intermediate.pem", pem_certificate(der))
        write_hsm_config(
            vdir / "hsm.toml",
            module=hsm.SOFTHSM2_MODULE,
            token_label=f"tc-{name}",
            keys={
                "intermediate": label,
                "intermediate_certificate": "intermediate.pem",
                "ct_log": CT_LOG_LABEL,
            },
        )
    say("genesis: writing the [ca] section")
    section = write_genesis_section(directory, policy, list(validators), now=now)
    return CeremonyResult(root_der, intermediates, log_keys, section)


def _current_intermediates(vdir: Path, now: dt.datetime) -> list[bytes]:
    """A validator's unexpired intermediates, oldest first."""
    found = []
    for pem in sorted((vdir / "intermediates").glob("*.pem")):
        der = read_certificate(pem)
        cert = x509.load_der_x509_certificate(der)
        if cert.not_valid_after_utc >= now:
            found.append((cert.not_valid_before_utc, pem.name, der))
    return [der for _, _, der in sorted(found)]


def _read_log_key(vdir: Path) -> PublicKey:
    path = vdir / "ct-log-key.pub.pem"
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CeremonyError(f"cannot read the CT log key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CeremonyError(f"{path} is not an ECDSA key")
    return key


def write_genesis_section(
    directory: Path, policy: CAPolicy, validators: Sequence[str], *, now: dt.datetime
) -> str:
    """(Re)write DIR/genesis-ca.toml from the validators' folders."""
    entries = {}
    for name in validators:
        vdir = directory / name
        entries[name] = (_read_log_key(vdir), _current_intermediates(vdir, now))
    root_der = read_certificate(directory / "root.pem")
    section = ca_section_toml(policy, entries, root_der=root_der)
    tmp = directory / "genesis-ca.toml.tmp"
    tmp.write_text(section)
    tmp.replace(directory / "genesis-ca.toml")
    return section


def read_ceremony_policy(directory: Path) -> tuple[CAPolicy, list[str]]:
    """The policy and validator names recorded in DIR/genesis-ca.toml."""
    path = directory / "genesis-ca.toml"
    doc = read_toml(path, "CA genesis section (written by `trustchain ca init`)")
    policy, values = parse_policy(str(path), doc.get("ca", {}))
    return policy, list(values["validators"])


async def rotate_intermediate(
    directory: Path,
    name: str,
    *,
    now: dt.datetime,
    days: int = profiles.INTERMEDIATE_DAYS,
    progress: Progress = lambda _: None,
) -> bytes:
    """Certify a new intermediate for validator ``name`` and switch issuing to it."""
    policy, validators = read_ceremony_policy(directory)
    if name not in validators:
        raise CeremonyError(f"{name!r} is not a validator of {directory} ({', '.join(validators)})")
    vdir = directory / name
    config = load_hsm_config(vdir / "hsm.toml")
    root = load_hsm_config(directory / "root" / "hsm.toml")
    existing = await hsm.list_keys(config.settings)
    numbers = [
        int(k[len(INTERMEDIATE_PREFIX) :])
        for k in existing
        if re.fullmatch(INTERMEDIATE_PREFIX + r"\d+", k)
    ]
    label = f"{INTERMEDIATE_PREFIX}{max(numbers, default=0) + 1}"
    progress(f"{name}: generating {label} (ECDSA P-384) in the token")
    await hsm.generate_key(config.settings, label, "p384")
    csr = await key_csr(config.settings, label, f"TrustChain Intermediate {name}")
    progress(f"{name}: the root certifies {label}")
    assert root.root_certificate is not None
    der = await certify_intermediate(
        root.settings,
        root.label("root"),
        read_certificate(root.root_certificate),
        csr,
        zones=policy.zones,
        now=now,
        days=days,
        root_scheme=root.root_scheme,
        crl_url=policy.crl_url,
    )
    write_new(vdir / "intermediates" / f"{label}.pem", pem_certificate(der))
    # Switch issuing to the new key: certificate first, then the settings that
    # point at it, each replaced atomically.
    tmp = vdir / "intermediate.pem.tmp"
    tmp.write_bytes(pem_certificate(der))
    tmp.replace(vdir / "intermediate.pem")
    keys = dict(config.keys)
    keys["intermediate"] = label
    keys["intermediate_certificate"] = "intermediate.pem"
    write_hsm_config(
        vdir / "hsm.toml",
        module=config.settings.module,
        token_label=config.settings.token_label,
        keys=keys,
        timeout=config.settings.timeout,
    )
    progress("genesis: the [ca] section now lists the new intermediate after the old")
    write_genesis_section(directory, policy, validators, now=now)
    return der


async def open_issuer(config: HsmConfig) -> tuple[hsm.Pkcs11Signer, CACertificate]:
    """The signer and certificate new certificates are issued with (a node's view)."""
    if config.intermediate_certificate is None:
        raise ConfigError(f"{config.path}: key 'keys.intermediate_certificate' is missing")
    issuer = CACertificate.from_der(read_certificate(config.intermediate_certificate))
    signer = await hsm.Pkcs11Signer.open(config.settings, config.label("intermediate"))
    if spki_der(signer.public_key()) != spki_der(issuer.public_key()):
        raise ConfigError(
            f"{config.path}: key {config.label('intermediate')!r} does not match "
            f"{config.intermediate_certificate}"
        )
    return signer, issuer


# --- local issuance and CRLs (development and standalone use) -----------------------------


def _next_leaf_index(directory: Path) -> int:
    """A local log index for the static-ct-api leaf_index extension of local SCTs."""
    path = directory / "local-log-size"
    try:
        index = int(path.read_text().strip() or 0)
    except FileNotFoundError:
        index = 0
    except ValueError:
        raise CeremonyError(f"{path} does not hold a number") from None
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{index + 1}\n")
    tmp.replace(path)
    return index


async def issue_locally(
    directory: Path,
    issuer_name: str,
    signers: Sequence[str],
    csr: bytes,
    *,
    now: dt.datetime,
    days: int,
    genesis: CAGenesis | None = None,
) -> bytes:
    """Issue a certificate on a ceremony's tokens: precertificate, SCTs, final (PEM chain).

    Every CT log key in ``signers`` signs an SCT; voting power comes from
    ``genesis``, or is 1 per validator of the ceremony.
    """
    policy, validators = read_ceremony_policy(directory)
    if genesis is None:
        section = (directory / "genesis-ca.toml").read_text()
        doc = tomllib.loads(
            "".join(f'[[validators]]\nname = "{v}"\npower = 1\n' for v in validators) + section
        )
        genesis = parse_ca_section(str(directory / "genesis-ca.toml"), doc)
    signer, issuer = await open_issuer(load_hsm_config(directory / issuer_name / "hsm.toml"))
    try:
        checked = issuance.check_csr(csr, policy)
        request = issuance.PrecertRequest(
            checked,
            secrets.token_bytes(issuance.MIN_NONCE),
            now,
            now + dt.timedelta(days=days) - dt.timedelta(seconds=1),
        )
        precert = await issuance.issue_precertificate(signer, issuer, request, policy)
    except issuance.IssuanceError as exc:
        raise CeremonyError(f"request refused: {exc}") from None
    index = _next_leaf_index(directory)
    timestamp = int(now.timestamp() * 1000)
    scts = []
    for name in signers:
        config = load_hsm_config(directory / name / "hsm.toml")
        log_signer = await hsm.Pkcs11Signer.open(config.settings, config.label("ct_log"))
        scts.append(
            await issue_sct(log_signer, precert.entry, timestamp, leaf_index_extensions(index))
        )
    try:
        final = await issuance.issue_final(signer, precert, scts, genesis)
    except issuance.IssuanceError as exc:
        raise CeremonyError(f"cannot issue: {exc}") from None
    return pem_certificate(final.der) + pem_certificate(issuer.der)


async def publish_crls(
    config: HsmConfig,
    records: Sequence[RevocationRecord],
    out_dir: Path,
    *,
    now: dt.datetime,
    days: int,
) -> list[tuple[Path, int]]:
    """Sign a CRL with each unexpired intermediate of a validator's folder."""
    written = []
    for pem in sorted((config.path.parent / "intermediates").glob("*.pem")):
        issuer = CACertificate.from_der(read_certificate(pem))
        if issuer.not_after < now:
            continue
        signer = await hsm.Pkcs11Signer.open(config.settings, pem.stem)
        number_file = out_dir / f"{issuer.key_id.hex()}.number"
        try:
            number = int(number_file.read_text().strip()) + 1
        except FileNotFoundError:
            number = 1
        except ValueError:
            raise CeremonyError(f"{number_file} does not hold a CRL number") from None
        crl = await sign_crl(
            signer,
            issuer,
            records,
            this_update=now,
            next_update=now + dt.timedelta(days=days),
            number=number,
        )
        target = out_dir / f"{issuer.key_id.hex()}.crl"
        # The number first: a crash between the two writes skips a number, never reuses one.
        number_file.write_text(f"{number}\n")
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(crl)
        tmp.replace(target)
        count = sum(1 for r in records if r.issuer_key_id == issuer.key_id)
        written.append((target, count))
    return written
