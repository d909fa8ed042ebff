"""`trustchain account ...` and `trustchain proof ...`: the requester's side of the proofs.

* ``account new`` makes an Ed25519 account key and prints the account id;
* ``proof plot`` makes a chiapos plot bound to an account (progress shown);
* ``proof make`` answers an epoch's space and time challenges, does the
  request's work and signs the bundle (VDF progress shown);
* ``proof check`` checks a bundle the way a validator does, against the
  genesis file's policy and stake allocation, and prints a JSON verdict.

The long computations run outside the calling thread: plotting in a child
process (chiapos prints its progress on stdout, which we parse, and a child can
be killed on Ctrl-C), the VDF in a thread (chiavdf releases the GIL and stops
when its keep-running file is deleted).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import chiapos
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustchain.consensus.proofs.bundle import TimeProof
from trustchain.consensus.proofs.codec import decode_bundle, encode_bundle
from trustchain.consensus.proofs.errors import ProofRejected, ProverError
from trustchain.consensus.proofs.hashing import account_id, plot_id
from trustchain.consensus.proofs.ledger import StakeLedger, raw_public_key
from trustchain.consensus.proofs.policy import (
    CHIAPOS_MAX_K,
    CHIAPOS_MIN_K,
    AccountEntry,
    account_entry_toml,
)
from trustchain.consensus.proofs.prover import make_bundle
from trustchain.consensus.proofs.space import make_space_proof, plot_memo
from trustchain.consensus.proofs.vdf import make_time_proof
from trustchain.consensus.proofs.verifier import BundleVerifier
from trustchain.node.config import load_genesis
from trustchain.node.errors import UserError
from trustchain.node.identity import write_private_key

# --- progress -------------------------------------------------------------------------


class Progress:
    """A one-line progress display on stderr (a line per 10% when not a terminal)."""

    def __init__(self, label: str, stream: IO[str] | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self._tty = self.stream.isatty()
        self._last_decile = -1
        self._started = time.monotonic()

    def update(self, fraction: float, detail: str = "") -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        text = f"{self.label}: {100 * fraction:5.1f}%  {detail}".rstrip()
        if self._tty:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
        elif int(fraction * 10) > self._last_decile:
            self._last_decile = int(fraction * 10)
            self.stream.write(text + "\n")
            self.stream.flush()

    def done(self, summary: str) -> None:
        elapsed = time.monotonic() - self._started
        prefix = "\r\x1b[K" if self._tty else ""
        self.stream.write(f"{prefix}{self.label}: done in {elapsed:.1f} s; {summary}\n")
        self.stream.flush()


# --- keys -------------------------------------------------------------------------------


def load_account_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise UserError(
            f"{path}: account key not found; make one with `trustchain account new`"
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"{path}: expected an Ed25519 account key, found {type(key).__name__}")
    return key


def _hex32(text: str, flag: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise UserError(f"{flag}: expected 64 hex digits, got {text!r}") from None
    if len(raw) != 32:
        raise UserError(f"{flag}: expected 32 bytes (64 hex digits), got {len(raw)} bytes")
    return raw


# --- plotting ---------------------------------------------------------------------------

# Runs in a child python: argv = tmp_dir final_dir filename k memo_hex id_hex
# buffer_mb stripe_size threads.  chiapos prints "Progress update: 0.42" lines.
_PLOT_CHILD = """
import sys, chiapos
a = sys.argv[1:]
chiapos.DiskPlotter().create_plot_disk(
    a[0], a[0], a[1], a[2], int(a[3]), bytes.fromhex(a[4]), bytes.fromhex(a[5]),
    int(a[6]), 0, int(a[7]), int(a[8]), False)
