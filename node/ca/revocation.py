"""Revocation records and CRLs (RFC 5280 section 5), signed through a ``Signer``.

In the cluster a revocation is a committed operation (DESIGN.md section 6); the
replicated state hands the records to this module.  A standalone CA keeps them
in a JSON-lines file (``RevocationLog``).  Each intermediate publishes its own
CRL: ``sign_crl`` encodes the TBSCertList (RFC 5280 section 5.1) and signs it
with the intermediate's key, wherever that key lives.

CA/Browser Forum BR 7.2.2 applies to the reason codes: certificateHold is not
allowed, the CA-only reasons are not for subscriber certificates, and
"unspecified" is expressed by leaving the reasonCode out.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from trustchain.ct.signer import Signer
from trustchain.node.ca import certbuild, der
from trustchain.node.ca.profiles import CACertificate
from trustchain.node.ca.schemes import scheme_of

CRL_DAYS = 7
"""Default CRL lifetime; BR 4.9.7 allows at most 10 days for subscriber CRLs."""


class RevocationError(ValueError):
    """A revocation request or record that cannot be accepted; says why."""


class CRLError(ValueError):
    """A CRL that cannot be used to decide revocation; says why."""


class RevocationReason(enum.IntEnum):
    """RFC 5280 section 5.3.1 CRLReason (value 7 is not used)."""

    UNSPECIFIED = 0
    KEY_COMPROMISE = 1
    CA_COMPROMISE = 2
    AFFILIATION_CHANGED = 3
    SUPERSEDED = 4
    CESSATION_OF_OPERATION = 5
    CERTIFICATE_HOLD = 6
    REMOVE_FROM_CRL = 8
    PRIVILEGE_WITHDRAWN = 9
    AA_COMPROMISE = 10

    @property
    def label(self) -> str:
        """The RFC 5280 name, e.g. ``keyCompromise``."""
        return _LABELS[self]

    @classmethod
    def parse(cls, text: str) -> RevocationReason:
        """A reason a subscriber certificate may be revoked for, by name or code."""
        choices = ", ".join(r.label for r in SUBSCRIBER_REASONS)
        for reason in cls:
            if text in (reason.label, reason.name.lower(), str(reason.value)):
                if reason not in SUBSCRIBER_REASONS:
                    raise RevocationError(
                        f"revocation reason {reason.label} is not allowed for a subscriber "
                        f"certificate (CA/Browser Forum BR 7.2.2); use one of {choices}"
                    )
                return reason
        raise RevocationError(f"unknown revocation reason {text!r} (use one of {choices})")


_LABELS = {
    RevocationReason.UNSPECIFIED: "unspecified",
    RevocationReason.KEY_COMPROMISE: "keyCompromise",
    RevocationReason.CA_COMPROMISE: "cACompromise",
    RevocationReason.AFFILIATION_CHANGED: "affiliationChanged",
    RevocationReason.SUPERSEDED: "superseded",
    RevocationReason.CESSATION_OF_OPERATION: "cessationOfOperation",
    RevocationReason.CERTIFICATE_HOLD: "certificateHold",
    RevocationReason.REMOVE_FROM_CRL: "removeFromCRL",
    RevocationReason.PRIVILEGE_WITHDRAWN: "privilegeWithdrawn",
    RevocationReason.AA_COMPROMISE: "aACompromise",
}

SUBSCRIBER_REASONS = (
    RevocationReason.UNSPECIFIED,
    RevocationReason.KEY_COMPROMISE,
    RevocationReason.AFFILIATION_CHANGED,
    RevocationReason.SUPERSEDED,
    RevocationReason.CESSATION_OF_OPERATION,
    RevocationReason.PRIVILEGE_WITHDRAWN,
)
"""BR 7.2.2: the reasons a subscriber certificate's CRL entry may carry."""


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise RevocationError("times must be timezone-aware")
    return value.astimezone(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class RevocationRecord:
    """One revoked certificate."""

    serial: int
    """The certificate's serial number."""
    issuer_key_id: bytes
    """Key identifier of the intermediate that issued it (its CRL lists it)."""
    revoked_at: dt.datetime
    """When it was revoked (the committing block's time)."""
    reason: RevocationReason
    """Why (RFC 5280 section 5.3.1)."""

    def __post_init__(self) -> None:
        if self.serial <= 0:
            raise RevocationError("a serial number is positive")
        if self.reason not in SUBSCRIBER_REASONS:
            raise RevocationError(
                f"reason {self.reason.label} is not allowed for a subscriber certificate "
                "(CA/Browser Forum BR 7.2.2)"
            )
        object.__setattr__(self, "revoked_at", _utc(self.revoked_at))

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": f"{self.serial:x}",
            "issuer_key_id": self.issuer_key_id.hex(),
            "revoked_at": self.revoked_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "reason": self.reason.label,
        }

    @classmethod
    def from_json(cls, doc: Any) -> RevocationRecord:
        try:
            return cls(
                serial=int(doc["serial"], 16),
                issuer_key_id=bytes.fromhex(doc["issuer_key_id"]),
                revoked_at=dt.datetime.strptime(doc["revoked_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
                    tzinfo=dt.UTC
                ),
                reason=RevocationReason.parse(doc["reason"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, RevocationError):
                raise
            raise RevocationError(f"malformed revocation record ({exc})") from None


def record_for(
    cert_der: bytes, reason: RevocationReason, revoked_at: dt.datetime
) -> RevocationRecord:
    """The record revoking a certificate (serial and issuer taken from it)."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (ValueError, x509.ExtensionNotFound) as exc:
        raise RevocationError(f"not a certificate this CA issued ({exc})") from None
    if aki.key_identifier is None:
        raise RevocationError("the certificate's AKI has no key identifier")
    return RevocationRecord(cert.serial_number, aki.key_identifier, revoked_at, reason)


class RevocationLog:
    """Revocation records in a JSON-lines file, appended with fsync (standalone CA).

    The file only grows; a serial is revoked once (a second request for the same
    certificate is refused, so the first reason and time stand).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> list[RevocationRecord]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.append(RevocationRecord.from_json(json.loads(line)))
            except (ValueError, RevocationError) as exc:
                raise RevocationError(f"{self.path}:{n}: {exc}") from None
        return out

    def add(self, record: RevocationRecord) -> None:
        for existing in self.records():
            if (existing.serial, existing.issuer_key_id) == (record.serial, record.issuer_key_id):
                raise RevocationError(
                    f"serial {record.serial:x} was already revoked at "
                    f"{existing.revoked_at:%Y-%m-%d %H:%M:%SZ} ({existing.reason.label})"
                )
        line = json.dumps(record.to_json(), separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def crl_tbs(
    issuer: CACertificate,
    records: Iterable[RevocationRecord],
    *,
    this_update: dt.datetime,
    next_update: dt.datetime,
    number: int,
) -> bytes:
    """RFC 5280 section 5.1.2 TBSCertList for the records issued by ``issuer``."""
    if not this_update < next_update:
        raise RevocationError("nextUpdate must be later than thisUpdate")
    if not 0 <= number < 1 << 159:
        raise RevocationError("the CRL number must be non-negative and at most 20 octets")
    mine = sorted((r for r in records if r.issuer_key_id == issuer.key_id), key=lambda r: r.serial)
    entries = []
    for r in mine:
        parts = [der.integer(r.serial), der.time(r.revoked_at)]
        if r.reason is not RevocationReason.UNSPECIFIED:
            reason = x509.CRLReason(x509.ReasonFlags(r.reason.label))
            ext = x509.Extension(CRLEntryExtensionOID.CRL_REASON, False, reason)
            parts.append(der.seq(certbuild.encode_extension(ext)))
        entries.append(der.seq(*parts))
    extensions = [
        x509.Extension(
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
            False,
            x509.AuthorityKeyIdentifier(issuer.key_id, None, None),
        ),
        x509.Extension(ExtensionOID.CRL_NUMBER, False, x509.CRLNumber(number)),
    ]
    fields = [
        der.integer(1),  # v2: required when extensions are present (section 5.1.2.1)
        issuer.scheme.algorithm_identifier,
        issuer.subject,
        der.time(_utc(this_update)),
        der.time(_utc(next_update)),
    ]
    if entries:
        # An empty revokedCertificates list is omitted, not encoded empty.
        fields.append(der.seq(*entries))
    fields.append(der.explicit(0, der.seq(*certbuild.encode_extensions(extensions))))
    return der.seq(*fields)


async def sign_crl(
    signer: Signer,
    issuer: CACertificate,
    records: Iterable[RevocationRecord],
    *,
    this_update: dt.datetime,
    next_update: dt.datetime | None = None,
    number: int,
) -> bytes:
    """The DER CRL of ``issuer``, signed by ``signer`` (which must hold its key)."""
    if signer.public_key() != issuer.public_key():
        raise RevocationError("the signer's key is not the intermediate's key")
    if next_update is None:
        next_update = this_update + dt.timedelta(days=CRL_DAYS)
    tbs = crl_tbs(issuer, records, this_update=this_update, next_update=next_update, number=number)
    return await certbuild.sign_tbs_bytes(signer, tbs, scheme_of(signer))


@dataclass(frozen=True)
class Revoked:
    """A CRL entry for the serial asked about."""

    serial: int
    """The revoked serial."""
    revoked_at: dt.datetime
    """revocationDate."""
    reason: RevocationReason
    """reasonCode, UNSPECIFIED if absent."""


def check_crl(
    crls: Sequence[bytes], issuer: CACertificate, serial: int, now: dt.datetime
) -> Revoked | None:
    """Look ``serial`` up in ``issuer``'s CRL; CRLError if no usable CRL is given."""
    for data in crls:
        try:
            crl = (
                x509.load_pem_x509_crl(data)
                if data.lstrip().startswith(b"-----BEGIN")
                else x509.load_der_x509_crl(data)
            )
            aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        except (ValueError, x509.ExtensionNotFound):
            continue
        if aki.key_identifier != issuer.key_id:
            continue
        if not crl.is_signature_valid(issuer.public_key()):
            raise CRLError("the CRL's signature does not verify with the intermediate's key")
        if crl.last_update_utc > now:
            raise CRLError(f"the CRL is dated in the future ({crl.last_update_utc:%Y-%m-%d}Z)")
        if crl.next_update_utc is not None and crl.next_update_utc < now:
            due = f"{crl.next_update_utc:%Y-%m-%d %H:%M}Z"
            raise CRLError(f"the CRL is out of date (next update was due {due}); fetch a fresh one")
        entry = crl.get_revoked_certificate_by_serial_number(serial)
        if entry is None:
            return None
        reason = RevocationReason.UNSPECIFIED
        try:
            flag = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
            reason = RevocationReason.parse(flag.value)
        except x509.ExtensionNotFound:
            pass
        return Revoked(serial, entry.revocation_date_utc, reason)
    raise CRLError("none of the CRLs given was issued by the certificate's intermediate")
