"""Applying batches to published records: snapshots are persistent values.

`PublishedRecords.apply` edits persistent maps that share structure with the
snapshot before it.  These tests hold old snapshots while later batches (good
and failing ones) are applied to the same structure, and compare batches of
one change with one batch of all of them and with a model computed from the
live certificates alone.
"""

from __future__ import annotations

import hashlib
from typing import Any

import dns.message
import dns.name
import dns.rdatatype
import pytest
from doqkit import name, query
from doqkit import published_contents as contents
from hypothesis import given, settings
from hypothesis import strategies as st

from trustchain.dns.authority import Authority, answer
from trustchain.dns.records import (
    CaaPolicy,
    CaaRecord,
    CertificateIssued,
    CertificateRevoked,
    Change,
    NameMap,
    PublishedRecords,
    RecordError,
    name_key,
)
from trustchain.dns.zones import default_zone

APEX = name("trust.hypermesh.online.")
TLSA_PREFIX = dns.name.Name((b"_443", b"_tcp"))
HOSTS = ("www", "api", "a.b", "x.a.b", "deep.x.a.b", "mail")
"""Names below the apex that certificates share; nested so that empty non-terminals
come and go as owners beneath them do (RFC 8020)."""
MANY = 400
"""Certificates published before a test starts: enough for tries several levels deep."""


def issued(cid: int, *hosts: str, key: str = "k") -> CertificateIssued:
    return CertificateIssued(
        format(cid, "x"),
        tuple(name(f"{h}.trust.hypermesh.online.") for h in hosts),
        hashlib.sha256(key.encode()).digest(),
    )


def crowded() -> Authority:
    """An authority with MANY certificates (each on its own name and on shared ones)."""
    authority = Authority([default_zone()])
    authority.apply(
        [issued(i + 1, f"h{i}", HOSTS[i % len(HOSTS)], key=f"key{i % 7}") for i in range(MANY)],
        version=1,
    )
    return authority


QUESTIONS = [
    (f"_443._tcp.{host}.trust.hypermesh.online.", rdtype)
    for host in (*HOSTS, "h0", "h1", "h399", "new")
    for rdtype in ("TLSA", "AAAA")
] + [("trust.hypermesh.online.", "CAA"), ("_tcp.x.a.b.trust.hypermesh.online.", "TXT")]


def answers(authority: Authority) -> list[str]:
    """What a reader holding the authority's current view would answer."""
    view = authority.view
    return [answer(view, query(q, t)).to_text() for q, t in QUESTIONS]


def test_a_held_snapshot_never_changes_under_later_applies() -> None:
    authority = crowded()
    held_view = authority.view
    held = authority.published
    before = contents(held)
    said = [answer(held_view, query(q, t)).to_text() for q, t in QUESTIONS]

    authority.apply(
        [CertificateRevoked(format(i + 1, "x")) for i in range(0, MANY, 2)]
        + [issued(MANY + 1, "new", "www", key="fresh")]
        + [CaaPolicy(APEX, (CaaRecord(0, "issue", "trust.hypermesh.online"),))],
        version=2,
    )
    with pytest.raises(RecordError, match="change 2"):
        authority.apply(
            [CertificateRevoked("2"), issued(MANY + 2, "h0"), CertificateRevoked("1")], version=3
        )
    authority.apply([CertificateRevoked(format(i + 1, "x")) for i in range(1, MANY, 2)], version=3)

    assert answers(authority) != said, "the later batches did change what is served"
    assert contents(held) == before
    assert [answer(held_view, query(q, t)).to_text() for q, t in QUESTIONS] == said
    assert len(authority.published.certificates) == 1 and len(held.certificates) == MANY


def test_a_failing_batch_changes_nothing_even_after_editing_shared_parts() -> None:
    base = crowded().published
    before = contents(base)
    caa = CaaPolicy(APEX, (CaaRecord(0, "issue", "ca.example"),))
    batch: list[Change] = [
        CertificateRevoked("1"),  # withdraws h0 and shrinks the shared www RRset
        issued(MANY + 1, "www", "brand.new.name", key="other"),  # new owner, new ENTs
        caa,
        *(CertificateRevoked(format(i + 1, "x")) for i in range(1, MANY)),  # empties all
        issued(MANY + 1, "again"),  # fails: the id is already published in this batch
    ]
    with pytest.raises(RecordError, match=f"change {len(batch) - 1}: certificate .* already"):
        base.apply(batch, version=2)
    assert contents(base) == before

    # The base still accepts exactly what it accepted before the failure.
    good = base.apply(batch[:-1], version=2)
    assert list(good.certificates) == [format(MANY + 1, "x")]
    assert dict(good.empty_non_terminals.items()) == model(good, caa.records)["ents"]
    assert contents(base) == before
    with pytest.raises(RecordError, match="not published"):
        good.apply([CertificateRevoked("1")])
    assert base.apply([CertificateRevoked("1")]).version == 2


def model(published: PublishedRecords, caa: tuple[CaaRecord, ...]) -> dict[str, Any]:
    """What `published` must hold, derived from its live certificates alone."""
    digests: dict[dns.name.Name, dict[bytes, int]] = {}
    for cert in published.certificates.values():
        for owner in cert.owners:
            counts = digests.setdefault(owner, {})
            counts[cert.digest] = counts.get(cert.digest, 0) + 1
    owners = set(digests) | ({APEX} if caa else set())
    ents: dict[dns.name.Name, int] = {}
    for owner in owners:
        above = owner
        while len(above) > len(APEX) + 1:  # strictly between the owner and the apex
            above = above.parent()
            ents[above] = ents.get(above, 0) + 1
    types: dict[dns.name.Name, set[dns.rdatatype.RdataType]] = {
        owner: {dns.rdatatype.TLSA} for owner in digests
    }
    if caa:
        types.setdefault(APEX, set()).add(dns.rdatatype.CAA)
    return {"types": types, "ents": ents, "tlsa": digests}


