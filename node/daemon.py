"""`trustchain node run`: one validator process.

The daemon runs the authenticated peer mesh, the consensus core over it
(`trustchain.node.consensus_driver`, SQLite state in the data directory),
the local operations endpoint when ``client_listen`` is set, and a heartbeat:
every second it sends each peer a ``ping``, answers every ``ping`` with a
``pong`` and logs the round-trip time.

With ``hsm`` set in node.toml the node is a full validator: the replicated
state machine (`trustchain.node.state`) is consensus's application, and
`trustchain.node.app` adds the CA (precertificates, SCTs with votes, final
certificates), the replicated CT log served with the status API on
``ct_listen`` (6962), and the DoQ server of a ``[dns]`` table (8853).  Without
it, the replicated state is a hash chain of operations (consensus only).

Under systemd (Type=notify) it reports READY=1 once it follows the live
chain, STATUS= lines, WATCHDOG=1 while its consensus loop turns, and
STOPPING=1 on shutdown (trustchain.node.sdnotify).

SIGTERM and SIGINT cancel the whole task tree: every connection and socket
is closed before the process exits with status 0.
"""

from __future__ import annotations

import gc
import math
import os
import signal
import socket
import sqlite3
import ssl
import time
from functools import partial
from typing import Any, cast

import trio

from trustchain.consensus.core import Config, Core
from trustchain.consensus.messages import Block
from trustchain.ct.store import StoreCorrupt, StoreLocked
from trustchain.node import identity
from trustchain.node.config import Address, ConfigError, Genesis, NodeConfig, load_genesis
from trustchain.node.consensus_driver import ConsensusDriver, serve_clients, validator_set
from trustchain.node.epoch import Epoch, check_epoch_state, load_epoch
from trustchain.node.errors import ListenError, UserError
from trustchain.node.log import EventLogger, get_logger
from trustchain.node.peer import PeerNetwork
from trustchain.node.quic import ipv6_addr
from trustchain.node.sdnotify import Notifier

HEARTBEAT_INTERVAL = 1.0
GC_THRESHOLDS = (20_000, 50, 100)
"""Python's cycle collector, set for a node process (`main`).  A node's objects die by
reference counting (the collections of a 45-second issuance bench found 0 to 96 cyclic
objects each), so CPython's default (700, 10, 10) ran about 180 collections per node
per bench for nothing, and one full collection mid-run stopped the event loop for 65 to
160 ms.  With these, and the startup heap frozen once the node is ready, the bench saw
5 young collections and no full one after startup; cycles are still collected."""
STATUS_INTERVAL = 5.0
HEALTHY_WITHIN = 30.0
"""The consensus loop must have turned within this many seconds for WATCHDOG=1."""


def check_membership(config: NodeConfig, me: identity.Identity) -> None:
    """The node must be in genesis, under its own key and listen address."""
    genesis = load_genesis(config.genesis)
    try:
        entry = genesis.validator(config.name)
    except KeyError:
        raise UserError(
            f"{config.path}: node '{config.name}' is not a validator in {config.genesis}; "
            "add the entry `trustchain node init` printed"
        ) from None
    if entry.public_key != me.public_key_raw:
        raise UserError(
            f"{config.genesis}: the public key of '{config.name}' is not this node's key "
            f"({config.consensus_key})"
        )
    if entry.address != config.listen:
        raise UserError(
            f"{config.genesis}: '{config.name}' is listed at {entry.address} but "
            f"{config.path} listens on {config.listen}"
        )


async def _heartbeat(network: PeerNetwork, log: EventLogger) -> None:
    seq = 0
    while True:
        seq += 1
        network.broadcast({"type": "ping", "seq": seq, "sent": trio.current_time()})
        await trio.sleep(HEARTBEAT_INTERVAL)


async def _serve_messages(
    network: PeerNetwork, consensus: ConsensusDriver, log: EventLogger, app: Any = None
) -> None:
    async for peer, message in network:
        kind = message.get("type")
        if kind == "consensus":
            consensus.deliver(peer, message.get("c"))
        elif kind in ("sct", "cosig") and app is not None:
            app.deliver(peer, message)
        elif kind == "ping":
            reply = {"type": "pong", "seq": message.get("seq"), "echo": message.get("sent")}
            network.send(peer, reply)
        elif kind == "pong":
            sent = message.get("echo")
            rtt = None
            if isinstance(sent, float) and math.isfinite(sent):  # else not JSON in the log
                rtt = (trio.current_time() - sent) * 1000
            seq = message.get("seq")
            log.info(
                "mesh.pong",
                peer=peer,
                seq=seq if isinstance(seq, int) else None,
                rtt_ms=None if rtt is None else round(rtt, 3),
            )
        else:
            # The peer chose the type: a bounded repr of it, not a megabyte log line.
            log.warning("mesh.unknown_message", peer=peer, type=repr(kind)[:80])


