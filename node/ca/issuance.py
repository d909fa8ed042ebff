"""Issuance: CSR checks, precertificates, final certificates from an SCT quorum.

DESIGN.md section 6, steps 1 to 5, as a library with no I/O (times and nonces
come in as arguments; keys are ``Signer``s):

1. ``check_csr``: the CSR's signature (proof of possession), key type and size,
   DNS names against the policy.
2. ``precertificate_tbs`` / ``issue_precertificate``: the precertificate under the
   issuing validator's intermediate (poison extension, RFC 6962 section 3.1).  The
   TBS is a pure function of (issuer, CSR, nonce, validity, policy), so every
   validator can rebuild it and compare (``check_precertificate``, step 3).
3. ``issue_final``: the final certificate is the precertificate's TBS with the
   poison replaced by the SCT list (RFC 6962 section 3.3), signed by the same
   intermediate, once SCTs from validators holding more than 2/3 of the voting
   power verify against their CT log keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Container, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from trustchain.ct.precert import final_certificate_tbs
from trustchain.ct.sct import (
    EntryType,
    LogEntry,
    SCTError,
    SignedCertificateTimestamp,
    sct_list_extension,
)
from trustchain.ct.signer import PublicKey, Signer, spki_der
from trustchain.node.ca import certbuild, der, names
from trustchain.node.ca.certbuild import BuildError, TBSCertificate, TBSParts
from trustchain.node.ca.genesis import CAGenesis, LogValidator
from trustchain.node.ca.profiles import (
    POISON,
    CACertificate,
    CAPolicy,
    leaf_extensions,
    leaf_subject,
)
from trustchain.node.ca.schemes import scheme_of, verify

MIN_NONCE = 16
"""Bytes of issuer-chosen randomness in a serial (BR 7.1 asks for 64 bits; 128 here)."""


class IssuanceError(ValueError):
    """A request, precertificate or SCT set the CA refuses; ``check`` names the rule."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        """Which check failed: "csr", "key", "names", "validity", "sct quorum", ..."""


# --- step 1: the CSR -------------------------------------------------------------


@dataclass(frozen=True)
class CheckedCSR:
    """A CSR that passed every check, reduced to what goes into a certificate."""

    der: bytes
    """The CSR as received (DER)."""
    public_key: PublicKey
    """The subscriber's key."""
    spki: bytes
    """Its DER SubjectPublicKeyInfo, copied into the certificate."""
    dns_names: tuple[str, ...]
    """Lowercase DNS names in request order, no duplicates."""


def _load_csr(data: bytes) -> x509.CertificateSigningRequest:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except (ValueError, x509.InvalidVersion) as exc:
        # InvalidVersion is not a ValueError: a CSR whose version is not 0
        # (RFC 2986 section 4.1) must be refused, not crash the caller.
        raise IssuanceError("csr", f"not a PKCS #10 certificate request ({exc})") from None


def _check_key(key: object, policy: CAPolicy) -> PublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1):
            raise IssuanceError(
                "key", f"ECDSA curve {key.curve.name} is not accepted (P-256 or P-384)"
            )
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < policy.min_rsa_bits:
            raise IssuanceError(
                "key",
                f"RSA key of {key.key_size} bits is too small (at least {policy.min_rsa_bits})",
            )
        if key.key_size > 8192 or key.key_size % 8:
            raise IssuanceError("key", f"RSA key size {key.key_size} is not accepted")
        if key.public_numbers().e != 65537:
            # BR 6.1.6: the exponent must be odd, >= 3; 65537 is the only one in use.
            raise IssuanceError("key", "RSA public exponent must be 65537")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise IssuanceError(
        "key", f"{type(key).__name__} keys are not accepted (P-256, P-384, Ed25519, RSA >= 2048)"
    )


def check_names(requested: Sequence[str], policy: CAPolicy) -> tuple[str, ...]:
    """Normalise and check DNS names against the policy; IssuanceError("names", ...) if not."""
    if not requested:
        raise IssuanceError("names", "the request names no DNS name (put them in subjectAltName)")
    if len(requested) > policy.max_names:
        raise IssuanceError("names", f"{len(requested)} names; at most {policy.max_names}")
    out: list[str] = []
    for raw in requested:
        try:
            name = names.normalize(raw)
        except names.DNSNameError as exc:
            raise IssuanceError("names", str(exc)) from None
        if name in out:
            raise IssuanceError("names", f"{name} appears twice")
        base = name[2:] if names.is_wildcard(name) else name
        if names.is_wildcard(name):
            if not policy.allow_wildcards:
                raise IssuanceError("names", f"{name}: the policy does not allow wildcards")
            if base in policy.zones:
                raise IssuanceError("names", f"{name}: a wildcard may not cover a whole zone")
        if names.zone_of(base, policy.zones) is None:
            zones = ", ".join(policy.zones)
            raise IssuanceError("names", f"{name} is not under an allowed zone ({zones})")
        out.append(name)
    return tuple(out)


