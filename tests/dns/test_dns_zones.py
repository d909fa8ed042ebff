"""Zones: the default zone from config values, and master files read with dnspython."""

from __future__ import annotations

from pathlib import Path

import dns.message
import dns.rdatatype
import pytest
from doqkit import ZONE_TEXT, name, query

from trustchain.dns.authority import Authority
from trustchain.dns.zones import (
    DefaultZoneSettings,
    NameServer,
    ZoneError,
    default_zone,
    load_zone_file,
    zone_from_text,
)


def records(zone_index: object, owner: str, rdtype: str) -> list[str]:
    node = zone_index.nodes.get(name(owner), {})  # type: ignore[attr-defined]
    rrset = node.get(dns.rdatatype.from_text(rdtype))
    return sorted(rr.to_text() for rr in rrset) if rrset else []


def test_namespace_portion_does_not_hide_dnspython() -> None:
    # dns/ has no __init__.py: dnspython's `dns` and our `trustchain.dns` coexist.
    import dns.message as dnspython_message

    import trustchain.dns.zones

    assert dnspython_message.__file__ and "site-packages" in dnspython_message.__file__
    assert trustchain.dns.zones.__file__ and "site-packages" not in trustchain.dns.zones.__file__


def test_default_zone_has_the_deployment_records() -> None:
    zone = default_zone()
    assert zone.origin == name("trust.hypermesh.online.")
    assert records(zone, "trust.hypermesh.online.", "AAAA") == ["2001:db8::10"]
    assert records(zone, "ca.trust.hypermesh.online.", "CNAME") == ["trust.hypermesh.online."]
    assert records(zone, "ct.trust.hypermesh.online.", "CNAME") == ["trust.hypermesh.online."]
    assert records(zone, "trust.hypermesh.online.", "NS") == ["ns1.trust.hypermesh.online."]
    assert records(zone, "ns1.trust.hypermesh.online.", "AAAA") == ["2001:db8::10"]
    (soa,) = records(zone, "trust.hypermesh.online.", "SOA")
    assert soa.startswith("ns1.trust.hypermesh.online. hostmaster.trust.hypermesh.online. 1 ")
    assert not any(dns.rdatatype.A in node for node in zone.nodes.values()), (
        "IPv6 only: no A records"
    )


def test_default_zone_from_other_values() -> None:
    zone = default_zone(
        DefaultZoneSettings(
            origin="ca.example.",
            apex_addresses=("2001:db8::1", "2001:db8::2"),
            aliases=("ocsp",),
            nameservers=(NameServer("ns.provider.example."),),
            serial=2024,
            ttl=60,
            extra=("www AAAA 2001:db8::3",),
        )
    )
    assert records(zone, "ca.example.", "AAAA") == ["2001:db8::1", "2001:db8::2"]
    assert records(zone, "ocsp.ca.example.", "CNAME") == ["ca.example."]
    assert records(zone, "www.ca.example.", "AAAA") == ["2001:db8::3"]
    assert zone.serial == 2024 and zone.soa.ttl == 60


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        (DefaultZoneSettings(apex_addresses=("192.0.2.1",)), "IPv4"),
        (DefaultZoneSettings(apex_addresses=("::ffff:192.0.2.1",)), "IPv4-mapped"),
        (DefaultZoneSettings(apex_addresses=("not-an-ip",)), "not an IP address"),
        (DefaultZoneSettings(apex_addresses=()), "at least one"),
        (DefaultZoneSettings(nameservers=()), "at least one name server"),
        (DefaultZoneSettings(nameservers=(NameServer("ns1"),)), "needs an address"),
        (DefaultZoneSettings(aliases=("elsewhere.example.",)), "must be a name below"),
        (DefaultZoneSettings(ttl=-1), "ttl"),
        (DefaultZoneSettings(serial=2**32), "serial"),
        (DefaultZoneSettings(origin="."), "root zone"),
        (DefaultZoneSettings(origin="not a zone."), "is not a host name"),
        (DefaultZoneSettings(origin="a_b.example."), "is not a host name"),
    ],
)
def test_default_zone_rejects_bad_values(settings: DefaultZoneSettings, fragment: str) -> None:
    with pytest.raises(ZoneError, match=fragment):
        default_zone(settings)


def test_master_file_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "example.zone"
    path.write_text(ZONE_TEXT)
    zone = load_zone_file(path)
    assert zone.origin == name("example.test.") and zone.serial == 2024010101
    assert zone.cuts == frozenset({name("sub.example.test.")})
    assert name("b.c.example.test.") in zone.empty_non_terminals
    assert name("c.example.test.") in zone.empty_non_terminals
    # Names inside rdata are absolute, so answers render without an origin.
    response = Authority([zone]).respond(
        query("www.example.test."), query("www.example.test.").to_wire()
    )
    assert dns.message.from_wire(response).answer[-1][0].to_text() == "2001:db8::80"


def test_origin_can_come_from_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "plain.zone"
    path.write_text(ZONE_TEXT.replace("$ORIGIN example.test.\n", ""))
    assert load_zone_file(path, "example.test.").origin == name("example.test.")
    with pytest.raises(ZoneError, match=r"\$ORIGIN"):
        load_zone_file(path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("$ORIGIN z.test.\n$TTL 60\n@ NS ns\nns AAAA 2001:db8::1\n", "no SOA"),
        ("", "no records"),
        ("; only a comment\n", "no records"),
        ("$ORIGIN z.test.\n$TTL 60\n", "no records"),
        ("$ORIGIN z.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n", "no NS"),
        (
            "$ORIGIN z.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns AAAA 2001:db8::1\n"
            "w CNAME ns\nw TXT x\n",
            "not compatible with a CNAME",
        ),
        (
            "$ORIGIN z.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns AAAA not-an-address\n",
            "malformed",
        ),
        (
            "$ORIGIN z.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nx SOA ns h 1 2 3 4 5\n",
            "non-origin SOA",
        ),
    ],
)
def test_bad_master_files_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.zone"
    path.write_text(text)
    with pytest.raises(ZoneError, match=fragment) as failure:
        load_zone_file(path)
    assert str(path) in str(failure.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ZoneError, match="not found"):
        load_zone_file(tmp_path / "absent.zone")
    with pytest.raises(ZoneError, match="directory"):
        load_zone_file(tmp_path)


def test_the_same_zone_twice_is_refused() -> None:
    zone = zone_from_text(ZONE_TEXT)
    with pytest.raises(ZoneError, match="given twice"):
        Authority([zone, zone])
