"""CloudWatch metrics: the sans-IO buffer, and publishing to moto's CloudWatch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from trustchain.infra import metrics as m

T0 = 1_700_000_040.0  # the start of a minute


def test_operations_are_summed_per_minute_and_type() -> None:
    buf = m.MetricsBuffer()
    for i in range(5):
        buf.add_operation("issue", T0 + i)
    buf.add_operation("validate", T0 + 1, count=7)
    buf.add_operation("issue", T0 + 61)
    assert buf.drain(T0 + 30) == []  # the first minute is still filling
    (req,) = buf.drain(T0 + 61)
    assert req.namespace == "TrustChain/CA"
    got = {(d["Dimensions"][0]["Value"], d["Value"], d["Timestamp"]) for d in req.metric_data}
    ts = datetime.fromtimestamp(T0, UTC)
    assert got == {("issue", 5.0, ts), ("validate", 7.0, ts)}
    assert all(d["MetricName"] == "TrustChainCertificateOperations" for d in req.metric_data)
    (last,) = buf.drain(T0 + 61, include_current=True)
    assert last.metric_data[0]["Value"] == 1.0
    assert buf.drain(T0 + 1000, include_current=True) == []


def test_response_times_keep_every_value_for_percentiles() -> None:
    buf = m.MetricsBuffer()
    for i in range(400):
        buf.add_response_time(0.001 * (i % 200), T0)
    buf.set_throughput(1234.5, T0)
    (req,) = buf.drain(T0 + 60)
    assert req.namespace == "TrustChain/Performance"
    rt = [d for d in req.metric_data if d["MetricName"] == "ResponseTime"]
    assert all(len(d["Values"]) <= m.MAX_VALUES_PER_DATUM for d in rt)
    assert sum(sum(d["Counts"]) for d in rt) == 400
    assert len({v for d in rt for v in d["Values"]}) == 200
    (tp,) = [d for d in req.metric_data if d["MetricName"] == "Throughput"]
    assert (tp["Value"], tp["Unit"]) == (1234.5, "Count/Second")


def test_requests_respect_the_put_metric_data_limit() -> None:
    buf = m.MetricsBuffer()
    for minute in range(700):
        buf.add_operation("issue", T0 + 60 * minute)
        buf.add_operation("revoke", T0 + 60 * minute)
    reqs = buf.drain(T0 + 60 * 700)
    assert [len(r.metric_data) for r in reqs] == [1000, 400]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: b.add_operation("sign", T0), "operation type"),
        (lambda b: b.add_operation("issue", T0, count=-1), "negative"),
        (lambda b: b.add_response_time(float("nan"), T0), "non-negative"),
        (lambda b: b.add_response_time(-0.1, T0), "non-negative"),
        (lambda b: b.set_throughput(-1, T0), "non-negative"),
        (lambda b: b.add_operation("issue", -5.0), "seconds since the epoch"),
    ],
)
def test_bad_input_is_refused_and_leaves_the_buffer_empty(call: Any, message: str) -> None:
    buf = m.MetricsBuffer()
    with pytest.raises(ValueError, match=message):
        call(buf)
    assert buf.drain(T0, include_current=True) == []


@pytest.mark.slow
def test_published_metrics_reach_cloudwatch(aws: Any) -> None:
    cw = aws("cloudwatch", "ap-southeast-2")
    now = datetime.now(UTC).timestamp()
    buf = m.MetricsBuffer()
    buf.add_operation("issue", now, count=3)
    buf.add_operation("revoke", now)
    buf.add_response_time(0.02, now)
    buf.set_throughput(1500.0, now)
    sent = m.CloudWatchPublisher(cw).publish(buf.drain(now, include_current=True))
    assert sent == 4
    listed = cw.list_metrics(Namespace="TrustChain/CA")["Metrics"]
    dims = sorted(d["Value"] for x in listed for d in x["Dimensions"])
    assert dims == ["issue", "revoke"]
    perf = {x["MetricName"] for x in cw.list_metrics(Namespace="TrustChain/Performance")["Metrics"]}
    assert perf == {"ResponseTime", "Throughput"}


@pytest.mark.slow
def test_refusals_name_the_namespace(aws: Any) -> None:
    publisher = m.CloudWatchPublisher(aws("cloudwatch", "ap-southeast-2"))
    with pytest.raises(m.MetricsPublishError, match="not one of TrustChain"):
        publisher.publish([m.PutRequest("Other/NS", ({"MetricName": "x", "Value": 1.0},))])
    bad = m.PutRequest("TrustChain/CA", ({"MetricName": "x", "Value": "not a number"},))
    with pytest.raises(m.MetricsPublishError, match="TrustChain/CA"):
        publisher.publish([bad])
