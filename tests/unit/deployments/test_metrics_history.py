"""The console's traffic chart: per-interval requests, server errors and generation latency."""

from __future__ import annotations

import bisect

from deployments.metrics import LATENCY_BUCKETS, MetricsState
from deployments.metrics_history import History, quantile, take

BUCKETS = len(LATENCY_BUCKETS)


def _latency(*seconds: float) -> list[float]:
    """A histogram series as a gateway replica pushes it."""
    series = [0.0] * (BUCKETS + 2)
    for value in seconds:
        series[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
        series[-1] += value
    return series


def test_points_are_differences_between_neighbouring_snapshots() -> None:
    history = History(10, 60, LATENCY_BUCKETS)
    counters = {("raychat_requests", ("/v1/chat/completions", "200")): 5.0}
    history.add(take(counters, {}, BUCKETS, at=100.0))
    counters = {
        ("raychat_requests", ("/v1/chat/completions", "200")): 12.0,
        ("raychat_requests", ("/v1/chat/completions", "503")): 2.0,
        ("raychat_requests", ("/v1/models", "200")): 1.0,
    }
    histograms = {("model_inference_latency_seconds", ("m", "/v1/chat/completions")): _latency(0.2, 0.3, 4.0)}
    history.add(take(counters, histograms, BUCKETS, at=110.0))
    (point,) = history.points()
    assert point["t"] == 110.0
    assert point["requests"] == 10 and point["errors"] == 2
    assert abs(point["latency_mean_s"] - 1.5) < 1e-9
    assert point["latency_p95_s"] == 5  # the bucket that holds the slowest of three


def test_no_generation_in_an_interval_has_no_latency() -> None:
    history = History(10, 60, LATENCY_BUCKETS)
    history.add(take({}, {}, BUCKETS, at=0.0))
    history.add(take({}, {}, BUCKETS, at=10.0))
    assert history.points() == [
        {"t": 10.0, "requests": 0, "errors": 0, "latency_mean_s": None, "latency_p95_s": None}
    ]


def test_the_window_keeps_only_the_last_minutes() -> None:
    history = History(10, 30, LATENCY_BUCKETS)
    for i in range(10):
        history.add(take({}, {}, BUCKETS, at=i * 10.0))
    assert len(history.points()) == 3
    assert history.due(now=95.0) is False and history.due(now=100.0) is True


def test_quantile_is_the_bucket_bound() -> None:
    assert quantile([0, 0, 0], (0.1, 1.0), 0.95) is None
    assert quantile([9, 1, 0], (0.1, 1.0), 0.5) == 0.1
    assert quantile([0, 0, 1], (0.1, 1.0), 0.95) == 1.0  # +Inf reads as the last finite bound


def test_overview_reports_cache_and_in_flight() -> None:
    state = MetricsState(15, History(10, 60, LATENCY_BUCKETS))
    state.push(
        "a",
        [("raychat_question_cache_lookups", ["hit"], 3.0), ("raychat_question_cache_lookups", ["miss"], 1.0)],
        [],
        {"raychat_requests_in_flight": 2.0},
    )
    overview = state.overview()
    assert overview["cache"] == {"hit_rate": 0.75, "hits": 3, "lookups": 4}
    assert overview["in_flight"] == 2
    assert overview["series"]["interval_s"] == 10