changes = st.lists(
    st.one_of(
        st.tuples(
            st.just("issue"),
            st.integers(1, 12),
            st.lists(st.sampled_from(HOSTS), min_size=0, max_size=3),
            st.sampled_from(["k1", "k2", "k3"]),
        ),
        st.tuples(st.just("revoke"), st.integers(1, 12)),
        st.tuples(st.just("caa"), st.sampled_from(["", "a.example", "b.example"])),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(changes)
def test_single_change_batches_equal_one_batch_and_the_model(steps: list[tuple[Any, ...]]) -> None:
    # Turn the drawn steps into a valid sequence: issue only unpublished ids,
    # revoke only published ones.
    live: set[int] = set()
    sequence: list[Change] = []
    caa: tuple[CaaRecord, ...] = ()
    for step in steps:
        if step[0] == "issue" and step[1] not in live:
            live.add(step[1])
            sequence.append(issued(step[1], *step[2], key=step[3]))
        elif step[0] == "revoke" and step[1] in live:
            live.remove(step[1])
            sequence.append(CertificateRevoked(format(step[1], "x")))
        elif step[0] == "caa":
            caa = (CaaRecord(0, "issue", step[1]),) if step[1] else ()
            sequence.append(CaaPolicy(APEX, caa))

    start = PublishedRecords.empty([APEX]).apply(
        # On names of their own, so that the drawn changes' owners and empty
        # non-terminals can all go away again.
        [issued(100 + i, f"h{i}", f"h{i}.pool") for i in range(64)]
    )
    one_by_one = start
    for change in sequence:
        one_by_one = one_by_one.apply([change])
    at_once = start.apply(sequence, version=one_by_one.version) if sequence else start

    assert contents(one_by_one) == contents(at_once)
    assert one_by_one == at_once

    expected = model(at_once, caa)
    assert {owner: set(node) for owner, node in at_once.nodes.items()} == expected["types"]
    assert dict(at_once.empty_non_terminals.items()) == expected["ents"]
    assert {owner: dict(c) for owner, c in at_once.tlsa.items()} == expected["tlsa"]
    for owner, counts in expected["tlsa"].items():
        rdatas = at_once.nodes[owner][dns.rdatatype.TLSA]
        assert sorted(r.cert for r in rdatas) == sorted(counts)  # type: ignore[attr-defined]
    assert set(at_once.certificates) == {format(c, "x") for c in live} | {
        format(100 + i, "x") for i in range(64)
    }


def test_held_view_answers_stay_those_of_its_snapshot_over_dns() -> None:
    """The answer cache keys on the view: a reader's view and the current one differ."""
    authority = crowded()
    message = query("_443._tcp.new.trust.hypermesh.online.", "TLSA")
    wire = message.to_wire()
    old_view = authority.view
    first = dns.message.from_wire(authority.respond(message, wire))
    authority.apply([issued(MANY + 1, "new")], version=2)
    second = dns.message.from_wire(authority.respond(message, wire))
    assert not first.answer and second.answer
    assert not answer(old_view, message).answer


def test_names_dnspython_hashes_alike_are_kept_apart_and_answered() -> None:
    """dnspython hashes a name as h = 9h + octet: "a9" and "b0" collide.  The published
    maps key names by `name_key`, so a requester choosing such names fills no bucket."""
    a9 = name("_443._tcp.a9.trust.hypermesh.online.")
    b0 = name("_443._tcp.b0.trust.hypermesh.online.")
    assert hash(a9) == hash(b0) and a9 != b0  # the weakness, as dnspython has it
    assert name_key(a9) != name_key(b0)
    # 128 names with one dnspython hash (each pair "a9" or "b0"): every one is kept.
    colliding = ["".join(("a9", "b0")[(i >> k) & 1] for k in range(7)) for i in range(128)]
    assert len({hash(name(f"{h}.trust.hypermesh.online.")) for h in colliding}) == 1
    keys = {name_key(name(f"_443._tcp.{h}.trust.hypermesh.online.")) for h in colliding}
    assert len({hash(k) for k in keys}) == len(colliding)  # what the maps hash instead
    authority = Authority([default_zone()])
    authority.apply([issued(i + 1, h, key=h) for i, h in enumerate(colliding)], version=1)
    published = authority.published
    assert len(published.tlsa) == len(colliding)
    for h in colliding:
        owner = name(f"_443._tcp.{h.upper()}.Trust.Hypermesh.Online.")  # any case, as DNS
        assert owner in published.nodes
        assert dict(published.tlsa[owner]) == {hashlib.sha256(h.encode()).digest(): 1}
        reply = answer(authority.view, query(str(owner), "TLSA"))
        assert reply.rcode() == 0 and len(reply.answer) == 1


def test_a_name_map_is_case_insensitive_and_persistent() -> None:
    empty: NameMap[int] = NameMap()
    edits = empty.mutate()
    edits[name("A.example.")] = 1
    edits[name("b.example.")] = 2
    first = edits.finish()
    more = first.mutate()
    del more[name("a.EXAMPLE.")]
    second = more.finish()
    assert dict(first.items()) == {name("a.example."): 1, name("b.example."): 2}
    assert dict(second.items()) == {name("b.example."): 2}
    assert name("a.example.") in first and name("a.example.") not in second
    assert first.get(name("c.example."), 0) == 0 and len(empty) == 0
    with pytest.raises(KeyError):
        second[name("a.example.")]