"""


def create_plot(
    public_key: bytes,
    k: int,
    out: Path,
    *,
    threads: int = 2,
    buffer_mb: int = 1024,
    on_progress: Callable[[float, str], None] | None = None,
) -> bytes:
    """Make a chiapos plot of size `k` bound to `public_key` at `out`; return its plot id.

    Temporary files live in a hidden folder beside `out`, removed on every exit.
    """
    if not CHIAPOS_MIN_K <= k <= CHIAPOS_MAX_K:
        raise UserError(f"--k: chiapos plots k={CHIAPOS_MIN_K}..{CHIAPOS_MAX_K}, got {k}")
    if out.exists():
        raise UserError(f"{out} already exists; refusing to overwrite a plot")
    salt = secrets.token_bytes(32)
    pid = plot_id(public_key, salt)
    folder = out.resolve().parent
    if not folder.is_dir():
        raise UserError(f"{folder}: no such directory for the plot")
    # chiapos refuses stripes larger than a thirtieth of a bucket; small k needs small stripes.
    stripe = min(65536, 1 << (k - 6))
    work = Path(tempfile.mkdtemp(prefix=".plot-", dir=folder))
    args = [str(work), str(work), "plot.dat", str(k), plot_memo(salt).hex(), pid.hex()]
    args += [str(buffer_mb), str(stripe), str(threads)]
    tail: list[str] = []
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", _PLOT_CHILD, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert child.stdout is not None
        phase = ""
        try:
            for line in child.stdout:
                line = line.strip()
                tail = [*tail, line][-5:]
                if line.startswith("Starting phase"):
                    phase = line.split(":")[0].removeprefix("Starting ")
                elif line.startswith("Progress update:") and on_progress is not None:
                    try:
                        on_progress(float(line.split(":")[1]), phase)
                    except ValueError:
                        pass
            status = child.wait()
        except BaseException:
            child.kill()
            child.wait()
            raise
        made = work / "plot.dat"
        if status != 0 or not made.is_file():
            detail = "; ".join(t for t in tail if t)
            raise UserError(f"chiapos could not make the plot (exit {status}): {detail}")
        os.rename(made, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return pid


# --- VDF with progress --------------------------------------------------------------------


def prove_time(
    beacon: bytes,
    account: bytes,
    iterations: int,
    *,
    on_progress: Callable[[float, str], None] | None = None,
) -> TimeProof:
    """Run the VDF in a worker thread; report estimated progress from a calibration run.

    chiavdf gives no progress of its own, so the rate (squarings per second) is
    measured on a short run first and progress is elapsed time against the
    estimate, capped below 100% until the proof is really done.
    """
    rate = 0.0
    if on_progress is not None and iterations > 50_000:
        start = time.monotonic()
        make_time_proof(beacon, account, 20_000)
        rate = 20_000 / max(time.monotonic() - start, 1e-6)
    result: list[TimeProof] = []
    failure: list[BaseException] = []
    with tempfile.TemporaryDirectory(prefix="trustchain-vdf-") as tmp:
        keep_running = Path(tmp) / "running"
        keep_running.touch()

        def work() -> None:
            try:
                result.append(
                    make_time_proof(
                        beacon, account, iterations, keep_running_file=str(keep_running)
                    )
                )
            except BaseException as exc:  # handed to the calling thread
                failure.append(exc)

        worker = threading.Thread(target=work, name="vdf", daemon=True)
        start = time.monotonic()
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.2)
                if on_progress is not None and rate > 0:
                    elapsed = time.monotonic() - start
                    estimate = iterations / rate
                    on_progress(
                        min(elapsed / estimate, 0.99),
                        f"~{rate / 1000:.0f}k squarings/s, {elapsed:.1f} of ~{estimate:.1f} s",
                    )
        except BaseException:
            keep_running.unlink(missing_ok=True)  # chiavdf stops at its next check
            worker.join()
            raise
    if failure:
        raise failure[0]
    return result[0]


# --- commands -------------------------------------------------------------------------------


def _example(text: str) -> str:
    return textwrap.dedent(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    account = sub.add_parser("account", help="make stake accounts (Ed25519 keys)")
    account_sub = account.add_subparsers(dest="account_command", metavar="COMMAND", required=True)
    new = account_sub.add_parser(
        "new",
        help="make an account key and print the account id",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_example(
            """\
            Writes a new Ed25519 account key (PKCS#8 PEM, mode 0600) and prints the
            account id on stdout.  On stderr it prints the account's [[accounts]]
            entry for a genesis file.

            example:
              trustchain account new --out alice.key --bonded 5000
            """
        ),
    )
    new.add_argument("--out", required=True, type=Path, help="where to write the key")
    new.add_argument(
        "--bonded", type=int, default=0, help="bonded stake for the printed genesis entry"
    )
    new.set_defaults(func=cmd_account_new)

    proof = sub.add_parser("proof", help="make and check certificate-request proof bundles")
    proof_sub = proof.add_subparsers(dest="proof_command", metavar="COMMAND", required=True)

    plot = proof_sub.add_parser(
        "plot",
        help="make a chiapos plot bound to an account (shows progress)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_example(
            """\
            Makes a proof-of-space plot whose plot id is bound to the account key.
            k=18 takes seconds and 4 MB; each step of k doubles time and size.
            The genesis policy's min_k is the smallest size validators accept.

            example:
              trustchain proof plot --account alice.key --k 18 --out alice.plot
            """
        ),
    )
    plot.add_argument("--account", required=True, type=Path, help="the account key")
    plot.add_argument("--k", required=True, type=int, help="plot size (18..50)")
    plot.add_argument("--out", required=True, type=Path, help="where to write the plot")
    plot.add_argument("--threads", type=int, default=2, help="plotting threads (default 2)")
    plot.add_argument(
        "--buffer-mb", type=int, default=1024, help="plotting memory in MiB (default 1024)"
    )
    plot.set_defaults(func=cmd_plot)

    make = proof_sub.add_parser(
        "make",
        help="make a request's proof bundle (shows VDF progress)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_example(
            """\
            Answers the epoch's space challenge from the plot, runs the epoch's VDF
            (policy vdf_iterations squarings), does the request's work and signs the
            bundle with the account key.  --beacon is the epoch's beacon (the log root
            committed at the epoch boundary); --request is the SHA-256 of what the
            certificate will say.

            example:
              trustchain proof make --genesis genesis.toml --account alice.key \\
                --plot alice.plot --beacon 6f1c...e2 --request 9a0b...41 --out req.bundle
            """
        ),
    )
    make.add_argument("--genesis", required=True, type=Path, help="the cluster's genesis file")
    make.add_argument("--account", required=True, type=Path, help="the account key")
    make.add_argument("--plot", required=True, type=Path, help="a plot made for the account")
    make.add_argument("--beacon", required=True, help="the epoch beacon, 64 hex digits")
    make.add_argument("--request", required=True, help="the request hash, 64 hex digits")
    make.add_argument("--epoch", type=int, default=0, help="the beacon's epoch (default 0)")
    make.add_argument("--out", required=True, type=Path, help="where to write the bundle")
    make.set_defaults(func=cmd_make)

    check = proof_sub.add_parser(
        "check",
        help="check a bundle as a validator would; print a JSON verdict",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_example(
            """\
            Checks the bundle against the genesis policy and stake allocation and
            prints {"ok": true} (exit 0) or {"ok": false, "proof": ..., "reason": ...}
            (exit 1).  The current epoch is the bundle's own unless --epoch says
            otherwise; --beacon is the beacon of the bundle's epoch.

            example:
              trustchain proof check --genesis genesis.toml --beacon 6f1c...e2 \\
                --request 9a0b...41 req.bundle
            """
        ),
    )
    check.add_argument("--genesis", required=True, type=Path, help="the cluster's genesis file")
    check.add_argument("--beacon", required=True, help="the bundle epoch's beacon, 64 hex digits")
    check.add_argument("--request", required=True, help="the request hash, 64 hex digits")
    check.add_argument("--epoch", type=int, default=None, help="the current epoch")
    check.add_argument("bundle", type=Path, help="the bundle file")
    check.set_defaults(func=cmd_check)


def cmd_account_new(args: argparse.Namespace) -> int:
    if args.bonded < 0:
        raise UserError("--bonded: expected a non-negative integer")
    key = Ed25519PrivateKey.generate()
    try:
        write_private_key(args.out, key)
    except FileExistsError:
        raise UserError(
            f"{args.out} already exists; refusing to overwrite an account key"
        ) from None
    except OSError as exc:
        raise UserError(f"{args.out}: cannot write the key ({exc.strerror})") from None
    public_key = raw_public_key(key)
    entry = AccountEntry(account_id(public_key), public_key, bonded=args.bonded)
    print(entry.account_id.hex())
    print(
        f"wrote {args.out} (keep it secret); its entry for a genesis file:\n"
        + account_entry_toml(entry),
        file=sys.stderr,
    )
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    if args.threads < 1 or args.buffer_mb < 16:
        raise UserError("--threads must be at least 1 and --buffer-mb at least 16")
    key = load_account_key(args.account)
    bar = Progress(f"plotting k={args.k}")
    pid = create_plot(
        raw_public_key(key),
        args.k,
        args.out,
        threads=args.threads,
        buffer_mb=args.buffer_mb,
        on_progress=bar.update,
    )
    size = args.out.stat().st_size
    bar.done(f"{args.out} ({size / 2**20:.1f} MiB), plot id {pid.hex()}")
    return 0


def _open_plot(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path}: plot not found; make one with `trustchain proof plot`")
    try:
        return chiapos.DiskProver(str(path))
    except Exception as exc:
        raise UserError(f"{path}: not a chiapos plot ({exc})") from None


def cmd_make(args: argparse.Namespace) -> int:
    genesis = load_genesis(args.genesis)
    policy = genesis.policy
    key = load_account_key(args.account)
    beacon = _hex32(args.beacon, "--beacon")
    request = _hex32(args.request, "--request")
    if args.epoch < 0:
        raise UserError("--epoch: expected a non-negative integer")
    if args.out.exists():
        raise UserError(f"{args.out} already exists; refusing to overwrite it")
    public_key = raw_public_key(key)
    account = account_id(public_key)
    known = {a.account_id: a for a in genesis.accounts}
    entry = known.get(account)
    if entry is None or entry.bonded < policy.min_stake:
        print(
            f"note: account {account.hex()} has less than the minimum stake {policy.min_stake} "
            f"in {args.genesis}; validators will refuse the bundle unless it is bonded by then",
            file=sys.stderr,
        )
    plot = _open_plot(args.plot)
    try:
        space = make_space_proof(plot, public_key, account, beacon, policy)
    except ProverError as exc:
        raise UserError(f"{args.plot}: {exc}") from None
    except RuntimeError as exc:  # chiapos, on a damaged plot file
        raise UserError(f"{args.plot}: cannot read the plot ({exc}); make a new one") from None
    print(f"space: plot k={space.k} answered challenge {space.index}", file=sys.stderr)

    bar = Progress(f"time: {policy.vdf_iterations} VDF squarings")
    time_proof = prove_time(beacon, account, policy.vdf_iterations, on_progress=bar.update)
    bar.done("Wesolowski proof made")

    work_bar = Progress(f"work: {policy.work_bits} bits")
    expected = float(2**policy.work_bits)
    bundle = make_bundle(
        key,
        genesis.chain_id,
        epoch=args.epoch,
        request=request,
        space=space,
        time=time_proof,
        work_bits=policy.work_bits,
        work_progress=lambda tried: work_bar.update(
            min(tried / expected, 0.99), f"{tried} hashes (about {expected:.0f} expected)"
        ),
    )
    work_bar.done(f"nonce {bundle.work.nonce.hex()}")
    data = encode_bundle(bundle)
    try:
        args.out.write_bytes(data)
    except OSError as exc:
        raise UserError(f"{args.out}: cannot write the bundle ({exc.strerror})") from None
    print(f"wrote {args.out} ({len(data)} bytes) for account {account.hex()}", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    genesis = load_genesis(args.genesis)
    beacon = _hex32(args.beacon, "--beacon")
    request = _hex32(args.request, "--request")
    try:
        data = args.bundle.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{args.bundle}: bundle not found") from None
    except OSError as exc:
        raise UserError(f"{args.bundle}: cannot read it ({exc.strerror})") from None
    verdict: dict[str, Any]
    try:
        epoch = decode_bundle(data).epoch
        now = epoch if args.epoch is None else args.epoch
        ledger = StakeLedger(genesis.chain_id, genesis.policy, genesis.accounts)
        BundleVerifier(genesis.chain_id, genesis.policy).check(
            data, request=request, now_epoch=now, beacons={epoch: beacon}, stake=ledger
        )
        verdict = {"ok": True}
    except ProofRejected as exc:
        verdict = {"ok": False, "proof": exc.proof, "reason": exc.reason}
    print(json.dumps(verdict))
    return 0 if verdict["ok"] else 1