def _possession_proved(
    csr: x509.CertificateSigningRequest, key: PublicKey, *, fast: bool = True
) -> bool:
    """RFC 2986 section 3: the CSR's signature verifies with the key it carries.

    ``csr.is_signature_valid`` parses the key a second time; for the common
    case, an ECDSA key with an ECDSA signature algorithm, the key already
    parsed verifies the CertificationRequestInfo directly.  Any other pairing
    (RSA, Ed25519, a mismatched algorithm) takes cryptography's own check.
    Tests compare both on corrupted CSRs; ``fast=False`` is the plain one.
    """
    if fast and isinstance(key, ec.EllipticCurvePublicKey):
        try:
            params = csr.signature_algorithm_parameters
        except Exception:
            params = None
        if isinstance(params, ec.ECDSA):
            try:
                key.verify(csr.signature, csr.tbs_certrequest_bytes, params)
            except InvalidSignature:
                return False
            return True
    return csr.is_signature_valid


def check_csr(data: bytes, policy: CAPolicy) -> CheckedCSR:
    """Check a CSR (PEM or DER) against the policy (DESIGN.md section 6 step 2)."""
    return _check_csr(data, policy, fast=True)


def _check_csr(data: bytes, policy: CAPolicy, *, fast: bool) -> CheckedCSR:
    csr = _load_csr(data)
    try:
        key = csr.public_key()
    except (ValueError, x509.UnsupportedGeneralNameType, UnsupportedAlgorithm) as exc:
        raise IssuanceError("key", f"unsupported public key ({exc})") from None
    public = _check_key(key, policy)
    # RFC 2986 section 3: the signature proves the requester holds the private key.
    try:
        proved = _possession_proved(csr, public, fast=fast)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise IssuanceError("csr", f"unsupported signature algorithm ({exc})") from None
    if not proved:
        raise IssuanceError("csr", "the CSR's signature does not verify with its own key")
    requested: list[str] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise IssuanceError("csr", f"cannot parse the requested extensions ({exc})") from None
    if san is not None:
        for general in san:
            if not isinstance(general, x509.DNSName):
                raise IssuanceError(
                    "names", f"only DNS names can be certified, not {type(general).__name__}"
                )
            requested.append(general.value)
    try:
        common_names = csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    except ValueError as exc:
        raise IssuanceError("csr", f"cannot parse the subject ({exc})") from None
    for cn in common_names:
        value = cn.value if isinstance(cn.value, str) else cn.value.decode(errors="replace")
        if value.lower() not in {r.lower() for r in requested}:
            # BR 7.1.2.7.2: a commonName must repeat a subjectAltName entry.
            raise IssuanceError("names", f"the subject CN {value!r} is not in subjectAltName")
    der = csr.public_bytes(serialization.Encoding.DER)
    return CheckedCSR(der, public, spki_der(public), check_names(requested, policy))


# --- step 2: the precertificate --------------------------------------------------


def serial_number(issuer_key_id: bytes, nonce: bytes) -> int:
    """The certificate serial: 127 bits of SHA-256 over the issuer and a random nonce.

    Deterministic, so validators rebuild the same precertificate; unpredictable
    and unique as long as the issuing node draws ``nonce`` from a CSPRNG (BR 7.1).
    RFC 5280 section 4.1.2.2: positive and at most 20 octets.
    """
    if len(nonce) < MIN_NONCE:
        raise IssuanceError("serial", f"the serial nonce must be at least {MIN_NONCE} bytes")
    digest = hashlib.sha256(b"trustchain serial v1\x00" + issuer_key_id + nonce).digest()
    return (int.from_bytes(digest[:16], "big") >> 1) or 1


@dataclass(frozen=True)
class PrecertRequest:
    """Everything that determines a precertificate besides the issuer and policy."""

    csr: CheckedCSR
    """The checked CSR."""
    nonce: bytes
    """At least 16 random bytes from the issuing node; fixes the serial."""
    not_before: dt.datetime
    """Start of validity (the issuing node's clock, timezone-aware)."""
    not_after: dt.datetime
    """End of validity, inclusive."""


