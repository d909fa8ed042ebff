"""The API's HTTPS server class (node/api.py `_IdentifyingTCPServer`) on a real socket:
coalesced writes deliver whole responses of every size, and its one idle watcher per
connection closes idle connections but never a busy one."""

from __future__ import annotations

import http.client
import secrets
import socket
import ssl
from functools import partial
from pathlib import Path
from typing import Any, cast

import trio
from hypercorn.trio import serve

import trustchain.node.api  # noqa: F401  (installs the server class)
from trustchain.ct.devcerts import make_tls_server
from trustchain.ct.server import hypercorn_config

BIG = secrets.token_bytes(300_000)


def _tls(tmp: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for ::1."""
    ca, server = make_tls_server(("::1",))
    paths = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    for path, data in zip(paths, (ca.pem, server.pem, server.key_pem), strict=True):
        path.write_bytes(data)
    return paths


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/slow":
        await trio.sleep(1.2)
    body = BIG if path == "/big" else path.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def _context(ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["http/1.1"])
    return context


async def _server(
    nursery: trio.Nursery, tmp: Path, keep_alive: float
) -> tuple[int, ssl.SSLContext]:
    ca, cert, key = _tls(tmp)
    config = hypercorn_config("::1", 0, cert, key)
    config.keep_alive_timeout = keep_alive
    binds: list[str] = await nursery.start(partial(serve, cast(Any, _app), config))
    return int(binds[0].rsplit(":", 1)[1]), _context(ca)


async def test_whole_responses_of_every_size_on_one_connection(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        port, context = await _server(nursery, tmp_path, 5.0)

        def client() -> list[tuple[int, bytes]]:
            conn = http.client.HTTPSConnection("::1", port, context=context, timeout=10)
            got = []
            for path in ("/small", "/big", "/small", "/big", "/x"):
                conn.request("GET", path)
                response = conn.getresponse()
                got.append((response.status, response.read()))
            conn.close()
            return got

        got = await trio.to_thread.run_sync(client)
        assert got == [
            (200, b"/small"), (200, BIG), (200, b"/small"), (200, BIG), (200, b"/x"),
        ]  # fmt: skip
        nursery.cancel_scope.cancel()


async def test_an_idle_connection_is_closed_and_a_busy_one_is_not(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        port, context = await _server(nursery, tmp_path, 0.5)

        def busy_then_idle() -> tuple[int, bytes, bytes]:
            raw = socket.create_connection(("::1", port), timeout=10)
            conn = context.wrap_socket(raw, server_hostname="::1")
            # The request takes longer than the keep-alive timeout: still answered.
            conn.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            response = http.client.HTTPResponse(cast(Any, conn))
            response.begin()
            body = response.read()
            # Then idle: the server closes the connection (EOF within a few seconds).
            try:
                eof = conn.recv(1)
            except (ssl.SSLError, OSError):
                eof = b""
            conn.close()
            return response.status, body, eof

        status, body, eof = await trio.to_thread.run_sync(busy_then_idle)
        assert (status, body) == (200, b"/slow")
        assert eof == b""
        nursery.cancel_scope.cancel()
