"""Checking submitted chains (RFC 6962 sections 4.1 and 4.2).

A log accepts a chain only if it leads to one of its configured roots: each
certificate is signed by the next, the last is a root or is signed by one (which
is then appended, as RFC 6962 section 3.1 stores "the chain ... to a known root").
Every rejection is a ``SubmissionError`` with a stable code and a message naming
the certificate and the problem; nothing here raises anything else for bad input.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from trustchain.ct import precert
from trustchain.ct.precert import PrecertError
from trustchain.ct.sct import EntryType, LogEntry

MAX_CHAIN_LENGTH = 10


class SubmissionError(ValueError):
    """A submission the log refuses; ``code`` is machine-readable, the message is not."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class AcceptedChain:
    """A chain that leads to a configured root."""

    entry: LogEntry
    """The entry to log."""
    pre_certificate: bytes
    """The submitted precertificate (precert chains only)."""
    issuers: tuple[bytes, ...]
    """DER of every certificate after the leaf, ending with the root."""


def load_roots(path: Path) -> list[x509.Certificate]:
    """Read a PEM bundle of root certificates; raise ValueError saying what is wrong."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError(f"{path} holds no PEM certificates (-----BEGIN CERTIFICATE-----)")
    try:
        roots = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ValueError(f"{path}: not a PEM bundle of certificates ({exc})") from None
    return roots


class ChainValidator:
    """Checks chains against a fixed set of roots; caches verified (child, issuer) pairs.

    The cache only remembers that a signature verified, keyed by both
    certificates' SHA-256, so a cache hit is exactly as strong as a verification.
    """

    def __init__(self, roots: Sequence[x509.Certificate], cache_size: int = 4096) -> None:
        if not roots:
            raise ValueError("a log needs at least one root")
        self.roots = list(roots)
        self.root_ders = [r.public_bytes(serialization.Encoding.DER) for r in self.roots]
        self._root_fps = {hashlib.sha256(d).digest() for d in self.root_ders}
        self._verified: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self._ca: dict[bytes, bool] = {}
        self._cache_size = cache_size

    def _signed_by(
        self, child: x509.Certificate, child_fp: bytes, issuer: x509.Certificate, issuer_der: bytes
    ) -> bool:
        key = (child_fp, hashlib.sha256(issuer_der).digest())
        if key in self._verified:
            self._verified.move_to_end(key)
            return True
        try:
            child.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return False
        self._verified[key] = None
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return True

    def validate(
        self, ders: Sequence[bytes], *, precert_chain: bool, now: dt.datetime
    ) -> AcceptedChain:
        """Check a submitted chain (leaf first) for add-chain or add-pre-chain."""
        if not ders:
            raise SubmissionError("empty_chain", "the chain is empty; send the leaf first")
        if len(ders) > MAX_CHAIN_LENGTH:
            raise SubmissionError(
                "chain_too_long",
                f"the chain has {len(ders)} certificates; at most {MAX_CHAIN_LENGTH}",
            )
        certs = []
        for i, der in enumerate(ders):
            try:
                certs.append(x509.load_der_x509_certificate(der))
            except ValueError as exc:
                raise SubmissionError(
                    "malformed_certificate", f"chain[{i}] is not a DER X.509 certificate: {exc}"
                ) from None
        leaf = certs[0]
        try:
            is_pre = precert.has_poison(leaf, ders[0])
            nb, na = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        except ValueError as exc:
            raise SubmissionError("malformed_certificate", f"chain[0]: {exc}") from None
        if precert_chain and not is_pre:
            raise SubmissionError(
                "not_a_precertificate",
                "chain[0] has no CT poison extension; submit certificates to add-chain",
            )
        if not precert_chain and is_pre:
            raise SubmissionError(
                "precertificate_to_add_chain",
                "chain[0] is a precertificate (it has the CT poison extension); use add-pre-chain",
            )
        if na < nb:
            raise SubmissionError(
                "malformed_certificate", "chain[0] expires before it becomes valid"
            )
        if na < now:
            raise SubmissionError("expired_certificate", f"chain[0] expired at {na.isoformat()}")
        fps = [hashlib.sha256(d).digest() for d in ders]
        issuers = list(ders[1:])
        for i in range(len(certs) - 1):
            if not self._is_ca(certs[i + 1], fps[i + 1]):
                raise SubmissionError(
                    "bad_chain", f"chain[{i + 1}] is not a CA certificate but issues chain[{i}]"
                )
            if not self._signed_by(certs[i], fps[i], certs[i + 1], ders[i + 1]):
                raise SubmissionError("bad_chain", f"chain[{i}] is not signed by chain[{i + 1}]")
        if fps[-1] not in self._root_fps:
            last = certs[-1]
            for root, root_der in zip(self.roots, self.root_ders, strict=True):
                if root.subject == last.issuer and self._signed_by(last, fps[-1], root, root_der):
                    issuers.append(root_der)
                    break
            else:
                raise SubmissionError(
                    "unknown_root",
                    f"the chain does not lead to an accepted root (last issuer: "
                    f"{last.issuer.rfc4514_string()}); see get-roots",
                )
        if not precert_chain:
            return AcceptedChain(LogEntry(EntryType.X509, ders[0]), b"", tuple(issuers))
        full = [ders[0], *issuers]
        try:
            psc = precert.is_precert_signing_certificate(certs[1]) if len(certs) > 1 else False
            entry = precert.precert_entry(full, psc=psc)
        except (PrecertError, ValueError) as exc:
            raise SubmissionError("bad_precertificate", f"chain[0]: {exc}") from None
        return AcceptedChain(entry, ders[0], tuple(issuers))

    def _is_ca(self, cert: x509.Certificate, fp: bytes) -> bool:
        # Issuers repeat across submissions: remember the answer by fingerprint.
        known = self._ca.get(fp)
        if known is None:
            try:
                known = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            except (x509.ExtensionNotFound, ValueError):
                known = False
            if len(self._ca) >= self._cache_size:
                self._ca.clear()
            self._ca[fp] = known
        return known
