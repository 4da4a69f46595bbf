"""Prometheus metrics that add up across gateway replicas.

Why not `ray.util.metrics`: Ray exports application metrics from each node's agent with a `ray_` prefix
and a reporting delay, so the seed's names (`model_inference_latency_seconds`, ...) could not be kept and
`/metrics` on the service URL would show another node's partial view. Why not prometheus_client's
multiprocess mode: it shares files on one host only, and replicas live on several nodes.

So each gateway replica accumulates deltas (counter increments, histogram bucket counts) and its current
gauge values, and pushes them every `push_interval_s` to the single `Metrics` deployment, which sums
counters and histograms and adds up the latest gauge of every replica heard from in `replica_stale_s`.
`GET /metrics` on any replica flushes its own deltas first, then returns the aggregate.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import defaultdict
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from ray import serve

from deployments.config import MetricsSettings
from deployments.metrics_history import History, take

log = logging.getLogger("raychat.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# name -> (kind, help, label names). Counters are named without `_total`: the exposition adds it.
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "model_inference_latency_seconds": (
        "histogram",
        "Time from a generation request to its complete answer",
        ("model", "endpoint"),
    ),
    "raychat_time_to_first_token_seconds": (
        "histogram",
        "Time from a streamed generation request to its first content chunk",
        ("model", "endpoint"),
    ),
    "raychat_requests": ("counter", "HTTP requests by route and status", ("endpoint", "status")),
    "raychat_tokens": ("counter", "Tokens in prompts and answers", ("model", "direction")),
    "raychat_question_cache_lookups": ("counter", "Question-cache lookups by result", ("result",)),
    "raychat_llm_replica_retries": (
        "counter",
        "Generation requests sent again because their LLM replica was lost before it answered",
        ("model",),
    ),
    "concurrent_session_count": ("gauge", "Generation requests in flight (conversations being served)", ()),
    "raychat_requests_in_flight": ("gauge", "API requests (/v1/...) in flight, of any kind", ()),
}
Labels = tuple[str, ...]


def add_series(
    target: dict[tuple[str, Labels], list[float]], key: tuple[str, Labels], values: list[float]
) -> None:
    """Adds one histogram series (bucket counts, then the sum) into `target`."""
    mine = target.setdefault(key, [0.0] * len(values))
    target[key] = [a + b for a, b in zip(mine, values, strict=True)]


class MetricsRecorder:
    """One per gateway replica: cheap local updates, pushed as deltas in the background."""

    def __init__(self, aggregator: Any, settings: MetricsSettings, replica_id: str) -> None:
        self.aggregator = aggregator
        self.settings = settings
        self.replica_id = replica_id
        self._counters: dict[tuple[str, Labels], float] = defaultdict(float)
        self._histograms: dict[tuple[str, Labels], list[float]] = {}
        self._gauges: dict[str, float] = defaultdict(float)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def inc(self, name: str, labels: Labels = (), value: float = 1.0) -> None:
        self._counters[(name, labels)] += value

    def observe(self, name: str, labels: Labels, value: float) -> None:
        # Per series: one count per bucket (the last is +Inf), then the sum.
        series = self._histograms.setdefault((name, labels), [0.0] * (len(LATENCY_BUCKETS) + 2))
        series[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
        series[-1] += value

    def gauge_add(self, name: str, delta: float) -> None:
        self._gauges[name] += delta

    def ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._push_loop())

    async def _push_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.push_interval_s)
            try:
                await self.flush()
            except Exception:  # the aggregator restarting must not stop the loop
                log.warning("metrics push failed; will retry", exc_info=True)

    async def flush(self) -> None:
        async with self._lock:
            counters, histograms = dict(self._counters), dict(self._histograms)
            self._counters.clear()
            self._histograms.clear()
            try:
                await self.aggregator.push.remote(
                    self.replica_id,
                    [(n, list(lb), v) for (n, lb), v in counters.items()],
                    [(n, list(lb), v) for (n, lb), v in histograms.items()],
                    dict(self._gauges),
                )
            except Exception:
                # Put the deltas back so nothing is lost while the aggregator is away.
                for key, value in counters.items():
                    self._counters[key] += value
                for key, values in histograms.items():
                    add_series(self._histograms, key, values)
                raise


class MetricsState:
    """The cluster-wide sums; `render()` is the Prometheus text exposition."""

    def __init__(self, stale_after_s: float, history: History | None = None) -> None:
        self.stale_after_s = stale_after_s
        self.counters: dict[tuple[str, Labels], float] = defaultdict(float)
        self.histograms: dict[tuple[str, Labels], list[float]] = {}
        self.gauges: dict[str, tuple[float, dict[str, float]]] = {}  # replica -> (seen at, values)
        defaults = MetricsSettings()
        self.history = history or History(
            defaults.history_interval_s, defaults.history_window_s, LATENCY_BUCKETS
        )

    def push(
        self,
        replica_id: str,
        counters: list[tuple[str, list[str], float]],
        histograms: list[tuple[str, list[str], list[float]]],
        gauges: dict[str, float],
        now: float | None = None,
    ) -> None:
        for name, labels, value in counters:
            self.counters[(name, tuple(labels))] += value
        for name, labels, values in histograms:
            add_series(self.histograms, (name, tuple(labels)), values)
        self.gauges[replica_id] = (time.monotonic() if now is None else now, dict(gauges))
        if self.history.due():
            self.history.add(take(self.counters, self.histograms, len(LATENCY_BUCKETS), time.time()))

    def gauge_total(self, name: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        return sum(
            values.get(name, 0.0) for seen, values in self.gauges.values() if now - seen <= self.stale_after_s
        )

    def hit_rate(self) -> float:
        hits = self.counters.get(("raychat_question_cache_lookups", ("hit",)), 0.0)
        misses = self.counters.get(("raychat_question_cache_lookups", ("miss",)), 0.0)
        return hits / (hits + misses) if hits + misses else 0.0

    def overview(self) -> dict[str, Any]:
        """The console's cluster view: cache, requests in flight and the last minutes, per interval."""
        hits = self.counters.get(("raychat_question_cache_lookups", ("hit",)), 0.0)
        misses = self.counters.get(("raychat_question_cache_lookups", ("miss",)), 0.0)
        return {
            "cache": {
                "hit_rate": round(self.hit_rate(), 4),
                "hits": int(hits),
                "lookups": int(hits + misses),
            },
            "in_flight": int(self.gauge_total("raychat_requests_in_flight")),
            "series": {"interval_s": self.history.interval_s, "points": self.history.points()},
        }

    def collect(self) -> list[Any]:
        families: list[Any] = []
        for name, (kind, help_text, label_names) in METRICS.items():
            if kind == "counter":
                family: Any = CounterMetricFamily(name, help_text, labels=list(label_names))
                for (metric, labels), value in sorted(self.counters.items()):
                    if metric == name:
                        family.add_metric(list(labels), value)
            elif kind == "histogram":
                family = HistogramMetricFamily(name, help_text, labels=list(label_names))
                for (metric, labels), values in sorted(self.histograms.items()):
                    if metric == name:
                        cumulative, buckets = 0.0, []
                        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), values[:-1], strict=True):
                            cumulative += count
                            buckets.append((_bound(bound), cumulative))
                        family.add_metric(list(labels), buckets, values[-1])
            else:
                family = GaugeMetricFamily(name, help_text, value=self.gauge_total(name))
            families.append(family)
        families.append(
            GaugeMetricFamily(
                "knowledge_cache_hit_rate",
                "Question-cache hits / lookups since the aggregator started",
                value=self.hit_rate(),
            )
        )
        return families

    def render(self) -> bytes:
        return generate_latest(_Registry(self))  # type: ignore[arg-type]


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


class _Registry:
    def __init__(self, state: MetricsState) -> None:
        self.state = state

    def collect(self) -> list[Any]:
        return self.state.collect()


@serve.deployment(name="Metrics", num_replicas=1, ray_actor_options={"num_cpus": 0})
class MetricsAggregator:
    def __init__(self, settings: dict[str, Any]) -> None:
        parsed = MetricsSettings.model_validate(settings)
        history = History(parsed.history_interval_s, parsed.history_window_s, LATENCY_BUCKETS)
        self.state = MetricsState(parsed.replica_stale_s, history)

    def push(
        self,
        replica_id: str,
        counters: list[tuple[str, list[str], float]],
        histograms: list[tuple[str, list[str], list[float]]],
        gauges: dict[str, float],
    ) -> None:
        self.state.push(replica_id, counters, histograms, gauges)

    def render(self) -> bytes:
        return self.state.render()

    def overview(self) -> dict[str, Any]:
        return self.state.overview()
