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
from trustchain.ct.precert import (
    SCT_LIST_EXTENSION,
    PrecertError,
    SplitCertificate,
    final_certificate_tbs,
    has_poison,
    split_certificate,
)
from trustchain.ct.sct import (
    EntryType,
    LogEntry,
    LogKey,
    SCTError,
    SignedCertificateTimestamp,
    TimestampedEntry,
    leaf_index_of,
    merkle_tree_leaf,
    parse_sct_list_extension,
)
from trustchain.ct.signer import PublicKey
from trustchain.node.ca import der, names
from trustchain.node.ca.certbuild import BuildError, TBSParts, certificate_parts
from trustchain.node.ca.genesis import CAGenesis, LogValidator
from trustchain.node.ca.profiles import CACertificate
from trustchain.node.ca.revocation import CRLError, check_crl
from trustchain.node.ca.schemes import SignatureScheme
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
        if not data.startswith(b"\x30"):  # a DER certificate is a SEQUENCE
            raise ValueError("not a certificate: neither PEM (-----BEGIN CERTIFICATE-----) nor DER")
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
    # The same text as strftime("%Y-%m-%d %H:%M:%SZ") (str() is isoformat with a
    # space; the first 19 characters are the date and time), in a fraction of
    # its time: three per certificate.
    return str(t)[:19] + "Z"


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


@dataclass(frozen=True)
class _Issuer:
    """What checking certificates against one intermediate needs, worked out once.

    It depends only on the intermediate's exact DER and the root, so a verifier
    (like any relying party) keeps it; each certificate's own signature, SCTs,
    validity and names are still checked on every call.
    """

    chained: bool
    """The root signed it."""
    can_sign: bool
    """It is a CA (basicConstraints) allowed to sign certificates (keyUsage keyCertSign)."""
    key: PublicKey | None
    """Its public key; None if the CA does not support its type."""
    scheme: SignatureScheme | None
    """How it signs (None as ``key``)."""
    not_before: dt.datetime
    """Start of its validity."""
    not_after: dt.datetime
    """End of its validity."""
    algorithm: bytes
    """The AlgorithmIdentifier DER its signatures carry (empty without ``scheme``)."""
    signed_text: str
    """The report's "intermediate" line for it."""
    signature_text: str
    """The report's "signature" line for it."""


