"""CloudWatch metrics for TrustChain (DESIGN.md section 10).

Two namespaces, as the deployment spec names them:

- ``TrustChain/CA``: ``TrustChainCertificateOperations`` (unit Count), one
  series per dimension ``OperationType`` = ``issue`` | ``validate`` | ``revoke``;
- ``TrustChain/Performance``: ``ResponseTime`` (Seconds; the monitoring
  stack alarms on its p99 above 1 s) and ``Throughput`` (Count/Second).

The module has two halves.  :class:`MetricsBuffer` is sans-IO: the node
records events with an explicit ``now`` (seconds since the epoch) and later
drains ready-made PutMetricData requests; operations are summed and response
times kept as value/count pairs per one-minute period, so a busy node sends a
few small requests a minute, and percentiles stay exact.
:class:`CloudWatchPublisher` is the only part that talks to AWS.

Contract of :meth:`CloudWatchPublisher.publish`: sends each request once,
returns the number of data points CloudWatch accepted, and raises
:class:`MetricsPublishError` naming the namespace and AWS's reason if one is
refused.  It does not retry beyond botocore's own retries; the caller decides
whether to log and drop (metrics must never stop a node) or to re-queue.
The IAM policy in iam.yaml allows PutMetricData only for these two
namespaces, so a request for any other namespace is refused by AWS too.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

NAMESPACE_CA = "TrustChain/CA"
NAMESPACE_PERFORMANCE = "TrustChain/Performance"
NAMESPACES = (NAMESPACE_CA, NAMESPACE_PERFORMANCE)
METRIC_OPERATIONS = "TrustChainCertificateOperations"
DIMENSION_OPERATION = "OperationType"
METRIC_RESPONSE_TIME = "ResponseTime"
METRIC_THROUGHPUT = "Throughput"

OperationType = Literal["issue", "validate", "revoke"]
OPERATION_TYPES: tuple[OperationType, ...] = ("issue", "validate", "revoke")

PERIOD_SECONDS = 60
# PutMetricData limits: 1000 data points per request, 150 distinct values in
# one data point's Values array.
MAX_DATUMS_PER_REQUEST = 1000
MAX_VALUES_PER_DATUM = 150
# Response times are kept to the microsecond; finer detail only costs values.
_RESPONSE_TIME_RESOLUTION = 1e-6


class MetricsPublishError(Exception):
    """CloudWatch refused a PutMetricData request."""


@dataclass(frozen=True)
class PutRequest:
    """One PutMetricData call."""

    namespace: str
    """``TrustChain/CA`` or ``TrustChain/Performance``."""
    metric_data: tuple[dict[str, Any], ...]
    """The MetricData list, in boto3's shape."""

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``cloudwatch.put_metric_data``."""
        return {"Namespace": self.namespace, "MetricData": list(self.metric_data)}


def _period(now: float) -> int:
    if now < 0:
        raise ValueError(f"now must be seconds since the epoch, got {now}")
    return int(now // PERIOD_SECONDS) * PERIOD_SECONDS


@dataclass
class MetricsBuffer:
    """Metric events of one node, grouped per minute until drained.  Not thread-safe:
    one task owns it."""

    operations: Counter[tuple[int, OperationType]] = field(default_factory=Counter)
    """(period start, operation type) -> number of operations."""
    response_times: defaultdict[int, Counter[float]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    """period start -> response time in seconds -> how many requests took it."""
    throughput: dict[int, float] = field(default_factory=dict)
    """period start -> the latest operations-per-second figure seen in it."""

    def add_operation(self, op: OperationType, now: float, count: int = 1) -> None:
        """Count `count` certificate operations of type `op` at time `now`."""
        if op not in OPERATION_TYPES:
            raise ValueError(f"operation type must be one of {OPERATION_TYPES}, got {op!r}")
        if count < 0:
            raise ValueError(f"count must not be negative, got {count}")
        self.operations[(_period(now), op)] += count

    def add_response_time(self, seconds: float, now: float) -> None:
        """Record one request that took `seconds` to answer."""
        if not seconds >= 0:
            raise ValueError(f"a response time must be a non-negative number, got {seconds}")
        rounded = round(seconds / _RESPONSE_TIME_RESOLUTION) * _RESPONSE_TIME_RESOLUTION
        self.response_times[_period(now)][rounded] += 1

    def set_throughput(self, ops_per_second: float, now: float) -> None:
        """Record the node's current certificate operations per second."""
        if not ops_per_second >= 0:
            raise ValueError(f"throughput must be a non-negative number, got {ops_per_second}")
        self.throughput[_period(now)] = ops_per_second

    def drain(self, now: float, include_current: bool = False) -> list[PutRequest]:
        """Remove and return the requests for every finished period.

        The period containing `now` is still filling and stays, unless
        `include_current` (for a final flush at shutdown).
        """
        current = _period(now)

        def ready(period: int) -> bool:
            return include_current or period < current

        datums: dict[str, list[dict[str, Any]]] = {NAMESPACE_CA: [], NAMESPACE_PERFORMANCE: []}
        for key in sorted(k for k in self.operations if ready(k[0])):
            period, op = key
            datums[NAMESPACE_CA].append(
                {
                    "MetricName": METRIC_OPERATIONS,
                    "Dimensions": [{"Name": DIMENSION_OPERATION, "Value": op}],
                    "Timestamp": datetime.fromtimestamp(period, UTC),
                    "Value": float(self.operations.pop(key)),
                    "Unit": "Count",
                }
            )
        for period in sorted(p for p in self.response_times if ready(p)):
            items = sorted(self.response_times.pop(period).items())
            for i in range(0, len(items), MAX_VALUES_PER_DATUM):
                chunk = items[i : i + MAX_VALUES_PER_DATUM]
                datums[NAMESPACE_PERFORMANCE].append(
                    {
                        "MetricName": METRIC_RESPONSE_TIME,
                        "Timestamp": datetime.fromtimestamp(period, UTC),
                        "Values": [v for v, _ in chunk],
                        "Counts": [float(c) for _, c in chunk],
                        "Unit": "Seconds",
                    }
                )
        for period in sorted(p for p in self.throughput if ready(p)):
            datums[NAMESPACE_PERFORMANCE].append(
                {
                    "MetricName": METRIC_THROUGHPUT,
                    "Timestamp": datetime.fromtimestamp(period, UTC),
                    "Value": self.throughput.pop(period),
                    "Unit": "Count/Second",
                }
            )
        requests = []
        for namespace in NAMESPACES:
            data = datums[namespace]
            for i in range(0, len(data), MAX_DATUMS_PER_REQUEST):
                requests.append(PutRequest(namespace, tuple(data[i : i + MAX_DATUMS_PER_REQUEST])))
        return requests


class CloudWatchPublisher:
    """Sends drained requests with a boto3 CloudWatch client; see the module contract."""

    def __init__(self, cloudwatch: Any) -> None:
        self._cloudwatch = cloudwatch

    def publish(self, requests: list[PutRequest]) -> int:
        sent = 0
        for request in requests:
            if request.namespace not in NAMESPACES:
                raise MetricsPublishError(
                    f"namespace {request.namespace!r} is not one of TrustChain's {NAMESPACES}"
                )
            try:
                self._cloudwatch.put_metric_data(**request.kwargs())
            except (ClientError, BotoCoreError) as exc:
                raise MetricsPublishError(
                    f"CloudWatch refused {len(request.metric_data)} data points for "
                    f"{request.namespace}: {exc}"
                ) from exc
            sent += len(request.metric_data)
        return sent
