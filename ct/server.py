"""Serving a log over HTTPS (TLS 1.3 only) with hypercorn's trio worker.

``serve_log`` runs the sequencing loop and the HTTP server in one nursery: if
the sequencer hits a fatal storage error the server stops too, and the process
exits so that its supervisor restarts it from the data directory.
``run_standalone`` is `trustchain ct serve`: one log, one software key.
"""

from __future__ import annotations

import base64
import logging
import signal
import ssl
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

import h2.events
import hypercorn.protocol
import hypercorn.trio.run
import trio
from hypercorn.config import Config
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer

from trustchain.ct._log import Events
from trustchain.ct.api import CTApp
from trustchain.ct.chain import ChainValidator, load_roots
from trustchain.ct.service import CTLog, LogParams
from trustchain.ct.signer import Signer, load_p256_signer, log_id
from trustchain.ct.store import Check

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

DEFAULT_PORT = 6962

_log = logging.getLogger("trustchain.ct.hypercorn")


class _H2Protocol(H2Protocol):
    """hypercorn's HTTP/2 connection, taking body data for a stream it has answered.

    A client may go on sending a request's body after the answer ended the stream
    (the stream is half closed, RFC 9113 section 5.1), e.g. after a 413.  hypercorn
    0.18 looks such data up among its open streams and raises KeyError, which ends
    the connection's task.  The data is dropped; its flow-control credit is given back.
    """

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        for event in events:  # one at a time: an earlier event may open the stream
            if isinstance(event, h2.events.DataReceived) and event.stream_id not in self.streams:
                self.connection.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
                await self._flush()
            else:
                await super()._handle_events([event])


class GuardedTCPServer(TCPServer):
    """hypercorn's trio connection, whose failure ends that connection only.

    Under trio an exception out of one connection's task would cancel the server's
    nursery, and with it every connection and the process serving them.
    """

    async def run(self) -> None:
        try:
            await super().run()  # closes the connection on the way out
        except Exception:
            _log.exception("a connection ended with an error; the server goes on")


setattr(hypercorn.protocol, "H2Protocol", _H2Protocol)  # noqa: B010
setattr(hypercorn.trio.run, "TCPServer", GuardedTCPServer)  # noqa: B010


class _TLS13Config(Config):
    """hypercorn's Config with TLS 1.3 as the minimum version."""

    def create_ssl_context(self) -> ssl.SSLContext | None:
        context: ssl.SSLContext | None = super().create_ssl_context()
        if context is not None:
            # TLS 1.2 and below are refused: the log has no legacy clients to
            # serve, and TLS 1.3 removes the weak key exchanges and ciphers.
            context.minimum_version = ssl.TLSVersion.TLSv1_3
        return context


def hypercorn_config(host: str, port: int, tls_cert: Path, tls_key: Path) -> Config:
    """An HTTPS-only config bound to ``[host]:port`` (IPv6)."""
    config = _TLS13Config()
    config.bind = [f"[{host}]:{port}"]
    config.certfile = str(tls_cert)
    config.keyfile = str(tls_key)
    config.alpn_protocols = ["h2", "http/1.1"]
    config.accesslog = None
    config.errorlog = _log
    config.graceful_timeout = 2.0
    return config


async def serve_log(
    log: CTLog,
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``log`` and its HTTPS API until ``shutdown`` is set (or cancelled).

    ``task_status.started`` receives the bound URLs (useful with port 0).
    """
    stop = shutdown if shutdown is not None else trio.Event()
    async with trio.open_nursery() as nursery:
        # If the sequencer dies (a fatal storage error), this nursery cancels the
        # HTTP server and the error propagates: the process must restart.
        await nursery.start(log.run)
        async with trio.open_nursery() as http:
            # CTApp speaks plain-dict ASGI; hypercorn's TypedDict scopes are dicts.
            app = cast("ASGIFramework", CTApp(log))
            binds: list[str] = await http.start(
                partial(serve, app, config, shutdown_trigger=stop.wait)
            )
            task_status.started(binds)
        # hypercorn has drained its connections after ``stop``; stop sequencing
        # (a round in flight completes: it is shielded).
        nursery.cancel_scope.cancel()


@dataclass(frozen=True)
class StandaloneConfig:
    """Everything `trustchain ct serve` needs."""

    data_dir: Path
    """Data directory (created if missing)."""
    roots: Path
    """PEM bundle of accepted roots."""
    log_key: Path
    """ECDSA P-256 PKCS #8 PEM private key."""
    origin: str
    """Checkpoint origin and key name."""
    host: str
    """IPv6 address to bind."""
    port: int
    """TCP port."""
    tls_cert: Path
    """TLS certificate chain (PEM)."""
    tls_key: Path
    """TLS private key (PEM)."""
    params: LogParams
    """Sequencer tunables."""
    check: Check = "quick"
    """Start-up verification depth."""


async def run_standalone(
    cfg: StandaloneConfig,
    signer: Signer | None = None,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`trustchain ct serve`: load keys and roots, open the log, serve until SIGTERM/SIGINT."""
    events = Events("serve")
    signer = signer or load_p256_signer(cfg.log_key)
    validator = ChainValidator(load_roots(cfg.roots))
    last_report = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        # Called from the worker thread that verifies the store; logging is thread-safe.
        if done == total or done - last_report[0] >= max(total // 20, 1):
            last_report[0] = done
            events.info("ct.open.progress", stage=stage, done=done, total=total)

    log = await CTLog.open(
        cfg.data_dir, signer, cfg.origin, validator, cfg.params, check=cfg.check, progress=progress
    )
    try:
        size, timestamp, _, _ = log.sth()
        events.info(
            "ct.opened",
            data=str(cfg.data_dir),
            origin=cfg.origin,
            tree_size=size,
            sth_timestamp=timestamp,
            log_id=base64.b64encode(log_id(signer.public_key())).decode(),
        )
        stop = trio.Event()
        config = hypercorn_config(cfg.host, cfg.port, cfg.tls_cert, cfg.tls_key)
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(serve_log, log, config, shutdown=stop))
            events.info("ct.listening", urls=binds)
            task_status.started(binds)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    events.info("ct.stopping", signal=signal.Signals(signum).name)
                    stop.set()
                    break
    finally:
        log.close()