class Verifier:
    """Offline verification against one root and one genesis.

    Keeps what depends only on an intermediate (whether the root signed it, its
    key and constraints) and on each validator's CT log key, so that verifying
    many certificates checks each intermediate signature once.
    """

    def __init__(self, root_der: bytes, genesis: CAGenesis) -> None:
        self.root_der = root_der
        self.genesis = genesis
        self._root: CACertificate | None = None
        self._root_problem: str | None = None
        self._issuers: dict[bytes, _Issuer] = {}
        """Intermediate DER -> what was worked out about it."""
        self._now: dt.datetime | None = None
        self._now_text = ""
        """The last ``now`` and its text for the report."""
        self._now_ms = 0
        self._genesis_intermediates: dict[tuple[bytes, bytes], CACertificate] = {}
        """(subjectKeyIdentifier, subject DER) -> the first genesis intermediate with them."""
        for _, cert in genesis.intermediates():
            self._genesis_intermediates.setdefault((cert.key_id, cert.subject), cert)
        try:
            self._root = CACertificate.from_der(root_der)
        except BuildError as exc:
            self._root_problem = f"the root file does not hold a CA certificate ({exc})"
            return
        root = self._root
        self._root_validity = (root.not_before, root.not_after)
        self._root_detail = f"{root.name} (sha256 {hashlib.sha256(root_der).hexdigest()[:16]}...)"
        pinned = genesis.root_sha256
        if pinned is not None and hashlib.sha256(root_der).digest() != pinned:
            self._root_problem = (
                f"the root given ({root.name}, sha256 {hashlib.sha256(root_der).hexdigest()}) "
                f"is not the root the genesis pins (sha256 {pinned.hex()})"
            )
        elif root.subject != _subject_of(root_der) or not _signed_by(root_der, root):
            self._root_problem = f"the root {root.name} is not validly self-signed"

    def _issuer_facts(self, issuer: CACertificate) -> _Issuer:
        facts = self._issuers.get(issuer.der)
        if facts is None:
            assert self._root is not None
            exts = issuer.cert.extensions
            bc = exts.get_extension_for_class(x509.BasicConstraints).value
            try:
                can_sign = exts.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
            except x509.ExtensionNotFound:
                can_sign = False
            key: PublicKey | None
            scheme: SignatureScheme | None
            try:
                key, scheme = issuer.public_key(), issuer.scheme
            except ValueError:  # BuildError, or a curve the CA does not use
                key = scheme = None
            facts = _Issuer(
                chained=_signed_by(issuer.der, self._root),
                can_sign=bc.ca and can_sign,
                key=key,
                scheme=scheme,
                not_before=issuer.not_before,
                not_after=issuer.not_after,
                algorithm=scheme.algorithm_identifier if scheme is not None else b"",
                signed_text=f"{issuer.name} is signed by {self._root.name}",
                signature_text=f"signed by {issuer.name} ({scheme.value if scheme else '?'})",
            )
            if len(self._issuers) >= _MAX_CACHED:
                self._issuers.clear()
            self._issuers[issuer.der] = facts
        return facts

    def _log(self, lid: bytes) -> tuple[LogValidator, LogKey] | None:
        """The validator the genesis names for an SCT's log id, with its prepared key."""
        validator = self.genesis.validator_for_log_id(lid)
        if validator is None or validator.sct_key is None:
            return None
        return validator, validator.sct_key

    def _find_issuer(
        self,
        aki: x509.AuthorityKeyIdentifier | None,
        issuer_name: bytes,
        bundle: Sequence[bytes],
    ) -> CACertificate | None:
        if aki is None:
            return None
        key_id = aki.key_identifier
        # Certificates in the file come first, then the genesis's.
        for extra in bundle:
            try:
                cand = CACertificate.from_der(extra)
            except BuildError:
                continue
            if cand.key_id == key_id and cand.subject == issuer_name:
                return cand
        if key_id is None:
            return None
        return self._genesis_intermediates.get((key_id, issuer_name))

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
            # Parsing them all (cryptography) rejects a malformed extension.
            extensions = leaf.extensions
            sans = bc = aki = None
            # One pass instead of a search per class; exact types, because an
            # isinstance check against these ABCs costs more than the rest.
            for ext in extensions:
                value = ext.value
                kind = type(value)
                if kind is x509.SubjectAlternativeName:
                    sans = value
                elif kind is x509.BasicConstraints:
                    bc = value
                elif kind is x509.AuthorityKeyIdentifier:
                    aki = value
            if sans is None:
                extensions.get_extension_for_class(x509.SubjectAlternativeName)  # raises
            if bc is None:
                extensions.get_extension_for_class(x509.BasicConstraints)  # raises
            assert sans is not None and bc is not None
            dns_names = sans.get_values_for_type(x509.DNSName)
            # One pass over the raw DER gives the issuer name, the signed TBS and
            # signature, and the SCT list with the TBS its SCTs sign.
            split = split_certificate(leaf_der)
            if split.version_offset != 1 or len(split.field_spans) < 7:
                raise ValueError("not an X.509 v3 TBSCertificate")
        except (ValueError, x509.ExtensionNotFound) as exc:
            return report.failed("certificate", f"not a TrustChain certificate ({exc})"), None
        if has_poison(leaf, leaf_der):
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
        report.passed("root", self._root_detail)

        issuer = self._find_issuer(aki, split.issuer, chain[1:])
        if issuer is None:
            return report.failed(
                "issuer",
                f"its issuer {leaf.issuer.rfc4514_string()} is neither in the file nor "
                f"among the intermediates of {self.genesis.source}",
            ), None
        report.passed("issuer", f"{issuer.name}")

        facts = self._issuer_facts(issuer)
        if not facts.chained:
            return report.failed(
                "intermediate",
                f"{issuer.name} is not signed by the root {root.name} given "
                "(wrong root, or a forged intermediate)",
            ), None
        if not facts.can_sign:
            return report.failed("intermediate", f"{issuer.name} may not sign certificates"), None
        report.passed("intermediate", facts.signed_text)

        # The certificate's own signature, on every call.
        signed = False
        if facts.key is not None and facts.scheme is not None:
            if split.signature_algorithm == facts.algorithm:
                try:
                    value = der.bit_string_value(split.signature)
                except der.DERError:
                    value = None
                if value is not None:
                    signed = verify_signature(facts.key, facts.scheme, value, split.tbs)
        if not signed:
            return report.failed(
                "signature", f"the certificate's signature does not verify with {issuer.name}"
            ), None
        report.passed("signature", facts.signature_text)

        not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        root_start, root_end = self._root_validity
        if not (
            not_before <= now <= not_after
            and facts.not_before <= now <= facts.not_after
            and root_start <= now <= root_end
        ):
            for what, start, end in (
                ("the certificate", not_before, not_after),
                (f"the intermediate {issuer.name}", facts.not_before, facts.not_after),
                (f"the root {root.name}", root_start, root_end),
            ):
                if now < start:
                    return report.failed(
                        "validity", f"{what} is not valid before {_when(start)}"
                    ), None
                if now > end:
                    return report.failed("validity", f"{what} expired at {_when(end)}"), None
        if now is not self._now:  # the same object for a run of certificates
            self._now, self._now_text = now, _when(now)
            self._now_ms = int(now.timestamp() * 1000)
        report.passed(
            "validity",
            f"{_when(not_before)} to {_when(not_after)}, checked at {self._now_text}",
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

        scts = self._check_scts(report, split, issuer)
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
        split: SplitCertificate,
        issuer: CACertificate,
    ) -> tuple[SignedCertificateTimestamp, ...] | None:
        if SCT_LIST_EXTENSION not in split.extension_oids:
            report.failed("scts", "the certificate embeds no SCT list")
            return None
        try:
            # RFC 6962 section 3.3: the SCTs sign the certificate's TBS without
            # the SCT list (as ct.precert.embedded_sct_entry), with the issuer's
            # key hash computed once per intermediate.
            raw, tbs = split.embedded_scts()
            scts = parse_sct_list_extension(raw)
            entry = LogEntry(EntryType.PRECERT, tbs, issuer.issuer_key_hash)
        except (DecodeError, PrecertError, BuildError, der.DERError) as exc:
            report.failed("scts", f"the SCT list cannot be read ({exc})")
            return None
        seen: dict[str, int] = {}
        signers: list[LogValidator] = []
        now_ms = self._now_ms
        for i, sct in enumerate(scts, 1):
            log = self._log(sct.log_id)
            if log is None:
                report.failed(
                    "scts",
                    f"SCT {i} of {len(scts)} is from log {sct.log_id.hex()[:16]}..., "
                    "which is not a validator's CT log",
                )
                return None
            validator, log_key = log
            if validator.name in seen:
                report.failed(
                    "scts",
                    f"SCT {i} is a second SCT from validator {validator.name} (SCT "
                    f"{seen[validator.name]} is the first); each validator counts once",
                )
                return None
            seen[validator.name] = i
            try:
                # Every SCT's signature, over the rebuilt TBS, on every call.
                log_key.verify(sct, entry)
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
        who = ", ".join([v.name for v in signers])
        report.passed("scts", f"{len(scts)} SCTs verify, from {who}")
        power = sum([v.power for v in signers])
        total = self.genesis.total_power
        if not self.genesis.has_quorum(power):
            report.failed(
                "quorum",
                f"SCT signers hold {power} of {total} voting power; more than 2/3 is needed",
            )
            return None
        report.passed("quorum", f"{power} of {total} voting power (more than 2/3)")
        return tuple(scts)


_MAX_CACHED = 1024
"""Intermediates a verifier remembers (a bound: bundles can bring any number)."""


def _subject_of(cert_der: bytes) -> bytes:
    return TBSParts.split(certificate_parts(cert_der)[0]).subject


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
