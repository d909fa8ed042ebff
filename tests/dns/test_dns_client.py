"""Our DoQ client against our server over ::1: verification, 0-RTT on a resumed
session, closing, and what a client hears when the server goes away."""

from __future__ import annotations

import socket
import time

import dns.message
import dns.rcode
import pytest
import trio
from aioquic.quic.connection import QuicConnection
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from doqkit import Tls, make_tls, query, start_server

from trustchain.dns.doq import DoqError
from trustchain.node.config import Address
from trustchain.node.doq import (
    DoqClient,
    DoqClientError,
    DoqSettings,
    client_configuration,
    parse_dns_section,
    server_configuration,
)
from trustchain.node.errors import UserError


async def connect(port: int, tls: Tls, nursery: trio.Nursery, **kwargs: object) -> DoqClient:
    configuration = client_configuration(cafile=tls.certificate, server_name="::1", **kwargs)  # type: ignore[arg-type]
    return await DoqClient.connect(Address("::1", port), nursery, configuration)


async def test_queries_before_the_handshake_are_sent_with_it(
    tls: Tls, nursery: trio.Nursery
) -> None:
    _, port = await start_server(nursery, tls)
    client = await connect(port, tls, nursery)
    # Submitted at once: QUIC holds them until keys exist.
    with trio.fail_after(10):
        response = await client.query(query("host.example.test."))
    assert response.rcode() == dns.rcode.NOERROR
    assert await client.handshake() > 0
    assert not client.session_resumed


async def test_resumed_session_carries_the_query_in_0rtt(tls: Tls, nursery: trio.Nursery) -> None:
    server, port = await start_server(nursery, tls)
    first = await connect(port, tls, nursery)
    await first.query(query("host.example.test."))
    with trio.fail_after(5):
        while first.session_ticket is None:
            await trio.sleep(0.01)
    ticket = first.session_ticket
    first.close()

    second = await connect(port, tls, nursery, session_ticket=ticket)
    response = await second.query(query("www.example.test."))
    assert response.rcode() == dns.rcode.NOERROR and response.answer
    assert second.session_resumed and second.early_data_accepted, "0-RTT accepted (RFC 9250 4.5)"
    with trio.fail_after(5):
        while server.stats.resumed < 1:
            await trio.sleep(0.01)

    # Tickets are single use (RFC 8446 section 8.1): a replay gets a full handshake.
    third = await connect(port, tls, nursery, session_ticket=ticket)
    await third.query(query("host.example.test."))
    assert not third.session_resumed and not third.early_data_accepted


async def test_untrusted_certificate_is_refused(
    tls: Tls, nursery: trio.Nursery, tmp_path: object
) -> None:
    from pathlib import Path

    _, port = await start_server(nursery, tls)
    stranger = make_tls(Path(str(tmp_path)), "stranger")
    client = await DoqClient.connect(
        Address("::1", port),
        nursery,
        client_configuration(cafile=stranger.certificate, server_name="::1"),
    )
    with pytest.raises(DoqClientError, match="TLS alert"):
        await client.query(query("host.example.test."))


async def test_wrong_server_name_is_refused(tls: Tls, nursery: trio.Nursery) -> None:
    _, port = await start_server(nursery, tls)
    client = await DoqClient.connect(
        Address("::1", port),
        nursery,
        client_configuration(cafile=tls.certificate, server_name="ca.example.com"),
    )
    with pytest.raises(DoqClientError, match="doesn't match"):
        await client.query(query("host.example.test."))


async def test_server_shutdown_closes_clients_with_no_error(
    tls: Tls, nursery: trio.Nursery
) -> None:
    server, port = await start_server(nursery, tls)
    client = await connect(port, tls, nursery)
    await client.query(query("host.example.test."))
    server.close_all()
    with trio.fail_after(5):
        await client.closed.wait()
    assert "DOQ_NO_ERROR" in client.close_reason
    with pytest.raises(DoqClientError):
        client.submit(query("host.example.test."), lambda *_: None)


async def test_no_server_there(nursery: trio.Nursery, tls: Tls) -> None:
    import socket

    # A bound socket nobody reads from: the handshake goes unanswered.
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]
        configuration = client_configuration(
            cafile=tls.certificate, server_name="::1", idle_timeout=0.5
        )
        client = await DoqClient.connect(Address("::1", port), nursery, configuration)
        with pytest.raises(DoqClientError):
            await client.query(query("host.example.test."), timeout=5)


