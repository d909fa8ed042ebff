"""Zones: RFC 1035 master files read with dnspython, the default zone built from
config values, and the immutable index that the answering code searches.

A `ZoneIndex` is built once and never changes; answering code may share it
between tasks and threads without locks.  Every check that can fail happens
while building it, so a zone that loads is a zone the server can answer from.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rrset
import dns.zone

MAX_TTL = 2**31 - 1
"""RFC 2181 section 8: TTLs are 31-bit unsigned values."""

# Data that may share an owner name with a CNAME (RFC 1034 section 3.6.2 as
# amended by RFC 4035 section 2.5 for the DNSSEC types).
_CNAME_COMPANIONS = frozenset(
    {dns.rdatatype.CNAME, dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3}
)

Node = Mapping[dns.rdatatype.RdataType, dns.rrset.RRset]
"""The RRsets at one owner name, by type."""


class ZoneError(ValueError):
    """A zone file or zone setting is invalid; the message names the file and the problem."""


@dataclass(frozen=True)
class ZoneIndex:
    """One zone, indexed for lookups.  Immutable once built (see `index_zone`)."""

    origin: dns.name.Name
    """The zone apex, absolute."""
    soa: dns.rrset.RRset
    """The apex SOA RRset (exactly one record)."""
    nodes: Mapping[dns.name.Name, Node]
    """Every owner name with data, absolute, to its RRsets."""
    empty_non_terminals: frozenset[dns.name.Name]
    """Names without data that have descendants with data (RFC 8020: they exist)."""
    cuts: frozenset[dns.name.Name]
    """Delegation points: names below the apex that own an NS RRset."""
    source: str
    """Where the zone came from (a file path or "config"), for messages."""

    @property
    def serial(self) -> int:
        soa = self.soa[0]
        assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
        return int(soa.serial)

    def find_cut(self, name: dns.name.Name) -> dns.name.Name | None:
        """The highest zone cut at or above `name` (RFC 1034 section 4.3.2 step 3b)."""
        if not self.cuts:
            return None
        labels = len(self.origin.labels)
        # Walk down from just below the apex; the first cut met is the one
        # that delegates everything underneath it.
        for depth in range(labels + 1, len(name.labels) + 1):
            candidate = name.split(depth)[1]
            if candidate in self.cuts:
                return candidate
        return None


def index_zone(zone: dns.zone.Zone, source: str) -> ZoneIndex:
    """Check `zone` and build its index.  Raises ZoneError naming `source`.

    Checks: class IN, exactly one SOA and at least one NS at the apex
    (RFC 1035 section 5.2), no CNAME beside other data (RFC 1034 section
    3.6.2), no TTL above 2^31-1 (RFC 2181 section 8).
    """
    origin = zone.origin
    if origin is None or not origin.is_absolute():
        raise ZoneError(f"{source}: the zone has no absolute origin; add `$ORIGIN name.`")
    if zone.rdclass != dns.rdataclass.IN:
        raise ZoneError(f"{source}: only class IN zones are served, this one is {zone.rdclass!r}")
    nodes: dict[dns.name.Name, dict[dns.rdatatype.RdataType, dns.rrset.RRset]] = {}
    for owner, node in zone.nodes.items():
        # Loaded with relativize=False: owner names and the names inside rdata
        # are absolute, so RRsets render without an origin.
        name = owner.derelativize(origin)
        rrsets: dict[dns.rdatatype.RdataType, dns.rrset.RRset] = {}
        for rdataset in node.rdatasets:
            if rdataset.ttl > MAX_TTL:
                raise ZoneError(f"{source}: {name} {rdataset.rdtype!r}: TTL above 2^31-1")
            if rdataset.covers != dns.rdatatype.NONE:
                continue  # signatures are kept by nobody here: we do not sign
            if not rdataset:
                continue
            rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
            for rdata in rdataset:
                rrset.add(rdata, rdataset.ttl)
            rrsets[rdataset.rdtype] = rrset
        if dns.rdatatype.CNAME in rrsets and not set(rrsets) <= _CNAME_COMPANIONS:
            others = ", ".join(
                dns.rdatatype.to_text(t) for t in sorted(set(rrsets) - _CNAME_COMPANIONS)
            )
            raise ZoneError(
                f"{source}: {name} has a CNAME and other data ({others}); "
                "RFC 1034 section 3.6.2 allows only the CNAME"
            )
        if rrsets:
            nodes[name] = rrsets
    apex = nodes.get(origin, {})
    soa = apex.get(dns.rdatatype.SOA)
    if soa is None or len(soa) != 1:
        raise ZoneError(f"{source}: the apex {origin} needs exactly one SOA record")
    if dns.rdatatype.NS not in apex:
        raise ZoneError(f"{source}: the apex {origin} has no NS records")
    for name, rrsets in nodes.items():
        if name != origin and dns.rdatatype.SOA in rrsets:
            raise ZoneError(f"{source}: {name} has an SOA record; only the apex may")
    cuts = frozenset(
        name for name, rrsets in nodes.items() if name != origin and dns.rdatatype.NS in rrsets
    )
    return ZoneIndex(
        origin=origin,
        soa=soa,
        nodes=nodes,
        empty_non_terminals=frozenset(empty_non_terminals(nodes, origin)),
        cuts=cuts,
        source=source,
    )


def empty_non_terminals(
    names: Iterable[dns.name.Name], origin: dns.name.Name
) -> set[dns.name.Name]:
    """Ancestors (below `origin`) of `names` that are not themselves in `names`."""
    present = set(names)
    result: set[dns.name.Name] = set()
    for name in present:
        parent = name
        while parent != origin and len(parent.labels) > len(origin.labels):
            parent = parent.parent()
            if parent in present or parent in result or parent == origin:
                break
            result.add(parent)
    return result


def load_zone_file(path: str | os.PathLike[str], origin: str | None = None) -> ZoneIndex:
    """Read an RFC 1035 master file with dnspython and index it.

    `origin` is needed only when the file has no ``$ORIGIN`` line.  Every
    failure is a ZoneError that names the file (and the line, where dnspython
    reports one).
    """
    source = os.fspath(path)
    try:
        zone = dns.zone.from_file(source, origin=origin, relativize=False, allow_include=False)
    except FileNotFoundError:
        raise ZoneError(f"{source}: zone file not found") from None
    except IsADirectoryError:
        raise ZoneError(f"{source}: expected a zone file, found a directory") from None
    except dns.zone.NoSOA:
        raise ZoneError(f"{source}: the zone has no SOA record at its origin") from None
    except AssertionError:
        # dnspython asserts on a file without a single record (no origin was learnt).
        raise ZoneError(
            f"{source}: no records; a zone needs an SOA and NS records at its origin"
        ) from None
    except dns.zone.NoNS:
        raise ZoneError(f"{source}: the zone has no NS records at its origin") from None
    except (dns.name.NeedAbsoluteNameOrOrigin, dns.zone.UnknownOrigin):
        raise ZoneError(f"{source}: no origin; add `$ORIGIN name.` at the top") from None
    except dns.exception.SyntaxError as exc:
        # dnspython's message already reads "FILE:LINE: problem".
        raise ZoneError(str(exc)) from None
    except (dns.exception.DNSException, ValueError) as exc:
        # ValueError: dnspython's transaction checks, e.g. an SOA below the apex.
        raise ZoneError(f"{source}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ZoneError(f"{source}: cannot read the zone file: {exc}") from None
    return index_zone(zone, source)


def zone_from_text(text: str, origin: str | None = None, source: str = "<text>") -> ZoneIndex:
    """Like `load_zone_file`, from a string (tests and generated zones)."""
    try:
        zone = dns.zone.from_text(text, origin=origin, relativize=False)
    except (dns.name.NeedAbsoluteNameOrOrigin, dns.zone.UnknownOrigin):
        raise ZoneError(f"{source}: no origin; add `$ORIGIN name.` at the top") from None
    except (dns.exception.DNSException, ValueError) as exc:
        raise ZoneError(f"{source}: {exc}") from None
    return index_zone(zone, source)


# --- the default zone ---------------------------------------------------------------


@dataclass(frozen=True)
class NameServer:
    """One NS record of the default zone and, when in the zone, its addresses."""

    name: str
    """Host name, relative to the zone (e.g. "ns1") or absolute with a trailing dot."""
    addresses: tuple[str, ...] = ()
    """IPv6 addresses published as AAAA glue when the name is inside the zone."""


@dataclass(frozen=True)
class DefaultZoneSettings:
    """Config values the default zone is generated from (deployment records of
    ../shared/aws-requirements.md: AAAA for the apex, ca. and ct. as CNAMEs)."""

    origin: str = "trust.hypermesh.online."
    """The zone apex."""
    apex_addresses: tuple[str, ...] = ("2001:db8::10",)
    """AAAA records of the apex; IPv6 only."""
    aliases: tuple[str, ...] = ("ca", "ct")
    """Labels that get a CNAME to the apex."""
    nameservers: tuple[NameServer, ...] = (NameServer("ns1", ("2001:db8::10",)),)
    """The zone's NS records (at least one)."""
    hostmaster: str = "hostmaster"
    """The SOA RNAME (the operator's mailbox, RFC 1035 section 3.3.13), relative or absolute."""
    serial: int = 1
    """The SOA serial; the replicated state's version is added to it (see records.py)."""
    ttl: int = 300
    """TTL of every record."""
    refresh: int = 3600
    retry: int = 900
    expire: int = 1209600
    negative_ttl: int = 300
    """SOA MINIMUM: how long resolvers cache NXDOMAIN and NODATA (RFC 2308 section 4)."""
    extra: tuple[str, ...] = field(default=())
    """More records in master-file syntax relative to the origin (``"www AAAA 2001:db8::20"``)."""


