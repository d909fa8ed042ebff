"""`trustchain bench ca`: HSM signatures, final certificates, offline verifications.

Everything runs in this process on one SoftHSM2 token made for the run (under
a temporary directory) holding an RSA-4096 root key, an ECDSA P-384
intermediate key and an ECDSA P-256 CT log key, all generated in the token.
Figures:

- signatures per second through ``Pkcs11Signer`` for each key, with 1 and with
  N calls in flight (all through the process's one PKCS#11 worker thread);
- precertificates per second (CSR checked, TBS built, signed in the HSM);
- final certificates per second: four validators' SCTs (software P-256 keys,
  as the CT logs of other validators would send them) checked against the
  genesis, the quorum counted, the TBS assembled and signed in the HSM;
- offline verifications per second (``trustchain cert verify``'s checks: chain,
  signature, validity, names, every SCT, quorum) in one thread, per wall second
  and per CPU second, with the CPU time of their five signature checks alone
  (one P-384, four P-256): the floor no parsing speed-up can go below;
- a validator's check of one issuance request (``ReplicatedState.validate``,
  as ``AppCore._admit`` calls it) in CPU microseconds, against its P-384,
  P-256 and Ed25519 signature checks alone (``validator_check``).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import secrets
import statistics
import tempfile
import textwrap
import time
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import chiapos
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from trustchain.consensus.proofs.bundle import signed_message
from trustchain.consensus.proofs.codec import encode_bundle
from trustchain.consensus.proofs.hashing import account_id
from trustchain.consensus.proofs.ledger import raw_public_key
from trustchain.consensus.proofs.policy import (
    AccountEntry,
    Policy,
    account_entry_toml,
    policy_toml,
)
from trustchain.consensus.proofs.prover import make_bundle
from trustchain.consensus.proofs.space import make_space_proof
from trustchain.consensus.proofs.vdf import make_time_proof
from trustchain.consensus.validators import Member, ValidatorSet
from trustchain.ct.merkle import EMPTY_ROOT
from trustchain.ct.precert import split_certificate
from trustchain.ct.sct import (
    EntryType,
    LogEntry,
    LogKey,
    SignedCertificateTimestamp,
    issue_sct,
    leaf_index_extensions,
    parse_sct_list_extension,
    sct_signed_data,
)
from trustchain.ct.signer import PublicKey, Signer, SoftwareSigner
from trustchain.ct.signer import verify_signature as verify_log_signature
from trustchain.node.ca import ceremony, certbuild, der, hsm, issuance, profiles
from trustchain.node.ca.genesis import CAGenesis, ca_section_toml, load_ca_genesis, parse_ca_section
from trustchain.node.ca.profiles import CACertificate, CAPolicy
from trustchain.node.ca.schemes import SignatureScheme, SoftwareCASigner
from trustchain.node.ca.schemes import verify as verify_signature
from trustchain.node.ca.verify import Verifier
from trustchain.node.cli_proofs import create_plot
from trustchain.node.config import Genesis, load_genesis
from trustchain.node.errors import UserError
from trustchain.node.state import (
    IssueRequest,
    ReplicatedState,
    encode_issue,
    epoch_beacon,
    request_hash,
)

ZONE = "bench.trustchain.example"
PLOT_K = 18


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "ca",
        help="CA: HSM signatures/s (P-384, P-256, RSA-4096), final certificates/s, verifications/s",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Makes a SoftHSM2 token in a temporary directory with an RSA-4096, a P-384 and
            a P-256 key (RSA-4096 generation can take a minute), then measures signatures
            per second through the PKCS#11 Signer, precertificates and final
            certificates (SCT quorum checked, signed in the HSM) per second, and offline
            verifications per second.  Goals: 500 final certificates/s through SoftHSM,
            1,000 offline verifications/s per core.

            Last, a validator's check of one issuance request (what every validator runs
            when a request is admitted: CSR, precertificate, proof bundle) against the
            cost of its three signature checks alone; --validator-check-only prints just
            that (a k=18 plot is made for it; no SoftHSM needed).

            examples:
              trustchain bench ca --seconds 3
              trustchain bench ca --validator-check-only --requests 300
            """
        ),
    )
    bench.add_argument("--seconds", type=float, default=3.0, help="per measurement (default 3)")
    bench.add_argument(
        "--in-flight", type=int, default=32, help="concurrent HSM calls (default 32)"
    )
    bench.add_argument(
        "--requests",
        type=int,
        default=300,
        help="issuance requests for the validator check figure (default 300)",
    )
    bench.add_argument(
        "--validator-check-only",
        action="store_true",
        help="measure only a validator's check of one issuance request (no SoftHSM needed)",
    )
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.in_flight < 1:
        raise UserError("--seconds must be positive and --in-flight at least 1")
    if args.requests < 1:
        raise UserError("--requests must be at least 1")
    if args.validator_check_only:
        with tempfile.TemporaryDirectory(prefix="trustchain-bench-ca-") as tmp:
            trio.run(_say_validator_check, Path(tmp), args.requests)
        return 0
    if not hsm.SOFTHSM2_MODULE.exists():
        raise UserError(
            f"{hsm.SOFTHSM2_MODULE} is missing; install softhsm2 (infra/scripts/ensure-debs)"
        )
    with tempfile.TemporaryDirectory(prefix="trustchain-bench-ca-") as tmp:
        trio.run(_bench, Path(tmp), args.seconds, args.in_flight)
        _say("")
        trio.run(_say_validator_check, Path(tmp), args.requests)
    return 0


