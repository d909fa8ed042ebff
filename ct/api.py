"""The log's HTTP API as an ASGI application: RFC 6962 v1 and static-ct-api reads.

RFC 6962 section 4 endpoints live under ``/ct/v1/``; static-ct-api read paths
(``/checkpoint``, ``/tile/...``, ``/issuer/...``) at the root; ``/metrics`` gives
Prometheus counters.  Every refusal is a 4xx JSON object
``{"error": <code>, "message": <what is wrong>}``; a full sequencing pool answers
503 with Retry-After; a damaged store answers 500 and is logged, never served.
No request can make the app raise: the handler converts every error it knows,
and anything else becomes a logged 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from trustchain.ct._log import Events
from trustchain.ct.chain import SubmissionError
from trustchain.ct.sequencer import PoolFull
from trustchain.ct.service import CTLog, LogRequestError, LogUnavailable
from trustchain.ct.store import StoreCorrupt

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 256 * 1024
"""add-chain bodies above this are refused (413): ten certificates fit easily."""
MAX_INT = (1 << 63) - 1

_JSON = b"application/json"
_IMMUTABLE = b"public, max-age=31536000, immutable"


class _Reply(Exception):
    """Raised inside a handler to answer at once."""

    def __init__(
        self, status: int, code: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers


Response = tuple[int, bytes, bytes, tuple[tuple[bytes, bytes], ...]]
"""(status, content type, body, extra headers)."""


def _json(doc: Any) -> Response:
    return 200, _JSON, json.dumps(doc, separators=(",", ":")).encode(), ()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class CTApp:
    """ASGI app over one ``CTLog``."""

    def __init__(self, log: CTLog) -> None:
        self.log = log
        self._events = Events("http")
        self._get: dict[str, Callable[[dict[str, str]], Awaitable[Response]]] = {
            "/ct/v1/get-sth": self._get_sth,
            "/ct/v1/get-sth-consistency": self._get_sth_consistency,
            "/ct/v1/get-proof-by-hash": self._get_proof_by_hash,
            "/ct/v1/get-entries": self._get_entries,
            "/ct/v1/get-roots": self._get_roots,
            "/ct/v1/get-entry-and-proof": self._get_entry_and_proof,
            "/checkpoint": self._checkpoint,
            "/metrics": self._metrics,
        }
        self._post = {"/ct/v1/add-chain": False, "/ct/v1/add-pre-chain": True}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            status, ctype, body, headers = await self._dispatch(scope, receive)
        except _Reply as r:
            status, ctype, headers = r.status, _JSON, r.headers
            body = json.dumps({"error": r.code, "message": str(r)}).encode()
        except StoreCorrupt as exc:
            self._events.error("ct.store.corrupt", error=str(exc))
            status, ctype, headers = 500, _JSON, ()
            body = json.dumps(
                {
                    "error": "store_corrupt",
                    "message": "the log's storage is damaged; the operator has been told",
                }
            ).encode()
        except Exception as exc:
            self._events.error("ct.http.internal", path=scope.get("path"), error=repr(exc))
            status, ctype, headers = 500, _JSON, ()
            body = b'{"error":"internal","message":"internal error"}'
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _dispatch(self, scope: Scope, receive: Receive) -> Response:
        path: str = scope["path"]
        method: str = scope["method"]
        if path in self._post:
            if method != "POST":
                raise _Reply(
                    405, "method_not_allowed", f"{path} takes POST", ((b"allow", b"POST"),)
                )
            return await self._add(self._post[path], await self._body(receive))
        handler = self._get.get(path)
        if handler is None and not path.startswith(("/tile/", "/issuer/")):
            raise _Reply(404, "not_found", f"no such endpoint: {path}")
        if method != "GET":
            raise _Reply(405, "method_not_allowed", f"{path} takes GET", ((b"allow", b"GET"),))
        if handler is not None:
            return await handler(self._query(scope))
        return await self._static(path[1:])

    # --- input ---------------------------------------------------------------------

    async def _body(self, receive: Receive) -> bytes:
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Reply(400, "disconnected", "client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise _Reply(413, "body_too_large", f"request body is larger than {MAX_BODY} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    def _query(scope: Scope) -> dict[str, str]:
        raw = scope.get("query_string", b"")
        try:
            parsed = parse_qs(raw.decode("ascii"), keep_blank_values=True, strict_parsing=bool(raw))
        except (UnicodeDecodeError, ValueError):
            raise _Reply(400, "bad_query", "the query string is malformed") from None
        out = {}
        for key, values in parsed.items():
            if len(values) != 1:
                raise _Reply(400, "bad_query", f"parameter {key} is given {len(values)} times")
            out[key] = values[0]
        return out

    @staticmethod
    def _int(q: dict[str, str], name: str) -> int:
        if name not in q:
            raise _Reply(400, "missing_parameter", f"missing parameter {name}")
        v = q[name]
        # Plain decimal only: no sign, spaces, underscores or exponent.
        if not v.isascii() or not v.isdigit() or len(v) > 19:
            raise _Reply(400, "bad_parameter", f"{name} must be a non-negative decimal integer")
        n = int(v)
        if n > MAX_INT:
            raise _Reply(400, "bad_parameter", f"{name} is out of range")
        return n

    # --- RFC 6962 section 4 -----------------------------------------------------------

    async def _add(self, precert: bool, body: bytes) -> Response:
        try:
            doc = json.loads(body)
        except ValueError:  # UnicodeDecodeError included
            raise _Reply(400, "bad_json", "the body is not JSON") from None
        except RecursionError:
            raise _Reply(400, "bad_json", "the body's JSON is nested too deeply") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("chain"), list):
            raise _Reply(400, "bad_json", 'the body must be {"chain": [base64 certificates]}')
        ders = []
        for i, item in enumerate(doc["chain"]):
            if not isinstance(item, str):
                raise _Reply(400, "bad_base64", f"chain[{i}] is not a string")
            try:
                ders.append(base64.b64decode(item, validate=True))
            except (binascii.Error, ValueError):
                raise _Reply(400, "bad_base64", f"chain[{i}] is not valid base64") from None
        try:
            sct = await self.log.add_chain(ders, precert=precert)
        except SubmissionError as exc:
            raise _Reply(400, exc.code, str(exc)) from None
        except PoolFull:
            raise _Reply(
                503,
                "pool_full",
                "the sequencing pool is full; retry shortly",
                ((b"retry-after", b"1"),),
            ) from None
        except LogUnavailable as exc:
            raise _Reply(503, "unavailable", str(exc), ((b"retry-after", b"5"),)) from None
        except LogRequestError as exc:
            raise _Reply(exc.status, exc.code, str(exc)) from None
        return _json(sct.to_json())

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except LogRequestError as exc:
            raise _Reply(exc.status, exc.code, str(exc)) from None

    async def _get_sth(self, q: dict[str, str]) -> Response:
        size, timestamp, root, sig = self.log.sth()
        return _json(
            {
                "tree_size": size,
                "timestamp": timestamp,
                "sha256_root_hash": _b64(root),
                "tree_head_signature": _b64(sig.encode()),
            }
        )

    async def _get_sth_consistency(self, q: dict[str, str]) -> Response:
        first, second = self._int(q, "first"), self._int(q, "second")
        proof = self._call(lambda: self.log.consistency(first, second))
        return _json({"consistency": [_b64(h) for h in proof]})

    async def _get_proof_by_hash(self, q: dict[str, str]) -> Response:
        if "hash" not in q:
            raise _Reply(400, "missing_parameter", "missing parameter hash")
        # A '+' that was not percent-encoded arrives as a space.
        text = q["hash"].replace(" ", "+")
        try:
            leaf_hash = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise _Reply(400, "bad_hash", "hash is not valid base64") from None
        tree_size = self._int(q, "tree_size")
        index, proof = self._call(lambda: self.log.proof_by_hash(leaf_hash, tree_size))
        return _json({"leaf_index": index, "audit_path": [_b64(h) for h in proof]})

    async def _get_entries(self, q: dict[str, str]) -> Response:
        start, end = self._int(q, "start"), self._int(q, "end")
        self._call(lambda: self.log.entry_range(start, end))
        try:
            entries = await self.log.entries(start, end)
        except LogRequestError as exc:
            raise _Reply(exc.status, exc.code, str(exc)) from None
        return _json(
            {"entries": [{"leaf_input": _b64(li), "extra_data": _b64(ed)} for li, ed in entries]}
        )

    async def _get_roots(self, q: dict[str, str]) -> Response:
        return _json({"certificates": [_b64(d) for d in self.log.roots()]})

    async def _get_entry_and_proof(self, q: dict[str, str]) -> Response:
        index, tree_size = self._int(q, "leaf_index"), self._int(q, "tree_size")
        try:
            leaf_input, extra, proof = await self.log.entry_and_proof(index, tree_size)
        except LogRequestError as exc:
            raise _Reply(exc.status, exc.code, str(exc)) from None
        return _json(
            {
                "leaf_input": _b64(leaf_input),
                "extra_data": _b64(extra),
                "audit_path": [_b64(h) for h in proof],
            }
        )

    # --- static-ct-api ----------------------------------------------------------------

    async def _checkpoint(self, q: dict[str, str]) -> Response:
        # Mutable: static-ct-api asks that it is not cached beyond a few seconds.
        return (
            200,
            b"text/plain; charset=utf-8",
            self.log.checkpoint(),
            ((b"cache-control", b"no-cache"),),
        )

    async def _static(self, path: str) -> Response:
        data = await self.log.static(path)
        if data is None:
            raise _Reply(404, "not_found", f"/{path} is not published")
        ctype = (
            b"application/pkix-cert" if path.startswith("issuer/") else b"application/octet-stream"
        )
        return 200, ctype, data, ((b"cache-control", _IMMUTABLE),)

    async def _metrics(self, q: dict[str, str]) -> Response:
        m = self.log.metrics
        lines = [
            ("ct_tree_size", "gauge", "Leaves in the published tree", self.log.size),
            (
                "ct_pool_pending",
                "gauge",
                "Submissions waiting for a round",
                self.log.pool_pending(),
            ),
            ("ct_submissions_total", "counter", "Accepted submissions", m.submissions),
            (
                "ct_duplicate_submissions_total",
                "counter",
                "Submissions already logged",
                m.duplicates,
            ),
            ("ct_rejected_submissions_total", "counter", "Chains refused", m.rejected),
            ("ct_pool_full_total", "counter", "Submissions refused with 503", m.pool_full),
            ("ct_rounds_total", "counter", "Sequencing rounds published", m.rounds),
            ("ct_sequenced_entries_total", "counter", "Entries sequenced", m.entries),
            ("ct_round_seconds_total", "counter", "Time spent publishing rounds", m.round_seconds),
        ]
        text = "".join(
            f"# HELP {name} {help_}\n# TYPE {name} {kind}\n{name} {value}\n"
            for name, kind, help_, value in lines
        )
        return 200, b"text/plain; version=0.0.4", text.encode(), ()