def _ipv6(text: str, what: str) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ZoneError(f"config: {what}: {text!r} is not an IP address") from None
    if not isinstance(ip, ipaddress.IPv6Address):
        raise ZoneError(f"config: {what}: {text!r} is IPv4; TrustChain publishes AAAA only")
    if ip.ipv4_mapped is not None:
        raise ZoneError(f"config: {what}: {text!r} is an IPv4-mapped address; use IPv6")
    return ip.compressed


_HOST_LABEL = re.compile(rb"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _label_or_name(text: str, what: str, origin: dns.name.Name) -> dns.name.Name:
    try:
        name = dns.name.from_text(text, origin=origin)
    except dns.exception.DNSException as exc:
        raise ZoneError(f"config: {what}: {text!r} is not a domain name ({exc})") from None
    return name


def _uint(value: int, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ZoneError(f"config: {what}: expected an integer in {low}..{high}, got {value!r}")
    return value


def default_zone(settings: DefaultZoneSettings | None = None) -> ZoneIndex:
    """Build the default zone from config values; every value is checked."""
    s = settings or DefaultZoneSettings()
    try:
        origin = dns.name.from_text(s.origin)
    except dns.exception.DNSException as exc:
        raise ZoneError(f"config: origin: {s.origin!r} is not a domain name ({exc})") from None
    if origin == dns.name.root:
        raise ZoneError("config: origin: refusing to serve the root zone")
    for label in origin.labels[:-1]:
        # RFC 1123 section 2.1 host names: the zone's own names (ns1, ca, ct) are hosts.
        if not _HOST_LABEL.fullmatch(label):
            raise ZoneError(
                f"config: origin: {s.origin!r} is not a host name "
                "(labels of letters, digits and inner hyphens)"
            )
    ttl = _uint(s.ttl, 0, MAX_TTL, "ttl")
    serial = _uint(s.serial, 0, 2**32 - 1, "serial")
    timers = [
        _uint(getattr(s, key), 0, MAX_TTL, key)
        for key in ("refresh", "retry", "expire", "negative_ttl")
    ]
    if not s.apex_addresses:
        raise ZoneError("config: apex_addresses: at least one IPv6 address is needed")
    if not s.nameservers:
        raise ZoneError("config: nameservers: at least one name server is needed")
    lines = [f"$ORIGIN {origin}", f"$TTL {ttl}"]
    mname = _label_or_name(s.nameservers[0].name, "nameservers[0].name", origin)
    rname = _label_or_name(s.hostmaster, "hostmaster", origin)
    lines.append(f"@ SOA {mname} {rname} {serial} {' '.join(map(str, timers))}")
    for i, server in enumerate(s.nameservers):
        host = _label_or_name(server.name, f"nameservers[{i}].name", origin)
        lines.append(f"@ NS {host}")
        if host.is_subdomain(origin):
            if not server.addresses:
                raise ZoneError(
                    f"config: nameservers[{i}]: {host} is inside the zone and needs an address"
                )
            for address in server.addresses:
                lines.append(f"{host} AAAA {_ipv6(address, f'nameservers[{i}].addresses')}")
    for address in s.apex_addresses:
        lines.append(f"@ AAAA {_ipv6(address, 'apex_addresses')}")
    for alias in s.aliases:
        name = _label_or_name(alias, "aliases", origin)
        if not name.is_subdomain(origin) or name == origin:
            raise ZoneError(f"config: aliases: {alias!r} must be a name below {origin}")
        lines.append(f"{name} CNAME @")
    lines.extend(s.extra)
    return zone_from_text("\n".join(lines) + "\n", source="config")
