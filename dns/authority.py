"""Authoritative answers from the served zones and the published records.

    authority = Authority([default_zone()])
    wire = authority.respond(query_message, query_wire)
    authority.apply([CertificateIssued(...)], version=7)

`respond` follows RFC 1034 section 4.3.2 for one zone at a time:

- the zone is the longest served origin above the query name; no such zone:
  REFUSED without AA;
- below a zone cut: a referral (NS in authority, in-zone glue in additional,
  AA clear), except DS at the cut itself, which the parent answers (RFC 4035
  section 3.1.4.1);
- CNAMEs are followed while their targets stay in the zone, at most
  `MAX_CHAIN` links; the RCODE is that of the last name (RFC 6604 section 2.1);
- a name with data but not of the asked type, or an empty non-terminal (RFC
  8020): NODATA; a name that does not exist: NXDOMAIN; both with the SOA in
  authority, its TTL capped by the SOA MINIMUM (RFC 2308 section 3);
- wildcards synthesise answers for names below the closest encloser (RFC 4592);
- ANY gets one RRset of the name, chosen by lowest type number (RFC 8482
  section 4.1);
- EDNS(0) (RFC 6891): an OPT in the response only if the query had one;
  version above 0 gets BADVERS; the DO bit is copied (RFC 3225 section 3);
  responses to EDNS queries are padded to 468-octet blocks (RFC 9250 section
  5.4 requires padding, RFC 8467 section 4.1 gives the block size);
- opcodes other than QUERY: NOTIMP; zone transfers: REFUSED; classes other
  than IN: REFUSED; not exactly one question: FORMERR.

The served data is one `View`: the zones plus one `PublishedRecords`
snapshot.  A query reads `Authority.view` once and answers from that object
only, and writers replace the reference in one assignment, so a query never
sees half of an update.  Published RRsets replace a zone file's RRsets of
the same name and type.

Any exception while answering becomes SERVFAIL (RFC 9250 section 4.3.2: DNS
errors are answered, not turned into stream resets); only if SERVFAIL itself
cannot be rendered does `respond` raise `AnswerError`.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA
import dns.rrset

from trustchain.dns.records import Change, PublishedRecords
from trustchain.dns.zones import Node, ZoneError, ZoneIndex

MAX_CHAIN = 8
"""CNAME links followed for one query (loops stop here too)."""
PAD_BLOCK = 468
"""RFC 8467 section 4.1: responders pad to a multiple of 468 octets."""
OUR_PAYLOAD = 1232
"""EDNS UDP payload size we advertise; DoQ ignores it (RFC 9250 section 4.6)."""
MAX_RESPONSE = 65535
"""The 2-octet length prefix bounds every DoQ message (RFC 9250 section 4.6)."""
RESPONSE_CACHE = 4096
"""Rendered responses kept per Authority (by query bytes, for the current view)."""
CACHE_MAX_RESPONSE = 4096
"""Larger responses are not cached, which bounds the cache at 16 MiB."""

_NO_ANSWER_TYPES = frozenset({dns.rdatatype.OPT, dns.rdatatype.TSIG, dns.rdatatype.TKEY})
_TRANSFER_TYPES = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR})
_GLUE_TYPES = (dns.rdatatype.AAAA, dns.rdatatype.A)


class AnswerError(Exception):
    """Not even SERVFAIL could be rendered for a query; the caller resets the stream."""


@dataclass(frozen=True)
class View:
    """Everything one answer is computed from.  Never mutated."""

    zones: tuple[ZoneIndex, ...]
    """Served zones, longest origin first."""
    published: PublishedRecords
    """What the replicated state publishes."""
    _soa: dict[dns.name.Name, tuple[dns.rrset.RRset, dns.rrset.RRset]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Per zone origin: the SOA RRset with the published serial, and its negative-
    answer form; built once per view, since building RRsets is not cheap, and only
    when an answer first needs it: every committed block makes a new view (the
    serial moves), and most views answer no SOA at all.  Two threads building one
    at once build equal RRsets; either may stay."""

    def _soa_of(self, zone: ZoneIndex) -> tuple[dns.rrset.RRset, dns.rrset.RRset]:
        found = self._soa.get(zone.origin)
        if found is None:
            found = self._soa[zone.origin] = _soa_rrsets(zone, self.published)
        return found

    def zone_for(self, name: dns.name.Name) -> ZoneIndex | None:
        for zone in self.zones:
            if name.is_subdomain(zone.origin):
                return zone
        return None

    def node(self, zone: ZoneIndex, name: dns.name.Name) -> Node | None:
        static = zone.nodes.get(name)
        published = self.published.nodes.get(name)
        if published is None:
            return static
        if static is None:
            return published
        return {**static, **published}

    def exists(self, zone: ZoneIndex, name: dns.name.Name) -> bool:
        """The name owns data or has descendants that do (RFC 8020)."""
        return (
            name in zone.nodes
            or name in zone.empty_non_terminals
            or name in self.published.nodes
            or name in self.published.empty_non_terminals
        )

    def soa(self, zone: ZoneIndex) -> dns.rrset.RRset:
        """The apex SOA with the serial moved by the published version."""
        return self._soa_of(zone)[0]

    def negative_soa(self, zone: ZoneIndex) -> dns.rrset.RRset:
        """The SOA for NXDOMAIN/NODATA: TTL = min(TTL, MINIMUM) (RFC 2308 section 3)."""
        return self._soa_of(zone)[1]


