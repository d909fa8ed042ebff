"""Authoritative answers over real DoQ on ::1, asked with dnspython's DoQ client
(dns.asyncquery.quic under trio): one test per behaviour the server promises."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
import trio
from doqkit import Tls, ask, big_records, name, query, sample_zone, start_server

from trustchain.dns.authority import Authority
from trustchain.dns.zones import default_zone

Check = Callable[[dns.message.Message], None]


def rrset(text: str) -> dns.rrset.RRset:
    owner, ttl, rdclass, rdtype, *data = text.split(" ", 4)
    return dns.rrset.from_text(owner, int(ttl), rdclass, rdtype, *data)


def soa_in_authority(response: dns.message.Message, origin: str, ttl: int) -> None:
    (soa,) = response.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.name == name(origin)
    assert soa.ttl == ttl, "negative TTL is min(SOA TTL, MINIMUM) (RFC 2308 section 3)"


@dataclass(frozen=True)
class Case:
    message: dns.message.Message
    rcode: int
    aa: bool
    check: Check


def expect_answer(*texts: str) -> Check:
    def check(response: dns.message.Message) -> None:
        assert response.answer == [rrset(t) for t in texts]
        assert not response.authority

    return check


def nxdomain(response: dns.message.Message) -> None:
    assert not response.answer
    soa_in_authority(response, "example.test.", 60)


def nodata(response: dns.message.Message) -> None:
    assert not response.answer
    soa_in_authority(response, "example.test.", 60)


def nothing(response: dns.message.Message) -> None:
    assert not response.answer and not response.authority


def referral(response: dns.message.Message) -> None:
    assert not response.answer
    (ns,) = response.authority
    assert ns.name == name("sub.example.test.") and ns.rdtype == dns.rdatatype.NS
    glue = [r for r in response.additional if r.rdtype != dns.rdatatype.OPT]
    assert glue == [rrset("ns.sub.example.test. 3600 IN AAAA 2001:db8::5353")]


def chain_then_referral(response: dns.message.Message) -> None:
    assert response.answer == [rrset("jump.example.test. 3600 IN CNAME deep.sub.example.test.")]
    (ns,) = response.authority
    assert ns.name == name("sub.example.test.") and ns.rdtype == dns.rdatatype.NS


def dangling(response: dns.message.Message) -> None:
    assert response.answer == [rrset("dangling.example.test. 3600 IN CNAME missing.example.test.")]
    soa_in_authority(response, "example.test.", 60)


CASES: dict[str, Case] = {
    "authoritative answer": Case(
        query("host.example.test."),
        dns.rcode.NOERROR,
        True,
        expect_answer("host.example.test. 3600 IN AAAA 2001:db8::80"),
    ),
    "NXDOMAIN with SOA": Case(query("nope.example.test."), dns.rcode.NXDOMAIN, True, nxdomain),
    "NODATA with SOA": Case(query("host.example.test.", "MX"), dns.rcode.NOERROR, True, nodata),
    "empty non-terminal is NODATA (RFC 8020)": Case(
        query("b.c.example.test."), dns.rcode.NOERROR, True, nodata
    ),
    "CNAME chain inside the zone": Case(
        query("www.example.test."),
        dns.rcode.NOERROR,
        True,
        expect_answer(
            "www.example.test. 3600 IN CNAME web.example.test.",
            "web.example.test. 3600 IN CNAME host.example.test.",
            "host.example.test. 3600 IN AAAA 2001:db8::80",
        ),
    ),
    "CNAME query returns the CNAME itself": Case(
        query("www.example.test.", "CNAME"),
        dns.rcode.NOERROR,
        True,
        expect_answer("www.example.test. 3600 IN CNAME web.example.test."),
    ),
    "CNAME leaving the zone stops there": Case(
        query("out.example.test."),
        dns.rcode.NOERROR,
        True,
        expect_answer("out.example.test. 3600 IN CNAME www.elsewhere.test."),
    ),
    "CNAME to a missing name: NXDOMAIN of the target (RFC 6604)": Case(
        query("dangling.example.test."),
        dns.rcode.NXDOMAIN,
        True,
        dangling,
    ),
    "CNAME loop ends": Case(
        query("loop1.example.test."),
        dns.rcode.NOERROR,
        True,
        expect_answer(
            "loop1.example.test. 3600 IN CNAME loop2.example.test.",
            "loop2.example.test. 3600 IN CNAME loop1.example.test.",
        ),
    ),
    "delegation below a zone cut": Case(
        query("deep.sub.example.test."), dns.rcode.NOERROR, False, referral
    ),
    "delegation at the cut itself": Case(
        query("sub.example.test.", "NS"), dns.rcode.NOERROR, False, referral
    ),
    "CNAME into a delegation: chain, then referral": Case(
        query("jump.example.test."), dns.rcode.NOERROR, True, chain_then_referral
    ),
    "DS at the cut is the parent's (RFC 4035 3.1.4.1)": Case(
        query("sub.example.test.", "DS"), dns.rcode.NOERROR, True, nodata
    ),
    "wildcard synthesis (RFC 4592)": Case(
        query("anything.wild.example.test."),
        dns.rcode.NOERROR,
        True,
        expect_answer("anything.wild.example.test. 3600 IN AAAA 2001:db8::99"),
    ),
    "REFUSED outside the zones served": Case(
        query("example.com."), dns.rcode.REFUSED, False, nothing
    ),
    "REFUSED for zone transfers": Case(
        query("example.test.", "AXFR"), dns.rcode.REFUSED, False, nothing
    ),
    "REFUSED for class CH": Case(
        query("example.test.", "TXT", rdclass=dns.rdataclass.CH), dns.rcode.REFUSED, False, nothing
    ),
    "minimal ANY (RFC 8482)": Case(
        query("host.example.test.", "ANY"),
        dns.rcode.NOERROR,
        True,
        expect_answer('host.example.test. 3600 IN TXT "host"'),
    ),
    "default zone: apex AAAA": Case(
        query("trust.hypermesh.online."),
        dns.rcode.NOERROR,
        True,
        expect_answer("trust.hypermesh.online. 300 IN AAAA 2001:db8::10"),
    ),
    "default zone: ca. is a CNAME to the apex": Case(
        query("ca.trust.hypermesh.online."),
        dns.rcode.NOERROR,
        True,
        expect_answer(
            "ca.trust.hypermesh.online. 300 IN CNAME trust.hypermesh.online.",
            "trust.hypermesh.online. 300 IN AAAA 2001:db8::10",
        ),
    ),
    "default zone: ct. is a CNAME to the apex": Case(
        query("ct.trust.hypermesh.online."),
        dns.rcode.NOERROR,
        True,
        expect_answer(
            "ct.trust.hypermesh.online. 300 IN CNAME trust.hypermesh.online.",
            "trust.hypermesh.online. 300 IN AAAA 2001:db8::10",
        ),
    ),
    "default zone: NS": Case(
        query("trust.hypermesh.online.", "NS"),
        dns.rcode.NOERROR,
        True,
        expect_answer("trust.hypermesh.online. 300 IN NS ns1.trust.hypermesh.online."),
    ),
}


@pytest.mark.parametrize("case_name", list(CASES))
async def test_answer_over_doq(case_name: str, tls: Tls, nursery: trio.Nursery) -> None:
    case = CASES[case_name]
    _, port = await start_server(nursery, tls)
    response = await ask(port, tls, case.message)
    assert response.rcode() == case.rcode, response
    assert bool(response.flags & dns.flags.AA) == case.aa, response
    assert response.id == 0
    assert not response.flags & dns.flags.TC
    case.check(response)


async def test_edns_is_echoed_padded_and_do_copied(tls: Tls, nursery: trio.Nursery) -> None:
    _, port = await start_server(nursery, tls)
    plain = await ask(port, tls, query("host.example.test."))
    assert plain.edns < 0, "no OPT in the response when the query had none (RFC 6891)"

    edns = await ask(port, tls, query("host.example.test.", use_edns=0, want_dnssec=True))
    assert edns.edns == 0
    assert edns.ednsflags & dns.flags.DO, "DO is copied (RFC 3225 section 3)"
    assert any(o.otype == dns.edns.OptionType.PADDING for o in edns.options)
    assert len(edns.to_wire()) % 468 == 0, "padded to 468-octet blocks (RFC 8467, RFC 9250 5.4)"

    badvers = await ask(port, tls, query("host.example.test.", use_edns=1))
    assert badvers.rcode() == dns.rcode.BADVERS and badvers.edns == 0


async def test_opcodes_other_than_query_get_notimp(tls: Tls, nursery: trio.Nursery) -> None:
    _, port = await start_server(nursery, tls)
    notify = query("example.test.", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    response = await ask(port, tls, notify)
    assert response.rcode() == dns.rcode.NOTIMP and response.opcode() == dns.opcode.NOTIFY


async def test_soa_serial_follows_published_version(tls: Tls, nursery: trio.Nursery) -> None:
    authority = Authority([sample_zone(), default_zone()])
    _, port = await start_server(nursery, tls, authority)
    before = await ask(port, tls, query("trust.hypermesh.online.", "SOA"))
    assert before.answer[0][0].serial == 1
    authority.apply([], version=41)
    after = await ask(port, tls, query("trust.hypermesh.online.", "SOA"))
    assert after.answer[0][0].serial == 42, "configured serial + published version"


async def test_internal_failure_is_servfail_and_the_server_goes_on(
    tls: Tls, nursery: trio.Nursery
) -> None:
    # The TXT RRset cannot fit a DoQ message: rendering fails inside the server.
    authority = Authority([sample_zone(big_records())])
    server, port = await start_server(nursery, tls, authority)
    failed = await ask(port, tls, query("big.example.test.", "TXT"))
    assert failed.rcode() == dns.rcode.SERVFAIL
    assert not failed.answer
    fine = await ask(port, tls, query("host.example.test."))
    assert fine.rcode() == dns.rcode.NOERROR and fine.answer
    assert server.stats.queries == 2


async def test_many_parallel_queries_on_one_connection(tls: Tls, nursery: trio.Nursery) -> None:
    import dns.quic

    server, port = await start_server(nursery, tls)
    count = 300
    results: dict[int, dns.message.Message] = {}
    async with dns.quic.TrioQuicManager(nursery, verify_mode=str(tls.certificate)) as manager:
        connection = manager.connect("::1", port)

        async def one(i: int) -> None:
            results[i] = await ask(port, tls, query(f"n{i}.wild.example.test."), connection)

        with trio.fail_after(60):
            async with trio.open_nursery() as queries:
                for i in range(count):
                    queries.start_soon(one, i)
    assert len(results) == count
    for i, response in results.items():
        # Each answer belongs to its own question (wildcard owners differ).
        assert response.answer == [rrset(f"n{i}.wild.example.test. 3600 IN AAAA 2001:db8::99")]
    assert server.stats.connections == 1
    assert server.stats.queries == count
