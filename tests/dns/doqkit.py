"""Helpers for the DNS tests: a self-signed TLS identity, a test zone, a DoQ
server on ::1, dnspython's DoQ client under trio, and a raw aioquic client
driven through node/quic.py that can break the protocol on purpose."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.asyncbackend
import dns.asyncquery
import dns.message
import dns.name
import trio
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from trustchain.dns.authority import Authority
from trustchain.dns.doq import frame
from trustchain.dns.records import PublishedRecords
from trustchain.dns.zones import ZoneIndex, default_zone, zone_from_text
from trustchain.node import quic
from trustchain.node.config import Address
from trustchain.node.doq import DoqServer, DoqSettings, server_configuration

TRIO = dns.asyncbackend.get_backend("trio")
"""dnspython picks its async backend by sniffing, and caches the first answer;
the tests name trio explicitly so that nothing depends on that."""

ZONE_TEXT = """\
$ORIGIN example.test.
$TTL 3600
@       SOA   ns1 hostmaster 2024010101 7200 900 1209600 60
@       NS    ns1
@       NS    ns.elsewhere.test.
@       AAAA  2001:db8::1
@       MX    10 mail
ns1     AAAA  2001:db8::53
mail    AAAA  2001:db8::25
www     CNAME web
web     CNAME host
host    AAAA  2001:db8::80
host    TXT   "host"
out     CNAME www.elsewhere.test.
loop1   CNAME loop2
loop2   CNAME loop1
dangling CNAME missing
*.wild  AAAA  2001:db8::99
a.b.c   AAAA  2001:db8::abc
sub     NS    ns.sub
sub     NS    ns.elsewhere.test.
ns.sub  AAAA  2001:db8::5353
deep.sub AAAA 2001:db8::dead
jump    CNAME deep.sub
"""
"""A zone with one of everything the answering rules distinguish."""


def big_records(count: int = 300) -> str:
    """TXT lines that together exceed a DoQ message (65535 octets)."""
    return "".join(f'big TXT "{i:04d}{"x" * 250}"\n' for i in range(count))


def sample_zone(extra: str = "") -> ZoneIndex:
    return zone_from_text(ZONE_TEXT + extra, source="test zone")


@dataclass(frozen=True)
class Tls:
    certificate: Path
    key: Path
    cert: x509.Certificate


def make_tls(directory: Path, name: str = "doq") -> Tls:
    """A self-signed ECDSA P-256 certificate for ::1 and localhost, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"trustchain {name} test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("::1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate = directory / f"{name}.pem"
    private = directory / f"{name}.key"
    certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Tls(certificate, private, cert)


async def start_server(
    nursery: trio.Nursery,
    tls: Tls,
    authority: Authority | None = None,
    settings: DoqSettings | None = None,
) -> tuple[DoqServer, int]:
    """A DoQ server on [::1]:(free port); returns it and its port."""
    settings = settings or DoqSettings()
    authority = authority or Authority([sample_zone(), default_zone()])
    configuration = server_configuration(tls.certificate, tls.key, settings)
    server = DoqServer(authority, configuration, settings)
    bound = await nursery.start(server.serve, Address("::1", 0))
    return server, bound[1]


def query(name: str, rdtype: str = "AAAA", **kwargs: object) -> dns.message.Message:
    message = dns.message.make_query(name, rdtype, **kwargs)  # type: ignore[arg-type]
    message.id = 0
    return message


async def ask(
    port: int,
    tls: Tls,
    message: dns.message.Message,
    connection: object | None = None,
) -> dns.message.Message:
    """One query with dnspython's DoQ client under trio."""
    return await dns.asyncquery.quic(
        message,
        "::1",
        port=port,
        timeout=10,
        verify=str(tls.certificate),
        backend=TRIO,
        connection=connection,  # type: ignore[arg-type]
    )


# --- a raw client that may misbehave -------------------------------------------------------


