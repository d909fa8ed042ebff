"""`trustchain ct ...`: run a standalone Certificate Transparency log and manage its key."""

from __future__ import annotations

import argparse
import base64
import sys
import textwrap
from pathlib import Path

from trustchain.node.config import parse_address
from trustchain.node.errors import UserError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ct = sub.add_parser("ct", help="run a standalone RFC 6962 Certificate Transparency log")
    ct_sub = ct.add_subparsers(dest="ct_command", metavar="COMMAND", required=True)

    serve = ct_sub.add_parser(
        "serve",
        help="serve one RFC 6962 / static-ct-api log over HTTPS",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Runs one CT log with one signing key: RFC 6962 v1 under /ct/v1/ and the
            static-ct-api read paths (/checkpoint, /tile/..., /issuer/...), over HTTPS
            with TLS 1.3 only.  Entries are sequenced every --pool-interval and an
            SCT is returned only once its entry is on disk (no merge delay).  The log
            restarts from --data; the store is verified at start.  Stop with SIGTERM
            or Ctrl-C (a round in progress completes first).

            example:
              trustchain ct keygen --out log.key
              trustchain ct serve --data ct-data --roots roots.pem --log-key log.key \\
                --origin ct.example.org/2026 --listen [::1]:6962 \\
                --tls-cert tls.pem --tls-key tls.key
            """
        ),
    )
    serve.add_argument("--data", required=True, type=Path, help="data directory (created if new)")
    serve.add_argument("--roots", required=True, type=Path, help="PEM bundle of accepted roots")
    serve.add_argument("--log-key", required=True, type=Path, help="ECDSA P-256 PKCS#8 PEM key")
    serve.add_argument(
        "--origin", required=True, help="checkpoint origin: the submission URL without https://"
    )
    serve.add_argument(
        "--listen", default="[::1]:6962", help="IPv6 [ADDR]:PORT to bind (default [::1]:6962)"
    )
    serve.add_argument("--tls-cert", required=True, type=Path, help="TLS certificate chain (PEM)")
    serve.add_argument("--tls-key", required=True, type=Path, help="TLS private key (PEM)")
    serve.add_argument(
        "--pool-interval",
        type=int,
        default=50,
        metavar="MS",
        help="milliseconds between sequencing rounds (default 50)",
    )
    serve.add_argument(
        "--pool-size",
        type=int,
        default=4096,
        metavar="N",
        help="submissions that may wait for a round before add-chain answers 503 (default 4096)",
    )
    serve.add_argument(
        "--check",
        choices=("quick", "full"),
        default="quick",
        help="start-up verification: quick = every hash tile and the edge entries; "
        "full = every entry too (default quick)",
    )
    serve.set_defaults(func=cmd_serve)

    keygen = ct_sub.add_parser(
        "keygen",
        help="make a log signing key (ECDSA P-256, PKCS#8 PEM)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Writes a new ECDSA P-256 private key (PKCS#8 PEM, mode 0600) to --out and
            prints the log ID and public key that relying parties configure.  With
            --origin it also prints the checkpoint verifier key (note type 0x05).

            example:
              trustchain ct keygen --out log.key --origin ct.example.org/2026
            """
        ),
    )
    keygen.add_argument("--out", required=True, type=Path, help="where to write the key")
    keygen.add_argument("--origin", help="also print the note verifier key for this origin")
    keygen.set_defaults(func=cmd_keygen)

    verify = ct_sub.add_parser(
        "verify",
        help="check a log's data directory offline (every tile and entry)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            Opens a stopped log's data directory and checks the checkpoint signature,
            every hash tile up to the root and every entry against its leaf hash, then
            prints the size and root.  Like `ct serve`, it removes tiles a crashed
            round left beyond the checkpoint and rebuilds a damaged index.

            example:
              trustchain ct verify --data ct-data --log-key log.key --origin ct.example.org/2026
            """
        ),
    )
    verify.add_argument("--data", required=True, type=Path, help="data directory")
    verify.add_argument(
        "--log-key",
        required=True,
        type=Path,
        help="the log's private key, or its public key (PEM)",
    )
    verify.add_argument("--origin", required=True, help="checkpoint origin")
    verify.set_defaults(func=cmd_verify)


def cmd_keygen(args: argparse.Namespace) -> int:
    from trustchain.ct import signer as ct_signer
    from trustchain.ct.checkpoint import RFC6962NoteVerifier
    from trustchain.ct.note import NoteError

    key = ct_signer.generate_p256()
    if args.origin is not None:
        try:
            verifier = RFC6962NoteVerifier(args.origin, key.public_key())
        except NoteError as exc:
            raise UserError(f"--origin: {exc}") from None
    try:
        ct_signer.write_private_key(args.out, ct_signer.p256_pem(key))
    except FileExistsError:
        raise UserError(
            f"{args.out} exists; choose another --out (keys are never overwritten)"
        ) from None
    except OSError as exc:
        raise UserError(f"cannot write {args.out}: {exc.strerror}") from None
    public = key.public_key()
    print(f"wrote {args.out} (ECDSA P-256, PKCS#8, mode 0600)")
    print(f"log id: {base64.b64encode(ct_signer.log_id(public)).decode()}")
    print(ct_signer.spki_pem(public).decode(), end="")
    if args.origin is not None:
        print(f"checkpoint verifier key: {verifier.vkey()}")
    return 0


def _checked_file(path: Path, flag: str) -> Path:
    if not path.is_file():
        raise UserError(f"{flag}: {path} does not exist or is not a file")
    return path


def cmd_serve(args: argparse.Namespace) -> int:
    import trio

    from trustchain.ct import note
    from trustchain.ct.server import StandaloneConfig, run_standalone
    from trustchain.ct.service import LogParams
    from trustchain.ct.signer import UnusableKeyError, load_p256_signer
    from trustchain.ct.store import StoreCorrupt, StoreKeyMismatch, StoreLocked
    from trustchain.node import log as node_log

    try:
        listen = parse_address(args.listen, allow_port_zero=True)
    except ValueError as exc:
        raise UserError(f"--listen: {exc}") from None
    if not note.is_valid_name(args.origin):
        raise UserError(
            "--origin: must be non-empty, without spaces or '+' (e.g. ct.example.org/2026)"
        )
    if not 1 <= args.pool_interval <= 60_000:
        raise UserError("--pool-interval: expected 1..60000 milliseconds")
    if args.pool_size < 1:
        raise UserError("--pool-size: expected a positive integer")
    for path, flag in (
        (args.roots, "--roots"),
        (args.tls_cert, "--tls-cert"),
        (args.tls_key, "--tls-key"),
    ):
        _checked_file(path, flag)
    try:
        signer = load_p256_signer(_checked_file(args.log_key, "--log-key"))
    except UnusableKeyError as exc:
        raise UserError(f"--log-key: {exc}") from None
    from trustchain.ct.chain import load_roots
    from trustchain.ct.server import hypercorn_config

    try:
        load_roots(args.roots)
    except ValueError as exc:
        raise UserError(f"--roots: {exc}") from None
    try:
        hypercorn_config(listen.host, listen.port, args.tls_cert, args.tls_key).create_ssl_context()
    except (OSError, ValueError) as exc:
        raise UserError(f"--tls-cert/--tls-key: cannot load them ({exc})") from None
    cfg = StandaloneConfig(
        data_dir=args.data,
        roots=args.roots,
        log_key=args.log_key,
        origin=args.origin,
        host=listen.host,
        port=listen.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        params=LogParams(pool_limit=args.pool_size, interval=args.pool_interval / 1000),
        check=args.check,
    )
    node_log.configure()
    try:
        trio.run(run_standalone, cfg, signer)
    except BaseException as exc:
        leaf = _first_leaf(exc)
        if isinstance(leaf, StoreLocked):
            raise UserError(f"--data: {leaf}; stop the other `ct serve` first") from None
        if isinstance(leaf, StoreKeyMismatch):
            raise UserError(
                f"--data: {leaf}. Give the --log-key and --origin this directory was started "
                "with; if they are, the checkpoint is damaged: restore it from a backup"
            ) from None
        if isinstance(leaf, StoreCorrupt):
            raise UserError(
                f"--data: the store is damaged: {leaf}. Restore the directory from a backup; "
                "`trustchain ct verify` shows what is wrong"
            ) from None
        if isinstance(leaf, OSError) and leaf.filename is not None:
            raise UserError(f"--data: {leaf.filename}: {leaf.strerror}") from None
        if isinstance(leaf, OSError) and leaf.errno is not None:
            raise UserError(f"cannot serve on {listen}: {leaf.strerror}") from None
        raise
    return 0


def _first_leaf(exc: BaseException) -> BaseException:
    """The first non-group exception inside (nested) exception groups from trio."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def cmd_verify(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization

    from trustchain.ct.checkpoint import RFC6962NoteVerifier
    from trustchain.ct.note import NoteError
    from trustchain.ct.signer import PublicKey, UnusableKeyError, load_p256_signer
    from trustchain.ct.store import StoreCorrupt, StoreLocked, open_store

    path = _checked_file(args.log_key, "--log-key")
    public: PublicKey
    if b"PUBLIC KEY" in path.read_bytes():
        loaded = serialization.load_pem_public_key(path.read_bytes())
        if not isinstance(loaded, PublicKey):
            raise UserError(f"--log-key: {path} is not an ECDSA P-256 public key")
        public = loaded
    else:
        try:
            public = load_p256_signer(path).public_key()
        except UnusableKeyError as exc:
            raise UserError(f"--log-key: {exc}") from None
    try:
        verifier = RFC6962NoteVerifier(args.origin, public)
    except NoteError as exc:
        raise UserError(f"--origin/--log-key: {exc}") from None
    if not (args.data / "checkpoint").is_file():
        raise UserError(f"--data: {args.data} has no checkpoint; is it a log's data directory?")

    def progress(stage: str, done: int, total: int) -> None:
        print(f"\r{stage}: {done}/{total}", end="", file=sys.stderr, flush=True)

    try:
        store = open_store(args.data, verifier, check="full", progress=progress)
    except StoreLocked as exc:
        raise UserError(f"--data: {exc}; stop `ct serve` first") from None
    except StoreCorrupt as exc:
        print(file=sys.stderr)
        print(f"DAMAGED: {exc}")
        return 1
    try:
        print(file=sys.stderr)
        edge = store.edge
        print(f"ok: {edge.size} entries, root {base64.b64encode(edge.root()).decode()}")
    finally:
        store.close()
    return 0
