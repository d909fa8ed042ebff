"""What ``trustchain cert verify`` checks (DESIGN.md section 6 step 5).

Offline, against the root certificate and the genesis file:

1. ``certificate``: the file holds a final certificate (not a precertificate,
   not a CA) naming DNS names;
2. ``root``: the root is a self-signed CA and, if the genesis pins one, that one;
3. ``issuer``: its intermediate is in the file or in the genesis (subject and
   key identifier match);
4. ``intermediate``: the root signed it; it is a CA that may sign certificates;
5. ``signature``: the intermediate signed the certificate;
6. ``validity``: now is inside the validity of certificate, intermediate, root;
7. ``names``: every name is inside the intermediate's name constraints;
8. ``scts``: every embedded SCT is from a validator's CT log key, one per
   validator, verifies over the certificate (RFC 6962 section 3.3), is not from
   the future, and all commit to one log entry;
9. ``quorum``: the SCT signers hold more than 2/3 of the voting power;
10. ``revocation`` (with CRLs): the intermediate's CRL verifies and does not list
    the serial.

Online (``--online URL``), from the node's status API: the checkpoint is
cosigned by more than 2/3 of the power, the inclusion proof leads from the
certificate's log leaf to its root, and the serial is not revoked.

Checks run in order and stop at the first failure, which the report names.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trustchain.ct import checkpoint as ctcp
from trustchain.ct._tls import DecodeError
from trustchain.ct.merkle import ProofError, leaf_hash, verify_inclusion
from trustchain.ct.precert import PrecertError, final_certificate_tbs, has_poison
from trustchain.ct.sct import (
    SCT_LIST_OID,
    EntryType,
    LogEntry,
    SCTError,
    SignedCertificateTimestamp,
    TimestampedEntry,
    leaf_index_of,
    merkle_tree_leaf,
    parse_sct_list_extension,
    verify_sct,
)
from trustchain.node.ca import der, names
from trustchain.node.ca.certbuild import BuildError, TBSParts, certificate_parts
from trustchain.node.ca.genesis import CAGenesis, LogValidator
from trustchain.node.ca.profiles import CACertificate
from trustchain.node.ca.revocation import CRLError, check_crl
from trustchain.node.ca.schemes import verify as verify_signature


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    """Which check (see the module docstring)."""
    ok: bool
    """Whether it passed."""
    detail: str
    """What was checked, or what is wrong."""


@dataclass
class Report:
    """The checks made, in order; verification stops at the first failure."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failure(self) -> Check | None:
        return next((c for c in self.checks if not c.ok), None)

    def passed(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, True, detail))

    def failed(self, name: str, detail: str) -> Report:
        self.checks.append(Check(name, False, detail))
        return self


def load_certificates(data: bytes) -> list[bytes]:
    """The DER certificates in a PEM bundle (or one DER certificate)."""
    if b"-----BEGIN" not in data:
        return [data]
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ValueError(f"not a PEM certificate file ({exc})") from None
    return [c.public_bytes(serialization.Encoding.DER) for c in certs]


def _signed_by(child_der: bytes, parent: CACertificate) -> bool:
    try:
        tbs, algorithm, signature = certificate_parts(child_der)
        value = der.bit_string_value(signature)
    except (BuildError, der.DERError):
        return False
    scheme = parent.scheme
    if algorithm != scheme.algorithm_identifier:
        return False
    return verify_signature(parent.public_key(), scheme, value, tbs)


