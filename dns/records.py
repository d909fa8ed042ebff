"""Records that the replicated state publishes: TLSA for issued certificates and
CAA for the zone apex.

The node feeds committed changes in batches::

    published = PublishedRecords.empty([origin])
    published = published.apply([CertificateIssued(...), CaaPolicy(...)], version=height)

`PublishedRecords` is immutable: `apply` validates the whole batch first and
returns a new snapshot, or raises `RecordError` and leaves nothing changed.
`trustchain.dns.authority.Authority` holds the current snapshot behind one
reference and swaps it in a single assignment, so a query sees either all of
a batch or none of it.

Every validator applies every committed batch, so `apply` must cost what the
batch touches, not what is published: the snapshot's maps are persistent hash
array mapped tries (`immutables.Map`).  A batch edits them through
`Map.mutate()`, which copies only the O(log n) trie nodes on the paths it
changes and shares the rest with the previous snapshot; nodes a snapshot can
see are never written again, so a snapshot a reader holds (another thread
answering a query) never changes under it, and a failed batch simply drops its
unfinished mutations.  Maps keyed by domain names hash `name_key(name)`, not the
name: dnspython hashes a name as h = 9h + octet, so "a9" and "b0" collide, and
whoever chooses certificate names could pile them into one bucket.

What is published, so that every validator answers the same:

- for each certificate, and each DNS name in it that lies under a served zone,
  ``_443._tcp.NAME TLSA 3 1 1 <SHA-256 of the SubjectPublicKeyInfo>`` (RFC 6698
  section 2.1: usage 3 DANE-EE, selector 1 SPKI, matching type 1 SHA-256);
  names of several certificates share one RRset, and a revoked certificate's
  records are withdrawn (a digest stays while another live certificate for the
  same name still has it);
- at a zone apex, the CAA RRset of the latest `CaaPolicy` for that zone (RFC 8659);
- each zone's SOA serial is its configured serial plus the snapshot's version
  (modulo 2^32, RFC 1982), so the serial moves whenever published data moves.

Wildcard names (``*.example``) get no TLSA record: the owner ``_443._tcp.*.example``
would not be a wildcard (RFC 4592 section 2.1.1) and would match nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, overload

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CAA
import dns.rdtypes.ANY.TLSA
import dns.rrset
import immutables
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from trustchain.dns.zones import MAX_TTL, Node

_TLSA_PREFIX = dns.name.Name((b"_443", b"_tcp"))
_CERT_ID = re.compile(r"[0-9a-f]{1,40}")
_CAA_TAG = re.compile(r"[A-Za-z0-9]{1,15}")


class RecordError(ValueError):
    """A change batch is invalid; nothing of it was applied."""


V = TypeVar("V")
D = TypeVar("D")


def name_key(name: dns.name.Name) -> bytes:
    """`name`'s labels, lowercased (ASCII, as DNS compares names) and length-prefixed:
    equal for names dnspython calls equal, hashed by Python's keyed bytes hash."""
    return b"".join(bytes((len(label),)) + label.lower() for label in name.labels)


class _ByName(Generic[V]):
    """Lookups by domain name in `_entries` (name key -> (name, value))."""

    __slots__ = ()
    _entries: (
        immutables.Map[bytes, tuple[dns.name.Name, V]]
        | immutables.MapMutation[bytes, tuple[dns.name.Name, V]]
    )

    def __getitem__(self, name: dns.name.Name) -> V:
        return self._entries[name_key(name)][1]

    def entry(self, key: bytes) -> tuple[dns.name.Name, V] | None:
        """(name, value) stored under `key` (`name_key` of the name), or None: for
        callers that key a name once and look it up in several maps."""
        return self._entries.get(key)

    @overload
    def get(self, name: dns.name.Name, /) -> V | None: ...
    @overload
    def get(self, name: dns.name.Name, /, default: V | D) -> V | D: ...
    def get(self, name: dns.name.Name, /, default: object = None) -> object:
        found = self._entries.get(name_key(name))
        return default if found is None else found[1]


