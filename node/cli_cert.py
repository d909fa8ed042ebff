"""`trustchain cert request|status|revoke`: a subscriber's client of the node API (8443).

The commands join the `cert` group that `trustchain.node.cli_ca` creates
(`register_cert_commands`).  `ApiClient` speaks HTTPS with a client
certificate (mutual TLS, TLS 1.3); `request_certificate` makes the key, the
CSR and the four-proof bundle for the cluster's current epoch and submits them.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import ssl
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from trustchain.node.errors import UserError

if TYPE_CHECKING:
    _Sub = argparse._SubParsersAction[argparse.ArgumentParser]


class ApiError(Exception):
    """The API refused a request (status, code, message) or could not be reached."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if status else message)
        self.status, self.code = status, code


@dataclass(frozen=True)
class ApiClient:
    """A node API endpoint and the client identity used with it."""

    url: str
    """https://[ADDR]:PORT"""
    cafile: Path
    """PEM CA(s) of the node's server certificate."""
    client_cert: Path
    """PEM client certificate chain (issued by the TrustChain CA)."""
    client_key: Path
    timeout: float = 60.0

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cafile))
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        parts = urlsplit(self.url)
        host = (parts.hostname or "").strip("[]")
        conn = http.client.HTTPSConnection(
            host, parts.port or 8443, context=self.context(), timeout=self.timeout
        )
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"content-type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(0, "unreachable", f"cannot reach {self.url}: {exc}") from None
        finally:
            conn.close()
        if response.status == 200 and path == "/v1/crl":
            return raw
        try:
            doc = json.loads(raw)
        except ValueError:
            raise ApiError(response.status, "bad_answer", "the answer is not JSON") from None
        if response.status != 200:
            raise ApiError(response.status, str(doc.get("error")), str(doc.get("message")))
        return doc


def cluster_client(directory: Path, node: str = "v1") -> ApiClient:
    """The client `trustchain cluster up` prepared for the local user."""
    from trustchain.node.localcluster import load_endpoints

    endpoints = load_endpoints(directory)
    if node not in endpoints:
        raise UserError(f"--node: {node} is not a node of {directory} ({', '.join(endpoints)})")
    return ApiClient(
        endpoints[node].api_url,
        directory / "tls" / "ca.pem",
        directory / "client" / "user.pem",
        directory / "client" / "user.key",
    )


def make_key_and_csr(names: list[str]) -> tuple[bytes, bytes]:
    """A new P-256 key (PKCS#8 PEM) and a CSR (DER) for `names`.

    The subject CN is the first name when it fits (X.520: at most 64 characters);
    the names that count are in subjectAltName.
    """
    from trustchain.node.ca.names import DNSNameError, normalize

    for name in names:
        try:
            normalize(name)
        except DNSNameError as exc:
            raise UserError(f"--name: {exc}") from None
    key = ec.generate_private_key(ec.SECP256R1())
    cn = [x509.NameAttribute(NameOID.COMMON_NAME, names[0])] if len(names[0]) <= 64 else []
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(cn))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, csr.public_bytes(serialization.Encoding.DER)


