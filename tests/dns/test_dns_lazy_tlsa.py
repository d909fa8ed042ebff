"""A published TLSA RRset is built when first read: it must be the RRset the
digests give, whenever it is read, in whichever snapshot.

A batch stores the digests of each TLSA owner and leaves the RRset to the first
query.  Over random blocks of issues and revocations on shared names, every
snapshot kept along the way, read only afterwards (after later blocks changed
the same owners) or read at once, serves the RRsets its own certificates give.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TLSA
import dns.rrset
import pytest
from doqkit import name, query

from trustchain.dns.authority import Authority, answer
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
HOSTS = ["www", "api", "b.a", "c.b.a", "*.wild", *(f"h{i}" for i in range(6))]


def _owner(host: str) -> dns.name.Name:
    return name(f"_443._tcp.{host}.trust.hypermesh.online.")


def _expected_rrset(owner: dns.name.Name, digests: Iterable[bytes], ttl: int) -> dns.rrset.RRset:
    """RFC 6698 section 2.1: ``3 1 1 <digest>`` for each digest, built the plain way."""
    rrset = dns.rrset.RRset(owner, dns.rdataclass.IN, dns.rdatatype.TLSA)
    for digest in digests:
        rrset.add(
            dns.rdtypes.ANY.TLSA.TLSA(  # type: ignore[no-untyped-call]
                dns.rdataclass.IN, dns.rdatatype.TLSA, 3, 1, 1, digest
            ),
            ttl,
        )
    return rrset


def _model(live: dict[int, tuple[list[str], bytes]]) -> dict[dns.name.Name, set[bytes]]:
    out: dict[dns.name.Name, set[bytes]] = {}
    for hosts, digest in live.values():
        for host in hosts:
            if not host.startswith("*"):
                out.setdefault(_owner(host), set()).add(digest)
    return out


def _check(published: PublishedRecords, expected: dict[dns.name.Name, set[bytes]]) -> None:
    tlsa_owners = {o for o, node in published.nodes.items() if dns.rdatatype.TLSA in node}
    assert tlsa_owners == set(expected)
    for owner, digests in expected.items():
        node = published.nodes[owner]
        assert set(node) == {dns.rdatatype.TLSA} and len(node) == 1
        rrset = node[dns.rdatatype.TLSA]
        assert rrset == _expected_rrset(owner, digests, published.ttl)
        assert rrset.ttl == published.ttl and rrset.name == owner
        assert node[dns.rdatatype.TLSA] is rrset  # built once
        assert node.get(dns.rdatatype.CAA) is None and dns.rdatatype.CAA not in node


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("read_at_once", [False, True])
def test_every_snapshot_serves_its_own_rrsets_whenever_read(seed: int, read_at_once: bool) -> None:
    rng = random.Random(seed)
    published = PublishedRecords.empty([APEX])
    live: dict[int, tuple[list[str], bytes]] = {}
    kept: list[tuple[PublishedRecords, dict[dns.name.Name, set[bytes]]]] = []
    serial = 0
    for _ in range(40):
        block: list[Change] = []
        for _ in range(rng.randint(1, 4)):
            if live and rng.random() < 0.35:
                victim = rng.choice(sorted(live))
                block.append(CertificateRevoked(format(victim, "x")))
                del live[victim]
                continue
            serial += 1
            hosts = rng.sample(HOSTS, rng.randint(1, 3))
            # Few distinct keys, so that owners share digests and counts go above one.
            digest = hashlib.sha256(str(rng.randrange(5)).encode()).digest()
            block.append(
                CertificateIssued(
                    format(serial, "x"),
                    tuple(name(f"{h}.trust.hypermesh.online.") for h in hosts),
                    digest,
                )
            )
            live[serial] = (hosts, digest)
        published = published.apply(block)
        expected = _model(live)
        if read_at_once:
            _check(published, expected)
        kept.append((published, expected))
    for snapshot, expected in kept:  # each read after later blocks edited its owners
        _check(snapshot, expected)


def test_a_node_with_caa_and_answers_over_the_authority() -> None:
    authority = Authority([default_zone()])
    digest = hashlib.sha256(b"key").digest()
    caa = (CaaRecord(0, "issue", "trust.hypermesh.online"),)
    authority.apply(
        [
            CertificateIssued("1", (name("www.trust.hypermesh.online."),), digest),
            CaaPolicy(APEX, caa),
        ],
        version=1,
    )
    view = authority.view
    apex = view.published.nodes[APEX]
    assert list(apex) == [dns.rdatatype.CAA]
    reply = answer(view, query("_443._tcp.www.trust.hypermesh.online.", "TLSA"))
    assert reply.rcode() == 0 and len(reply.answer) == 1
    assert reply.answer[0] == _expected_rrset(_owner("www"), [digest], view.published.ttl)
    # A second certificate with the same key for that name: one record, count two;
    # revoking one of them keeps it; revoking both withdraws it.
    authority.apply(
        [CertificateIssued("2", (name("www.trust.hypermesh.online."),), digest)], version=2
    )
    assert dict(authority.published.tlsa[_owner("www")]) == {digest: 2}
    authority.apply([CertificateRevoked("1")], version=3)
    node = authority.published.nodes[_owner("www")]
    assert node[dns.rdatatype.TLSA] == _expected_rrset(_owner("www"), [digest], 300)
    authority.apply([CertificateRevoked("2")], version=4)
    assert _owner("www") not in authority.published.nodes
    # The first view still answers what it published.
    again = answer(view, query("_443._tcp.www.trust.hypermesh.online.", "TLSA"))
    assert again.answer == reply.answer