def precertificate_tbs(
    issuer: CACertificate, request: PrecertRequest, policy: CAPolicy
) -> TBSCertificate:
    """The precertificate's TBS: a pure function of its inputs."""
    span = request.not_after - request.not_before + dt.timedelta(seconds=1)
    if span <= dt.timedelta(0):
        raise IssuanceError("validity", "notAfter must be after notBefore")
    if span > dt.timedelta(days=policy.max_validity_days):
        raise IssuanceError(
            "validity",
            f"{span.days} days is longer than the policy maximum of {policy.max_validity_days}",
        )
    if request.not_before < issuer.not_before or request.not_after > issuer.not_after:
        raise IssuanceError(
            "validity",
            f"the certificate would not fit in the intermediate's validity (until "
            f"{issuer.not_after:%Y-%m-%d %H:%M}Z); rotate the intermediate",
        )
    if issuer.zones:
        for name in request.csr.dns_names:
            base = name[2:] if names.is_wildcard(name) else name
            if names.zone_of(base, issuer.zones) is None:
                raise IssuanceError(
                    "names", f"{name} is outside the intermediate's name constraints"
                )
    extensions = leaf_extensions(
        issuer, request.csr.public_key, request.csr.dns_names, crl_url=policy.crl_url
    )
    return TBSCertificate(
        serial=serial_number(issuer.key_id, request.nonce),
        scheme=issuer.scheme,
        issuer=issuer.subject,
        not_before=request.not_before,
        not_after=request.not_after,
        subject=leaf_subject(request.csr.dns_names),
        spki=request.csr.spki,
        extensions=(*extensions, POISON),
    )


@dataclass(frozen=True)
class Precertificate:
    """A signed precertificate and the log entry its SCTs sign."""

    der: bytes
    """The precertificate (DER), signed by the intermediate."""
    serial: int
    """Its serial number; the final certificate has the same."""
    issuer: CACertificate
    """The intermediate that signed it."""
    entry: LogEntry
    """RFC 6962 precert_entry: TBS without poison, and the issuer's key hash."""


def _check_signer(signer: Signer, issuer: CACertificate) -> None:
    # Asked at every precertificate and final certificate: comparing the keys
    # (about 1 us) instead of encoding the signer's SPKI each time (about 28 us).
    if signer.public_key() != issuer.public_key():
        raise IssuanceError("issuer", "the signer's key is not the intermediate certificate's key")


async def issue_precertificate(
    signer: Signer,
    issuer: CACertificate,
    request: PrecertRequest,
    policy: CAPolicy,
    *,
    issued_serials: Container[int] = (),
) -> Precertificate:
    """Build and sign the precertificate (DESIGN.md section 6 step 2)."""
    _check_signer(signer, issuer)
    tbs = precertificate_tbs(issuer, request, policy)
    if tbs.serial in issued_serials:
        raise IssuanceError("serial", f"serial {tbs.serial:x} was already issued; draw a new nonce")
    signed, logged = tbs.encode_precertificate()
    der = await certbuild.sign_tbs_bytes(signer, signed, tbs.scheme)
    return Precertificate(der, tbs.serial, issuer, _precert_entry(issuer, logged))


def _precert_entry(issuer: CACertificate, logged_tbs: bytes) -> LogEntry:
    """RFC 6962 section 3.2 precert_entry for a precertificate ``issuer`` signed directly.

    ``logged_tbs`` is the TBS without the poison, from ``encode_precertificate``;
    it equals what ``ct.precert.precert_entry`` cuts from the signed DER (tests
    compare the two), without parsing that DER again.
    """
    return LogEntry(EntryType.PRECERT, logged_tbs, issuer.issuer_key_hash)


def check_precertificate(
    precert_der: bytes, issuer: CACertificate, request: PrecertRequest, policy: CAPolicy
) -> Precertificate:
    """A validator's step 3: the precertificate is exactly what the request yields.

    Rebuilds the TBS from the request and compares bytes, then checks the
    intermediate's signature.  Raises IssuanceError("precertificate", ...).
    """
    built = precertificate_tbs(issuer, request, policy)
    expected, logged = built.encode_precertificate()
    try:
        tbs, algorithm, signature = certbuild.certificate_parts(precert_der)
    except BuildError as exc:
        raise IssuanceError("precertificate", str(exc)) from None
    if tbs != expected:
        raise IssuanceError("precertificate", "it does not match the CSR, nonce and validity")
    try:
        sig = der.bit_string_value(signature)
    except der.DERError as exc:
        raise IssuanceError("precertificate", f"malformed signature ({exc})") from None
    # RFC 6962 section 3.1: a log checks the signature on what it logs.
    if algorithm != issuer.scheme.algorithm_identifier or not verify(
        issuer.public_key(), issuer.scheme, sig, tbs
    ):
        raise IssuanceError("precertificate", "the intermediate's signature does not verify")
    # The signed TBS is byte for byte ``expected``, so the logged TBS is ``logged``.
    return Precertificate(precert_der, built.serial, issuer, _precert_entry(issuer, logged))


