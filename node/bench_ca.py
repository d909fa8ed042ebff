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
  (one P-384, four P-256): the floor no parsing speed-up can go below.
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import tempfile
import textwrap
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

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
from trustchain.ct.signer import Signer, SoftwareSigner
from trustchain.ct.signer import verify_signature as verify_log_signature
from trustchain.node.ca import ceremony, certbuild, der, hsm, issuance, profiles
from trustchain.node.ca.genesis import ca_section_toml, parse_ca_section
from trustchain.node.ca.profiles import CACertificate, CAPolicy
from trustchain.node.ca.schemes import SignatureScheme
from trustchain.node.ca.schemes import verify as verify_signature
from trustchain.node.ca.verify import Verifier
from trustchain.node.errors import UserError

ZONE = "bench.trustchain.example"


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

            example:
              trustchain bench ca --seconds 3
            """
        ),
    )
    bench.add_argument("--seconds", type=float, default=3.0, help="per measurement (default 3)")
    bench.add_argument(
        "--in-flight", type=int, default=32, help="concurrent HSM calls (default 32)"
    )
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.in_flight < 1:
        raise UserError("--seconds must be positive and --in-flight at least 1")
    if not hsm.SOFTHSM2_MODULE.exists():
        raise UserError(
            f"{hsm.SOFTHSM2_MODULE} is missing; install softhsm2 (infra/scripts/ensure-debs)"
        )
    with tempfile.TemporaryDirectory(prefix="trustchain-bench-ca-") as tmp:
        trio.run(_bench, Path(tmp), args.seconds, args.in_flight)
    return 0


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
