"""A node's CloudWatch reporting (DESIGN.md section 10, docs/durability.md).

Configured by a ``[cloudwatch]`` table in node.toml::

    [cloudwatch]
    region = "us-west-2"
    endpoint = "https://[::1]:4566"   # optional: a moto server locally
    ca_bundle = "moto-ca.pem"         # optional: the endpoint's TLS CA
    interval = 60.0                   # seconds between PutMetricData rounds

The API counts certificate operations and response times into a
`trustchain.infra.metrics.MetricsBuffer`; every `interval` the reporter adds
the throughput of that interval and the archive's lag and region alarm
(namespace ``TrustChain/CA``, metrics ``ArchiveLag`` and ``ArchiveRegionUp``
by ``Region``), drains everything and sends it from a worker thread.
Metrics never stop a node: a refused or failed round is logged and dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from trustchain.infra.metrics import (
    NAMESPACE_CA,
    CloudWatchPublisher,
    MetricsBuffer,
    MetricsPublishError,
    OperationType,
    PutRequest,
)
from trustchain.node.config import Key, check_table
from trustchain.node.log import EventLogger

if TYPE_CHECKING:
    from trustchain.node.archive import Archiver


@dataclass(frozen=True)
class CloudWatchSettings:
    region: str
    """AWS region the metrics go to."""
    endpoint: str | None = None
    """CloudWatch endpoint URL (a moto server locally); None: AWS's."""
    ca_bundle: str | None = None
    """PEM file the endpoint's TLS certificate chains to."""
    interval: float = 60.0
    """Seconds between reporting rounds."""


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _interval(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.1 <= value <= 3600:
        raise ValueError(f"expected seconds between 0.1 and 3600, got {value!r}")
    return float(value)


def parse_cloudwatch_section(source: str, table: Any, base: Path) -> CloudWatchSettings:
    """The ``[cloudwatch]`` table of `source`; relative paths are from `base`."""
    values = check_table(
        source,
        table,
        {
            "region": Key(_text, True),
            "endpoint": Key(_text),
            "ca_bundle": Key(_text),
            "interval": Key(_interval, default=60.0),
        },
        "cloudwatch",
    )
    bundle = values["ca_bundle"]
    return CloudWatchSettings(
        values["region"],
        values["endpoint"],
        str(base / bundle) if bundle else None,
        values["interval"],
    )


def cloudwatch_client(settings: CloudWatchSettings) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "cloudwatch",
        region_name=settings.region,
        endpoint_url=settings.endpoint,
        verify=settings.ca_bundle if settings.ca_bundle else None,
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2}),
    )


class Reporter:
    """Collects a node's figures and sends them to CloudWatch every interval."""

    def __init__(
        self,
        settings: CloudWatchSettings,
        log: EventLogger,
        *,
        archiver: Archiver | None = None,
        client: Any = None,
    ) -> None:
        self.settings = settings
        self.log = log
        self.archiver = archiver
        self.buffer = MetricsBuffer()
        self.publisher = CloudWatchPublisher(client or cloudwatch_client(settings))
        self.sent = 0
        """Data points CloudWatch accepted."""
        self._ops = 0
        self._since = time.monotonic()

    def operation(self, op: OperationType, seconds: float | None = None) -> None:
        """Count one certificate operation (and its response time, if it was timed)."""
        now = time.time()
        self.buffer.add_operation(op, now)
        if seconds is not None:
            self.buffer.add_response_time(seconds, now)
        self._ops += 1

    def requests(self, now: float) -> list[PutRequest]:
        """Everything collected so far as PutMetricData requests (drains the buffer)."""
        elapsed = max(time.monotonic() - self._since, 1e-3)
        self.buffer.set_throughput(self._ops / elapsed, now)
        self._ops, self._since = 0, time.monotonic()
        requests = self.buffer.drain(now, include_current=True)
        if self.archiver is not None:
            requests.append(PutRequest(NAMESPACE_CA, tuple(self.archiver.cloudwatch_data(now))))
        return requests

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.settings.interval)
            await self.flush()

    async def flush(self) -> None:
        requests = self.requests(time.time())
        try:
            self.sent += await trio.to_thread.run_sync(
                self.publisher.publish, requests, abandon_on_cancel=True
            )
        except MetricsPublishError as exc:
            self.log.warning("cloudwatch.refused", error=str(exc))