async def _say_validator_check(tmp: Path, requests: int) -> None:
    check, floor = await validator_check(tmp, requests)
    _say(
        f"validator request check: {check:,.0f} us per request "
        f"(cryptography alone {floor:,.0f} us; ReplicatedState.validate, cold per-request "
        f"cache, {requests} requests, median of 5 CPU-time rounds)"
    )


async def _rate(
    seconds: float, in_flight: int, op: Callable[[int], Awaitable[object]]
) -> tuple[float, float]:
    """Run ``op(i)`` with ``in_flight`` tasks for ``seconds``: (ops/s, CPU ms per op).

    CPU time is the whole process's (trio thread and PKCS#11 worker, SoftHSM
    included), so it stays meaningful on a machine shared with other work.
    """
    done = 0
    counter = iter(range(1 << 62))
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await op(next(counter))
            done += 1

    start, cpu = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(in_flight):
            nursery.start_soon(worker)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return done / wall, 1000 * cpu / max(done, 1)


def _say(text: str) -> None:
    print(text, flush=True)


async def _bench(tmp: Path, seconds: float, in_flight: int) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    _say("setting up: SoftHSM2 token, RSA-4096 + P-384 + P-256 keys generated in it ...")
    settings = await ceremony.setup_softhsm_token(tmp / "token", "tc-bench")
    t0 = time.perf_counter()
    await hsm.generate_key(settings, "root", "rsa4096")
    rsa_seconds = time.perf_counter() - t0
    await hsm.generate_key(settings, "intermediate", "p384")
    await hsm.generate_key(settings, "ct-log", "p256")
    _say(f"  RSA-4096 key generation in SoftHSM2: {rsa_seconds:.1f} s")

    root_signer = await hsm.Pkcs11Signer.open(
        settings, "root", scheme=SignatureScheme.RSA_PKCS1_SHA384
    )
    int_signer = await hsm.Pkcs11Signer.open(settings, "intermediate")
    log_signer = await hsm.Pkcs11Signer.open(settings, "ct-log")

    _say("")
    _say(f"signatures through the PKCS#11 Signer ({seconds:g} s each)")
    _say(f"  {'key':<28} {'1 in flight':>14} {f'{in_flight} in flight':>14} {'CPU ms each':>12}")
    signers: list[tuple[str, Signer]] = [
        ("ECDSA P-384 (intermediate)", int_signer),
        ("ECDSA P-256 (CT log)", log_signer),
        ("RSA-4096 PKCS#1 SHA-384", root_signer),
    ]
    message = secrets.token_bytes(1000)  # about the size of a TBSCertificate
    for label, signer in signers:

        async def sign(_: int, signer: Signer = signer) -> bytes:
            return await signer.sign(message)

        one, _ = await _rate(seconds, 1, sign)
        many, cpu_ms = await _rate(seconds, in_flight, sign)
        _say(f"  {label:<28} {one:>12,.0f}/s {many:>12,.0f}/s {cpu_ms:>12.2f}")

    # The CA: root and intermediate in the HSM, four validators' CT logs.
    root_der = await ceremony.root_certificate(
        settings, "root", scheme=SignatureScheme.RSA_PKCS1_SHA384, common_name="Bench Root", now=now
    )
    root = CACertificate.from_der(root_der)
    tbs = profiles.intermediate_tbs(
        root,
        int_signer.public_key(),
        common_name="Bench Intermediate",
        zones=[ZONE],
        not_before=now,
    )
    issuer = CACertificate.from_der(await certbuild.sign_certificate(root_signer, tbs))
    logs = {f"v{i}": SoftwareSigner(ec.generate_private_key(ec.SECP256R1())) for i in range(1, 5)}
    policy = CAPolicy(zones=(ZONE,))
    validators = "".join(f'[[validators]]\nname = "{n}"\npower = 1\n' for n in logs)
    section = ca_section_toml(
        policy, {n: (s.public_key(), [issuer.der]) for n, s in logs.items()}, root_der=root_der
    )
    genesis = parse_ca_section("bench", tomllib.loads(validators + section))

    csrs = []
    for i in range(64):
        key = ec.generate_private_key(ec.SECP256R1())
        name = f"host{i}.{ZONE}"
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256())
        )
        csrs.append(csr.public_bytes(serialization.Encoding.DER))

    precerts: list[issuance.Precertificate] = []

    async def precertificate(i: int) -> None:
        checked = issuance.check_csr(csrs[i % len(csrs)], policy)
        request = issuance.PrecertRequest(
            checked,
            secrets.token_bytes(16),
            now,
            now + dt.timedelta(days=90) - dt.timedelta(seconds=1),
        )
        precerts.append(await issuance.issue_precertificate(int_signer, issuer, request, policy))

    _say("")
    rate, cpu_ms = await _rate(seconds, in_flight, precertificate)
    _say(
        f"precertificates (CSR checked, TBS built, P-384 in the HSM): {rate:,.0f}/s, "
        f"{cpu_ms:.2f} CPU ms each"
    )

    timestamp = int(now.timestamp() * 1000)
    scts = []
    for i, precert in enumerate(precerts):
        ext = leaf_index_extensions(i)
        scts.append([await issue_sct(logs[n], precert.entry, timestamp, ext) for n in logs])

    finals: list[bytes] = []

    async def finish(chunk: range) -> None:
        for i in chunk:
            made = await issuance.issue_final(int_signer, precerts[i], scts[i], genesis)
            finals.append(made.der)

    # Every precertificate from above becomes a final certificate, in_flight at a time.
    start, cpu = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        for k in range(in_flight):
            nursery.start_soon(finish, range(k, len(precerts), in_flight))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    _say(
        f"final certificates (4 SCTs checked, quorum, TBS assembled, P-384 in the HSM): "
        f"{len(finals) / elapsed:,.0f}/s ({len(finals)} in {elapsed:.2f} s), "
        f"{1000 * cpu / len(finals):.2f} CPU ms each"
    )

    verifier = Verifier(root_der, genesis)
    at = now + dt.timedelta(minutes=1)
    report, _ = verifier.verify([finals[0]], at)
    if not report.ok:
        raise UserError(f"benchmark certificate does not verify: {report.failure}")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    verified = 0
    while time.perf_counter() - wall0 < seconds:
        for cert in finals:
            verifier.verify([cert], at)
            verified += 1
            if time.perf_counter() - wall0 >= seconds:
                break
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    _say(
        f"offline verifications (chain, P-384 signature, 4 SCTs, quorum; one thread): "
        f"{verified / wall:,.0f}/s wall, {verified / cpu:,.0f} per CPU second"
    )
    floor = _signature_floor(finals, issuer, logs, seconds / 2)
    per_cert = 1e6 * cpu / verified
    _say(
        f"  {per_cert:,.0f} CPU us each, of which the 5 signature checks alone take "
        f"{floor:,.0f} us (at most {1e6 / floor:,.0f} per CPU second)"
    )