def _soa_rrsets(
    zone: ZoneIndex, published: PublishedRecords
) -> tuple[dns.rrset.RRset, dns.rrset.RRset]:
    soa = zone.soa[0]
    assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
    if published.version:
        soa = soa.replace(serial=published.serial(soa.serial))
    positive = dns.rrset.RRset(zone.origin, dns.rdataclass.IN, dns.rdatatype.SOA)
    positive.add(soa, zone.soa.ttl)
    negative = dns.rrset.RRset(zone.origin, dns.rdataclass.IN, dns.rdatatype.SOA)
    negative.add(soa, min(zone.soa.ttl, soa.minimum))
    return positive, negative


class Authority:
    """Answers queries for a set of zones plus the published records.

    Thread-safe: `respond` may run anywhere; `apply` and `replace_zones`
    serialise among themselves and publish with one reference assignment.
    """

    def __init__(
        self,
        zones: Sequence[ZoneIndex],
        published: PublishedRecords | None = None,
        *,
        cache_size: int = RESPONSE_CACHE,
    ) -> None:
        ordered = _check_zones(zones)
        if published is None:
            published = PublishedRecords.empty(zone.origin for zone in ordered)
        self._view = View(ordered, published)
        self._write_lock = threading.Lock()
        # Owned by whichever thread calls respond; entries are (view, bytes), so
        # a hit from an older view is a miss.  OrderedDict operations are atomic
        # under the GIL, which is all the sharing this needs.
        self._cache: OrderedDict[bytes, tuple[View, bytes]] = OrderedDict()
        self._cache_size = cache_size

    @property
    def view(self) -> View:
        return self._view

    @property
    def published(self) -> PublishedRecords:
        return self._view.published

    def apply(self, changes: Sequence[Change], *, version: int | None = None) -> PublishedRecords:
        """Apply one committed batch atomically; raises RecordError with nothing changed."""
        with self._write_lock:
            view = self._view
            published = view.published.apply(changes, version=version)
            self._view = View(view.zones, published)
            return published

    def replace_zones(self, zones: Sequence[ZoneIndex]) -> None:
        """Serve `zones` from now on (e.g. after re-reading zone files)."""
        ordered = _check_zones(zones)
        with self._write_lock:
            published = self._view.published
            if {z.origin for z in ordered} != set(published.origins):
                # Published names were filtered by the old origins; replaying them
                # is the node's job (it holds the certificates), not ours.
                raise ZoneError("the set of zone origins cannot change while serving; restart")
            self._view = View(ordered, published)

    # --- answering ----------------------------------------------------------------------

    def respond(self, query: dns.message.Message, wire: bytes) -> bytes:
        """The rendered response to `query` (parsed, and as `wire`), at most 65535 octets."""
        view = self._view  # read once: the whole answer comes from this view
        cached = self._cache.get(wire)
        if cached is not None and cached[0] is view:
            try:
                self._cache.move_to_end(wire)
            except KeyError:
                pass  # evicted meanwhile by another thread; the answer is still right
            return cached[1]
        try:
            response = answer(view, query)
            rendered = response.to_wire(max_size=MAX_RESPONSE)
        except Exception:
            # Deliberately broad: whatever went wrong in answering is a server
            # failure for this query, never for the server (RFC 9250 4.3.2).
            return self._servfail(query)
        if len(rendered) <= CACHE_MAX_RESPONSE:
            self._cache[wire] = (view, rendered)
            if len(self._cache) > self._cache_size:
                try:
                    self._cache.popitem(last=False)
                except KeyError:
                    pass
        return rendered

    def _servfail(self, query: dns.message.Message) -> bytes:
        try:
            response = _skeleton(query)
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire(max_size=MAX_RESPONSE)
        except Exception as exc:
            raise AnswerError(f"cannot render SERVFAIL: {exc!r}") from exc


