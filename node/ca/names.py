"""DNS names in certificates: syntax, wildcards, zones, name constraints.

RFC 5280 section 4.2.1.6: a dNSName is in the "preferred name syntax" of RFC 1034
section 3.5 (letters, digits, hyphens; labels of 1 to 63 octets), with
internationalised names as A-labels (RFC 5890): a label that starts with ``xn--``
must be a valid one (BR 7.1.4.2).  CA/Browser Forum BR 7.1.2.7.12 adds the
wildcard rule: ``*`` only as the whole leftmost label.  RFC 5280
section 4.2.1.10: a dNSName constraint matches the name itself and every name
formed by adding labels on the left.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

import idna

MAX_NAME = 253
"""RFC 1034 section 3.1: 255 octets on the wire, 253 characters in text form."""


class DNSNameError(ValueError):
    """A DNS name that a certificate may not carry; the message says why."""


def _label_ok(label: str) -> bool:
    if not 1 <= len(label) <= 63:
        return False
    if label[0] == "-" or label[-1] == "-":
        return False
    return all(c.isascii() and (c.isalnum() or c == "-") for c in label)


def normalize(name: str) -> str:
    """The lowercase form of a syntactically valid DNS name (wildcards allowed here).

    Raises DNSNameError for anything else: IP addresses, empty labels, a trailing
    dot, non-ASCII (use the A-label), a misplaced ``*``.
    """
    if not isinstance(name, str) or not name:
        raise DNSNameError("empty DNS name")
    if len(name) > MAX_NAME:
        raise DNSNameError(f"{name[:40]}...: longer than {MAX_NAME} characters")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise DNSNameError(f"{name}: an IP address is not a DNS name")
    lowered = name.lower()
    labels = lowered.split(".")
    for i, label in enumerate(labels):
        if label == "*" and i == 0 and len(labels) > 1:
            continue
        if "*" in label:
            raise DNSNameError(f"{name}: '*' is allowed only as the whole leftmost label")
        if not _label_ok(label):
            if not label:
                raise DNSNameError(f"{name}: empty label (a leading, trailing or double dot)")
            if not label.isascii():
                raise DNSNameError(f"{name}: not ASCII; write internationalised names as A-labels")
            raise DNSNameError(
                f"{name}: label {label!r} is not 1-63 letters, digits or inner hyphens"
            )
        if label.startswith("xn--"):
            try:
                idna.decode(label)  # IDNA 2008: decodes, and encodes back to the same label
            except idna.IDNAError:
                raise DNSNameError(
                    f"{name}: label {label!r} is not a valid A-label (RFC 5890)"
                ) from None
    return lowered


def is_wildcard(name: str) -> bool:
    return name.startswith("*.")


def within(name: str, zone: str) -> bool:
    """RFC 5280 section 4.2.1.10: ``name`` is ``zone`` or below it (label boundary)."""
    name = name.lower()
    zone = zone.lower().lstrip(".")
    return name == zone or name.endswith("." + zone)


def zone_of(name: str, zones: Iterable[str]) -> str | None:
    """The first zone that ``name`` lies within, or None."""
    for zone in zones:
        if within(name, zone):
            return zone
    return None


def check_zones(zones: Sequence[str]) -> tuple[str, ...]:
    """Validate a list of zones (for policy and name constraints)."""
    if not zones:
        raise DNSNameError("at least one zone is needed")
    out = []
    for zone in zones:
        normal = normalize(zone)
        if is_wildcard(normal):
            raise DNSNameError(f"{zone}: a zone cannot be a wildcard")
        if "." not in normal:
            raise DNSNameError(f"{zone}: a zone must have at least two labels")
        out.append(normal)
    return tuple(out)
