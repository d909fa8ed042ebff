"""The node's HTTPS API on port 8443 (DESIGN.md section 6): hypercorn's trio worker.

TLS 1.3 only, with mutual TLS: a client must present a certificate that chains
to the TrustChain root (``api_client_ca``), or the handshake fails.  Then, per
request:

1. the client address must be IPv6 and inside ``api_allow`` (else 403
   ``forbidden_address``);
2. each client identity (the SHA-256 of its certificate) gets
   ``api_rate_limit`` requests per minute, as a token bucket (else 429
   ``rate_limited`` with Retry-After);
3. bodies are JSON of at most 64 KiB (413 ``body_too_large``, 400 ``bad_json``).

Endpoints (JSON unless noted):

=======================  ===============================================================
POST /v1/issue           {"csr", "account", "bundle"} -> chain, SCTs, leaf index, checkpoint
GET  /v1/status/SERIAL   status with inclusion proof and cosigned checkpoint (also
                         /ca/v1/status/SERIAL, the `cert verify --online` contract;
                         /v1/status?leaf_hash=HEX by the RFC 6962 leaf hash)
POST /v1/revoke          {"serial", "reason", "account", "signature"} signed by the account
GET  /v1/beacon          chain id, epoch beacons and the proof policy a client needs
GET  /v1/crl             this node's intermediate CRL (DER, application/pkix-crl)
GET  /health             {"status": "ok", ...}
GET  /metrics            Prometheus text
=======================  ===============================================================

Every refusal is a 4xx ``{"error": CODE, "message": TEXT}`` and changes nothing.

hypercorn does not put the client certificate into the ASGI scope, so the
TCP server class of its trio worker is replaced by one that records the
verified peer certificate per connection (`_IdentifyingTCPServer`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import json
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, cast

import hypercorn.trio.run
import trio
from cryptography import x509
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.trio import serve

from trustchain.consensus.proofs.codec import decode_bundle
from trustchain.consensus.proofs.errors import ProofRejected
from trustchain.ct.server import GuardedTCPServer, hypercorn_config
from trustchain.infra.metrics import OperationType
from trustchain.node.app import NodeApp, PublicApp, RequestRefused, pem_chain
from trustchain.node.ca.revocation import RevocationReason, RevocationRecord, sign_crl
from trustchain.node.cloudwatch import Reporter
from trustchain.node.config import Address
from trustchain.node.log import EventLogger
from trustchain.node.state import RevokeRequest, encode_revoke

MAX_BODY = 64 * 1024
_SEND_BUFFER = 64 * 1024
"""Bytes of a response buffered before its task waits for the client."""

# (client host, port) -> the client identity (SHA-256 hex of the DER certificate the
# TLS layer verified).  Owned by the API server's connections: each adds its entry
# after the handshake and removes it when it closes.
_PEER_CERTS: dict[tuple[str, int], str] = {}


class _IdentifyingTCPServer(GuardedTCPServer):
    """hypercorn's trio TCP server, recording the client certificate, with writes
    coalesced.

    hypercorn writes a response's head, body and end separately, each a TLS
    record and a send system call; here they go to a buffer that one task sends
    once the response's task yields, so a small response is one record and one
    send (about a third of what a status lookup costs the node).  And where hypercorn
    cancels and respawns an idle-timeout task at every request, one task per
    connection watches when it went idle.
    """

    async def run(self) -> None:
        self._out = bytearray()
        self._pending = trio.Event()
        self._idle_since: float | None = trio.current_time()
        peer: tuple[str, int] | None = None
        try:
            stream = self.stream
            if isinstance(stream, trio.SSLStream):
                try:
                    with trio.fail_after(self.config.ssl_handshake_timeout):
                        await stream.do_handshake()
                except (trio.BrokenResourceError, trio.TooSlowError):
                    return  # no or a bad client certificate: the handshake failed
                der = stream.getpeercert(binary_form=True)
                name = stream.transport_stream.socket.getpeername()
                if der is not None:
                    peer = (str(name[0]), int(name[1]))
                    _PEER_CERTS[peer] = hashlib.sha256(der).hexdigest()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._flush_when_pending)
                await super().run()
                nursery.cancel_scope.cancel()
        finally:
            if peer is not None:
                _PEER_CERTS.pop(peer, None)

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            self._out += event.data
            self._pending.set()
            if len(self._out) >= _SEND_BUFFER:
                await self._flush()  # a large body waits for the client (back-pressure)
            return
        if isinstance(event, Updated):
            self._idle_since = trio.current_time() if event.idle else None
            return
        if isinstance(event, Closed):
            await self._flush()
        await super().protocol_send(event)

    async def _idle_timeout(self) -> None:
        # Started once per connection by TCPServer.run (never restarted: see
        # protocol_send).  Closes an idle connection after keep_alive_timeout, or at
        # once when the server shuts down, as hypercorn's own task does.
        timeout = self.config.keep_alive_timeout
        shutting_down = False
        while True:
            if shutting_down:
                await trio.sleep(0.05)
            else:
                with trio.move_on_after(min(1.0, timeout / 4)):
                    await self.context.terminated.wait()
                    shutting_down = True
            since = self._idle_since
            if since is not None and (shutting_down or trio.current_time() - since >= timeout):
                break
        with trio.CancelScope(shield=True):
            await self._initiate_server_close()

    async def _close(self) -> None:
        await self._flush()
        await super()._close()

    async def _flush_when_pending(self) -> None:
        while True:
            await self._pending.wait()
            self._pending = trio.Event()
            await self._flush()

    async def _flush(self) -> None:
        async with self.send_lock:
            if not self._out:
                return
            data, self._out = bytes(self._out), bytearray()
            try:
                with trio.CancelScope(shield=True):
                    await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())


setattr(hypercorn.trio.run, "TCPServer", _IdentifyingTCPServer)  # noqa: B010


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, headers: tuple[Any, ...] = ()):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per client identity: `per_minute` requests, refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, _Bucket] = {}

    def take(self, who: str, now: float) -> float | None:
        """None if allowed, else the seconds until a request would be allowed."""
        b = self._buckets.get(who)
        if b is None:
            if len(self._buckets) > 100_000:
                self._buckets.clear()
            b = self._buckets[who] = _Bucket(self.capacity, now)
        b.tokens = min(self.capacity, b.tokens + (now - b.at) * self.rate)
        b.at = now
        if b.tokens >= 1:
            b.tokens -= 1
            return None
        return (1 - b.tokens) / self.rate


@dataclass
class ApiMetrics:
    requests: int = 0
    refused: int = 0
    rate_limited: int = 0
    operations: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("issue", "validate", "revoke"), 0)
    )
    """Answered certificate operations by kind (CloudWatch's OperationType)."""
    issue_seconds: float = 0.0


def _error_code(reason: str) -> str:
    """A stable code for a state-machine refusal ("<part>: <why>")."""
    if "replayed" in reason:
        return "replay"
    if "unknown account" in reason:
        return "unknown_account"
    part = reason.split(":", 1)[0].strip()
    if part in ("bundle", "request", "epoch", "stake", "space", "time", "work"):
        return "bad_proof"
    if part == "names":
        return "name_outside_policy"
    if part in ("csr", "key"):
        return "bad_csr"
    return part.replace(" ", "_") or "refused"


_STATUS_PREFIXES = ("/v1/status/", "/ca/v1/status/")
_ALLOW_GET = ((b"allow", b"GET"),)
_ALLOW_POST = ((b"allow", b"POST"),)
"""RFC 9110 section 15.5.6: a 405 names the methods the resource takes."""


class ApiApp:
    """The ASGI application behind port 8443."""

    def __init__(
        self,
        app: NodeApp,
        *,
        allow: tuple[str, ...],
        rate_limit: int,
        log: EventLogger,
        clock: Callable[[], float] = time.monotonic,
        reporter: Reporter | None = None,
    ) -> None:
        self.app = app
        self.reporter = reporter
        """CloudWatch (trustchain.node.cloudwatch), if the node reports there."""
        self.public = PublicApp(app)
        self.allow = [ipaddress.IPv6Network(n) for n in allow]
        self._addresses: dict[str, str | None] = {}
        self.limiter = RateLimiter(rate_limit)
        self.log = log
        self.clock = clock
        self.metrics = ApiMetrics()
        self.crl_number = 0
        self._get: dict[str, Callable[[dict[str, Any]], Awaitable[tuple[int, Any]]]] = {
            "/v1/beacon": self._beacon,
            "/health": self._health,
        }

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        self.metrics.requests += 1
        headers: tuple[Any, ...] = ()
        ctype = b"application/json"
        try:
            status, body = await self._dispatch(scope, receive)
            if isinstance(body, bytes | str):
                data = body.encode() if isinstance(body, str) else body
                ctype = b"text/plain; version=0.0.4" if isinstance(body, str) else ctype
                if scope["path"] == "/v1/crl":
                    ctype = b"application/pkix-crl"
            else:
                data = json.dumps(body).encode()
        except _Refusal as r:
            self.metrics.refused += 1
            status, headers = r.status, r.headers
            data = json.dumps({"error": r.code, "message": str(r)}).encode()
        except Exception as exc:
            self.log.error("api.internal", path=scope.get("path"), error=repr(exc))
            status, data = 500, b'{"error":"internal","message":"internal error"}'
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype),
                    (b"content-length", str(len(data)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    # --- admission -------------------------------------------------------------------

    def _address_refusal(self, host: str) -> str | None:
        """Why requests from `host` are refused (None: allowed); remembered per host."""
        if host in self._addresses:
            return self._addresses[host]
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            reason: str | None = "unknown client address"
        else:
            if not isinstance(ip, ipaddress.IPv6Address) or ip.ipv4_mapped is not None:
                reason = f"{ip} is IPv4; TrustChain is IPv6 only"
            elif not any(ip in net for net in self.allow):
                reason = f"{ip} is not in the API allowlist"
            else:
                reason = None
        if len(self._addresses) >= 10_000:
            self._addresses.clear()
        self._addresses[host] = reason
        return reason

    def _admit(self, scope: dict[str, Any]) -> str:
        client = scope.get("client") or ("", 0)
        refusal = self._address_refusal(str(client[0]))
        if refusal is not None:
            raise _Refusal(403, "forbidden_address", refusal)
        who = _PEER_CERTS.get((str(client[0]), int(client[1])))
        if who is None:
            raise _Refusal(401, "no_client_certificate", "a client certificate is required")
        wait = self.limiter.take(who, self.clock())
        if wait is not None:
            self.metrics.rate_limited += 1
            retry = str(max(1, math.ceil(wait)))
            raise _Refusal(
                429,
                "rate_limited",
                f"more than {int(self.limiter.capacity)} requests per minute; retry in {retry} s",
                ((b"retry-after", retry.encode()),),
            )
        return who

    async def _body(self, receive: Any) -> Any:
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise _Refusal(413, "body_too_large", f"request bodies are at most {MAX_BODY} B")
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        try:
            doc = json.loads(b"".join(chunks))
        except ValueError:
            raise _Refusal(400, "bad_json", "the body is not JSON") from None
        except RecursionError:
            raise _Refusal(400, "bad_json", "the body's JSON is nested too deeply") from None
        if not isinstance(doc, dict):
            raise _Refusal(400, "bad_json", "the body must be a JSON object")
        return doc

    async def _dispatch(self, scope: dict[str, Any], receive: Any) -> tuple[int, Any]:
        self._admit(scope)
        path, method = scope["path"], scope["method"]
        if path in ("/v1/issue", "/v1/revoke"):
            if method != "POST":
                raise _Refusal(405, "method_not_allowed", f"{path} takes POST", _ALLOW_POST)
            if path == "/v1/issue":
                return await self._issue(await self._body(receive))
            return await self._revoke(await self._body(receive))
        if not self._is_get_endpoint(path):
            raise _Refusal(404, "not_found", f"no such endpoint: {path}")
        if method != "GET":
            raise _Refusal(405, "method_not_allowed", f"{path} takes GET", _ALLOW_GET)
        for prefix in _STATUS_PREFIXES:
            if path.startswith(prefix):
                status, doc = await self.public.status_response(path[len(prefix) :])
                if status == 200:
                    self._count("validate")
                    return status, doc
                raise _Refusal(status, doc["error"], doc["message"])
        if path == "/v1/status":
            query = scope.get("query_string", b"").decode(errors="replace")
            return await self._status_by_hash(query)
        if path == "/v1/crl":
            return 200, await self._crl()
        if path == "/metrics":
            return 200, self._prometheus()
        return await self._get[path]({})

    def _is_get_endpoint(self, path: str) -> bool:
        return (
            path.startswith(_STATUS_PREFIXES)
            or path in ("/v1/status", "/v1/crl", "/metrics")
            or path in self._get
        )

    # --- endpoints -------------------------------------------------------------------

    async def _issue(self, doc: dict[str, Any]) -> tuple[int, Any]:
        csr = _field_bytes(doc, "csr", pem_label="CERTIFICATE REQUEST")
        bundle = _field_bytes(doc, "bundle")
        account = doc.get("account")
        if not isinstance(account, str):
            raise _Refusal(400, "bad_request", "field 'account': expected 40 hex digits")
        try:
            decoded = decode_bundle(bundle)
        except ProofRejected as exc:
            raise _Refusal(400, "bad_proof", str(exc)) from None
        if decoded.account.hex() != account.lower():
            raise _Refusal(400, "bad_request", "field 'account' is not the bundle's account")
        started = time.monotonic()
        try:
            issued = await self.app.issue(csr, bundle)
        except RequestRefused as exc:
            status = exc.status if exc.status >= 500 else 400
            code = exc.code if exc.status >= 500 else _error_code(str(exc))
            raise _Refusal(status, code, str(exc)) from None
        self.metrics.issue_seconds += time.monotonic() - started
        self._count("issue", time.monotonic() - started)
        return 200, {
            "serial": f"{_serial(issued.certificate):x}",
            "certificate": pem_chain(issued.chain).decode(),
            "chain": [base64.b64encode(c).decode() for c in issued.chain],
            "scts": [s.to_json() for s in issued.scts],
            "signers": list(issued.signers),
            "leaf_index": issued.leaf_index,
            "height": issued.height,
            "checkpoint": issued.checkpoint,
        }

    async def _revoke(self, doc: dict[str, Any]) -> tuple[int, Any]:
        fields: dict[str, str] = {}
        for key in ("serial", "reason", "account", "signature"):
            value = doc.get(key)
            if key == "reason" and value is None:
                value = "unspecified"
            if not isinstance(value, str):
                raise _Refusal(
                    400, "bad_request", f"field {key!r}: missing or not a string; expected "
                    "serial (hex), reason, account (hex), signature (base64)",
                )  # fmt: skip
            fields[key] = value
        try:
            serial = int(fields["serial"], 16)
            account = bytes.fromhex(fields["account"])
            signature = base64.b64decode(fields["signature"], validate=True)
        except (ValueError, binascii.Error):
            raise _Refusal(
                400, "bad_request", "expected serial (hex), account (hex), signature (base64)"
            ) from None
        try:
            reason = RevocationReason.parse(fields["reason"])
        except ValueError as exc:
            raise _Refusal(400, "bad_request", f"field 'reason': {exc}") from None
        if not 0 < serial < 2**159 or len(account) != 20 or len(signature) != 64:
            raise _Refusal(400, "bad_request", "serial, account or signature has a wrong size")
        op = encode_revoke(RevokeRequest(serial, int(reason), account, signature))
        try:
            height = await self.app.submit_and_wait(op)
        except RequestRefused as exc:
            status = exc.status if exc.status >= 500 else 400
            raise _Refusal(status, _error_code(str(exc)), str(exc)) from None
        self._count("revoke")
        return 200, {"serial": f"{serial:x}", "revoked": True, "height": height}

    async def _status_by_hash(self, query: str) -> tuple[int, Any]:
        """``/v1/status?leaf_hash=HEX``: status by the certificate's RFC 6962 leaf hash."""
        key, _, value = query.partition("=")
        try:
            digest = bytes.fromhex(value)
        except ValueError:
            digest = b""
        if key != "leaf_hash" or len(digest) != 32:
            raise _Refusal(400, "bad_parameter", "expected ?leaf_hash=<64 hex digits>")
        serial = self.app.state.by_leaf_hash.get(digest)
        if serial is None:
            raise _Refusal(404, "unknown_certificate", f"no certificate with leaf hash {value}")
        status, doc = await self.public.status_response(f"{serial:x}")
        self._count("validate")
        return status, doc

    async def _beacon(self, _: dict[str, Any]) -> tuple[int, Any]:
        state = self.app.state
        policy = state.policy
        return 200, {
            "chain_id": state.chain_id,
            "height": state.height,
            "epoch": policy.epoch_of(state.height + 1),
            "beacons": {str(e): b.hex() for e, b in sorted(state.beacons.items())},
            "policy": {f.name: getattr(policy, f.name) for f in fields(policy)},
        }

    async def _health(self, _: dict[str, Any]) -> tuple[int, Any]:
        return 200, {
            "status": "ok",
            "node": self.app.name,
            "height": self.app.state.height,
            "log_size": self.app.state.edge.size,
            "issued": self.app.issued,
            "punished": sorted(self.app.state.slashed),
        }

    async def _crl(self) -> bytes:
        app = self.app
        issuer = app.issuer_cert
        records = [
            RevocationRecord(
                r.serial,
                app.state.certificates[r.serial].issuer_key_id,
                dt.datetime.fromtimestamp(r.time / 1000, dt.UTC),
                RevocationReason(r.reason),
            )
            for r in app.state.revocations.values()
            if app.state.certificates[r.serial].issuer_key_id == issuer.key_id
        ]
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        # The CRL number must grow (RFC 5280 section 5.2.3): the applied height does,
        # and so does this process's counter between two CRLs of one height.
        self.crl_number = max(self.crl_number + 1, app.state.height)
        return await sign_crl(
            app.issuer_signer, issuer, records, this_update=now, number=self.crl_number
        )

    def _count(self, op: OperationType, seconds: float | None = None) -> None:
        self.metrics.operations[op] += 1
        if self.reporter is not None:
            self.reporter.operation(op, seconds)

    def _prometheus(self) -> str:
        m = self.metrics
        lines = [
            "# TYPE trustchain_api_requests_total counter",
            f"trustchain_api_requests_total {m.requests}",
            f"trustchain_api_refused_total {m.refused}",
            f"trustchain_api_rate_limited_total {m.rate_limited}",
            *(
                f'trustchain_certificate_operations_total{{operation="{op}"}} {n}'
                for op, n in m.operations.items()
            ),
            f"trustchain_issue_seconds_total {m.issue_seconds:.6f}",
            f"trustchain_height {self.app.state.height}",
            f"trustchain_log_size {self.app.state.edge.size}",
        ]
        archive = self.app.archiver.prometheus() if self.app.archiver else ""
        return "\n".join(lines) + "\n" + archive


def _field_bytes(doc: dict[str, Any], name: str, *, pem_label: str = "") -> bytes:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise _Refusal(400, "bad_request", f"field '{name}': expected a base64 string")
    if pem_label and value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Refusal(400, "bad_request", f"field '{name}': not valid base64") from None


def _serial(der: bytes) -> int:
    return x509.load_der_x509_certificate(der).serial_number


async def serve_api(
    app: NodeApp,
    listen: Address,
    *,
    tls_cert: Path,
    tls_key: Path,
    client_ca: Path,
    allow: tuple[str, ...],
    rate_limit: int,
    log: EventLogger,
    reporter: Reporter | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API until cancelled; reports the bound URLs."""
    config = hypercorn_config(listen.host, listen.port, tls_cert, tls_key)
    config.ca_certs = str(client_ca)
    config.verify_mode = ssl.CERT_REQUIRED
    asgi = ApiApp(app, allow=allow, rate_limit=rate_limit, log=log, reporter=reporter)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(serve, cast(Any, asgi), config))
        log.info("api.listening", urls=binds)
        task_status.started(binds)