def load_account(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise UserError(
            f"--account {path}: no such file; make one with `trustchain account new`"
        ) from None
    except ValueError:
        raise UserError(f"--account {path}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"--account {path}: not an Ed25519 account key")
    return key


@dataclass(frozen=True)
class EpochProofs:
    """An account's space and time proofs for the cluster's latest epoch with a beacon.

    They are made once per epoch (the expensive part); `bundle` adds the
    per-request work and stake proofs.
    """

    account: Ed25519PrivateKey
    chain_id: str
    epoch: int
    work_bits: int
    space: Any
    """trustchain.consensus.proofs.space.SpaceProof"""
    time: Any
    """trustchain.consensus.proofs.vdf.TimeProof"""

    def bundle(self, csr_der: bytes) -> bytes:
        """The encoded four-proof bundle for a request with this CSR."""
        from trustchain.consensus.proofs.codec import encode_bundle
        from trustchain.consensus.proofs.prover import make_bundle
        from trustchain.node.state import request_hash

        return encode_bundle(
            make_bundle(
                self.account, self.chain_id, epoch=self.epoch, request=request_hash(csr_der),
                space=self.space, time=self.time, work_bits=self.work_bits,
            )
        )  # fmt: skip


def epoch_proofs(
    client: ApiClient,
    account: Ed25519PrivateKey,
    plot_path: Path,
    progress: Callable[[str], None] = lambda text: None,
) -> EpochProofs:
    """Make `account`'s space and time proofs for the cluster's latest epoch."""
    import chiapos

    from trustchain.consensus.proofs.errors import ProverError
    from trustchain.consensus.proofs.hashing import account_id
    from trustchain.consensus.proofs.ledger import raw_public_key
    from trustchain.consensus.proofs.policy import Policy
    from trustchain.consensus.proofs.space import make_space_proof
    from trustchain.consensus.proofs.vdf import make_time_proof

    info = client.call("GET", "/v1/beacon")
    policy = Policy(**info["policy"])
    epoch = max(int(e) for e in info["beacons"])
    beacon = bytes.fromhex(info["beacons"][str(epoch)])
    public = raw_public_key(account)
    aid = account_id(public)
    if not plot_path.is_file():
        problem = "not a plot file" if plot_path.exists() else "no such file"
        raise UserError(f"--plot {plot_path}: {problem}; make one with `trustchain proof plot`")
    try:
        plot = chiapos.DiskProver(str(plot_path))
    except ValueError as exc:  # chiapos: "Invalid plot header magic" and the like
        raise UserError(
            f"--plot {plot_path}: not a plot ({exc}); make one with `trustchain proof plot`"
        ) from None
    try:
        space = make_space_proof(plot, public, aid, beacon, policy)
    except ProverError as exc:
        raise UserError(f"--plot: {exc}") from None
    progress(f"space proof (k={space.k}, challenge {space.index}) for epoch {epoch}")
    time_proof = make_time_proof(beacon, aid, policy.vdf_iterations)
    progress(f"time proof ({policy.vdf_iterations} VDF iterations)")
    return EpochProofs(account, info["chain_id"], epoch, policy.work_bits, space, time_proof)


def make_bundle_for(
    client: ApiClient,
    account: Ed25519PrivateKey,
    plot_path: Path,
    csr_der: bytes,
    progress: Callable[[str], None] = lambda text: None,
) -> bytes:
    """The four-proof bundle for `csr_der` in the cluster's latest epoch with a beacon."""
    started = time.monotonic()
    proofs = epoch_proofs(client, account, plot_path, progress)
    bundle = proofs.bundle(csr_der)
    progress(
        f"work ({proofs.work_bits} bits) and stake signature; "
        f"proofs took {time.monotonic() - started:.2f} s"
    )
    return bundle


def issue_body(account: Ed25519PrivateKey, csr_der: bytes, bundle: bytes) -> dict[str, Any]:
    """The JSON body of POST /v1/issue."""
    from trustchain.consensus.proofs.hashing import account_id
    from trustchain.consensus.proofs.ledger import raw_public_key

    return {
        "csr": base64.b64encode(csr_der).decode(),
        "account": account_id(raw_public_key(account)).hex(),
        "bundle": base64.b64encode(bundle).decode(),
    }


def request_certificate(
    client: ApiClient,
    account: Ed25519PrivateKey,
    plot_path: Path,
    csr_der: bytes,
    progress: Callable[[str], None] = lambda text: None,
) -> dict[str, Any]:
    bundle = make_bundle_for(client, account, plot_path, csr_der, progress)
    doc: dict[str, Any] = client.call("POST", "/v1/issue", issue_body(account, csr_der, bundle))
    return doc


def revoke_body(
    account: Ed25519PrivateKey, chain_id: str, serial: int, reason: str
) -> dict[str, Any]:
    from trustchain.consensus.proofs.hashing import account_id
    from trustchain.consensus.proofs.ledger import raw_public_key
    from trustchain.node.ca.revocation import RevocationReason
    from trustchain.node.state import revoke_message

    code = int(RevocationReason.parse(reason))
    return {
        "serial": f"{serial:x}",
        "reason": reason,
        "account": account_id(raw_public_key(account)).hex(),
        "signature": base64.b64encode(
            account.sign(revoke_message(chain_id, serial, code))
        ).decode(),
    }


# --- commands -------------------------------------------------------------------------


def _parser(sub: _Sub, name: str, help_text: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(description),
    )


def _endpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", type=Path, help="a `trustchain cluster up` directory")
    p.add_argument("--node", default="v1", help="with --cluster: which node (default v1)")
    p.add_argument("--api", help="the API URL, e.g. https://[2001:db8::1]:8443")
    p.add_argument("--cacert", type=Path, help="with --api: PEM CA of the node's certificate")
    p.add_argument("--client-cert", type=Path, help="with --api: PEM client certificate chain")
    p.add_argument("--client-key", type=Path, help="with --api: its PEM private key")


def _client(args: argparse.Namespace) -> ApiClient:
    if args.cluster is not None:
        return cluster_client(args.cluster, args.node)
    if args.api and args.cacert and args.client_cert and args.client_key:
        return ApiClient(args.api, args.cacert, args.client_cert, args.client_key)
    raise UserError("give --cluster DIR, or --api URL with --cacert, --client-cert, --client-key")


def register_cert_commands(sub: _Sub) -> None:
    p = _parser(
        sub,
        "request",
        "request a certificate from a cluster (makes the key, CSR and proofs)",
        """\
        Makes a P-256 key and a CSR for the names (or takes --csr), the four proofs
        for the cluster's current epoch (space from --plot, a VDF, hashcash work, a
        stake signature with --account), submits them to the node's API, and saves
        the certificate chain to --out (and the new key beside it, mode 0600).

        example:
          trustchain cert request --cluster .demo --account .demo/accounts/demo.key \\
              --plot .demo/accounts/demo.plot --name demo.trust.hypermesh.online \\
              --out demo.pem
        """,
    )
    _endpoint_args(p)
    p.add_argument("--account", type=Path, required=True, help="the account key (Ed25519 PEM)")
    p.add_argument("--plot", type=Path, required=True, help="the account's plot")
    p.add_argument("--name", help="comma-separated DNS names")
    p.add_argument("--csr", type=Path, help="use this CSR (PEM or DER) instead of a new key")
    p.add_argument("--out", type=Path, required=True, help="where to write the PEM chain")
    p.set_defaults(func=cmd_request)

    p = _parser(
        sub,
        "status",
        "ask a node for a certificate's status (valid/revoked, inclusion proof)",
        """\
        example:
          trustchain cert status --cluster .demo demo.pem
          trustchain cert status --cluster .demo --serial 5cee7d3134180ce6
        """,
    )
    _endpoint_args(p)
    p.add_argument("cert", nargs="?", type=Path, help="the certificate (PEM)")
    p.add_argument("--serial", help="or its serial number (hex)")
    p.set_defaults(func=cmd_status)

    p = _parser(
        sub,
        "revoke",
        "revoke a certificate (signed by the account that requested it)",
        """\
        example:
          trustchain cert revoke --cluster .demo --account .demo/accounts/demo.key \\
              demo.pem --reason keyCompromise
        """,
    )
    _endpoint_args(p)
    p.add_argument("cert", type=Path, help="the certificate (PEM)")
    p.add_argument("--account", type=Path, required=True, help="the requesting account's key")
    p.add_argument("--reason", default="unspecified", help="RFC 5280 reason (default unspecified)")
    p.set_defaults(func=cmd_revoke)


def _serial_of(path: Path) -> int:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).serial_number
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}") from None
    except ValueError:
        raise UserError(f"{path}: not a PEM certificate") from None


