"""`trustchain node run`: one validator process.

The daemon runs the authenticated peer mesh, the consensus core over it
(`trustchain.node.consensus_driver`, SQLite state in the data directory),
the local operations endpoint when ``client_listen`` is set, and a heartbeat:
every second it sends each peer a ``ping``, answers every ``ping`` with a
``pong`` and logs the round-trip time.  The CA, CT and DNS services attach
to the same mesh and consensus as they land.

Under systemd (Type=notify) it reports READY=1 once it follows the live
chain, STATUS= lines, WATCHDOG=1 while its consensus loop turns, and
STOPPING=1 on shutdown (trustchain.node.sdnotify).

SIGTERM and SIGINT cancel the whole task tree: every connection and socket
is closed before the process exits with status 0.
"""

from __future__ import annotations

import signal
import time

import trio

from trustchain.consensus.core import Config
from trustchain.node import identity
from trustchain.node.config import NodeConfig, load_genesis
from trustchain.node.consensus_driver import ConsensusDriver, serve_clients
from trustchain.node.errors import UserError
from trustchain.node.log import EventLogger, get_logger
from trustchain.node.peer import PeerNetwork
from trustchain.node.sdnotify import Notifier

HEARTBEAT_INTERVAL = 1.0
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
    network: PeerNetwork, consensus: ConsensusDriver, log: EventLogger
) -> None:
    async for peer, message in network:
        kind = message.get("type")
        if kind == "consensus":
            consensus.deliver(peer, message.get("c"))
        elif kind == "ping":
            reply = {"type": "pong", "seq": message.get("seq"), "echo": message.get("sent")}
            network.send(peer, reply)
        elif kind == "pong":
            sent = message.get("echo")
            rtt = (trio.current_time() - sent) * 1000 if isinstance(sent, float) else None
            log.info(
                "mesh.pong",
                peer=peer,
                seq=message.get("seq"),
                rtt_ms=None if rtt is None else round(rtt, 3),
            )
        else:
            log.warning("mesh.unknown_message", peer=peer, type=str(kind))


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
    log.info("node.ready", peers=sorted(network.connected_peers()), height=core.committed_height)
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


async def run(config: NodeConfig) -> None:
    me = identity.load(config.name, config.consensus_key, config.tls_certificate)
    check_membership(config, me)
    genesis = load_genesis(config.genesis)
    log = get_logger("node", node=config.name)
    notifier = Notifier()
    network = PeerNetwork(me, genesis, config.listen, config.peer)
    settings = config.consensus
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
        ),
        get_logger("consensus", node=config.name),
    )
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(network.run)
            log.info("node.started", listen=str(config.listen), validators=len(genesis.validators))
            nursery.start_soon(_serve_messages, network, consensus, log)
            await nursery.start(consensus.run)
            if config.client_listen is not None:
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


def main(config: NodeConfig) -> int:
    trio.run(run, config)
    return 0
