"""A zone update during a stream of DoQ queries never yields a mixed answer.

Each generation g replaces three certificates for www (three TLSA records,
digests derived from g) and the apex CAA policy in one batch.  A thread
applies generation after generation as fast as it can while dnspython's DoQ
client keeps queries in flight over one connection.  Every TLSA answer must
hold the three digests of one generation, and every NODATA under the
published name must carry an SOA serial of a generation that existed.
"""

from __future__ import annotations

import hashlib
import threading

import dns.message
import dns.quic
import dns.rcode
import dns.rdatatype
import trio
from doqkit import Tls, ask, name, query, start_server

from trustchain.dns.authority import Authority
from trustchain.dns.records import (
    CaaPolicy,
    CaaRecord,
    CertificateIssued,
    CertificateRevoked,
    Change,
)
from trustchain.dns.zones import default_zone

WWW = name("www.trust.hypermesh.online.")
APEX = name("trust.hypermesh.online.")
PER_GENERATION = 3


def digest(generation: int, i: int) -> bytes:
    return hashlib.sha256(f"{generation}:{i}".encode()).digest()


def batch(generation: int) -> list[Change]:
    changes: list[Change] = []
    if generation > 1:
        changes += [CertificateRevoked(f"{generation - 1:x}{i}") for i in range(PER_GENERATION)]
    changes += [
        CertificateIssued(f"{generation:x}{i}", (WWW,), digest(generation, i))
        for i in range(PER_GENERATION)
    ]
    changes.append(CaaPolicy(APEX, (CaaRecord(0, "issue", f"gen{generation}.example"),)))
    return changes


async def test_updates_never_show_half_a_batch(tls: Tls, nursery: trio.Nursery) -> None:
    authority = Authority([default_zone()])
    generation_of: dict[bytes, int] = {}
    for i in range(PER_GENERATION):
        generation_of[digest(1, i)] = 1
    authority.apply(batch(1), version=1)
    stop = threading.Event()
    applied = [1]

    def updater() -> None:
        generation = 1
        while not stop.is_set():
            generation += 1
            for i in range(PER_GENERATION):
                generation_of[digest(generation, i)] = generation
            authority.apply(batch(generation), version=generation)
            applied.append(generation)

    _, port = await start_server(nursery, tls, authority)
    seen_generations: set[int] = set()
    answers = 0

    async def worker(connection: object, deadline: float) -> None:
        nonlocal answers
        while trio.current_time() < deadline:
            tlsa = await ask(
                port, tls, query("_443._tcp.www.trust.hypermesh.online.", "TLSA"), connection
            )
            assert tlsa.rcode() == dns.rcode.NOERROR
            (rrset,) = tlsa.answer
            generations = {generation_of[rr.cert] for rr in rrset}
            assert len(rrset) == PER_GENERATION and len(generations) == 1, (
                f"a mixed answer: {generations}"
            )
            seen_generations.update(generations)
            nodata = await ask(
                port, tls, query("_tcp.www.trust.hypermesh.online.", "TXT"), connection
            )
            (soa,) = nodata.authority
            assert soa[0].serial - 1 in applied, "the serial belongs to an applied version"
            answers += 2

    async with dns.quic.TrioQuicManager(nursery, verify_mode=str(tls.certificate)) as manager:
        connection = manager.connect("::1", port)
        async with trio.open_nursery() as inner:
            inner.start_soon(lambda: trio.to_thread.run_sync(updater, abandon_on_cancel=False))
            deadline = trio.current_time() + 2.0
            try:
                async with trio.open_nursery() as workers:
                    for _ in range(16):
                        workers.start_soon(worker, connection, deadline)
            finally:
                stop.set()  # also when a worker failed: the thread must end
    assert answers > 100
    assert len(seen_generations) > 3, "updates really happened while queries ran"
    assert applied[-1] > 10
