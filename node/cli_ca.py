"""`trustchain ca ...` (ceremony, rotation, CRLs) and `trustchain cert verify`."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from trustchain.node.config import http_url
from trustchain.node.errors import UserError

if TYPE_CHECKING:
    _Sub = argparse._SubParsersAction[argparse.ArgumentParser]


def _parser(sub: _Sub, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(description),
    )


def register(sub: _Sub) -> None:
    ca = sub.add_parser("ca", help="certificate authority: key ceremony, rotation, CRLs")
    ca_sub = ca.add_subparsers(dest="ca_command", metavar="COMMAND", required=True)
    _register_init(ca_sub)
    _register_rotate(ca_sub)
    _register_genesis(ca_sub)
    _register_steps(ca_sub)
    _register_issue(ca_sub)
    _register_revoke(ca_sub)
    _register_crl(ca_sub)

    cert = sub.add_parser("cert", help="work with issued certificates (verify)")
    cert_sub = cert.add_subparsers(dest="cert_command", metavar="COMMAND", required=True)
    _register_verify(cert_sub)
    # request, status, revoke: the node API's client (trustchain.node.cli_cert).
    from trustchain.node.cli_cert import register_cert_commands

    register_cert_commands(cert_sub)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--zones",
        default="trust.hypermesh.online",
        help="comma-separated DNS zones certificates may name (default trust.hypermesh.online)",
    )
    p.add_argument("--max-validity-days", type=int, default=90, help="default 90")
    p.add_argument("--allow-wildcards", action="store_true", help="allow *.name below a zone")
    p.add_argument("--crl-url", help="base URL of the CRLs, put in certificates")


def _policy(args: argparse.Namespace) -> Any:
    from trustchain.node.ca.profiles import CAPolicy

    try:
        return CAPolicy(
            zones=tuple(_csv(args.zones)),
            max_validity_days=args.max_validity_days,
            allow_wildcards=args.allow_wildcards,
            crl_url=args.crl_url,
        )
    except ValueError as exc:
        raise UserError(f"policy: {exc}") from None


# --- ca init --------------------------------------------------------------------------


def _register_init(sub: _Sub) -> None:
    p = _parser(
        sub,
        "init",
        "run a local key ceremony on SoftHSM2 (root, intermediates, CT log keys)",
        """\
        Creates a root token with an RSA-4096 root key and the self-signed root
        certificate DIR/root.pem, and for each validator a token holding an ECDSA P-384
        intermediate CA key (certified by the root: DIR/NAME/intermediate.pem) and an
        ECDSA P-256 CT log key (DIR/NAME/ct-log-key.pub.pem), plus DIR/NAME/hsm.toml,
        the PKCS#11 settings the node uses.  Keys are generated inside the tokens and
        can never be extracted.  DIR/genesis-ca.toml holds the [ca] section for the
        genesis file; with --genesis, DIR/genesis.toml is that file with it appended.

        PINs are random, written to DIR/*/pin (mode 0600) and never printed.

        example:
          trustchain ca init --dir ca --validators v1,v2,v3,v4 --zones trust.hypermesh.online
        """,
    )
    p.add_argument("--dir", required=True, type=Path, help="ceremony output directory")
    p.add_argument("--validators", required=True, help="comma-separated validator names")
    _policy_args(p)
    p.add_argument(
        "--root-scheme",
        default="rsa-pkcs1-sha384",
        choices=["rsa-pkcs1-sha384", "rsa-pss-sha384"],
        help="root signature scheme (default rsa-pkcs1-sha384)",
    )
    p.add_argument("--root-days", type=int, default=3650, help="root validity (default 3650)")
    p.add_argument(
        "--intermediate-days", type=int, default=365, help="intermediate validity (default 365)"
    )
    p.add_argument("--genesis", type=Path, help="genesis file to extend with the [ca] section")
    p.set_defaults(func=cmd_init)


ROOT_DAYS_MAX = 9132
"""CA/Browser Forum BR 6.3.2: a root certificate's validity, at most."""


def cmd_init(args: argparse.Namespace) -> int:
    from trustchain.node.ca import ceremony
    from trustchain.node.ca.schemes import parse_scheme

    validators = _csv(args.validators)
    ceremony.check_validator_names(validators)
    if args.dir.exists() and not args.dir.is_dir():
        raise UserError(f"--dir {args.dir}: is a file; give a new folder for the ceremony")
    if not 1 <= args.root_days <= ROOT_DAYS_MAX:
        raise UserError(
            f"--root-days: 1..{ROOT_DAYS_MAX} (BR 6.3.2: a root lasts 25 years at most)"
        )
    if not 1 <= args.intermediate_days <= args.root_days:
        raise UserError(
            f"--intermediate-days: 1..{args.root_days} (an intermediate cannot outlive its root)"
        )
    policy = _policy(args)
    if args.genesis is not None:
        _check_genesis_names(args.genesis, validators)
    result = trio.run(
        lambda: ceremony.run_ceremony(
            args.dir,
            validators,
            policy,
            now=_now(),
            progress=_progress,
            root_scheme=parse_scheme(args.root_scheme),
            root_days=args.root_days,
            intermediate_days=args.intermediate_days,
        )
    )
    print(f"root certificate:  {args.dir / 'root.pem'}")
    for name in validators:
        print(f"validator {name}: {args.dir / name / 'hsm.toml'} (intermediate-1, ct-log)")
    section = args.dir / "genesis-ca.toml"
    if args.genesis is not None:
        out = _merge_genesis(args.genesis, result.genesis_section, args.dir / "genesis.toml")
        print(f"genesis with [ca]: {out}")
    else:
        print(f"[ca] section:      {section}  (append it to the genesis file)")
    return 0


def _check_genesis_names(path: Path, validators: list[str]) -> None:
    from trustchain.node.config import read_toml

    doc = read_toml(path, "genesis file")
    names = [v.get("name") for v in doc.get("validators", []) if isinstance(v, dict)]
    missing = [n for n in validators if n not in names]
    if missing:
        raise UserError(
            f"{path} has no [[validators]] entry for {', '.join(missing)}; "
            "run the ceremony for the validators of that genesis file"
        )


def _strip_ca_section(text: str) -> str:
    """The genesis text without a previous [ca] section (tables [ca] and [ca.*])."""
    out: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            header = stripped.strip("[]").strip()
            skipping = header == "ca" or header.startswith("ca.")
        elif stripped.startswith("[["):
            skipping = False
        if not skipping:
            out.append(line)
    return "".join(out)


def _merge_genesis(genesis: Path, section: str, out: Path) -> Path:
    try:
        text = genesis.read_text()
    except OSError as exc:
        raise UserError(f"cannot read {genesis}: {exc.strerror}") from None
    merged = _strip_ca_section(text).rstrip("\n") + "\n\n" + section
    tmp = out.with_suffix(".tmp")
    tmp.write_text(merged)
    tmp.replace(out)
    return out


# --- ca rotate / ca genesis --------------------------------------------------------------


def _register_rotate(sub: _Sub) -> None:
    p = _parser(
        sub,
        "rotate",
        "certify a new intermediate for a validator and issue with it",
        """\
        Generates a new ECDSA P-384 key in the validator's token, has the root (DIR/root)
        certify it, and points DIR/NAME/hsm.toml at it: new certificates are issued with
        the new key.  The old intermediate stays valid until it expires;
        DIR/genesis-ca.toml lists every unexpired intermediate of each validator.
        Restart (or reload) the node after distributing the new genesis section.

        example:
          trustchain ca rotate --dir ca --validator v1
        """,
    )
    p.add_argument("--dir", required=True, type=Path, help="the ceremony directory")
    p.add_argument("--validator", required=True, help="whose intermediate to rotate")
    p.add_argument("--days", type=int, default=365, help="validity of the new intermediate")
    p.add_argument("--genesis", type=Path, help="genesis file to rewrite with the new [ca] section")
    p.set_defaults(func=cmd_rotate)


def cmd_rotate(args: argparse.Namespace) -> int:
    from trustchain.node.ca import ceremony

    der = trio.run(
        lambda: ceremony.rotate_intermediate(
            args.dir, args.validator, now=_now(), days=args.days, progress=_progress
        )
    )
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    print(
        f"{args.validator}: new intermediate serial {cert.serial_number:x}, valid until "
        f"{cert.not_valid_after_utc:%Y-%m-%d}; issuing with it from now on"
    )
    if args.genesis is not None:
        section = (args.dir / "genesis-ca.toml").read_text()
        print(f"genesis with [ca]: {_merge_genesis(args.genesis, section, args.genesis)}")
    return 0


def _register_genesis(sub: _Sub) -> None:
    p = _parser(
        sub,
        "genesis",
        "rewrite the [ca] genesis section (drops expired intermediates)",
        """\
        Rebuilds DIR/genesis-ca.toml from the validators' folders: CT log keys and
        every intermediate that has not expired.  With --genesis, also writes that
        genesis file with its [ca] section replaced.

        example:
          trustchain ca genesis --dir ca --genesis cluster/genesis.toml
        """,
    )
    p.add_argument("--dir", required=True, type=Path, help="the ceremony directory")
    p.add_argument("--genesis", type=Path, help="genesis file whose [ca] section to replace")
    p.set_defaults(func=cmd_genesis)


def cmd_genesis(args: argparse.Namespace) -> int:
    from trustchain.node.ca import ceremony

    policy, validators = ceremony.read_ceremony_policy(args.dir)
    section = ceremony.write_genesis_section(args.dir, policy, validators, now=_now())
    print(f"[ca] section: {args.dir / 'genesis-ca.toml'}")
    if args.genesis is not None:
        print(f"genesis with [ca]: {_merge_genesis(args.genesis, section, args.genesis)}")
    return 0


# --- the ceremony steps one by one (real HSMs) ------------------------------------------


def _register_steps(sub: _Sub) -> None:
    keygen = _parser(
        sub,
        "keygen",
        "generate a key pair inside a token (step of a ceremony on a real HSM)",
        """\
        Generates a non-extractable, sensitive key pair in the token that HSM.toml
        names and prints its public key.  Kinds: p384 (intermediate CA), p256 (CT log),
        rsa4096 / rsa3072 (root).  Labels are never reused.

        example:
          trustchain ca keygen --hsm /etc/trustchain/hsm.toml --label intermediate-1 --kind p384
        """,
    )
    keygen.add_argument("--hsm", required=True, type=Path, help="PKCS#11 settings (hsm.toml)")
    keygen.add_argument("--label", required=True, help="label of the new key")
    keygen.add_argument("--kind", required=True, choices=["p256", "p384", "rsa3072", "rsa4096"])
    keygen.set_defaults(func=cmd_keygen)

    root = _parser(
        sub,
        "root-cert",
        "self-sign the root certificate with the root key in its token",
        """\
        example:
          trustchain ca root-cert --hsm root/hsm.toml --label root --out root.pem
        """,
    )
    root.add_argument("--hsm", required=True, type=Path, help="the root token's hsm.toml")
    root.add_argument("--label", default="root", help="root key label (default root)")
    root.add_argument("--out", required=True, type=Path, help="where to write the PEM")
    root.add_argument("--cn", default="TrustChain Root CA", help="root common name")
    root.add_argument("--days", type=int, default=3650, help="validity (default 3650)")
    root.add_argument(
        "--scheme", default="rsa-pkcs1-sha384", choices=["rsa-pkcs1-sha384", "rsa-pss-sha384"]
    )
    root.set_defaults(func=cmd_root_cert)

    csr = _parser(
        sub,
        "csr",
        "make a CSR for a key in a token (signed inside the token)",
        """\
        example:
          trustchain ca csr --hsm v1/hsm.toml --label intermediate-2 \\
              --cn "TrustChain Intermediate v1" --out v1-intermediate-2.csr
        """,
    )
    csr.add_argument("--hsm", required=True, type=Path, help="the token's hsm.toml")
    csr.add_argument("--label", required=True, help="key label")
    csr.add_argument("--cn", required=True, help="subject common name")
    csr.add_argument("--out", required=True, type=Path, help="where to write the PEM CSR")
    csr.set_defaults(func=cmd_csr)

    certify = _parser(
        sub,
        "certify",
        "sign an intermediate CA certificate with the root key",
        """\
        Checks the CSR's signature (proof of possession) and key type (P-384), then the
        root key signs an intermediate certificate constrained to --zones.

        example:
          trustchain ca certify --hsm root/hsm.toml --root root.pem \\
              --csr v1-intermediate-2.csr --zones trust.hypermesh.online --out v1.pem
        """,
    )
    certify.add_argument("--hsm", required=True, type=Path, help="the root token's hsm.toml")
    certify.add_argument("--label", default="root", help="root key label (default root)")
    certify.add_argument("--root", required=True, type=Path, help="the root certificate (PEM)")
    certify.add_argument("--csr", required=True, type=Path, help="the intermediate's CSR")
    certify.add_argument("--zones", required=True, help="comma-separated permitted DNS zones")
    certify.add_argument("--days", type=int, default=365, help="validity (default 365)")
    certify.add_argument("--crl-url", help="base URL of the root's CRL")
    certify.add_argument("--out", required=True, type=Path, help="where to write the PEM")
    certify.set_defaults(func=cmd_certify)

    pubkey = _parser(
        sub,
        "pubkey",
        "export the public key of a key in a token (PEM)",
        """\
        example:
          trustchain ca pubkey --hsm v1/hsm.toml --label ct-log --out ct-log-key.pub.pem
        """,
    )
    pubkey.add_argument("--hsm", required=True, type=Path, help="the token's hsm.toml")
    pubkey.add_argument("--label", required=True, help="key label")
    pubkey.add_argument("--out", required=True, type=Path, help="where to write the PEM")
    pubkey.set_defaults(func=cmd_pubkey)


def cmd_keygen(args: argparse.Namespace) -> int:
    from trustchain.node.ca import ceremony, hsm

    config = ceremony.load_hsm_config(args.hsm)
    if args.kind.startswith("rsa"):
        _progress("generating an RSA key in the HSM (can take a minute)...")
    public = trio.run(lambda: hsm.generate_key(config.settings, args.label, args.kind))
    sys.stdout.write(ceremony.public_key_pem(public).decode())
    return 0


def cmd_root_cert(args: argparse.Namespace) -> int:
    from trustchain.node.ca import ceremony
    from trustchain.node.ca.schemes import parse_scheme

    config = ceremony.load_hsm_config(args.hsm)
    der = trio.run(
        lambda: ceremony.root_certificate(
            config.settings,
            args.label,
            scheme=parse_scheme(args.scheme),
            common_name=args.cn,
            now=_now(),
            days=args.days,
        )
    )
    ceremony.write_new(args.out, ceremony.pem_certificate(der))
    print(f"root certificate: {args.out}")
    return 0


def cmd_csr(args: argparse.Namespace) -> int:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from trustchain.node.ca import ceremony

    config = ceremony.load_hsm_config(args.hsm)
    der = trio.run(lambda: ceremony.key_csr(config.settings, args.label, args.cn))
    pem = x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM)
    ceremony.write_new(args.out, pem)
    print(f"CSR: {args.out}")
    return 0


def _read_csr(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None


def cmd_certify(args: argparse.Namespace) -> int:
    from trustchain.node.ca import ceremony

    config = ceremony.load_hsm_config(args.hsm)
    root_der = ceremony.read_certificate(args.root)
    der = trio.run(
        lambda: ceremony.certify_intermediate(
            config.settings,
            args.label,
            root_der,
            _read_csr(args.csr),
            zones=_csv(args.zones),
            now=_now(),
            days=args.days,
            crl_url=args.crl_url,
        )
    )
    ceremony.write_new(args.out, ceremony.pem_certificate(der))
    print(f"intermediate certificate: {args.out}")
    return 0


def cmd_pubkey(args: argparse.Namespace) -> int:
    from trustchain.node.ca import ceremony, hsm

    config = ceremony.load_hsm_config(args.hsm)

    async def read() -> Any:
        return (await hsm.Pkcs11Signer.open(config.settings, args.label)).public_key()

    public = trio.run(read)
    ceremony.write_new(args.out, ceremony.public_key_pem(public))
    print(f"public key: {args.out}")
    return 0


# --- ca issue (local, for trying the CA out) ----------------------------------------------


def _register_issue(sub: _Sub) -> None:
    p = _parser(
        sub,
        "issue",
        "issue a certificate on a local ceremony's tokens (development tool)",
        """\
        Runs DESIGN.md section 6 steps 2 to 4 in one process, without consensus or
        proofs: checks the CSR against the [ca] policy, signs the precertificate with
        the validator's intermediate, has every validator's CT log key sign an SCT
        over it, and signs the final certificate with the SCT quorum embedded.  Meant
        for trying the CA out and for tests; a cluster issues through its nodes.

        example:
          trustchain ca issue --dir ca --validator v1 --csr www.csr --out www.pem
        """,
    )
    p.add_argument("--dir", required=True, type=Path, help="the ceremony directory")
    p.add_argument("--validator", required=True, help="the issuing validator")
    p.add_argument("--csr", required=True, type=Path, help="PKCS #10 request (PEM or DER)")
    p.add_argument("--out", required=True, type=Path, help="where to write the PEM chain")
    p.add_argument("--days", type=int, default=90, help="validity in days (default 90)")
    p.add_argument("--signers", help="comma-separated validators whose CT logs sign (default: all)")
    p.add_argument(
        "--genesis", type=Path, help="genesis file for voting power (default: power 1 each)"
    )
    p.set_defaults(func=cmd_issue)


def cmd_issue(args: argparse.Namespace) -> int:
    from trustchain.node.ca import ceremony

    _, validators = ceremony.read_ceremony_policy(args.dir)
    signers = _csv(args.signers) if args.signers else validators
    unknown = [s for s in signers if s not in validators]
    if unknown or args.validator not in validators:
        bad = ", ".join(unknown or [args.validator])
        raise UserError(f"{bad}: not a validator of {args.dir} ({', '.join(validators)})")
    csr = _read_csr(args.csr)
    from trustchain.node.ca.genesis import load_ca_genesis

    genesis = load_ca_genesis(args.genesis) if args.genesis else None
    pem = trio.run(
        lambda: ceremony.issue_locally(
            args.dir,
            args.validator,
            signers,
            csr,
            now=_now(),
            days=args.days,
            genesis=genesis,
        )
    )
    ceremony.write_new(args.out, pem)
    print(f"certificate (with its intermediate): {args.out}")
    return 0


# --- ca revoke / ca crl ----------------------------------------------------------------------


def _register_revoke(sub: _Sub) -> None:
    p = _parser(
        sub,
        "revoke",
        "record a revocation for a certificate (standalone CA)",
        """\
        Appends a revocation record (RFC 5280 reason code) to the validator's
        revocations.jsonl; `trustchain ca crl` then lists it.  Reasons (BR 7.2.2):
        unspecified, keyCompromise, affiliationChanged, superseded,
        cessationOfOperation, privilegeWithdrawn.  In a cluster, revocation is a
        committed operation instead.

        example:
          trustchain ca revoke --hsm ca/v1/hsm.toml --cert www.pem --reason keyCompromise
        """,
    )
    p.add_argument("--hsm", required=True, type=Path, help="the issuing validator's hsm.toml")
    p.add_argument("--cert", required=True, type=Path, help="the certificate to revoke")
    p.add_argument("--reason", default="unspecified", help="RFC 5280 reason (default unspecified)")
    p.add_argument(
        "--log", type=Path, help="revocation log (default: revocations.jsonl by hsm.toml)"
    )
    p.set_defaults(func=cmd_revoke)


def cmd_revoke(args: argparse.Namespace) -> int:
    from trustchain.node.ca import ceremony, revocation

    config = ceremony.load_hsm_config(args.hsm)
    log = revocation.RevocationLog(args.log or config.path.parent / "revocations.jsonl")
    cert_der = ceremony.read_certificate(args.cert)
    try:
        record = revocation.record_for(
            cert_der, revocation.RevocationReason.parse(args.reason), _now()
        )
        log.add(record)
    except revocation.RevocationError as exc:
        raise UserError(str(exc)) from None
    print(f"revoked serial {record.serial:x} ({record.reason.label}); run `trustchain ca crl`")
    return 0


def _register_crl(sub: _Sub) -> None:
    p = _parser(
        sub,
        "crl",
        "sign a CRL for each of a validator's intermediates",
        """\
        For every unexpired intermediate of the validator (DIR/NAME/intermediates), signs
        a CRL with that intermediate's key in the token, listing its revoked serials, and
        writes OUT/<key id>.crl (DER, the name certificates point to).  CRL numbers only
        grow.

        example:
          trustchain ca crl --hsm ca/v1/hsm.toml
        """,
    )
    p.add_argument("--hsm", required=True, type=Path, help="the validator's hsm.toml")
    p.add_argument(
        "--log", type=Path, help="revocation log (default: revocations.jsonl by hsm.toml)"
    )
    p.add_argument("--out-dir", type=Path, help="where to write CRLs (default: crl/ by hsm.toml)")
    p.add_argument("--days", type=int, default=7, help="CRL lifetime in days (default 7, max 10)")
    p.set_defaults(func=cmd_crl)


def cmd_crl(args: argparse.Namespace) -> int:
    from trustchain.node.ca import ceremony, revocation

    if not 1 <= args.days <= 10:
        raise UserError("--days must be 1..10 (CA/Browser Forum BR 4.9.7)")
    config = ceremony.load_hsm_config(args.hsm)
    base = config.path.parent
    if args.log is not None and not args.log.is_file():
        # A mistyped log would publish a CRL without the revoked certificates.
        raise UserError(
            f"--log {args.log}: no such file; give the revocation log that "
            "`trustchain ca revoke --log` appends to"
        )
    log = revocation.RevocationLog(args.log or base / "revocations.jsonl")
    out_dir = args.out_dir or base / "crl"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        records = log.records()
    except revocation.RevocationError as exc:
        raise UserError(str(exc)) from None
    now = _now()
    written = trio.run(
        lambda: ceremony.publish_crls(config, records, out_dir, now=now, days=args.days)
    )
    if not written:
        raise UserError(f"no unexpired intermediate in {base / 'intermediates'}")
    for path, count in written:
        print(f"{path}: {count} revoked")
    return 0


# --- cert verify ------------------------------------------------------------------------------


def _register_verify(sub: _Sub) -> None:
    p = _parser(
        sub,
        "verify",
        "verify a certificate: chain, SCT quorum, validity (and online: log, revocation)",
        """\
        Checks the chain to ROOT.pem, every embedded SCT against the validators' CT log
        keys in the genesis file, that SCT signers hold more than 2/3 of the voting
        power, and the validity period.  --crl checks revocation against a CRL;
        --online URL asks a node for the inclusion proof against a cosigned checkpoint
        and the revocation status.  Prints each check, names the first failure, exits 1
        on failure.

        example:
          trustchain cert verify www.pem --genesis genesis.toml --root root.pem
        """,
    )
    p.add_argument("cert", type=Path, help="the certificate (PEM; may include its intermediate)")
    p.add_argument("--genesis", required=True, type=Path, help="the cluster's genesis file")
    p.add_argument("--root", required=True, type=Path, help="the root certificate (PEM)")
    p.add_argument("--crl", type=Path, action="append", default=[], help="a CRL (repeatable)")
    p.add_argument("--online", metavar="URL", type=http_url, help="a node's API base URL")
    p.add_argument("--online-cafile", help="CA bundle to check the node's TLS certificate")
    p.add_argument("--at", help="check at this UTC time (ISO 8601) instead of now")
    p.set_defaults(func=cmd_verify)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None


def cmd_verify(args: argparse.Namespace) -> int:
    from trustchain.node.ca import verify
    from trustchain.node.ca.genesis import load_ca_genesis

    genesis = load_ca_genesis(args.genesis)
    try:
        chain = verify.load_certificates(_read(args.cert, "certificate"))
    except ValueError as exc:
        raise UserError(f"{args.cert}: {exc}") from None
    try:
        roots = verify.load_certificates(_read(args.root, "root certificate"))
    except ValueError as exc:
        raise UserError(f"--root {args.root}: {exc}") from None
    crls = [_read(path, "CRL") for path in args.crl]
    # The exact time: an SCT made earlier in this very second must not look as if it
    # came from the future (issuance rounds times to the second; verification must not).
    now = dt.datetime.now(dt.UTC)
    if args.at:
        try:
            now = dt.datetime.fromisoformat(args.at)
        except ValueError:
            raise UserError(f"--at {args.at!r}: expected an ISO 8601 time") from None
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.UTC)
    verifier = verify.Verifier(roots[0], genesis)
    report, verified = verifier.verify(chain, now, crls)
    if verified is not None and args.online:
        fetch = verify.http_fetch(args.online_cafile)
        verify.check_online(report, verified, genesis, args.online, fetch)
    width = max(len(c.name) for c in report.checks)
    for check in report.checks:
        mark = "ok  " if check.ok else "FAIL"
        print(f"{mark}  {check.name:<{width}}  {check.detail}")
    failure = report.failure
    if failure is not None:
        print(f"{args.cert}: verification FAILED at {failure.name}: {failure.detail}")
        return 1
    online = " and online" if args.online else ""
    print(f"{args.cert}: verified offline{online} ({len(report.checks)} checks)")
    return 0