def _signature_floor(
    finals: list[bytes], issuer: CACertificate, logs: dict[str, SoftwareSigner], seconds: float
) -> float:
    """CPU microseconds for just the signature checks of one verification.

    The certificate's signature by the intermediate and each embedded SCT's
    signature over the rebuilt TBS, with everything else prepared beforehand:
    the part of a verification no parsing speed-up can remove.
    """
    key, scheme = issuer.public_key(), issuer.scheme
    checks: list[tuple[bytes, bytes, list[tuple[LogKey, SignedCertificateTimestamp, bytes]]]] = []
    by_id = {k.log_id: k for k in (LogKey(s.public_key()) for s in logs.values())}
    for cert in finals:
        split = split_certificate(cert)
        raw, tbs = split.embedded_scts()
        entry = LogEntry(EntryType.PRECERT, tbs, issuer.issuer_key_hash)
        scts = [
            (by_id[s.log_id], s, sct_signed_data(s.timestamp, entry, s.extensions))
            for s in parse_sct_list_extension(raw)
        ]
        checks.append((split.tbs, der.bit_string_value(split.signature), scts))
    done = 0
    cpu0 = time.process_time()
    while time.process_time() - cpu0 < seconds:
        for tbs, value, scts in checks:
            ok = verify_signature(key, scheme, value, tbs)
            for log_key, sct, message in scts:
                ok &= verify_log_signature(log_key.public_key, sct.signature.signature, message)
            if not ok:
                raise UserError("benchmark certificate does not verify")
            done += 1
    return 1e6 * (time.process_time() - cpu0) / done


