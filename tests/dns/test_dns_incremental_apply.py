"""Blocks applied one after another serve exactly what a rebuild from scratch serves.

A validator applies each committed block's changes to the snapshot before it
(keys computed once per owner, ancestors found by key, the SOA built when first
asked).  Over random sequences of blocks -- issues on nested names, revocations,
CAA changes, names outside the zone and wildcards -- the incremental snapshot
must hold what one batch of the live certificates onto an empty snapshot holds,
and answer every query with the same bytes.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import dns.message
import dns.name
import pytest
from doqkit import name, query
from doqkit import published_contents as contents

from trustchain.dns.authority import Authority
from trustchain.dns.records import (
    CaaPolicy,
    CaaRecord,
    CertificateIssued,
    CertificateRevoked,
    Change,
    PublishedRecords,
)
from trustchain.dns.zones import default_zone

APEX = name("trust.hypermesh.online.")
HOSTS = [
    "www",
    "api",
    "a",
    "b.a",
    "c.b.a",
    "d.c.b.a",
    "mail",
    "x.mail",
    "*.wild",
    "deep.er.and.deeper",
    "er.and.deeper",
    *(f"h{i}" for i in range(12)),
]


def _names(hosts: list[str]) -> tuple[dns.name.Name, ...]:
    return tuple(name(f"{h}.trust.hypermesh.online.") for h in hosts)


def _normal(wire: bytes) -> tuple[Any, ...]:
    """A response with each RRset's records sorted: dnspython shuffles them in to_wire."""
    message = dns.message.from_wire(wire)
    sections = tuple(
        tuple(
            (
                rrset.name.to_text().lower(),
                rrset.rdtype,
                rrset.ttl,
                sorted(r.to_text() for r in rrset),
            )
            for rrset in section
        )
        for section in (message.answer, message.authority, message.additional)
    )
    return (message.flags, message.rcode(), message.edns, len(wire), sections)


def wire_answers(authority: Authority) -> list[tuple[Any, ...]]:
    out = []
    for host in [*HOSTS, "nope", "c.nope"]:
        for prefix, rdtype in (("_443._tcp.", "TLSA"), ("_tcp.", "TXT"), ("", "AAAA")):
            message = query(f"{prefix}{host}.trust.hypermesh.online.", rdtype, use_edns=0)
            out.append(_normal(authority.respond(message, message.to_wire())))
    for rdtype in ("CAA", "SOA", "TLSA"):
        message = query("trust.hypermesh.online.", rdtype)
        out.append(_normal(authority.respond(message, message.to_wire())))
    return out


def ents_of(published: PublishedRecords) -> dict[dns.name.Name, int]:
    """RFC 8020 empty non-terminals, counted from the published owners alone."""
    ents: dict[dns.name.Name, int] = {}
    for owner in published.nodes:
        above = owner
        while len(above) > len(APEX) + 1:
            above = above.parent()
            ents[above] = ents.get(above, 0) + 1
    return ents


@pytest.mark.parametrize("seed", range(4))
def test_blocks_applied_one_by_one_equal_a_rebuild_from_scratch(seed: int) -> None:
    rng = random.Random(seed)
    zones = [default_zone()]
    incremental = Authority(zones)
    live: dict[str, CertificateIssued] = {}
    caa: tuple[CaaRecord, ...] = ()
    next_id = 1
    for height in range(1, 121):
        block: list[Change] = []
        revoked: set[str] = set()
        for _ in range(rng.randint(1, 10)):
            roll = rng.random()
            candidates = [cid for cid in live if cid not in revoked]
            if roll < 0.6 or not candidates:
                hosts = rng.sample(HOSTS, rng.randint(1, 3))
                names = _names(hosts)
                if rng.random() < 0.1:
                    names += (name("outside.example."),)
                digest = hashlib.sha256(b"key %d" % rng.randrange(6)).digest()
                change = CertificateIssued(format(next_id, "x"), names, digest)
                next_id += 1
                live[change.certificate_id] = change
                block.append(change)
            elif roll < 0.93:
                cid = rng.choice(candidates)
                revoked.add(cid)
                block.append(CertificateRevoked(cid))
            else:
                value = rng.choice(["", "trust.hypermesh.online", "other.example"])
                caa = (CaaRecord(0, "issue", value),) if value else ()
                block.append(CaaPolicy(APEX, caa))
        for cid in revoked:
            del live[cid]
        incremental.apply(block, version=height)
        if height % 30 == 0:
            batch: list[Change] = [*live.values(), CaaPolicy(APEX, caa)]
            rebuilt = PublishedRecords.empty([APEX]).apply(batch, version=height)
            assert contents(incremental.published) == contents(rebuilt)
            assert wire_answers(incremental) == wire_answers(Authority(zones, rebuilt))
            assert dict(incremental.published.empty_non_terminals.items()) == ents_of(rebuilt)


def test_a_revoked_name_leaves_no_empty_non_terminal_behind() -> None:
    authority = Authority([default_zone()])
    deep = CertificateIssued("1", _names(["d.c.b.a"]), b"\1" * 32)
    shallow = CertificateIssued("2", _names(["b.a"]), b"\2" * 32)
    authority.apply([deep, shallow], version=1)
    ents = authority.published.empty_non_terminals
    assert {str(n) for n in ents} == {
        "_tcp.d.c.b.a.trust.hypermesh.online.",
        "d.c.b.a.trust.hypermesh.online.",
        "c.b.a.trust.hypermesh.online.",
        "b.a.trust.hypermesh.online.",
        "a.trust.hypermesh.online.",
        "_tcp.b.a.trust.hypermesh.online.",
    }
    assert ents[name("b.a.trust.hypermesh.online.")] == 2
    authority.apply([CertificateRevoked("1")], version=2)
    assert {str(n) for n in authority.published.empty_non_terminals} == {
        "_tcp.b.a.trust.hypermesh.online.",
        "b.a.trust.hypermesh.online.",
        "a.trust.hypermesh.online.",
    }
    authority.apply([CertificateRevoked("2")], version=3)
    assert len(authority.published.empty_non_terminals) == 0
    assert len(authority.published.nodes) == 0