async def _readiness(
    network: PeerNetwork, consensus: ConsensusDriver, notifier: Notifier, log: EventLogger
) -> None:
    """READY=1 once the node follows the live chain; then STATUS lines and watchdog pings.

    Following the live chain means: links to peers that, with us, hold more than
    2/3 of the power, and a quorum certificate newer than any we had at start.
    """
    core = consensus.core
    start_round = core.high_qc.round
    while True:
        connected = network.connected_peers() | {consensus.name}
        if core.validators.is_quorum(core.validators.power_of(connected)) and (
            core.high_qc.round > start_round
        ):
            break
        await trio.sleep(0.05)
    # What startup built (genesis, keys, the recovered state) lives as long as the node:
    # moved out of the collector's generations, a full collection never walks it again.
    gc.collect()
    gc.freeze()
    log.info(
        "node.ready", peers=sorted(network.connected_peers()), height=core.committed_height,
        gc_frozen=gc.get_freeze_count(),
    )  # fmt: skip
    notifier.ready(_status(network, consensus))
    interval = notifier.watchdog_interval or STATUS_INTERVAL
    while True:
        await trio.sleep(min(interval, STATUS_INTERVAL))
        notifier.status(_status(network, consensus))
        # The health check behind the watchdog: the consensus loop is turning.
        if notifier.watchdog_interval and time.monotonic() - consensus.last_loop < HEALTHY_WITHIN:
            notifier.watchdog()


def _status(network: PeerNetwork, consensus: ConsensusDriver) -> str:
    peers = len(network.connected_peers())
    return (
        f"height {consensus.core.committed_height}, round {consensus.core.round}, "
        f"{peers}/{len(network.peers)} peers"
    )


