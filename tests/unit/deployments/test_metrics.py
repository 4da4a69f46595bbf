"""Metrics aggregation across gateway replicas, and the exposition Prometheus reads."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from deployments.config import MetricsSettings
from deployments.metrics import LATENCY_BUCKETS, MetricsRecorder, MetricsState


class FakeRemote:
    """Stands in for the aggregator's DeploymentHandle method (`.remote(...)` -> awaitable)."""

    def __init__(self, state: MetricsState, fail: bool = False) -> None:
        self.state = state
        self.fail = fail

    def remote(self, *args: Any) -> Any:
        async def call() -> None:
            if self.fail:
                raise ConnectionError("aggregator away")
            self.state.push(*args)

        return call()


class FakeHandle:
    def __init__(self, state: MetricsState) -> None:
        self.push = FakeRemote(state)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_two_replicas_add_up() -> None:
    state = MetricsState(stale_after_s=15)
    handle = FakeHandle(state)
    a = MetricsRecorder(handle, MetricsSettings(), "a")
    b = MetricsRecorder(handle, MetricsSettings(), "b")
    for recorder, latency in ((a, 0.02), (b, 3.0), (b, 0.02)):
        recorder.observe("model_inference_latency_seconds", ("m", "/v1/chat/completions"), latency)
        recorder.inc("raychat_requests", ("/v1/chat/completions", "200"))
    a.inc("raychat_question_cache_lookups", ("hit",))
    b.inc("raychat_question_cache_lookups", ("miss",), 3)
    a.gauge_add("concurrent_session_count", 2)
    b.gauge_add("concurrent_session_count", 1)
    asyncio.run(a.flush())
    asyncio.run(b.flush())
    asyncio.run(a.flush())  # nothing new: counters must not double
    got = samples(state.render())
    labels = (("endpoint", "/v1/chat/completions"), ("model", "m"))
    assert got[("model_inference_latency_seconds_count", labels)] == 3
    assert abs(got[("model_inference_latency_seconds_sum", labels)] - 3.04) < 1e-9
    assert got[("model_inference_latency_seconds_bucket", (*labels[:1], ("le", "0.025"), labels[1]))] == 2
    assert got[("model_inference_latency_seconds_bucket", (*labels[:1], ("le", "+Inf"), labels[1]))] == 3
    assert got[("raychat_requests_total", (("endpoint", "/v1/chat/completions"), ("status", "200")))] == 3
    assert got[("knowledge_cache_hit_rate", ())] == 0.25
    assert got[("concurrent_session_count", ())] == 3


def test_stale_replica_gauges_stop_counting() -> None:
    state = MetricsState(stale_after_s=10)
    state.push("old", [], [], {"concurrent_session_count": 5}, now=100.0)
    state.push("new", [], [], {"concurrent_session_count": 1}, now=105.0)
    assert state.gauge_total("concurrent_session_count", now=108.0) == 6
    assert state.gauge_total("concurrent_session_count", now=112.0) == 1


def test_failed_push_keeps_deltas() -> None:
    state = MetricsState(stale_after_s=15)
    handle = FakeHandle(state)
    handle.push.fail = True
    recorder = MetricsRecorder(handle, MetricsSettings(), "a")
    recorder.inc("raychat_tokens", ("m", "prompt"), 7)
    recorder.observe("raychat_time_to_first_token_seconds", ("m", "/v1/chat/completions"), 0.3)
    try:
        asyncio.run(recorder.flush())
    except ConnectionError:
        pass
    handle.push.fail = False
    recorder.inc("raychat_tokens", ("m", "prompt"), 1)
    asyncio.run(recorder.flush())
    got = samples(state.render())
    assert got[("raychat_tokens_total", (("direction", "prompt"), ("model", "m")))] == 8
    ttft = (("endpoint", "/v1/chat/completions"), ("model", "m"))
    assert got[("raychat_time_to_first_token_seconds_count", ttft)] == 1


def test_bucket_edges_follow_prometheus_le() -> None:
    state = MetricsState(stale_after_s=15)
    recorder = MetricsRecorder(FakeHandle(state), MetricsSettings(), "a")
    recorder.observe("model_inference_latency_seconds", ("m", "e"), LATENCY_BUCKETS[0])  # on the edge
    asyncio.run(recorder.flush())
    got = samples(state.render())
    edge = (("endpoint", "e"), ("le", repr(float(LATENCY_BUCKETS[0]))), ("model", "m"))
    assert got[("model_inference_latency_seconds_bucket", edge)] == 1