def formerr(wire: bytes) -> bytes:
    """FORMERR for a query dnspython cannot parse (RFC 1035 section 4.1.1).

    Built from the 12-octet header alone: same ID and opcode, QR set, no
    sections (and so no OPT, as RFC 6891 section 7 asks for broken OPTs).
    """
    if len(wire) < 12:
        raise ValueError("a DNS message has at least a 12-octet header")
    (message_id, flags) = struct.unpack("!HH", wire[:4])
    opcode_bits = flags & 0x7800
    rd = flags & dns.flags.RD
    return struct.pack(
        "!HHHHHH", message_id, dns.flags.QR | opcode_bits | rd | dns.rcode.FORMERR, 0, 0, 0, 0
    )


def _skeleton(query: dns.message.Message) -> dns.message.Message:
    response = dns.message.make_response(query, our_payload=OUR_PAYLOAD, pad=PAD_BLOCK)
    if query.edns >= 0:
        # RFC 3225 section 3: the DO bit is copied from query to response.
        response.ednsflags |= query.ednsflags & dns.flags.DO
    return response


def answer(view: View, query: dns.message.Message) -> dns.message.Message:
    """The response message for `query` from `view` (module docstring has the rules)."""
    if query.opcode() != dns.opcode.QUERY:
        # NOTIFY, UPDATE, ...: we are neither a secondary nor updatable (RFC 1035
        # section 4.1.1, NOTIMP).  Answering changes nothing, so these are as safe
        # in 0-RTT as queries (RFC 9250 section 4.5).
        response = dns.message.make_response(
            query, our_payload=OUR_PAYLOAD, pad=PAD_BLOCK, copy_mode=dns.message.CopyMode.NOTHING
        )
        response.set_rcode(dns.rcode.NOTIMP)
        return response
    if len(query.question) != 1:
        # RFC 9619: a QUERY carries exactly one question.
        response = dns.message.make_response(
            query, our_payload=OUR_PAYLOAD, pad=PAD_BLOCK, copy_mode=dns.message.CopyMode.NOTHING
        )
        response.set_rcode(dns.rcode.FORMERR)
        return response
    response = _skeleton(query)
    if query.edns > 0:
        response.set_rcode(dns.rcode.BADVERS)  # RFC 6891 section 6.1.3
        return response
    question = query.question[0]
    qname, qtype = question.name, question.rdtype
    if question.rdclass != dns.rdataclass.IN:
        response.set_rcode(dns.rcode.REFUSED)
        return response
    if qtype in _NO_ANSWER_TYPES:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    zone = view.zone_for(qname)
    if zone is None or qtype in _TRANSFER_TYPES:
        # Not ours (RFC 1034 4.3.2 step 2 for an authoritative-only server), or
        # a zone transfer, which we do not offer (RFC 5936 section 4.2).
        response.set_rcode(dns.rcode.REFUSED)
        return response
    _Lookup(view, zone, qtype, response).run(qname)
    return response