# --- step 4: the final certificate -----------------------------------------------


@dataclass(frozen=True)
class FinalCertificate:
    """A final certificate and how its SCT quorum was reached."""

    der: bytes
    """The certificate (DER) with the embedded SCT list."""
    scts: tuple[SignedCertificateTimestamp, ...]
    """The SCTs embedded, in genesis validator order."""
    signers: tuple[str, ...]
    """Validators whose SCTs are embedded."""
    power: int
    """Their voting power."""
    rejected: tuple[tuple[int, str], ...]
    """(index in the input, reason) for each SCT left out."""


def select_scts(
    scts: Sequence[SignedCertificateTimestamp], entry: LogEntry, genesis: CAGenesis
) -> tuple[list[tuple[LogValidator, SignedCertificateTimestamp]], list[tuple[int, str]]]:
    """Split SCTs into valid ones (one per validator) and rejected ones with reasons.

    All embedded SCTs must commit to one Merkle leaf (same timestamp and
    extensions, DESIGN.md section 6 step 3); the group with the most power wins.
    """
    valid: dict[str, tuple[LogValidator, SignedCertificateTimestamp]] = {}
    rejected: list[tuple[int, str]] = []
    for i, sct in enumerate(scts):
        validator = genesis.validator_for_log_id(sct.log_id)
        if validator is None or validator.sct_key is None:
            rejected.append((i, f"log id {sct.log_id.hex()[:16]}... is not a validator's CT log"))
            continue
        if validator.name in valid:
            rejected.append((i, f"a second SCT from validator {validator.name} (each counts once)"))
            continue
        try:
            # verify_sct's checks, with the key prepared once per genesis.
            validator.sct_key.verify(sct, entry)
        except SCTError as exc:
            rejected.append((i, f"SCT from validator {validator.name}: {exc}"))
            continue
        valid[validator.name] = (validator, sct)
    groups: dict[tuple[int, bytes], int] = {}
    for validator, sct in valid.values():
        key = (sct.timestamp, sct.extensions)
        groups[key] = groups.get(key, 0) + validator.power
    if len(groups) > 1:
        best = max(groups, key=lambda k: groups[k])
        for name, (_, sct) in list(valid.items()):
            if (sct.timestamp, sct.extensions) != best:
                del valid[name]
                rejected.append(
                    (scts.index(sct), f"SCT from {name} commits to another log entry (timestamp)")
                )
    order = {v.name: i for i, v in enumerate(genesis.validators)}
    chosen = sorted(valid.values(), key=lambda pair: order[pair[0].name])
    return chosen, rejected


def final_tbs(precert_der: bytes, scts: Sequence[SignedCertificateTimestamp]) -> bytes:
    """The precertificate's TBS with the poison replaced, in place, by the SCT list."""
    parts = TBSParts.split(certbuild.certificate_parts(precert_der)[0])
    at = parts.index_of(POISON.oid.dotted_string)
    if at is None:
        raise IssuanceError("precertificate", "it carries no poison extension")
    value = sct_list_extension(scts)
    # RFC 6962 section 3.3: the SCT list extension is not critical.
    parts.extensions[at] = certbuild.encode_extension(x509.Extension(value.oid, False, value))
    return parts.encode()


async def issue_final(
    signer: Signer,
    precert: Precertificate,
    scts: Sequence[SignedCertificateTimestamp],
    genesis: CAGenesis,
) -> FinalCertificate:
    """Embed a quorum of SCTs and sign the final certificate (step 4)."""
    _check_signer(signer, precert.issuer)
    chosen, rejected = select_scts(scts, precert.entry, genesis)
    power = sum(v.power for v, _ in chosen)
    if not genesis.has_quorum(power):
        who = ", ".join(v.name for v, _ in chosen) or "nobody"
        reasons = "; ".join(r for _, r in rejected)
        raise IssuanceError(
            "sct quorum",
            f"valid SCTs from {who} hold {power} of {genesis.total_power} voting power; "
            f"more than 2/3 is needed" + (f" (rejected: {reasons})" if reasons else ""),
        )
    embedded = tuple(sct for _, sct in chosen)
    tbs = final_tbs(precert.der, embedded)
    der = await certbuild.sign_tbs_bytes(signer, tbs, scheme_of(signer))
    # RFC 6962 section 3.3: removing the SCT list must give back what the SCTs signed.
    if final_certificate_tbs(der) != precert.entry.certificate:
        raise IssuanceError("final certificate", "its TBS does not match the precertificate's")
    return FinalCertificate(der, embedded, tuple(v.name for v, _ in chosen), power, tuple(rejected))
