"""A small RFC 6962 / static-ct-api client over HTTPS/1.1 on trio.

For monitors, tests and benchmarks: one kept-alive TLS connection per
``HTTPSConnection`` (use one per concurrent task), Content-Length and chunked
responses, and a reconnect when the server closed an idle connection.
``CTClient`` wraps the endpoints and checks what it gets back with the log's key.
"""

from __future__ import annotations

import base64
import json
import ssl
from dataclasses import dataclass
from typing import Any

import trio

from trustchain.ct import merkle
from trustchain.ct.checkpoint import RFC6962NoteVerifier, open_checkpoint
from trustchain.ct.sct import DigitallySigned, SignedCertificateTimestamp, verify_tree_head
from trustchain.ct.signer import PublicKey

MAX_RESPONSE = 64 * 1024 * 1024


class HTTPError(Exception):
    """A response that is not what the protocol or the caller expects."""


@dataclass(frozen=True)
class Response:
    """One HTTP response."""

    status: int
    """Status code."""
    headers: dict[str, str]
    """Header names in lower case (last value wins)."""
    body: bytes
    """The body, de-chunked."""

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise HTTPError(f"response is not JSON: {self.body[:100]!r}") from None


def client_context(cafile: str | None = None, cadata: bytes | None = None) -> ssl.SSLContext:
    """A verifying TLS 1.3 client context that offers only HTTP/1.1."""
    ctx = ssl.create_default_context(
        cafile=cafile, cadata=cadata.decode() if cadata is not None else None
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class HTTPSConnection:
    """A kept-alive HTTPS/1.1 connection; not safe for concurrent requests."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext) -> None:
        self.host = host
        self.port = port
        self._ctx = ssl_context
        self._stream: trio.SSLStream[trio.SocketStream] | None = None
        self._buf = bytearray()

    async def _connect(self) -> trio.SSLStream[trio.SocketStream]:
        tcp = await trio.open_tcp_stream(self.host, self.port)
        stream = trio.SSLStream(tcp, self._ctx, server_hostname=self.host, https_compatible=True)
        await stream.do_handshake()
        self._buf.clear()
        return stream

    async def aclose(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.aclose()

    async def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> Response:
        host = f"[{self.host}]" if ":" in self.host else self.host
        head = [f"{method} {target} HTTP/1.1", f"Host: {host}:{self.port}"]
        if body is not None:
            head += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")
        for attempt in (0, 1):
            fresh = self._stream is None
            if self._stream is None:
                self._stream = await self._connect()
            try:
                await self._stream.send_all(raw)
                return await self._read_response(method)
            except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError):
                await self.aclose()
                # A kept-alive connection the server closed while idle: retry once
                # on a new one.  A fresh connection failing is a real error.
                if fresh or attempt:
                    raise
        raise AssertionError("unreachable")

    async def _fill(self) -> None:
        assert self._stream is not None
        data = await self._stream.receive_some(65536)
        if not data:
            raise EOFError("connection closed by the server")
        self._buf += data
        if len(self._buf) > MAX_RESPONSE:
            raise HTTPError("response too large")

    async def _read_until(self, sep: bytes) -> bytes:
        while (i := self._buf.find(sep)) < 0:
            await self._fill()
        out = bytes(self._buf[:i])
        del self._buf[: i + len(sep)]
        return out

    async def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            await self._fill()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def _read_response(self, method: str) -> Response:
        head = (await self._read_until(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HTTPError(f"bad status line {head[0]!r}")
        status = int(parts[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await self._read_until(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await self._read_until(b"\r\n"):
                        pass  # trailers
                    break
                chunks.append(await self._read_exact(size))
                await self._read_exact(2)
            body = b"".join(chunks)
        elif "content-length" in headers:
            body = await self._read_exact(int(headers["content-length"]))
        else:
            while True:
                try:
                    await self._fill()
                except EOFError:
                    break
            body, self._buf = bytes(self._buf), bytearray()
            await self.aclose()
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return Response(status, headers, body)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class CTClient:
    """RFC 6962 calls on one connection, with answers checked against the log key."""

    def __init__(self, conn: HTTPSConnection, public_key: PublicKey | None = None) -> None:
        self.conn = conn
        self.public_key = public_key

    async def _get_json(self, target: str) -> Any:
        r = await self.conn.request("GET", target)
        if r.status != 200:
            raise HTTPError(f"GET {target}: {r.status} {r.body[:200]!r}")
        return r.json()

    async def add_chain(
        self, chain: list[bytes], *, precert: bool = False
    ) -> SignedCertificateTimestamp:
        path = "/ct/v1/add-pre-chain" if precert else "/ct/v1/add-chain"
        body = json.dumps({"chain": [_b64(c) for c in chain]}).encode()
        r = await self.conn.request("POST", path, body)
        if r.status != 200:
            raise HTTPError(f"POST {path}: {r.status} {r.body[:300]!r}")
        return SignedCertificateTimestamp.from_json(r.json())

    async def get_sth(self) -> tuple[int, int, bytes]:
        """(tree_size, timestamp, root), with the signature checked if the key is known."""
        doc = await self._get_json("/ct/v1/get-sth")
        size, ts = doc["tree_size"], doc["timestamp"]
        root = base64.b64decode(doc["sha256_root_hash"])
        if self.public_key is not None:
            ds = DigitallySigned.decode(base64.b64decode(doc["tree_head_signature"]))
            verify_tree_head(self.public_key, ts, size, root, ds)
        return size, ts, root

    async def get_checkpoint(self, origin: str) -> tuple[int, bytes]:
        r = await self.conn.request("GET", "/checkpoint")
        if r.status != 200:
            raise HTTPError(f"GET /checkpoint: {r.status}")
        if self.public_key is None:
            raise HTTPError("checking a checkpoint needs the log's public key")
        cp, _, _ = open_checkpoint(r.body, RFC6962NoteVerifier(origin, self.public_key))
        return cp.size, cp.root_hash

    async def consistency(self, first: int, second: int) -> list[bytes]:
        doc = await self._get_json(f"/ct/v1/get-sth-consistency?first={first}&second={second}")
        return [base64.b64decode(h) for h in doc["consistency"]]

    async def proof_by_hash(self, leaf_hash: bytes, tree_size: int) -> tuple[int, list[bytes]]:
        from urllib.parse import quote

        target = (
            f"/ct/v1/get-proof-by-hash?hash={quote(_b64(leaf_hash), safe='')}&tree_size={tree_size}"
        )
        doc = await self._get_json(target)
        return doc["leaf_index"], [base64.b64decode(h) for h in doc["audit_path"]]

    async def entries(self, start: int, end: int) -> list[tuple[bytes, bytes]]:
        doc = await self._get_json(f"/ct/v1/get-entries?start={start}&end={end}")
        return [
            (base64.b64decode(e["leaf_input"]), base64.b64decode(e["extra_data"]))
            for e in doc["entries"]
        ]

    async def verify_included(self, leaf_input: bytes, tree_size: int, root: bytes) -> int:
        """Fetch and check an inclusion proof; returns the leaf index."""
        h = merkle.leaf_hash(leaf_input)
        index, proof = await self.proof_by_hash(h, tree_size)
        merkle.verify_inclusion(index, tree_size, h, proof, root)
        return index
