"""`trustchain bench proofs`: what the four proofs cost a validator and a client.

Validator side (median over many runs): each proof's verification, decoding,
and a whole bundle check with a warm epoch cache (space and time proofs seen
before in this epoch) and with a cold one (everything verified).  Client side:
making a k=18 plot, the VDF at the policy's default iterations, and the work.

Cold checks run over bundles for several epoch beacons, each giving the
account its own VDF discriminant, because hash-to-prime time varies from one discriminant
to the next.  Their VDFs use fewer iterations than the default: Wesolowski
verification costs the same whatever the iteration count (the bench prints the
time check on the default-iteration bundle too, to show it).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import textwrap
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustchain.consensus.proofs.bundle import ProofBundle, signed_message
from trustchain.consensus.proofs.cache import EpochCache, ReplayGuard
from trustchain.consensus.proofs.codec import decode_bundle, encode_bundle
from trustchain.consensus.proofs.hashing import account_id
from trustchain.consensus.proofs.ledger import StakeLedger, raw_public_key, verify_ed25519
from trustchain.consensus.proofs.policy import AccountEntry, Policy
from trustchain.consensus.proofs.prover import make_bundle
from trustchain.consensus.proofs.space import make_space_proof, verify_space
from trustchain.consensus.proofs.vdf import discriminant, make_time_proof, verify_time
from trustchain.consensus.proofs.verifier import BundleVerifier
from trustchain.consensus.proofs.work import check_work, make_work
from trustchain.node.benchstats import usable_cpus
from trustchain.node.cli_proofs import _open_plot, create_plot, load_account_key, prove_time
from trustchain.node.errors import UserError

CHAIN = "bench"
PLOT_K = 18
WARM_GOAL_US = 150.0
COLD_GOAL_US = 10_000.0
COLD_ITERATIONS = 10_000
BUNDLE_WORK_BITS = 16
"""Work difficulty of the bench's bundles (checking costs one hash at any difficulty)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser(
        "proofs",
        help="verification cost of the four proofs; client proving time",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Makes a k=18 plot and bundles for several epoch beacons, then prints the
            median verification cost of each proof, of a bundle check with a warm and
            a cold epoch cache (goals: under 150 us and under 10 ms), and the client's
            time to plot at k=18, to run the VDF at the default iterations and to do
            the default work.  A cold check is shown twice: from scratch, and with
            the account's VDF discriminant computed ahead (as a node does when an
            epoch's beacon commits).  Takes about half a minute.

            example:
              trustchain bench proofs --runs 2000 --beacons 20
            """
        ),
    )
    bench.add_argument("--runs", type=int, default=2000, help="runs per cheap figure")
    bench.add_argument(
        "--beacons", type=int, default=20, help="epoch beacons (discriminants) for cold checks"
    )
    bench.add_argument(
        "--vdf-iterations",
        type=int,
        default=Policy().vdf_iterations,
        help="iterations of the client VDF run (default: the policy default)",
    )
    bench.add_argument(
        "--plot", type=Path, help="reuse this k=18 plot (made for --account) instead of plotting"
    )
    bench.add_argument("--account", type=Path, help="the account key the --plot was made for")
    bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    bench.set_defaults(func=cmd_bench)


def _median_us(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def _median_over_us(fns: list[Callable[[], object]], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        for fn in fns:
            start = time.perf_counter_ns()
            fn()
            samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def cmd_bench(args: argparse.Namespace) -> int:
    runs = max(args.runs, 10)
    epochs = max(args.beacons, 1)
    figures: dict[str, Any] = {
        "machine": {"cpus": usable_cpus(), "loadavg_1m": round(os.getloadavg()[0], 2)},
        "runs": runs,
        "beacons": epochs,
    }
    print(
        f"bench proofs: {usable_cpus()} cpus, load {os.getloadavg()[0]:.2f}; "
        "making a plot and bundles...",
        flush=True,
    )
    policy = Policy(min_k=PLOT_K, work_bits=BUNDLE_WORK_BITS, vdf_iterations=COLD_ITERATIONS)
    if (args.plot is None) != (args.account is None):
        raise UserError("--plot and --account go together (a plot made for that account)")
    key = load_account_key(args.account) if args.account else Ed25519PrivateKey.generate()
    public_key = raw_public_key(key)
    account = account_id(public_key)
    ledger = StakeLedger(CHAIN, policy, [AccountEntry(account, public_key, bonded=10**6)])

    with tempfile.TemporaryDirectory(prefix="tc-bench-proofs-") as tmp:
        if args.plot is None:
            plot_path = Path(tmp) / "bench.plot"
            start = time.perf_counter()
            create_plot(public_key, PLOT_K, plot_path)
            figures["client_plot_k18_s"] = time.perf_counter() - start
        else:
            plot_path = args.plot
            figures["client_plot_k18_s"] = None  # not measured: an existing plot was given
        plot = _open_plot(plot_path)
        if plot.get_size() != PLOT_K:
            raise UserError(f"{plot_path}: the bench needs a k={PLOT_K} plot")

        # One bundle per epoch, each beacon giving the account its own VDF discriminant.
        beacons = {epoch: secrets.token_bytes(32) for epoch in range(epochs)}
        request = secrets.token_bytes(32)
        bundles: list[tuple[int, bytes]] = []
        for epoch, beacon in beacons.items():
            space = make_space_proof(plot, public_key, account, beacon, policy)
            time_proof = make_time_proof(beacon, account, COLD_ITERATIONS)
            bundle = make_bundle(
                key,
                CHAIN,
                epoch=epoch,
                request=request,
                space=space,
                time=time_proof,
                work_bits=BUNDLE_WORK_BITS,
            )
            bundles.append((epoch, encode_bundle(bundle)))

        # Client: the VDF at the default iteration count, and the default work.
        print(f"running the client VDF ({args.vdf_iterations} iterations)...", flush=True)
        start = time.perf_counter()
        default_time = prove_time(beacons[0], account, args.vdf_iterations)
        figures["client_vdf_s"] = time.perf_counter() - start
        figures["client_vdf_iterations"] = args.vdf_iterations
        # Hashcash time is geometric; report the expectation from the measured
        # hash rate (nonces tried / seconds over several searches) rather than one draw.
        default_bits = Policy().work_bits
        tried = 0
        start = time.perf_counter()
        for _ in range(8):
            tried += int.from_bytes(make_work(secrets.token_bytes(32), 16).nonce, "big") + 1
        rate = tried / (time.perf_counter() - start)
        figures["client_work_hashes_per_s"] = rate
        figures["client_work_s"] = 2**default_bits / rate
        figures["client_work_bits"] = default_bits

    print("measuring verification...", flush=True)
    epoch0, data0 = bundles[0]
    b0: ProofBundle = decode_bundle(data0)
    digest0 = b0.digest(CHAIN)
    message0 = signed_message(digest0, b0.work, b0.space, b0.time)
    beacon0 = beacons[epoch0]

    def stake_check() -> None:
        state = ledger.account(b0.account)
        assert state is not None and state.bonded >= policy.min_stake
        assert verify_ed25519(state.public_key, b0.stake.signature, message0)

    verify: dict[str, float] = {}
    verify["decode"] = _median_us(lambda: decode_bundle(data0), runs)
    verify["stake"] = _median_us(stake_check, runs)
    verify["work"] = _median_us(lambda: check_work(digest0, b0.work, policy.work_bits), runs)
    verify["space"] = _median_us(lambda: verify_space(b0.space, beacon0, b0.account), runs)
    decoded = [(e, decode_bundle(d)) for e, d in bundles]
    verify["time"] = _median_over_us(
        [partial(verify_time, b.time, beacons[e], b.account) for e, b in decoded], 2
    )
    verify["time_discriminant"] = _median_over_us(
        [partial(discriminant, beacons[e], b.account) for e, b in decoded], 2
    )
    # Wesolowski alone (discriminant known), to show it costs the same at any iteration count.
    discs = {e: discriminant(beacons[e], b.account) for e, b in decoded}
    verify["time_wesolowski"] = _median_over_us(
        [partial(verify_time, b.time, beacons[e], b.account, disc=discs[e]) for e, b in decoded],
        2,
    )
    verify["time_wesolowski_default_iterations"] = _median_us(
        partial(verify_time, default_time, beacon0, account, disc=discs[epoch0]), 20
    )

    # Whole bundles.  Warm: the verifier has seen this epoch's space and time proofs.
    verifier = BundleVerifier(CHAIN, policy)
    replay = ReplayGuard()

    def check(epoch: int, data: bytes, v: BundleVerifier) -> None:
        v.check(
            data,
            request=request,
            now_epoch=epoch,
            beacons=beacons,
            stake=ledger,
            replay=replay,
        )

    check(epoch0, data0, verifier)
    verify["bundle_warm"] = _median_us(lambda: check(epoch0, data0, verifier), runs)

    cold_verifier = BundleVerifier(CHAIN, policy, cache=EpochCache())

    def cold(epoch: int, data: bytes) -> None:
        cold_verifier.cache.clear()
        check(epoch, data, cold_verifier)

    def cold_precomputed(epoch: int, data: bytes) -> None:
        cold_verifier.cache.clear_proofs()
        check(epoch, data, cold_verifier)

    verify["bundle_cold"] = _median_over_us([partial(cold, e, d) for e, d in bundles], 2)
    for e, _ in bundles:
        cold_verifier.cache.precompute_discriminants(beacons[e], e, [account])
    verify["bundle_cold_precomputed"] = _median_over_us(
        [partial(cold_precomputed, e, d) for e, d in bundles], 2
    )
    figures["verify_us"] = verify
    figures["goals"] = {
        "bundle_warm_us": WARM_GOAL_US,
        "bundle_cold_us": COLD_GOAL_US,
        "warm_met": verify["bundle_warm"] < WARM_GOAL_US,
        "cold_met": verify["bundle_cold"] < COLD_GOAL_US,
        "cold_precomputed_met": verify["bundle_cold_precomputed"] < COLD_GOAL_US,
    }

    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    _print_table(figures, policy)
    return 0


def _print_table(f: dict[str, Any], policy: Policy) -> None:
    v = f["verify_us"]
    goals = f["goals"]

    def row(label: str, value: float | None, note: str = "", digits: int = 1) -> str:
        shown = "not measured" if value is None else f"{value:.{digits}f}"
        return f"  {label:<48}{shown:>12}{note}"

    def goal(key: str, met: str) -> str:
        return f"   goal < {goals[key]:.0f}: {'met' if goals[met] else 'MISSED'}"

    iterations = f["client_vdf_iterations"]
    default = " (default)" if iterations == Policy().vdf_iterations else ""
    lines = [
        "",
        f"verification, median microseconds ({f['runs']} runs; time and cold checks over "
        f"{f['beacons']} beacons x 2 rounds):",
        row("bundle decode (strict msgpack)", v["decode"]),
        row("stake: ledger lookup + Ed25519 verify", v["stake"]),
        row("work: one SHA-256", v["work"]),
        row(f"space: chiapos, k={PLOT_K}", v["space"]),
        row("time: discriminant + Wesolowski", v["time"]),
        row("  of which the 1024-bit discriminant", v["time_discriminant"]),
        row(f"  Wesolowski alone, {COLD_ITERATIONS} iterations", v["time_wesolowski"]),
        row(
            f"  Wesolowski alone, {iterations} iterations",
            v["time_wesolowski_default_iterations"],
        ),
        row("bundle, warm epoch cache", v["bundle_warm"], goal("bundle_warm_us", "warm_met")),
        row(
            "bundle, cold, as a validator checks it",
            v["bundle_cold_precomputed"],
            goal("bundle_cold_us", "cold_precomputed_met"),
        ),
        "    (a node makes each bonded account's discriminant when the epoch's beacon commits)",
        row(
            "bundle, cold, discriminant made on the way",
            v["bundle_cold"],
            goal("bundle_cold_us", "cold_met"),
        ),
        "client, seconds:",
        row(f"plot k={PLOT_K}", f["client_plot_k18_s"], digits=2),
        row(f"VDF, {iterations} iterations{default}", f["client_vdf_s"], digits=2),
        row(
            f"work, {f['client_work_bits']} bits (default), expected",
            f["client_work_s"],
            f"   ({f['client_work_hashes_per_s'] / 1e6:.2f} M hashes/s)",
            digits=2,
        ),
        f"(bundles checked with work_bits={policy.work_bits}, "
        f"vdf_iterations={policy.vdf_iterations}; load average at start "
        f"{f['machine']['loadavg_1m']} on {f['machine']['cpus']} cpus)",
    ]
    print("\n".join(lines))