def test_server_configuration_names_unusable_files(tls: Tls, tmp_path: object) -> None:
    from pathlib import Path

    with pytest.raises(UserError, match="no such file"):
        server_configuration(Path("/nonexistent.pem"), tls.key)
    with pytest.raises(UserError, match="cannot load the TLS certificate"):
        server_configuration(tls.key, tls.key)
    # A key that is not the certificate's: every handshake would fail.
    other = Path(str(tmp_path)) / "other.key"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(UserError, match="is not the key of --tls-cert"):
        server_configuration(tls.certificate, other)
    # aioquic reads a client's CA file only when it connects: it is checked up front.
    garbage = Path(str(tmp_path)) / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(UserError, match="not PEM CA certificates"):
        client_configuration(cafile=garbage)
    with pytest.raises(UserError, match="No such file"):
        client_configuration(cafile=Path("/nonexistent.pem"))
    with pytest.raises(ValueError, match="max_connections_per_address"):
        DoqSettings(max_connections_per_address=0)


def test_dns_config_section(tmp_path: object) -> None:
    from pathlib import Path

    from trustchain.node.config import ConfigError

    base = Path(str(tmp_path))
    section = parse_dns_section(
        "node.toml",
        {
            "listen": "[::1]:8853",
            "apex_addresses": ["2001:db8::7"],
            "zone_files": ["extra.zone"],
            "max_open_streams": 8,
        },
        base,
    )
    assert section.listen == Address("::1", 8853)
    assert section.zone.apex_addresses == ("2001:db8::7",)
    assert section.zone_files == ((base / "extra.zone").resolve(),)
    assert section.settings.limits.max_open_streams == 8
    with pytest.raises(ConfigError, match=r"dns\.listen"):
        parse_dns_section("node.toml", {"listen": "127.0.0.1:8853"}, base)
    with pytest.raises(ConfigError, match=r"unknown key 'dns\.colour'"):
        parse_dns_section("node.toml", {"colour": "blue"}, base)
    with pytest.raises(ConfigError, match=r"dns\.stream_timeout"):
        parse_dns_section("node.toml", {"stream_timeout": 0}, base)
    assert DoqError.NO_ERROR == 0


async def test_stream_credit_is_the_setting_and_comes_back(tls: Tls, nursery: trio.Nursery) -> None:
    server, port = await start_server(nursery, tls, settings=DoqSettings(max_streams=3))
    client = await connect(port, tls, nursery)
    await client.handshake()
    # The transport parameter initial_max_streams_bidi (RFC 9000 section 18.2).
    assert client.link.quic._remote_max_streams_bidi == 3
    results: list[object] = []
    done = trio.Event()

    def collect(stream_id: int, outcome: object) -> None:
        results.append(outcome)
        if len(results) == 20:
            done.set()

    for i in range(20):
        client.submit(query(f"n{i}.wild.example.test."), collect)
    with trio.fail_after(10):
        await done.wait()
    assert all(isinstance(r, dns.message.Message) for r in results), results
    assert server.stats.queries == 20


async def test_handshakes_that_never_finish_give_way_to_a_real_client(
    tls: Tls, nursery: trio.Nursery
) -> None:
    # A flood of Initials from one address, never finished: the server's connections
    # for that address are full of half-open ones, and a real client still gets in.
    server, port = await start_server(
        nursery, tls, settings=DoqSettings(max_connections_per_address=3)
    )
    sock = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    await sock.bind(("::1", 0))
    for _ in range(15):  # the QUIC server takes 3 + 8 per address (room to say no)
        half = QuicConnection(configuration=client_configuration(verify=False))
        half.connect(("::1", port), now=time.time())
        for data, _ in half.datagrams_to_send(now=time.time()):
            await sock.sendto(data, ("::1", port))
    await trio.sleep(0.2)
    assert server.connections == 11
    client = await connect(port, tls, nursery)
    answer = await client.query(query("host.example.test."), timeout=5)
    assert answer.rcode() == dns.rcode.NOERROR
    sock.close()