# --- a validator's check of one issuance request ------------------------------------


async def validator_check(tmp: Path, requests: int, rounds: int = 5) -> tuple[float, float]:
    """(µs per request of ``ReplicatedState.validate``, µs of its cryptography alone).

    Builds ``requests`` issue operations as an issuing node does (a fresh P-256
    key and CSR each, a real proof bundle from a k=18 plot made here, a
    precertificate signed by a software P-384 intermediate), then times what
    ``AppCore._admit`` asks of every validator: ``validate(op)`` with a cold
    per-operation cache (each operation is new to the state), the epoch's space
    and time proofs already cached, as in a running cluster.  The floor is the
    same three signature checks made directly with keys parsed beforehand
    (the CSR's key is parsed in the timed part: every request brings a new one).
    """
    setup = await validator_check_setup(tmp, requests)
    return _time_validator_check(setup, rounds)


@dataclass(frozen=True)
class ValidatorCheckSetup:
    """What ``validator_check`` times: a genesis, issue operations, signature inputs."""

    genesis: Genesis
    """The chain's genesis (one account, bonded, with a k=18 plot)."""
    ca: CAGenesis
    """Its CA section: four validators with a software P-384 intermediate each."""
    members: list[Member]
    """The validator set."""
    warm: bytes
    """One more operation, checked untimed so that the epoch's proofs are cached."""
    ops: list[bytes]
    """The issue operations to check."""
    floor: list[tuple[PublicKey, SignatureScheme, bytes, bytes, bytes, bytes, bytes, bytes, bytes]]
    """Per operation: intermediate key and scheme, precertificate TBS and signature,
    the CSR's SPKI, CertificationRequestInfo and signature, the bundle's signed
    message and signature."""
    account_key: Ed25519PublicKey
    """The account's key."""