class _Lookup:
    """One run of the RFC 1034 section 4.3.2 algorithm inside one zone."""

    def __init__(
        self,
        view: View,
        zone: ZoneIndex,
        qtype: dns.rdatatype.RdataType,
        response: dns.message.Message,
    ) -> None:
        self.view = view
        self.zone = zone
        self.qtype = qtype
        self.response = response

    def run(self, qname: dns.name.Name) -> None:
        response = self.response
        response.flags |= dns.flags.AA
        seen: set[dns.name.Name] = set()
        name = qname
        for link in range(MAX_CHAIN + 1):
            seen.add(name)
            target = self.step(name, first=link == 0)
            if target is None:
                return
            if target in seen or not target.is_subdomain(self.zone.origin):
                return  # a loop, or the chain leaves the zone: the resolver goes on
            name = target
        # Too long a chain: return what we have; the resolver decides.

    def step(self, name: dns.name.Name, *, first: bool) -> dns.name.Name | None:
        """Answer for `name`; returns a CNAME target to follow, or None when done."""
        zone, view, qtype = self.zone, self.view, self.qtype
        cut = zone.find_cut(name)
        if cut is not None and not (cut == name and qtype == dns.rdatatype.DS):
            self.referral(cut, first=first)
            return None
        node = view.node(zone, name)
        if node is not None:
            return self.from_node(name, node)
        if view.exists(zone, name):
            self.negative()
            return None
        wildcard = self.wildcard_for(name)
        if wildcard is not None:
            return self.from_node(name, wildcard)
        self.response.set_rcode(dns.rcode.NXDOMAIN)
        self.negative()
        return None

    def from_node(self, name: dns.name.Name, node: Node) -> dns.name.Name | None:
        qtype = self.qtype
        cname = node.get(dns.rdatatype.CNAME)
        if cname is not None and qtype not in (dns.rdatatype.CNAME, dns.rdatatype.ANY):
            self.add_answer(name, cname)
            target = cname[0]
            assert isinstance(target, dns.rdtypes.ANY.CNAME.CNAME)
            return target.target
        if qtype == dns.rdatatype.ANY:
            rdtype = min(node)  # RFC 8482 section 4.1: one RRset is enough
            self.add_answer(name, self.soa_aware(node, rdtype))
            return None
        rrset = node.get(qtype)
        if rrset is None:
            self.negative()
            return None
        self.add_answer(name, self.soa_aware(node, qtype))
        return None

    def soa_aware(self, node: Node, rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset:
        if rdtype == dns.rdatatype.SOA:
            return self.view.soa(self.zone)
        return node[rdtype]

    def add_answer(self, name: dns.name.Name, rrset: dns.rrset.RRset) -> None:
        if rrset.name != name:
            # Wildcard synthesis (RFC 4592 section 4.1): same data, the query's owner.
            synthesized = dns.rrset.RRset(name, rrset.rdclass, rrset.rdtype)
            for rdata in rrset:
                synthesized.add(rdata, rrset.ttl)
            rrset = synthesized
        if rrset not in self.response.answer:
            self.response.answer.append(rrset)

    def wildcard_for(self, name: dns.name.Name) -> Node | None:
        """The source of synthesis for `name`, if any (RFC 4592 section 3.3.1)."""
        encloser = name.parent()
        while encloser != self.zone.origin and not self.view.exists(self.zone, encloser):
            encloser = encloser.parent()
        try:
            star = dns.name.Name((b"*",)).concatenate(encloser)
        except dns.name.NameTooLong:
            return None
        return self.view.node(self.zone, star)

    def negative(self) -> None:
        """SOA in authority for NXDOMAIN and NODATA (RFC 2308 section 3)."""
        self.response.authority.append(self.view.negative_soa(self.zone))

    def referral(self, cut: dns.name.Name, *, first: bool) -> None:
        """Delegation: NS of the cut in authority, addresses we hold for them as glue."""
        response = self.response
        if first:
            response.flags &= ~dns.flags.AA
        node = self.zone.nodes[cut]
        ns_rrset = node[dns.rdatatype.NS]
        response.authority.append(ns_rrset)
        for rdata in ns_rrset:
            assert isinstance(rdata, dns.rdtypes.ANY.NS.NS)
            host = rdata.target
            if not host.is_subdomain(self.zone.origin):
                continue
            glue = self.zone.nodes.get(host, {})
            for rdtype in _GLUE_TYPES:
                rrset = glue.get(rdtype)
                if rrset is not None and rrset not in response.additional:
                    response.additional.append(rrset)


def _check_zones(zones: Iterable[ZoneIndex]) -> tuple[ZoneIndex, ...]:
    ordered = tuple(sorted(zones, key=lambda z: len(z.origin), reverse=True))
    origins = [z.origin for z in ordered]
    if len(set(origins)) != len(origins):
        duplicate = next(o for o in origins if origins.count(o) > 1)
        sources = ", ".join(z.source for z in ordered if z.origin == duplicate)
        raise ZoneError(f"zone {duplicate} is given twice ({sources})")
    return ordered