def _check_files(config: NodeConfig) -> None:
    """The data folder and the TLS files the HTTPS servers load, checked before anything
    starts: a mistake is a ConfigError naming the key, not a traceback from inside a
    server's nursery once the node runs."""
    if config.data_dir.exists() and not config.data_dir.is_dir():
        raise ConfigError(f"{config.path}: data_dir {config.data_dir}: not a folder")
    if config.ct_listen is None and config.api_listen is None:
        return
    cert, key = config.server_tls_cert, config.server_tls_key
    if cert is None or key is None:
        raise ConfigError(
            f"{config.path}: ct_listen and api_listen need server_tls_cert and server_tls_key"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except OSError as exc:
        raise ConfigError(
            f"{config.path}: server_tls_cert {cert} with server_tls_key {key}: "
            f"{_tls_problem(exc)}; give a PEM certificate chain and its PEM private key"
        ) from None
    if config.api_listen is not None:
        if config.api_client_ca is None:
            raise ConfigError(
                f"{config.path}: api_listen needs api_client_ca (the TrustChain root, PEM)"
            )
        try:
            context.load_verify_locations(config.api_client_ca)
        except OSError as exc:
            raise ConfigError(
                f"{config.path}: api_client_ca {config.api_client_ca}: {_tls_problem(exc)}; "
                "give the TrustChain root certificate (PEM)"
            ) from None


def _tls_problem(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        if exc.reason == "KEY_VALUES_MISMATCH":
            return "the key is not the certificate's"
        return f"not usable ({exc.reason or exc})"
    return exc.strerror or str(exc)


async def run(config: NodeConfig) -> None:
    _check_files(config)
    me = identity.load(config.name, config.consensus_key, config.tls_certificate)
    check_membership(config, me)
    genesis = load_genesis(config.genesis)
    log = get_logger("node", node=config.name)
    notifier = Notifier()
    network = PeerNetwork(me, genesis, config.listen, config.peer)
    settings = config.consensus
    epoch = load_epoch(config.data_dir, genesis.chain_id)
    if epoch is not None:
        log.info("node.epoch", chain=epoch.chain_id, anchor_height=epoch.anchor.height)
    state = None
    if config.hsm is not None:
        from trustchain.node.ca.genesis import load_ca_genesis
        from trustchain.node.state import AppCore, ReplicatedState

        state = ReplicatedState(
            genesis,
            load_ca_genesis(config.genesis),
            validator_set(genesis, epoch.chain_id if epoch else None),
            accept_invalid="accept-invalid" in _byzantine(),
        )
    consensus = ConsensusDriver(
        config.name,
        me.key,
        genesis,
        network,
        config.data_dir,
        Config(
            round_timeout=settings.round_timeout,
            max_batch=settings.max_batch,
            min_block_interval=settings.min_block_interval,
            keep_committed=settings.keep_committed,
        ),
        get_logger("consensus", node=config.name),
        app=state,
        core_class=Core if state is None else AppCore,
        epoch=epoch,
        rejoin=None if state is None else _last_applied(config),
    )
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            app = None
            if state is not None:
                app = await _open_app(config, genesis, state, network, consensus, nursery, epoch)
            await nursery.start(network.run)
            log.info("node.started", listen=str(config.listen), validators=len(genesis.validators))
            nursery.start_soon(_serve_messages, network, consensus, log, app)
            await nursery.start(consensus.run)
            if config.client_listen is not None:
                _check_tcp_port("client_listen", config.client_listen)
                port = await nursery.start(serve_clients, config.client_listen, consensus, log)
                log.info("clients.listening", address=f"[::1]:{port}")
            nursery.start_soon(_heartbeat, network, log)
            nursery.start_soon(_readiness, network, consensus, notifier, log)
            async for signum in signals:
                log.info("node.stopping", signal=signal.Signals(signum).name)
                notifier.stopping()
                nursery.cancel_scope.cancel()
                break
    log.info("node.stopped")


def _last_applied(config: NodeConfig) -> Block | None:
    """The last block in state.db, if its id is known (rows written before ids were
    kept are not a place to rejoin at)."""
    from trustchain.node.app import AppliedStore

    path = config.data_dir / "state.db"
    if not path.exists():
        return None
    store = AppliedStore(path)
    try:
        last = store.last()
    finally:
        store.close()
    return last if last is not None and last.id else None


def _byzantine() -> frozenset[str]:
    """Test-only misbehaviour of this process (trustchain.node.app.BYZANTINE_ENV)."""
    text = os.environ.get("TRUSTCHAIN_TEST_BYZANTINE", "")
    return frozenset(part.strip() for part in text.split(",") if part.strip())


def _send(network: PeerNetwork, to: str | None, message: dict[str, Any]) -> None:
    if to is None:
        network.broadcast(message)
    else:
        network.send(to, message)


async def _open_app(
    config: NodeConfig,
    genesis: Genesis,
    state: Any,
    network: PeerNetwork,
    consensus: ConsensusDriver,
    nursery: trio.Nursery,
    epoch: Epoch | None,
) -> Any:
    """Open the HSM keys, the CT store and the DNS zone; recover; start the services."""
    from hypercorn.trio import serve

    from trustchain.ct.server import hypercorn_config
    from trustchain.dns.authority import Authority
    from trustchain.dns.zones import ZoneError, default_zone, load_zone_file
    from trustchain.node import doq
    from trustchain.node.app import NodeApp, PublicApp, ReplicatedLog
    from trustchain.node.ca import hsm
    from trustchain.node.ca.ceremony import load_hsm_config, open_issuer
    from trustchain.node.state import AppCore

    assert config.hsm is not None
    log = get_logger("app", node=config.name)
    if _byzantine():
        log.warning("node.byzantine_test_mode", modes=sorted(_byzantine()))
    hsm_config = load_hsm_config(config.hsm)
    issuer = await open_issuer(hsm_config)
    log_signer = await hsm.Pkcs11Signer.open(hsm_config.settings, hsm_config.label("ct_log"))
    origin = f"{genesis.chain_id}.ct.trustchain"
    ctlog = await ReplicatedLog.open_replicated(
        config.data_dir / "ct", log_signer, origin, state.ca.checkpoint_voters(origin)
    )
    authority = None
    dns_section = None
    if config.dns is not None:
        dns_section = doq.parse_dns_section(str(config.path), config.dns, config.path.parent)
        try:
            zones = [default_zone(dns_section.zone)]
            zones += [load_zone_file(p) for p in dns_section.zone_files]
        except ZoneError as exc:
            raise ConfigError(f"{config.path}: [dns]: {exc}") from None
        authority = Authority(zones)
    core = consensus.core
    assert isinstance(core, AppCore)
    core.equivocate = "equivocate" in _byzantine()
    app = NodeApp(
        config.name,
        state,
        state.ca,
        config.data_dir,
        issuer=issuer,
        log_signer=log_signer,
        ctlog=ctlog,
        authority=authority,
        send=partial(_send, network),
        submit=consensus.submit,
        log=log,
        validity_days=config.validity_days,
        byzantine=_byzantine(),
    )

    def find_block(s: bytes, ops: tuple[bytes, ...]) -> Any:
        return next((b for b in core.blocks.values() if b.state == s and b.payload == ops), None)

    state.find_block = find_block
    await app.recover(core.blocks, core.committed_id)
    if epoch is not None:
        check_epoch_state(epoch, state.height, state.edge.commitment(), config.data_dir)
    core.on_vote = app.on_vote
    consensus.on_committed = app.on_committed
    consensus.on_evidence = app.on_evidence
    await nursery.start(app.run)
    if config.archive is not None:
        from trustchain.node.archive import Archiver, parse_archive_section

        archive = parse_archive_section(str(config.path), config.archive, config.path.parent)
        archiver = Archiver(
            archive, config.data_dir, lambda: ctlog.cosigned, log,
            anchor=epoch.anchor if epoch else None, signer=(config.name, core.key),
        )  # fmt: skip
        await nursery.start(archiver.run)
        app.issue = archiver.durable(app.issue)  # type: ignore[method-assign]
        app.archiver = archiver
        app.on_snapshot, app.snapshot_every = archiver.snapshot, archive.snapshot_every
        app.epoch = epoch.anchor if epoch else None
    reporter = None
    if config.cloudwatch is not None:
        from trustchain.node.cloudwatch import Reporter, parse_cloudwatch_section

        settings = parse_cloudwatch_section(str(config.path), config.cloudwatch, config.path.parent)
        reporter = Reporter(settings, log, archiver=app.archiver)
        await nursery.start(reporter.run)
    if config.ct_listen is not None:
        # Both checked by _check_files.
        assert config.server_tls_cert is not None and config.server_tls_key is not None
        hc = hypercorn_config(
            config.ct_listen.host, config.ct_listen.port, config.server_tls_cert,
            config.server_tls_key,
        )  # fmt: skip
        _check_tcp_port("ct_listen", config.ct_listen)
        binds = await nursery.start(partial(serve, cast(Any, PublicApp(app)), hc))
        log.info("ct.listening", urls=binds)
    if config.api_listen is not None:
        from trustchain.node.api import serve_api

        assert config.server_tls_cert is not None and config.server_tls_key is not None
        assert config.api_client_ca is not None  # all three checked by _check_files
        _check_tcp_port("api_listen", config.api_listen)
        await nursery.start(
            partial(
                serve_api, app, config.api_listen, tls_cert=config.server_tls_cert,
                tls_key=config.server_tls_key, client_ca=config.api_client_ca,
                allow=config.api_allow, rate_limit=config.api_rate_limit,
                log=get_logger("api", node=config.name), reporter=reporter,
            )
        )  # fmt: skip
    if dns_section is not None and authority is not None:
        if config.server_tls_cert is None or config.server_tls_key is None:
            raise ConfigError(f"{config.path}: [dns] needs server_tls_cert and server_tls_key")
        server = doq.DoqServer(
            authority,
            doq.server_configuration(
                config.server_tls_cert, config.server_tls_key, dns_section.settings
            ),
            dns_section.settings,
            log=get_logger("dns", node=config.name),
        )
        await nursery.start(server.serve, dns_section.listen)
    return app


def _check_tcp_port(key: str, address: Address) -> None:
    """A port that another process holds is the operator's to fix: say which, before the
    server tries it (and ends the node with a traceback)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as trio's listeners do
        try:
            sock.bind(ipv6_addr(address))
        except OSError as exc:
            raise ListenError(key, address, exc) from None


def main(config: NodeConfig) -> int:
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        trio.run(run, config)
    except _DATA_ERRORS as exc:
        raise _data_error(config, exc) from None
    except BaseExceptionGroup as group:
        # A configuration mistake found while the services start (an [archive] or
        # [dns] table, say) arrives wrapped by the nurseries: report it as itself.
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        if isinstance(first, _DATA_ERRORS):
            raise _data_error(config, first) from None
        mistakes, rest = group.split(UserError)
        if mistakes is None or rest is not None:
            raise
        first = mistakes
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return 0


_DATA_ERRORS = (StoreLocked, StoreCorrupt, sqlite3.DatabaseError)
"""A data folder the node cannot start from: said in one line, with what to do."""


def _data_error(config: NodeConfig, exc: Exception) -> UserError:
    """What to do about a data folder the node cannot start from."""
    data = config.data_dir
    if isinstance(exc, StoreLocked):
        return UserError(f"{exc}: another `trustchain node run` uses {data}; stop it first")
    if isinstance(exc, StoreCorrupt):
        return UserError(
            f"{data / 'ct'}: {exc}. Move the ct folder away and start again: the node rebuilds "
            "its CT store from its state (state.db)"
        )
    return UserError(
        f"a database in {data} is damaged ({exc}): move state.db away to rebuild the state "
        "from consensus.db, or consensus.db away to rejoin the cluster from its peers "
        "(never put back an old copy of consensus.db: it would contradict what it signed)"
    )