def _fail(exc: ApiError) -> UserError:
    if exc.status == 0:  # no answer at all
        return UserError(
            f"{exc}; is the node up? (`trustchain cluster status --dir DIR` for a local cluster)"
        )
    return UserError(f"the node refused: {exc}")


def _output_paths(out: Path, with_key: bool) -> Path | None:
    """Check before any proof is made that the certificate (and its new key) can be
    saved: a certificate issued but not saved has its names' request spent."""
    if out.is_dir():
        raise UserError(f"--out {out}: is a directory; name the certificate file")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: no folder {out.parent}; create it first")
    if not with_key:
        return None
    key_path = out.with_suffix(".key")
    if key_path == out:
        raise UserError(
            f"--out {out}: the new key goes to OUT with .key; name the certificate .pem"
        )
    if key_path.exists():
        raise UserError(
            f"{key_path} exists: the new private key would replace it; move it away "
            "or choose another --out"
        )
    return key_path


def _write_key(path: Path, key_pem: bytes) -> None:
    """The new private key, mode 0600, in a file that did not exist."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise UserError(f"cannot write the key to {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)


def cmd_request(args: argparse.Namespace) -> int:
    _output_paths(args.out, with_key=args.csr is None)
    client = _client(args)
    account = load_account(args.account)
    key_pem = None
    if args.csr is not None:
        try:
            data = args.csr.read_bytes()
        except OSError as exc:
            raise UserError(f"--csr {args.csr}: {exc.strerror}") from None
        try:
            csr = (
                x509.load_pem_x509_csr(data)
                if data.lstrip().startswith(b"-----")
                else x509.load_der_x509_csr(data)
            )
        except ValueError:
            raise UserError(f"--csr {args.csr}: not a CSR (PEM or DER)") from None
        csr_der = csr.public_bytes(serialization.Encoding.DER)
    elif args.name:
        names = [n.strip() for n in args.name.split(",") if n.strip()]
        key_pem, csr_der = make_key_and_csr(names)
    else:
        raise UserError("give --name NAME[,NAME...] or --csr FILE")

    def progress(text: str) -> None:
        print(f"  {text}", file=sys.stderr, flush=True)

    started = time.monotonic()
    try:
        bundle = make_bundle_for(client, account, args.plot, csr_der, progress)
    except ApiError as exc:  # the beacon and policy come from the node too
        raise _fail(exc) from None
    key_path = _output_paths(args.out, with_key=key_pem is not None)
    if key_path is not None and key_pem is not None:
        _write_key(key_path, key_pem)  # first: a certificate is no use without its key
    try:
        doc = client.call("POST", "/v1/issue", issue_body(account, csr_der, bundle))
    except ApiError as exc:
        if key_path is None:
            raise _fail(exc) from None
        if 400 <= exc.status < 500:  # refused: nothing was issued
            key_path.unlink()
            raise _fail(exc) from None
        raise UserError(
            f"{_fail(exc)}; the new key stays in {key_path} in case it was issued"
        ) from None
    elapsed = time.monotonic() - started
    try:
        args.out.write_text(doc["certificate"])
    except OSError as exc:
        raise UserError(
            f"issued serial {doc['serial']}, but cannot write {args.out}: {exc.strerror}; "
            f"the certificate is in the log: {doc['certificate']}"
        ) from None
    if key_path is not None:
        print(f"key:         {key_path}")
    print(f"certificate: {args.out} (serial {doc['serial']})")
    print(f"SCTs from:   {', '.join(doc['signers'])}")
    print(f"log:         leaf {doc['leaf_index']}, block {doc['height']}")
    size = doc["checkpoint"].splitlines()[1] if doc["checkpoint"] else "-"
    print(f"checkpoint:  tree size {size}, cosigned by a quorum")
    print(f"took {elapsed:.2f} s (proofs included)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.serial:
        try:
            serial = int(args.serial.removeprefix("0x"), 16)
            if serial <= 0:
                raise ValueError("a serial number is positive")
        except ValueError:
            raise UserError(
                f"--serial {args.serial}: not a serial number in hex (e.g. 5cee7d3134180ce6)"
            ) from None
    elif args.cert:
        serial = _serial_of(args.cert)
    else:
        raise UserError("give the certificate file or --serial")
    try:
        doc = client.call("GET", f"/v1/status/{serial:x}")
    except ApiError as exc:
        raise _fail(exc) from None
    state = "revoked" if doc["revoked"] else "valid"
    print(f"serial {doc['serial']}: {state}, leaf {doc['leaf_index']}")
    if doc["revoked"]:
        print(f"revoked at {doc['revocation']['time']} ({doc['revocation']['reason']})")
    return 1 if doc["revoked"] else 0


def cmd_revoke(args: argparse.Namespace) -> int:
    client = _client(args)
    account = load_account(args.account)
    serial = _serial_of(args.cert)
    try:
        chain_id = client.call("GET", "/v1/beacon")["chain_id"]
        doc = client.call("POST", "/v1/revoke", revoke_body(account, chain_id, serial, args.reason))
    except ApiError as exc:
        raise _fail(exc) from None
    except ValueError as exc:
        raise UserError(f"--reason: {exc}") from None
    print(f"revoked {doc['serial']} in block {doc['height']}")
    return 0