class NameMap(_ByName[V], Mapping[dns.name.Name, V]):
    """An immutable map from domain names (compared case-insensitively) to values,
    persistent: `mutate` edits a copy that shares all it does not touch."""

    __slots__ = ("_entries",)
    _entries: immutables.Map[bytes, tuple[dns.name.Name, V]]

    def __init__(self, items: immutables.Map[bytes, tuple[dns.name.Name, V]] | None = None):
        self._entries = immutables.Map() if items is None else items

    def __contains__(self, name: object) -> bool:
        return isinstance(name, dns.name.Name) and name_key(name) in self._entries

    def __iter__(self) -> Iterator[dns.name.Name]:
        return (name for name, _ in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def mutate(self) -> NameMapMutation[V]:
        return NameMapMutation(self._entries.mutate())


class NameMapMutation(_ByName[V]):
    """The edits of one batch to a `NameMap`; `finish` makes the next map."""

    __slots__ = ("_entries",)
    _entries: immutables.MapMutation[bytes, tuple[dns.name.Name, V]]

    def __init__(self, edits: immutables.MapMutation[bytes, tuple[dns.name.Name, V]]) -> None:
        self._entries = edits

    def __setitem__(self, name: dns.name.Name, value: V) -> None:
        self._entries[name_key(name)] = (name, value)

    def __delitem__(self, name: dns.name.Name) -> None:
        del self._entries[name_key(name)]

    def set_entry(self, key: bytes, name: dns.name.Name, value: V) -> None:
        """Store `value` for `name`, whose `name_key` the caller computed as `key`."""
        self._entries[key] = (name, value)

    def delete_entry(self, key: bytes) -> None:
        del self._entries[key]

    def finish(self) -> NameMap[V]:
        return NameMap(self._entries.finish())


# --- changes (what consensus commits) ----------------------------------------------------


@dataclass(frozen=True)
class CertificateIssued:
    """A certificate was issued: publish TLSA records for its names."""

    certificate_id: str
    """The certificate's serial number, lowercase hex without leading zeros (RFC 5280
    section 4.1.2.2 allows up to 20 octets); unique among published certificates."""
    names: tuple[dns.name.Name, ...]
    """The dNSName entries of its subjectAltName, absolute."""
    spki_sha256: bytes
    """SHA-256 of the DER SubjectPublicKeyInfo (32 bytes): the TLSA 3 1 1 data."""


@dataclass(frozen=True)
class CertificateRevoked:
    """A certificate was revoked: withdraw its TLSA records."""

    certificate_id: str
    """The serial number given when it was issued."""


@dataclass(frozen=True)
class CaaRecord:
    """One CAA record (RFC 8659 section 4.1)."""

    flags: int
    """0..255; 128 is the issuer-critical flag."""
    tag: str
    """"issue", "issuewild", "iodef" or another tag of 1..15 letters and digits."""
    value: str
    """The property value, e.g. "trust.hypermesh.online"."""


@dataclass(frozen=True)
class CaaPolicy:
    """Replace the CAA RRset at a zone apex (an empty `records` removes it)."""

    zone: dns.name.Name
    """The apex of a served zone."""
    records: tuple[CaaRecord, ...]
    """The new RRset."""


Change = CertificateIssued | CertificateRevoked | CaaPolicy


def certificate_issued(certificate: x509.Certificate) -> CertificateIssued:
    """The change that publishes `certificate` (serial, SAN dNSNames, SPKI digest)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns_names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns_names = []
    names = []
    for text in dns_names:
        try:
            names.append(dns.name.from_text(text))
        except dns.exception.DNSException as exc:
            raise RecordError(f"certificate SAN {text!r} is not a domain name ({exc})") from None
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return CertificateIssued(
        certificate_id=format(certificate.serial_number, "x"),
        names=tuple(names),
        spki_sha256=digest.finalize(),
    )


# --- the snapshot ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Certificate:
    owners: tuple[dns.name.Name, ...]
    """TLSA owner names (``_443._tcp.NAME``) under served zones."""
    digest: bytes


class _PublishedNode(Mapping[dns.rdatatype.RdataType, dns.rrset.RRset]):
    """The RRsets published at one owner name (a `Node`), the TLSA one built when
    first read.

    Every validator applies every certificate's records, and few of them are
    ever asked for, so a batch stores the TLSA digests and leaves the RRset
    (rdata objects, their validation and hashing: about a third of an apply)
    to the first query.  It is the RRset `_tlsa_rrset` makes from the digests,
    whenever it is built; building it is the only write after construction,
    and two threads reading it at once build equal RRsets (either may stay).
    Types iterate in the order a dict of the same edits would keep them.
    """

    __slots__ = ("_digests", "_owner", "_rrsets", "_ttl")

    def __init__(
        self,
        owner: dns.name.Name,
        ttl: int,
        rrsets: dict[dns.rdatatype.RdataType, dns.rrset.RRset | None],
        digests: Mapping[bytes, int],
    ) -> None:
        self._owner = owner
        self._ttl = ttl
        self._rrsets = rrsets
        """Type -> RRset; None for a TLSA RRset not built yet (from `_digests`)."""
        self._digests = digests
        """The TLSA digests to publish and their certificate counts (never edited)."""

    def __getitem__(self, rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset:
        rrset = self._rrsets[rdtype]
        if rrset is None:
            rrset = self._rrsets[rdtype] = _tlsa_rrset(self._owner, self._digests, self._ttl)
        return rrset

    def __contains__(self, rdtype: object) -> bool:
        return rdtype in self._rrsets

    def __iter__(self) -> Iterator[dns.rdatatype.RdataType]:
        return iter(self._rrsets)

    def __len__(self) -> int:
        return len(self._rrsets)

    def __repr__(self) -> str:
        return f"_PublishedNode({dict(self.items())!r})"

    def edits(self) -> dict[dns.rdatatype.RdataType, dns.rrset.RRset | None]:
        """A copy of the RRsets by type (unbuilt TLSA as None), for the next snapshot."""
        return dict(self._rrsets)


@dataclass(frozen=True)
class PublishedRecords:
    """One immutable snapshot of what the replicated state publishes.

    Do not construct directly; start from `empty` and `apply` changes.
    Nothing reachable from a snapshot is mutated after construction: the maps are
    persistent (`apply` shares their unchanged parts with the next snapshot), and
    the small per-owner mappings inside them are replaced, never edited.  (One
    exception that nobody can observe: a node's TLSA RRset is built from its
    digests when first read, see `_PublishedNode`.)
    """

    origins: tuple[dns.name.Name, ...]
    """Apexes of the served zones; names outside them are not published."""
    version: int
    """The replicated state's version (e.g. its height) this snapshot reflects."""
    ttl: int
    """TTL of the published records."""
    nodes: NameMap[Node]
    """Owner name to its published RRsets (TLSA, CAA)."""
    empty_non_terminals: NameMap[int]
    """Names without published data above published owners (RFC 8020), with the
    number of published owners beneath each (so removal knows when they go)."""
    certificates: immutables.Map[str, _Certificate]
    """Live certificates by id."""
    tlsa: NameMap[Mapping[bytes, int]]
    """TLSA owner to digest to the number of live certificates that publish it."""

    @classmethod
    def empty(cls, origins: Iterable[dns.name.Name], *, ttl: int = 300) -> PublishedRecords:
        if not 0 <= ttl <= MAX_TTL:
            raise RecordError(f"ttl {ttl} is out of range 0..{MAX_TTL}")
        return cls(tuple(origins), 0, ttl, NameMap(), NameMap(), immutables.Map(), NameMap())

    def serial(self, configured: int) -> int:
        """The SOA serial to publish for a zone configured with `configured` (RFC 1982)."""
        return (configured + self.version) % 2**32

    def apply(self, changes: Sequence[Change], *, version: int | None = None) -> PublishedRecords:
        """Return the snapshot after `changes`, all or nothing.

        `version` is the replicated state's version after the batch and must be
        newer than this snapshot's; by default it is one more.
        """
        new_version = self.version + 1 if version is None else version
        if isinstance(new_version, bool) or not isinstance(new_version, int):
            raise RecordError(f"version must be an integer, got {version!r}")
        if new_version <= self.version:
            raise RecordError(f"version {new_version} is not newer than {self.version}")
        builder = _Builder(self)
        for index, change in enumerate(changes):
            try:
                builder.change(change)
            except RecordError as exc:
                raise RecordError(f"change {index}: {exc}; nothing of the batch applied") from None
        return builder.build(new_version)

    def zone_of(self, name: dns.name.Name) -> dns.name.Name | None:
        best: dns.name.Name | None = None
        for origin in self.origins:
            if name.is_subdomain(origin) and (best is None or len(origin) > len(best)):
                best = origin
        return best


class _Builder:
    """The edits of one batch on top of one snapshot; used by PublishedRecords.apply only.

    Owned by the thread running `apply`.  The mutations write only trie nodes they
    created themselves; `build` finishes them into the next snapshot's maps, and a
    builder that raises is dropped with `base` untouched (all or nothing).

    Each owner name is keyed (`name_key`) once per batch and looked up by that key
    in every map; its ancestors' keys are suffixes of it.  Keying a name runs
    Python code over its labels, and these loops are what a batch costs.
    """

    def __init__(self, base: PublishedRecords) -> None:
        self.base = base
        self.certificates = base.certificates.mutate()
        self.tlsa = base.tlsa.mutate()
        self.caa: dict[bytes, dns.rrset.RRset | None] = {}
        """Zone apex key -> its new CAA RRset (None: removed)."""
        self.touched: dict[
            bytes, tuple[dns.name.Name, dns.name.Name | None, dns.name.Name | None]
        ] = {}
        """Owner key -> (the owner as first named in the batch, its zone if known, the
        certificate's name it is ``_443._tcp.`` of if known)."""

    def change(self, change: Change) -> None:
        if isinstance(change, CertificateIssued):
            self.issue(change)
        elif isinstance(change, CertificateRevoked):
            self.revoke(change)
        elif isinstance(change, CaaPolicy):
            self.set_caa(change)
        else:
            raise RecordError(f"unknown change {change!r}")

    def issue(self, change: CertificateIssued) -> None:
        cid = change.certificate_id
        if (
            not isinstance(cid, str)
            or not _CERT_ID.fullmatch(cid)
            or (cid.startswith("0") and cid != "0")
        ):
            raise RecordError(
                f"certificate id {cid!r} must be a lowercase hex serial of at most "
                "20 octets without leading zeros"
            )
        if cid in self.certificates:
            raise RecordError(f"certificate {cid} is already published")
        digest = change.spki_sha256
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise RecordError(f"certificate {cid}: spki_sha256 must be 32 bytes")
        owners: dict[bytes, tuple[dns.name.Name, dns.name.Name, dns.name.Name]] = {}
        for name in change.names:
            if not isinstance(name, dns.name.Name) or not name.is_absolute():
                raise RecordError(f"certificate {cid}: {name!r} is not an absolute domain name")
            if name.is_wild():
                continue  # see the module docstring
            zone = self.base.zone_of(name)
            if zone is None:
                continue  # not ours to publish
            try:
                owner = _TLSA_PREFIX.concatenate(name)
            except dns.name.NameTooLong:
                continue  # no such owner can exist; the name is too long for a TLSA record
            owners.setdefault(name_key(owner), (owner, zone, name))  # the first spelling stays
        self.certificates[cid] = _Certificate(tuple(v[0] for v in owners.values()), digest)
        for key, (owner, zone, name) in owners.items():
            found = self.tlsa.entry(key)
            counts = dict(found[1]) if found is not None else {}
            counts[digest] = counts.get(digest, 0) + 1
            self.tlsa.set_entry(key, owner, counts)
            self.touched.setdefault(key, (owner, zone, name))

    def revoke(self, change: CertificateRevoked) -> None:
        cert = self.certificates.pop(change.certificate_id, None)
        if cert is None:
            raise RecordError(f"certificate {change.certificate_id!r} is not published")
        for owner in cert.owners:
            key = name_key(owner)
            counts = dict(self.tlsa[owner])
            counts[cert.digest] -= 1
            if not counts[cert.digest]:
                del counts[cert.digest]
            if counts:
                self.tlsa.set_entry(key, owner, counts)
            else:
                self.tlsa.delete_entry(key)
            self.touched.setdefault(key, (owner, None, None))

    def set_caa(self, change: CaaPolicy) -> None:
        if change.zone not in self.base.origins:
            served = ", ".join(str(o) for o in self.base.origins) or "none"
            raise RecordError(f"CAA for {change.zone}: not a served zone apex (served: {served})")
        for record in change.records:
            if not 0 <= record.flags <= 255:
                raise RecordError(f"CAA flags {record.flags} out of range 0..255")
            if not _CAA_TAG.fullmatch(record.tag):
                raise RecordError(
                    f"CAA tag {record.tag!r} must be 1..15 letters or digits (RFC 8659 section 4.1)"
                )
        key = name_key(change.zone)
        self.caa[key] = (
            _caa_rrset(change.zone, change.records, self.base.ttl) if change.records else None
        )
        self.touched.setdefault(key, (change.zone, None, None))

    def build(self, version: int) -> PublishedRecords:
        base = self.base
        nodes = base.nodes.mutate()
        ents = base.empty_non_terminals.mutate()
        for key, (owner, zone, name) in self.touched.items():
            found = base.nodes.entry(key)
            old = found[1] if found is not None else None
            # A fresh dict: the old one belongs to `base` and may be in a reader's hands.
            rrsets: dict[dns.rdatatype.RdataType, dns.rrset.RRset | None]
            if isinstance(old, _PublishedNode):
                rrsets = old.edits()  # its TLSA RRset, built or not, is replaced below
            else:
                rrsets = dict(old) if old is not None else {}
            tlsa = self.tlsa.entry(key)
            digests: Mapping[bytes, int] = {}
            if tlsa is not None and tlsa[1]:
                digests = tlsa[1]
                rrsets[dns.rdatatype.TLSA] = None  # built from `digests` when first read
            else:
                rrsets.pop(dns.rdatatype.TLSA, None)
            if self.caa and key in self.caa:
                caa = self.caa[key]
                if caa is not None:
                    rrsets[dns.rdatatype.CAA] = caa
                else:
                    rrsets.pop(dns.rdatatype.CAA, None)
            if rrsets:
                nodes.set_entry(key, owner, _PublishedNode(owner, base.ttl, rrsets, digests))
            elif old is not None:
                nodes.delete_entry(key)
            if (old is not None) != bool(rrsets):
                if zone is None:
                    zone = base.zone_of(owner)
                _count_ancestors(ents, key, owner, zone, +1 if rrsets else -1, name)
        return PublishedRecords(
            origins=base.origins,
            version=version,
            ttl=base.ttl,
            nodes=nodes.finish(),
            empty_non_terminals=ents.finish(),
            certificates=self.certificates.finish(),
            tlsa=self.tlsa.finish(),
        )


def _count_ancestors(
    ents: NameMapMutation[int],
    key: bytes,
    owner: dns.name.Name,
    origin: dns.name.Name | None,
    delta: int,
    name: dns.name.Name | None = None,
) -> None:
    """Add `delta` to the count of every name strictly between `owner` (keyed `key`)
    and the label below `origin` (RFC 8020 empty non-terminals).  `name`, if given,
    is the owner without its ``_443._tcp`` labels: a new ancestor that is this
    name is stored as that object (making a Name validates its labels again)."""
    if origin is None:
        return
    labels = owner.labels
    for depth in range(1, len(labels) - len(origin)):
        key = key[1 + key[0] :]  # the parent's key: drop the first length-prefixed label
        found = ents.entry(key)
        count = (found[1] if found is not None else 0) + delta
        if not count:
            ents.delete_entry(key)
        elif found is not None:
            ents.set_entry(key, found[0], count)
        elif depth == 2 and name is not None:
            ents.set_entry(key, name, count)  # labels[2:], as given in the certificate
        else:
            ents.set_entry(key, dns.name.Name(labels[depth:]), count)


def _tlsa_rrset(owner: dns.name.Name, digests: Mapping[bytes, int], ttl: int) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(owner, dns.rdataclass.IN, dns.rdatatype.TLSA)
    # Sorted so that every validator renders the same RRset in the same order.
    for digest in sorted(digests):
        # dnspython's rdata constructors carry no annotations.
        rdata = dns.rdtypes.ANY.TLSA.TLSA(  # type: ignore[no-untyped-call]
            dns.rdataclass.IN, dns.rdatatype.TLSA, 3, 1, 1, digest
        )
        rrset.add(rdata, ttl)
    return rrset


def _caa_rrset(owner: dns.name.Name, records: tuple[CaaRecord, ...], ttl: int) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(owner, dns.rdataclass.IN, dns.rdatatype.CAA)
    for record in records:
        try:
            rdata = dns.rdtypes.ANY.CAA.CAA(  # type: ignore[no-untyped-call]
                dns.rdataclass.IN,
                dns.rdatatype.CAA,
                record.flags,
                record.tag.encode("ascii"),
                record.value.encode("ascii"),
            )
        except (ValueError, UnicodeEncodeError, dns.exception.DNSException) as exc:
            raise RecordError(f"CAA {record.tag} {record.value!r}: {exc}") from None
        rrset.add(rdata, ttl)
    return rrset