@dataclass
class RawClient:
    """Records everything that happens on one raw QUIC connection."""

    link: quic.QuicLink | None = None
    handshake: trio.Event = field(default_factory=trio.Event)
    closed: trio.Event = field(default_factory=trio.Event)
    terminated: events.ConnectionTerminated | None = None
    data: dict[int, bytearray] = field(default_factory=dict)
    finished: dict[int, trio.Event] = field(default_factory=dict)
    resets: dict[int, int] = field(default_factory=dict)
    alpn: str | None = None

    def quic_event(self, link: quic.QuicLink, event: events.QuicEvent) -> None:
        if isinstance(event, events.HandshakeCompleted):
            self.alpn = event.alpn_protocol
            self.handshake.set()
        elif isinstance(event, events.ConnectionTerminated):
            self.terminated = event
        elif isinstance(event, events.StreamDataReceived):
            self.data.setdefault(event.stream_id, bytearray()).extend(event.data)
            if event.end_stream:
                self.stream_done(event.stream_id).set()
        elif isinstance(event, events.StreamReset):
            self.resets[event.stream_id] = event.error_code
            self.stream_done(event.stream_id).set()

    def link_closed(self, link: quic.QuicLink) -> None:
        if self.terminated is None:
            self.terminated = link.close_reason
        self.handshake.set()
        self.closed.set()

    def stream_done(self, stream_id: int) -> trio.Event:
        return self.finished.setdefault(stream_id, trio.Event())

    @property
    def quic(self) -> quic.QuicConnection:
        assert self.link is not None
        return self.link.quic

    def send(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.quic.send_stream_data(stream_id, data, end_stream)
        assert self.link is not None
        self.link.wake()

    def new_stream(self, unidirectional: bool = False) -> int:
        return self.quic.get_next_available_stream_id(is_unidirectional=unidirectional)

    def send_query(self, message: dns.message.Message, stream_id: int | None = None) -> int:
        stream_id = self.new_stream() if stream_id is None else stream_id
        self.send(stream_id, frame(message.to_wire()), end_stream=True)
        return stream_id

    async def response(self, stream_id: int) -> dns.message.Message:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fail_if_closed, stream_id)
            with trio.fail_after(10):
                await self.stream_done(stream_id).wait()
            nursery.cancel_scope.cancel()
        body = bytes(self.data[stream_id])
        assert int.from_bytes(body[:2], "big") == len(body) - 2, "one framed message"
        return dns.message.from_wire(body[2:])

    async def _fail_if_closed(self, stream_id: int) -> None:
        await self.closed.wait()
        if not self.stream_done(stream_id).is_set():
            raise AssertionError(f"closed before an answer on {stream_id}: {self.terminated}")

    async def wait_closed(self) -> events.ConnectionTerminated:
        with trio.fail_after(10):
            await self.closed.wait()
        assert self.terminated is not None
        return self.terminated


async def raw_connect(
    nursery: trio.Nursery,
    port: int,
    tls: Tls,
    *,
    alpn: Sequence[str] = ("doq",),
    wait: bool = True,
) -> RawClient:
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=list(alpn), verify_mode=ssl.CERT_REQUIRED
    )
    configuration.load_verify_locations(cafile=str(tls.certificate))
    client = RawClient()
    client.link = await quic.connect(Address("::1", port), configuration, client, nursery)
    if wait:
        with trio.fail_after(10):
            await client.handshake.wait()
    return client


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def published_contents(published: PublishedRecords) -> dict[str, Any]:
    """Everything a snapshot holds, as plain values (RRsets rendered as text)."""
    return {
        "version": published.version,
        "nodes": {
            owner: {rdtype: rrset.to_text() for rdtype, rrset in node.items()}
            for owner, node in published.nodes.items()
        },
        "ents": dict(published.empty_non_terminals.items()),
        "certificates": dict(published.certificates.items()),
        "tlsa": {owner: dict(counts) for owner, counts in published.tlsa.items()},
    }