def _when(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%SZ")


@dataclass(frozen=True)
class Verified:
    """What a successful offline verification established (input to the online checks)."""

    leaf: x509.Certificate
    """The certificate."""
    leaf_der: bytes
    """Its DER."""
    issuer: CACertificate
    """Its intermediate."""
    scts: tuple[SignedCertificateTimestamp, ...]
    """Its embedded SCTs."""


class Verifier:
    """Offline verification against one root and one genesis.

    Keeps the result of checking each intermediate against the root, so that
    verifying many certificates checks each intermediate signature once.
    """

    def __init__(self, root_der: bytes, genesis: CAGenesis) -> None:
        self.root_der = root_der
        self.genesis = genesis
        self._root: CACertificate | None = None
        self._root_problem: str | None = None
        self._intermediates: dict[bytes, bool] = {}
        """sha256(intermediate DER) -> whether the root signed it."""
        self._genesis_intermediates = [c for _, c in genesis.intermediates()]
        try:
            self._root = CACertificate.from_der(root_der)
        except BuildError as exc:
            self._root_problem = f"the root file does not hold a CA certificate ({exc})"
            return
        root = self._root
        pinned = genesis.root_sha256
        if pinned is not None and hashlib.sha256(root_der).digest() != pinned:
            self._root_problem = (
                f"the root given ({root.name}, sha256 {hashlib.sha256(root_der).hexdigest()}) "
                f"is not the root the genesis pins (sha256 {pinned.hex()})"
            )
        elif root.subject != _subject_of(root_der) or not _signed_by(root_der, root):
            self._root_problem = f"the root {root.name} is not validly self-signed"

    def _intermediate_ok(self, issuer: CACertificate) -> bool:
        key = hashlib.sha256(issuer.der).digest()
        known = self._intermediates.get(key)
        if known is None:
            assert self._root is not None
            known = _signed_by(issuer.der, self._root)
            self._intermediates[key] = known
        return known

    def _find_issuer(
        self, leaf: x509.Certificate, issuer_name: bytes, bundle: Sequence[bytes]
    ) -> CACertificate | None:
        try:
            aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        except x509.ExtensionNotFound:
            return None
        candidates: list[CACertificate] = []
        for extra in bundle:
            try:
                candidates.append(CACertificate.from_der(extra))
            except BuildError:
                continue
        candidates += self._genesis_intermediates
        for cand in candidates:
            if cand.key_id == aki.key_identifier and cand.subject == issuer_name:
                return cand
        return None

    def verify(
        self, chain: Sequence[bytes], now: dt.datetime, crls: Sequence[bytes] = ()
    ) -> tuple[Report, Verified | None]:
        """Check ``chain`` (the certificate, then optional intermediates) at ``now``."""
        report = Report()
        if not chain:
            return report.failed("certificate", "the file holds no certificate"), None
        leaf_der = chain[0]
        try:
            leaf = x509.load_der_x509_certificate(leaf_der)
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns_names = sans.get_values_for_type(x509.DNSName)
            bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
            # Split once: the issuer name and the SCT list are read from the raw DER.
            parts = TBSParts.split(certificate_parts(leaf_der)[0])
        except (ValueError, x509.ExtensionNotFound) as exc:
            return report.failed("certificate", f"not a TrustChain certificate ({exc})"), None
        if has_poison(leaf):
            return report.failed(
                "certificate", "this is a precertificate (poison extension): it is not usable"
            ), None
        if bc.ca:
            return report.failed("certificate", "this is a CA certificate, not a leaf"), None
        if not dns_names:
            return report.failed("certificate", "it names no DNS name"), None
        report.passed("certificate", f"serial {leaf.serial_number:x}, names {', '.join(dns_names)}")

        if self._root_problem is not None or self._root is None:
            return report.failed("root", self._root_problem or "no root"), None
        root = self._root
        report.passed(
            "root", f"{root.name} (sha256 {hashlib.sha256(self.root_der).hexdigest()[:16]}...)"
        )

        issuer = self._find_issuer(leaf, parts.issuer, chain[1:])
        if issuer is None:
            return report.failed(
                "issuer",
                f"its issuer {leaf.issuer.rfc4514_string()} is neither in the file nor "
                f"among the intermediates of {self.genesis.source}",
            ), None
        report.passed("issuer", f"{issuer.name}")

        if not self._intermediate_ok(issuer):
            return report.failed(
                "intermediate",
                f"{issuer.name} is not signed by the root {root.name} given "
                "(wrong root, or a forged intermediate)",
            ), None
        bc_i = issuer.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        try:
            ku = issuer.cert.extensions.get_extension_for_class(x509.KeyUsage).value
            can_sign = ku.key_cert_sign
        except x509.ExtensionNotFound:
            can_sign = False
        if not bc_i.ca or not can_sign:
            return report.failed("intermediate", f"{issuer.name} may not sign certificates"), None
        report.passed("intermediate", f"{issuer.name} is signed by {root.name}")

        if not _signed_by(leaf_der, issuer):
            return report.failed(
                "signature", f"the certificate's signature does not verify with {issuer.name}"
            ), None
        report.passed("signature", f"signed by {issuer.name} ({issuer.scheme.value})")

        for what, cert in (
            ("the certificate", leaf),
            (f"the intermediate {issuer.name}", issuer.cert),
            (f"the root {root.name}", root.cert),
        ):
            if now < cert.not_valid_before_utc:
                return report.failed(
                    "validity", f"{what} is not valid before {_when(cert.not_valid_before_utc)}"
                ), None
            if now > cert.not_valid_after_utc:
                return report.failed(
                    "validity", f"{what} expired at {_when(cert.not_valid_after_utc)}"
                ), None
        report.passed(
            "validity",
            f"{_when(leaf.not_valid_before_utc)} to {_when(leaf.not_valid_after_utc)}, "
            f"checked at {_when(now)}",
        )

        if issuer.zones:
            for name in dns_names:
                base = name[2:] if names.is_wildcard(name) else name
                if names.zone_of(base, issuer.zones) is None:
                    return report.failed(
                        "names",
                        f"{name} is outside the intermediate's name constraints "
                        f"({', '.join(issuer.zones)})",
                    ), None
            report.passed("names", f"within {', '.join(issuer.zones)}")

        scts = self._check_scts(report, parts, leaf_der, issuer, now)
        if scts is None:
            return report, None

        if crls:
            try:
                status = check_crl(crls, issuer, leaf.serial_number, now)
            except CRLError as exc:
                return report.failed("revocation", str(exc)), None
            if status is not None:
                return report.failed(
                    "revocation",
                    f"serial {leaf.serial_number:x} was revoked at {_when(status.revoked_at)} "
                    f"({status.reason.label})",
                ), None
            report.passed("revocation", f"not on the CRL of {issuer.name}")
        return report, Verified(leaf, leaf_der, issuer, scts)

    def _check_scts(
        self,
        report: Report,
        parts: TBSParts,
        leaf_der: bytes,
        issuer: CACertificate,
        now: dt.datetime,
    ) -> tuple[SignedCertificateTimestamp, ...] | None:
        try:
            raw = _extension_value(parts, SCT_LIST_OID.dotted_string)
        except BuildError:
            report.failed("scts", "the certificate embeds no SCT list")
            return None
        try:
            scts = parse_sct_list_extension(raw)
            # RFC 6962 section 3.3, as ct.precert.embedded_sct_entry, with the
            # issuer's key hash computed once per intermediate.
            entry = LogEntry(
                EntryType.PRECERT, final_certificate_tbs(leaf_der), issuer.issuer_key_hash
            )
        except (DecodeError, PrecertError, BuildError, der.DERError) as exc:
            report.failed("scts", f"the SCT list cannot be read ({exc})")
            return None
        seen: dict[str, int] = {}
        signers: list[LogValidator] = []
        now_ms = int(now.timestamp() * 1000)
        for i, sct in enumerate(scts, 1):
            validator = self.genesis.validator_for_log_id(sct.log_id)
            if validator is None or validator.log_key is None:
                report.failed(
                    "scts",
                    f"SCT {i} of {len(scts)} is from log {sct.log_id.hex()[:16]}..., "
                    "which is not a validator's CT log",
                )
                return None
            if validator.name in seen:
                report.failed(
                    "scts",
                    f"SCT {i} is a second SCT from validator {validator.name} (SCT "
                    f"{seen[validator.name]} is the first); each validator counts once",
                )
                return None
            seen[validator.name] = i
            try:
                verify_sct(
                    sct, entry, validator.log_key, key_log_id=sct.log_id
                )  # found by that log id
            except SCTError as exc:
                report.failed("scts", f"SCT {i} from validator {validator.name}: {exc}")
                return None
            if sct.timestamp > now_ms:
                report.failed(
                    "scts", f"SCT {i} from validator {validator.name} is dated in the future"
                )
                return None
            signers.append(validator)
        leaves = {(s.timestamp, s.extensions) for s in scts}
        if len(leaves) > 1:
            report.failed("scts", "the SCTs commit to different log entries (timestamps differ)")
            return None
        report.passed("scts", f"{len(scts)} SCTs verify, from {', '.join(v.name for v in signers)}")
        power = sum(v.power for v in signers)
        total = self.genesis.total_power
        if not self.genesis.has_quorum(power):
            report.failed(
                "quorum",
                f"SCT signers hold {power} of {total} voting power; more than 2/3 is needed",
            )
            return None
        report.passed("quorum", f"{power} of {total} voting power (more than 2/3)")
        return tuple(scts)


def _subject_of(cert_der: bytes) -> bytes:
    return TBSParts.split(certificate_parts(cert_der)[0]).subject


def _extension_value(parts: TBSParts, dotted: str) -> bytes:
    """The raw extnValue contents of one extension, exactly as encoded."""
    at = parts.index_of(dotted)
    if at is None:
        raise BuildError(f"no extension {dotted}")
    fields = der.split(der.body(parts.extensions[at], der.SEQUENCE, "Extension"))
    return der.body(fields[-1], der.OCTET_STRING, "extnValue")


# --- online ---------------------------------------------------------------------------

Fetch = Callable[[str], Any]
"""Takes a URL, returns the decoded JSON document (or raises OnlineError)."""


class OnlineError(Exception):
    """The status API could not be reached or answered nonsense."""


def http_fetch(cafile: str | None = None, timeout: float = 10.0) -> Fetch:
    """A ``Fetch`` over HTTP(S) with urllib (TLS verified against ``cafile`` or the system)."""
    context = ssl.create_default_context(cafile=cafile)

    def fetch(url: str) -> Any:
        try:
            with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
                body = response.read(4 * 1024 * 1024)
        except urllib.error.HTTPError as exc:
            raise OnlineError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OnlineError(f"cannot reach {url}: {reason}") from None
        try:
            return json.loads(body)
        except ValueError:
            raise OnlineError(f"{url}: the answer is not JSON") from None

    return fetch


def status_url(base: str, serial: int) -> str:
    """The status endpoint for ``serial`` (docs/ca.md, "Status API")."""
    return f"{base.rstrip('/')}/ca/v1/status/{serial:x}"


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise OnlineError(f"status answer: {what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise OnlineError(f"status answer: {what} is not valid base64") from None


def check_online(
    report: Report, verified: Verified, genesis: CAGenesis, url: str, fetch: Fetch
) -> Report:
    """The online checks: cosigned checkpoint, inclusion proof, revocation status."""
    serial = verified.leaf.serial_number
    try:
        doc = fetch(status_url(url, serial))
        if not isinstance(doc, dict):
            raise OnlineError("status answer is not a JSON object")
        if doc.get("serial") != f"{serial:x}":
            raise OnlineError(
                f"status answer is about serial {doc.get('serial')!r}, not {serial:x}"
            )
        note_text = doc.get("checkpoint")
        if not isinstance(note_text, str):
            raise OnlineError("status answer has no checkpoint")
        proof = doc.get("inclusion_proof")
        if not isinstance(proof, list):
            raise OnlineError("status answer has no inclusion_proof list")
        hashes = [_b64(h, f"inclusion_proof[{i}]") for i, h in enumerate(proof)]
        revoked = doc.get("revoked")
        if not isinstance(revoked, bool):
            raise OnlineError("status answer: 'revoked' must be true or false")
    except OnlineError as exc:
        return report.failed("online", str(exc))
    report.passed("online", f"status of serial {serial:x} from {url}")

    origin = note_text.split("\n", 1)[0]
    voters = [
        ctcp.Voter(v.name, ctcp.RFC6962NoteVerifier(origin, v.log_key), v.power)
        for v in genesis.validators
        if v.log_key is not None
    ]
    try:
        cosigned = ctcp.verify_cosigned(note_text, voters)
    except (ctcp.CheckpointError, ValueError) as exc:
        return report.failed("checkpoint", str(exc))
    cp = cosigned.checkpoint
    report.passed(
        "checkpoint",
        f"size {cp.size}, cosigned by {', '.join(cosigned.signers)} "
        f"({cosigned.power} of {cosigned.total_power} power)",
    )

    first = verified.scts[0]
    try:
        index = leaf_index_of(first.extensions)
    except DecodeError as exc:
        return report.failed("inclusion", f"the SCTs' leaf index cannot be read ({exc})")
    if index is None:
        return report.failed("inclusion", "the SCTs carry no leaf index (static-ct-api)")
    entry = LogEntry(
        EntryType.PRECERT, final_certificate_tbs(verified.leaf_der), verified.issuer.issuer_key_hash
    )
    leaf = merkle_tree_leaf(TimestampedEntry(first.timestamp, entry, first.extensions))
    try:
        verify_inclusion(index, cp.size, leaf_hash(leaf), hashes, cp.root_hash)
    except ProofError as exc:
        return report.failed("inclusion", str(exc))
    report.passed("inclusion", f"leaf {index} is in the cosigned tree of size {cp.size}")

    if revoked:
        found = doc.get("revocation")
        info: dict[str, Any] = found if isinstance(found, dict) else {}
        reason = info.get("reason", "unspecified")
        when = info.get("time", "an unknown time")
        return report.failed("revocation", f"serial {serial:x} was revoked at {when} ({reason})")
    report.passed("revocation", "not revoked according to the cluster")
    return report
