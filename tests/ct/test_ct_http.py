"""The HTTPS API on ::1: RFC 6962 v1, static-ct-api reads, and refusals."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import hypercorn.protocol
import pytest
import trio
from ct_testlib import ORIGIN, TLSFiles, connect, new_signer, tls_files
from hypercorn.protocol.h2 import H2Protocol

from trustchain.ct import devcerts, merkle, precert, sct, tiles
from trustchain.ct.chain import ChainValidator
from trustchain.ct.checkpoint import RFC6962NoteVerifier, open_checkpoint
from trustchain.ct.client import CTClient, HTTPSConnection, client_context
from trustchain.ct.sct import EntryType, LogEntry
from trustchain.ct.server import hypercorn_config, serve_log
from trustchain.ct.service import CTLog, LogParams
from trustchain.ct.signer import SoftwareSigner


@dataclass
class Env:
    log: CTLog
    port: int
    tls: TLSFiles
    signer: SoftwareSigner
    root: devcerts.Issued
    ca: devcerts.Issued

    def client(self) -> CTClient:
        return connect(self.port, self.tls, self.signer)


@pytest.fixture(scope="module")
def pki() -> tuple[devcerts.Issued, devcerts.Issued]:
    root = devcerts.make_root()
    return root, devcerts.make_intermediate(root)


async def _start(
    tmp_path: Path,
    pki: tuple[devcerts.Issued, devcerts.Issued],
    params: LogParams,
    nursery: trio.Nursery,
) -> Env:
    root, ca = pki
    signer = new_signer()
    tls = tls_files(tmp_path)
    log = await CTLog.open(tmp_path / "data", signer, ORIGIN, ChainValidator([root.cert]), params)
    config = hypercorn_config("::1", 0, tls.cert, tls.key)
    binds = await nursery.start(serve_log, log, config)
    port = int(binds[0].rsplit(":", 1)[1])
    return Env(log, port, tls, signer, root, ca)


@pytest.fixture
async def env(tmp_path: Path, pki: tuple[devcerts.Issued, devcerts.Issued]) -> AsyncIterator[Env]:
    async with trio.open_nursery() as nursery:
        e = await _start(tmp_path, pki, LogParams(interval=0.01), nursery)
        yield e
        # Stop serving and sequencing before the store is closed.
        nursery.cancel_scope.cancel()
    e.log.close()


async def test_add_chain_then_audit_like_a_monitor(env: Env) -> None:
    c = env.client()
    leaves = [devcerts.make_leaf(env.ca, f"h{i}.example") for i in range(5)]
    scts = []
    for leaf in leaves:
        s = await c.add_chain([leaf.der, env.ca.der])
        sct.verify_sct(s, LogEntry(EntryType.X509, leaf.der), env.signer.public_key())
        scts.append(s)
    # No merge delay: the SCT's leaf index is already in the published tree.
    size, ts, root = await c.get_sth()
    assert size == 5 and ts >= max(s.timestamp for s in scts)
    assert sorted(sct.leaf_index_of(s.extensions) or 0 for s in scts) == [0, 1, 2, 3, 4]

    # Entries carry the chain up to the root, which the log appended.
    entries = await c.entries(0, 100)
    assert len(entries) == 5
    for s, leaf in zip(scts, leaves, strict=True):
        index = sct.leaf_index_of(s.extensions)
        assert index is not None
        leaf_input, extra = entries[index]
        te = sct.parse_merkle_tree_leaf(leaf_input)
        assert te.entry.certificate == leaf.der and te.timestamp == s.timestamp
        assert extra == _chain_field([env.ca.der, env.root.der])
        assert await c.verify_included(leaf_input, size, root) == index

    # The checkpoint and the tiles reproduce the same tree without the RFC 6962 API.
    cp_size, cp_root = await c.get_checkpoint(ORIGIN)
    assert (cp_size, cp_root) == (size, root)
    r = await c.conn.request("GET", "/tile/0/000.p/5")
    assert r.status == 200 and r.headers["content-type"] == "application/octet-stream"
    assert merkle.root_of(tiles.split_hashes(r.body, 5)) == root
    data = await c.conn.request("GET", "/tile/data/000.p/5")
    leaves_back = tiles.parse_data_tile(data.body, 5)
    assert [leaf.merkle_leaf() for leaf in leaves_back] == [e[0] for e in entries]
    fp = leaves_back[0].chain[1].hex()
    issuer = await c.conn.request("GET", f"/issuer/{fp}")
    assert issuer.status == 200 and issuer.body == env.root.der
    assert issuer.headers["content-type"] == "application/pkix-cert"

    # Consistency between published sizes, and the roots endpoint.
    more = devcerts.make_leaf(env.ca, "later.example")
    await c.add_chain([more.der, env.ca.der, env.root.der])
    size2, _, root2 = await c.get_sth()
    merkle.verify_consistency(size, size2, root, root2, await c.consistency(size, size2))
    roots = (await c.conn.request("GET", "/ct/v1/get-roots")).json()
    assert roots == {"certificates": [base64.b64encode(env.root.der).decode()]}
    ep = (
        await c.conn.request("GET", f"/ct/v1/get-entry-and-proof?leaf_index=2&tree_size={size2}")
    ).json()
    li = base64.b64decode(ep["leaf_input"])
    proof = [base64.b64decode(h) for h in ep["audit_path"]]
    merkle.verify_inclusion(2, size2, merkle.leaf_hash(li), proof, root2)
    # Resubmitting gives an SCT for the same entry and no new leaf.
    again = await c.add_chain([leaves[0].der, env.ca.der])
    assert again.extensions == scts[0].extensions and (await c.get_sth())[0] == size2
    await c.conn.aclose()


def _chain_field(ders: list[bytes]) -> bytes:
    body = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
    return len(body).to_bytes(3, "big") + body


async def test_add_pre_chain_direct_and_via_precert_signer(env: Env) -> None:
    c = env.client()
    pre = devcerts.make_leaf(env.ca, "pre.example", precert=True)
    s = await c.add_chain([pre.der, env.ca.der], precert=True)
    entry = precert.precert_entry([pre.der, env.ca.der], psc=False)
    sct.verify_sct(s, entry, env.signer.public_key())
    psc = devcerts.make_intermediate(env.ca, "Precert Signer", precert_signing=True)
    pre2 = devcerts.make_leaf(psc, "pre2.example", precert=True)
    s2 = await c.add_chain([pre2.der, psc.der, env.ca.der], precert=True)
    entry2 = precert.precert_entry([pre2.der, psc.der, env.ca.der, env.root.der], psc=True)
    assert entry2.issuer_key_hash == precert.issuer_key_hash(env.ca.der)
    sct.verify_sct(s2, entry2, env.signer.public_key())
    ((li, extra),) = await c.entries(
        sct.leaf_index_of(s2.extensions) or 0, sct.leaf_index_of(s2.extensions) or 0
    )
    # extra_data is a PrecertChainEntry: the precertificate, then its chain.
    assert extra.startswith(len(pre2.der).to_bytes(3, "big") + pre2.der)
    assert sct.parse_merkle_tree_leaf(li).entry == entry2
    await c.conn.aclose()


async def _expect(
    c: CTClient, method: str, target: str, status: int, code: str, body: bytes | None = None
) -> dict[str, str]:
    r = await c.conn.request(method, target, body)
    assert r.status == status, (target, r.status, r.body)
    doc = r.json()
    assert doc["error"] == code, (target, doc)
    assert doc["message"]
    return r.headers


async def test_bad_input_gets_4xx_json_and_the_log_keeps_working(env: Env) -> None:
    c = env.client()
    leaf = devcerts.make_leaf(env.ca, "ok.example")
    await c.add_chain([leaf.der, env.ca.der])
    other_root = devcerts.make_root("Someone Else")
    stranger = devcerts.make_leaf(other_root, "x.example")
    expired = devcerts.make_leaf(
        env.ca,
        "old.example",
        not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2020, 2, 1, tzinfo=dt.UTC),
    )
    pre = devcerts.make_leaf(env.ca, "p.example", precert=True)

    def chain(*ders: bytes) -> bytes:
        return json.dumps({"chain": [base64.b64encode(d).decode() for d in ders]}).encode()

    add = "/ct/v1/add-chain"
    cases = [
        ("POST", add, b"{not json", 400, "bad_json"),
        ("POST", add, b"[1,2]", 400, "bad_json"),
        ("POST", add, b"[" * 100_000, 400, "bad_json"),
        ("POST", add, b'{"chain": "abc"}', 400, "bad_json"),
        ("POST", add, b'{"chain": ["%%%"]}', 400, "bad_base64"),
        ("POST", add, b'{"chain": [7]}', 400, "bad_base64"),
        ("POST", add, chain(), 400, "empty_chain"),
        ("POST", add, chain(b"\x30\x03\x02\x01\x01"), 400, "malformed_certificate"),
        ("POST", add, chain(stranger.der, other_root.der), 400, "unknown_root"),
        ("POST", add, chain(leaf.der, other_root.der), 400, "bad_chain"),
        ("POST", add, chain(expired.der, env.ca.der), 400, "expired_certificate"),
        ("POST", add, chain(pre.der, env.ca.der), 400, "precertificate_to_add_chain"),
        ("POST", "/ct/v1/add-pre-chain", chain(leaf.der, env.ca.der), 400, "not_a_precertificate"),
        ("POST", add, chain(*[leaf.der] * 11), 400, "chain_too_long"),
        ("POST", add, b"x" * (300 * 1024), 413, "body_too_large"),
        ("GET", add, None, 405, "method_not_allowed"),
        ("POST", "/ct/v1/get-sth", b"", 405, "method_not_allowed"),
        ("POST", "/nothing", b"x", 404, "not_found"),
        ("DELETE", "/tile/0/000", None, 405, "method_not_allowed"),
        ("GET", "/ct/v1/nope", None, 404, "not_found"),
        ("GET", "/ct/v1/get-entries?start=5&end=2", None, 400, "bad_range"),
        ("GET", "/ct/v1/get-entries?start=99&end=100", None, 400, "bad_range"),
        ("GET", "/ct/v1/get-entries?start=0", None, 400, "missing_parameter"),
        ("GET", "/ct/v1/get-entries?start=-1&end=2", None, 400, "bad_parameter"),
        (
            "GET",
            "/ct/v1/get-entries?start=0&end=99999999999999999999999",
            None,
            400,
            "bad_parameter",
        ),
        ("GET", "/ct/v1/get-entries?start=1e3&end=2", None, 400, "bad_parameter"),
        ("GET", "/ct/v1/get-entries?start=0&start=0&end=1", None, 400, "bad_query"),
        ("GET", "/ct/v1/get-sth-consistency?first=0&second=1", None, 400, "bad_tree_size"),
        ("GET", "/ct/v1/get-sth-consistency?first=1&second=99", None, 400, "bad_tree_size"),
        ("GET", "/ct/v1/get-sth-consistency?first=2&second=1", None, 400, "bad_tree_size"),
        ("GET", "/ct/v1/get-proof-by-hash?hash=AAAA&tree_size=1", None, 400, "bad_hash"),
        ("GET", "/ct/v1/get-proof-by-hash?hash=!!&tree_size=1", None, 400, "bad_hash"),
        (
            "GET",
            "/ct/v1/get-proof-by-hash?hash=" + "A" * 43 + "%3D&tree_size=1",
            None,
            404,
            "not_found",
        ),
        (
            "GET",
            "/ct/v1/get-proof-by-hash?hash=" + "A" * 43 + "%3D&tree_size=0",
            None,
            400,
            "bad_tree_size",
        ),
        ("GET", "/ct/v1/get-entry-and-proof?leaf_index=1&tree_size=1", None, 400, "bad_range"),
        ("GET", "/ct/v1/get-entry-and-proof?leaf_index=0&tree_size=5", None, 400, "bad_tree_size"),
        ("GET", "/tile/0/x000/001", None, 404, "not_found"),
        ("GET", "/tile/0/000.p/2", None, 404, "not_found"),
        ("GET", "/tile/0/000", None, 404, "not_found"),
        ("GET", "/tile/9/000", None, 404, "not_found"),
        ("GET", "/issuer/abc", None, 404, "not_found"),
        ("GET", "/issuer/" + "0" * 64, None, 404, "not_found"),
    ]
    for method, target, body, status, code in cases:
        await _expect(c, method, target, status, code, body)
    # Still alive and consistent.
    size, _, _root = await c.get_sth()
    assert size == 1
    await c.add_chain([devcerts.make_leaf(env.ca, "after.example").der, env.ca.der])
    assert (await c.get_sth())[0] == 2
    await c.conn.aclose()


async def test_full_pool_answers_503_with_retry_after(
    tmp_path: Path, pki: tuple[devcerts.Issued, devcerts.Issued]
) -> None:
    async with trio.open_nursery() as nursery:
        env = await _start(tmp_path, pki, LogParams(pool_limit=1, interval=1.0), nursery)
        await _full_pool(env)
        nursery.cancel_scope.cancel()
    env.log.close()


async def _full_pool(env: Env) -> None:
    await trio.sleep(0.05)  # the start-up round has run; the next is a second away
    first = env.client()
    second = env.client()
    leaf1 = devcerts.make_leaf(env.ca, "one.example")
    leaf2 = devcerts.make_leaf(env.ca, "two.example")
    got: list[sct.SignedCertificateTimestamp] = []

    async def submit_first() -> None:
        got.append(await first.add_chain([leaf1.der, env.ca.der]))

    async with trio.open_nursery() as n:
        n.start_soon(submit_first)
        while env.log.pool_pending() == 0:
            await trio.sleep(0.005)
        body = json.dumps(
            {"chain": [base64.b64encode(d).decode() for d in (leaf2.der, env.ca.der)]}
        )
        headers = await _expect(second, "POST", "/ct/v1/add-chain", 503, "pool_full", body.encode())
        assert headers["retry-after"] == "1"
    assert len(got) == 1
    # After the round, there is room again.
    await second.add_chain([leaf2.der, env.ca.der])
    await first.conn.aclose()
    await second.conn.aclose()


async def test_tls_below_1_3_is_refused(env: Env) -> None:
    ctx = client_context(cadata=env.tls.ca_pem)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    conn = HTTPSConnection("::1", env.port, ctx)
    with pytest.raises((trio.BrokenResourceError, ssl.SSLError)):
        await conn.request("GET", "/ct/v1/get-sth")
    ok = env.client()
    assert (await ok.get_sth())[0] == 0
    await ok.conn.aclose()


async def test_metrics_and_checkpoint_headers(env: Env) -> None:
    c = env.client()
    await c.add_chain([devcerts.make_leaf(env.ca, "m.example").der, env.ca.der])
    r = await c.conn.request("GET", "/metrics")
    assert (
        r.status == 200
        and b"ct_tree_size 1\n" in r.body
        and b"ct_sequenced_entries_total 1\n" in r.body
    )
    cp = await c.conn.request("GET", "/checkpoint")
    assert cp.headers["cache-control"] == "no-cache"
    assert cp.headers["content-type"] == "text/plain; charset=utf-8"
    v = RFC6962NoteVerifier(ORIGIN, env.signer.public_key())
    assert open_checkpoint(cp.body, v)[0].size == 1
    await c.conn.aclose()


async def test_many_clients_with_a_new_issuer_at_once(env: Env) -> None:
    """The first submissions under a new intermediate race to store it: all succeed."""
    ca2 = devcerts.make_intermediate(env.root, "Second Intermediate")
    leaves = [devcerts.make_leaf(ca2, f"race{i}.example") for i in range(24)]
    clients = [env.client() for _ in leaves]
    got: list[sct.SignedCertificateTimestamp] = []

    async def one(c: CTClient, leaf: devcerts.Issued) -> None:
        got.append(await c.add_chain([leaf.der, ca2.der]))

    async with trio.open_nursery() as n:
        for c, leaf in zip(clients, leaves, strict=True):
            n.start_soon(one, c, leaf)
    assert len(got) == 24
    fp = tiles.fingerprint(ca2.der).hex()
    r = await clients[0].conn.request("GET", f"/issuer/{fp}")
    assert r.status == 200 and r.body == ca2.der
    for c in clients:
        await c.conn.aclose()


async def test_damaged_tile_answers_500_and_is_not_served(env: Env, tmp_path: Path) -> None:
    c = env.client()
    for i in range(3):
        await c.add_chain([devcerts.make_leaf(env.ca, f"d{i}.example").der, env.ca.der])
    # The published edge is in memory; damage a full tile the log reads from disk.
    leaves = [devcerts.make_leaf(env.ca, f"e{i}.example").der for i in range(256)]

    async def some(k: int) -> None:
        cc = env.client()
        for leaf in leaves[k::16]:
            await cc.add_chain([leaf, env.ca.der])
        await cc.conn.aclose()

    async with trio.open_nursery() as n:
        for k in range(16):
            n.start_soon(some, k)
    tile = tmp_path / "data" / "tile" / "data" / "000"
    blob = bytearray(tile.read_bytes())
    blob[200] ^= 1
    tile.write_bytes(bytes(blob))
    r = await c.conn.request("GET", "/ct/v1/get-entries?start=0&end=3")
    assert r.status == 500 and r.json()["error"] == "store_corrupt"
    r = await c.conn.request("GET", "/tile/data/000")
    assert r.status == 500
    # Other reads still work.
    assert (await c.get_sth())[0] == 259
    await c.conn.aclose()


async def test_a_monitor_polling_during_load_sees_only_consistent_heads(env: Env) -> None:
    """Every STH a monitor sees while entries stream in is correctly signed, and its
    tree is fully readable and consistent with the previous one."""
    leaves = [devcerts.make_leaf(env.ca, f"poll{i}.example").der for i in range(160)]
    done = trio.Event()
    seen: list[int] = []

    async def submitter(k: int) -> None:
        c = env.client()
        for leaf in leaves[k::16]:
            await c.add_chain([leaf, env.ca.der])
        await c.conn.aclose()

    async def monitor() -> None:
        c = env.client()  # knows the log key: get_sth checks every signature
        prev_size, prev_root = 0, merkle.EMPTY_ROOT
        while not done.is_set():
            size, _, root = await c.get_sth()
            assert size >= prev_size
            if size:
                ((leaf_input, _),) = await c.entries(size - 1, size - 1)
                assert await c.verify_included(leaf_input, size, root) == size - 1
            if prev_size and size > prev_size:
                proof = await c.consistency(prev_size, size)
                merkle.verify_consistency(prev_size, size, prev_root, root, proof)
            seen.append(size)
            prev_size, prev_root = size, root
        await c.conn.aclose()

    async with trio.open_nursery() as n:
        n.start_soon(monitor)
        async with trio.open_nursery() as subs:
            for k in range(16):
                subs.start_soon(submitter, k)
        done.set()
    assert len(set(seen)) > 3 and max(seen) <= 160


async def _h2_body_after_the_answer(port: int, ca_pem: bytes) -> tuple[int, int | None]:
    """POST over HTTP/2 announcing a body past the limit, wait for the answer, then send
    body data on the stream anyway (legal: the stream is only half closed), then ask for
    the STH on the same connection.  The two statuses (None: the connection closed)."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    ctx.set_alpn_protocols(["h2"])
    tcp = await trio.open_tcp_stream("::1", port)
    stream = trio.SSLStream(tcp, ctx, server_hostname="localhost")
    await stream.do_handshake()
    assert stream.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()

    def request(stream_id: int, method: str, path: str, *, end: bool) -> None:
        headers = [(":method", method), (":path", path), (":scheme", "https")]
        headers += [(":authority", f"[::1]:{port}"), ("content-length", str(10 << 20))]
        conn.send_headers(stream_id, headers[:4] if end else headers, end_stream=end)

    async def answer(stream_id: int, *, body_until_answered: bool) -> int | None:
        status = None
        with trio.fail_after(10):
            while True:
                room = min(conn.local_flow_control_window(stream_id), 16000)
                if body_until_answered and room:
                    conn.send_data(stream_id, b"x" * room)  # as fast as flow control allows
                await stream.send_all(conn.data_to_send())
                data = None
                with trio.move_on_after(0.01 if body_until_answered and room else 1.0):
                    try:
                        data = await stream.receive_some()
                    except trio.BrokenResourceError:
                        return None
                if data == b"":
                    return None
                for event in conn.receive_data(data or b""):
                    if isinstance(event, h2.events.ResponseReceived):
                        if event.stream_id == stream_id:
                            status = int(dict(event.headers)[b":status"])
                    elif isinstance(event, h2.events.StreamEnded):
                        if event.stream_id == stream_id:
                            return status

    request(1, "POST", "/ct/v1/add-chain", end=False)
    first = await answer(1, body_until_answered=True)
    second = None
    if first is not None:
        conn.send_data(1, b"x" * 16000)
        conn.send_data(1, b"x" * 16000)
        request(3, "GET", "/ct/v1/get-sth", end=True)
        with contextlib.suppress(trio.BrokenResourceError):
            second = await answer(3, body_until_answered=False)
    with contextlib.suppress(trio.BrokenResourceError):
        await stream.aclose()
    return first, second


async def test_body_data_after_the_answer_is_dropped_and_the_connection_goes_on(env: Env) -> None:
    assert await _h2_body_after_the_answer(env.port, env.tls.ca_pem) == (413, 200)


async def test_a_connection_that_fails_does_not_stop_the_server(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hypercorn's own HTTP/2 protocol raises KeyError on such data: the failure ends
    # that connection only.
    monkeypatch.setattr(hypercorn.protocol, "H2Protocol", H2Protocol)
    for _ in range(3):
        _, second = await _h2_body_after_the_answer(env.port, env.tls.ca_pem)
        assert second is None  # that connection failed
    c = env.client()
    await c.add_chain([devcerts.make_leaf(env.ca, "still.example").der, env.ca.der])
    await c.conn.aclose()