async def validator_check_setup(tmp: Path, requests: int) -> ValidatorCheckSetup:
    """Make the operations ``validator_check`` times (see there)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    chain_id = "bench-validator-check"
    policy = Policy(
        min_stake=100, work_bits=8, min_k=PLOT_K, space_index_limit=16, vdf_iterations=2000,
        epoch_length=1000, unbonding_delay=2000,
    )  # fmt: skip
    account_key = Ed25519PrivateKey.generate()
    public = raw_public_key(account_key)
    plot_path = tmp / "validator-check.plot"
    _say(f"setting up the validator check: a k={PLOT_K} plot, {requests} requests ...")
    create_plot(public, PLOT_K, plot_path)
    plot = chiapos.DiskProver(str(plot_path))
    beacon = epoch_beacon(chain_id, 0, EMPTY_ROOT)
    account = account_id(public)
    space = make_space_proof(plot, public, account, beacon, policy)
    time_proof = make_time_proof(beacon, account, policy.vdf_iterations)

    ca_policy = CAPolicy(zones=(ZONE,))
    start = now - dt.timedelta(days=1)
    root_signer = SoftwareCASigner(ec.generate_private_key(ec.SECP384R1()))
    root = CACertificate.from_der(
        await certbuild.sign_certificate(
            root_signer,
            profiles.root_tbs(
                root_signer.public_key(), root_signer.scheme, common_name="Root", not_before=start
            ),
        )
    )
    names = ["v1", "v2", "v3", "v4"]
    issuers: dict[str, tuple[SoftwareCASigner, CACertificate]] = {}
    logs: dict[str, SoftwareSigner] = {}
    node_keys = {n: Ed25519PrivateKey.generate() for n in names}
    for name in names:
        signer = SoftwareCASigner(ec.generate_private_key(ec.SECP384R1()))
        tbs = profiles.intermediate_tbs(
            root, signer.public_key(), common_name=f"Int {name}", zones=[ZONE], not_before=start
        )
        issuers[name] = (
            signer,
            CACertificate.from_der(await certbuild.sign_certificate(root_signer, tbs)),
        )
        logs[name] = SoftwareSigner(ec.generate_private_key(ec.SECP256R1()))
    text = [f'chain_id = "{chain_id}"\n']
    for i, name in enumerate(names):
        key = base64.b64encode(raw_public_key(node_keys[name])).decode()
        text.append(
            f'[[validators]]\nname = "{name}"\naddress = "[::1]:{7001 + i}"\n'
            f'public_key = "{key}"\npower = 1\n'
        )
    text.append(policy_toml(policy))
    text.append(account_entry_toml(AccountEntry(account, public, bonded=1000)))
    text.append(
        ca_section_toml(
            ca_policy,
            {n: (logs[n].public_key(), [issuers[n][1].der]) for n in names},
            root_der=root.der,
        )
    )
    genesis_path = tmp / "validator-check-genesis.toml"
    genesis_path.write_text("\n".join(text))
    genesis = load_genesis(genesis_path)
    ca = load_ca_genesis(genesis_path)
    members = [Member(v.name, v.public_key, v.power) for v in genesis.validators]

    ops: list[bytes] = []
    floor: list[
        tuple[PublicKey, SignatureScheme, bytes, bytes, bytes, bytes, bytes, bytes, bytes]
    ] = []
    for i in range(requests + 1):
        name = f"host{i}.{ZONE}"
        subscriber = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(subscriber, hashes.SHA256())
        )
        csr_der = csr.public_bytes(serialization.Encoding.DER)
        bundle = make_bundle(
            account_key, chain_id, epoch=0, request=request_hash(csr_der), space=space,
            time=time_proof, work_bits=policy.work_bits,
        )  # fmt: skip
        issuer_name = names[i % len(names)]
        signer, cert = issuers[issuer_name]
        checked = issuance.check_csr(csr_der, ca_policy)
        nonce = secrets.token_bytes(16)
        not_after = now + dt.timedelta(days=90) - dt.timedelta(seconds=1)
        request = issuance.PrecertRequest(checked, nonce, now, not_after)
        precert = await issuance.issue_precertificate(signer, cert, request, ca_policy)
        ops.append(
            encode_issue(
                IssueRequest(
                    csr_der, encode_bundle(bundle), precert.der, issuer_name, nonce,
                    int(now.timestamp()), int(not_after.timestamp()),
                )
            )
        )  # fmt: skip
        signed, _, signature = certbuild.certificate_parts(precert.der)
        message = signed_message(bundle.digest(chain_id), bundle.work, bundle.space, bundle.time)
        spki = csr.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        floor.append(
            (
                cert.public_key(), cert.scheme, signed, der.bit_string_value(signature), spki,
                csr.tbs_certrequest_bytes, csr.signature, message, bundle.stake.signature,
            )
        )  # fmt: skip
    return ValidatorCheckSetup(
        genesis, ca, members, ops[0], ops[1:], floor[1:], Ed25519PublicKey.from_public_bytes(public)
    )


def _time_validator_check(setup: ValidatorCheckSetup, rounds: int) -> tuple[float, float]:
    """Median CPU µs per request of the check and of its signatures alone.

    The two alternate round by round, so that a burst of other work on a shared
    machine falls on both rather than on one.
    """
    checks: list[float] = []
    floors: list[float] = []
    for _ in range(rounds):
        checks.append(_check_round(setup))
        floors.append(_floor_round(setup))
    return statistics.median(checks), statistics.median(floors)


def _check_round(setup: ValidatorCheckSetup) -> float:
    genesis = setup.genesis
    state = ReplicatedState(genesis, setup.ca, ValidatorSet(genesis.chain_id, setup.members))
    reason = state.validate(setup.warm)  # the epoch's space and time proofs, cached from now on
    if reason is not None:
        raise UserError(f"benchmark request refused: {reason}")
    cpu0 = time.process_time()
    for op in setup.ops:
        reason = state.validate(op)
        if reason is not None:
            raise UserError(f"benchmark request refused: {reason}")
    return 1e6 * (time.process_time() - cpu0) / len(setup.ops)


def _floor_round(setup: ValidatorCheckSetup) -> float:
    account_public = setup.account_key
    cpu0 = time.process_time()
    for int_key, scheme, tbs, sig, spki, info, csr_sig, message, stake_sig in setup.floor:
        ok = verify_signature(int_key, scheme, sig, tbs)
        csr_key = serialization.load_der_public_key(spki)
        assert isinstance(csr_key, ec.EllipticCurvePublicKey)
        csr_key.verify(csr_sig, info, ec.ECDSA(hashes.SHA256()))
        account_public.verify(stake_sig, message)
        if not ok:
            raise UserError("benchmark precertificate does not verify")
    return 1e6 * (time.process_time() - cpu0) / len(setup.floor)
