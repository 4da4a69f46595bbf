"""Judging green against blue from their metrics: errors, p95, and the thresholds in settings."""

from __future__ import annotations

import time

from cluster.upgrade.health import Sample, parse, quantile, verdict
from cluster.upgrade.settings import UpgradeSettings

TEXT = """# TYPE raychat_requests_total counter
raychat_requests_total{endpoint="/v1/chat/completions",status="200"} 40.0
raychat_requests_total{endpoint="/v1/chat/completions",status="503"} 2.0
raychat_requests_total{endpoint="/healthz",status="200"} 100.0
raychat_requests_total{endpoint="/v1/knowledge_bases/{name}/search",status="404"} 3.0
# TYPE model_inference_latency_seconds histogram
model_inference_latency_seconds_bucket{endpoint="/v1/chat/completions",le="0.5",model="m"} 10.0
model_inference_latency_seconds_bucket{endpoint="/v1/chat/completions",le="1.0",model="m"} 30.0
model_inference_latency_seconds_bucket{endpoint="/v1/chat/completions",le="2.5",model="m"} 40.0
model_inference_latency_seconds_bucket{endpoint="/v1/chat/completions",le="+Inf",model="m"} 40.0
model_inference_latency_seconds_count{endpoint="/v1/chat/completions",model="m"} 40.0
model_inference_latency_seconds_sum{endpoint="/v1/chat/completions",model="m"} 35.0
# TYPE raychat_requests_in_flight gauge
raychat_requests_in_flight 3.0
"""


def test_parse_counts_api_answers_and_5xx_only() -> None:
    sample = parse(TEXT)
    assert sample.requests == 45 and sample.errors == 2  # health checks left out, 404 is not an error
    assert sample.generations == 40
    assert sample.in_flight == 3


def test_quantile_interpolates_within_the_bucket() -> None:
    buckets = {0.5: 10.0, 1.0: 30.0, 2.5: 40.0, float("inf"): 40.0}
    assert quantile(0.5, buckets) == 0.5 + 0.5 * (10 / 20)
    assert abs(quantile(0.95, buckets) - (1.0 + 1.5 * (8 / 10))) < 1e-9
    assert quantile(0.95, {}) is None


def test_a_window_is_the_difference_of_two_readings() -> None:
    later = Sample(requests=50, errors=3, latency={1.0: 20.0, float("inf"): 25.0})
    earlier = Sample(requests=20, errors=3, latency={1.0: 5.0, float("inf"): 5.0})
    window = later.minus(earlier)
    assert (window.requests, window.errors, window.generations) == (30, 0, 20)


RULES = UpgradeSettings(max_error_rate_increase=0.02, max_p95_ratio=1.5, p95_min_gap_s=0.5, min_requests=10)


def test_green_errors_beyond_blues_roll_back() -> None:
    blue = Sample(requests=100, errors=1)
    assert verdict(blue, Sample(requests=10, errors=0), RULES) is None
    assert verdict(blue, Sample(requests=100, errors=2), RULES) is None  # 2% vs 1%: within +2 points
    reason = verdict(blue, Sample(requests=10, errors=2), RULES)
    assert reason is not None and "5xx" in reason


def test_green_slower_than_allowed_rolls_back_once_it_has_enough_answers() -> None:
    fast = {1.0: 20.0, 2.5: 20.0, 10.0: 20.0, float("inf"): 20.0}
    slow = {1.0: 0.0, 2.5: 0.0, 10.0: 20.0, float("inf"): 20.0}
    blue = Sample(requests=20, latency=fast)
    assert verdict(blue, Sample(requests=20, latency=slow), RULES) is not None
    few = {1.0: 0.0, 2.5: 0.0, 10.0: 5.0, float("inf"): 5.0}
    assert verdict(blue, Sample(requests=5, latency=few), RULES) is None  # not enough to judge
    assert verdict(blue, Sample(requests=20, latency=fast), RULES) is None


def test_parse_reads_what_the_metrics_deployment_renders() -> None:
    from deployments.metrics import MetricsState

    state = MetricsState(stale_after_s=15)
    state.push(
        "a",
        [("raychat_requests", ["/v1/models", "503"], 2.0)],
        [],
        {"raychat_requests_in_flight": 2.0},
        now=time.time(),
    )
    state.push("b", [], [], {"raychat_requests_in_flight": 1.0}, now=time.time())
    sample = parse(state.render().decode())
    assert (sample.requests, sample.errors, sample.in_flight) == (2, 2, 3)
