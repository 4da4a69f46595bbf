"""The last minutes of traffic, for the console's cluster view: requests, server errors and generation
latency per interval.

The Metrics deployment already sums every gateway replica's counters; this keeps a snapshot of those sums
every `metrics.history_interval_s` for `metrics.history_window_s`, and answers with the differences
between neighbouring snapshots. Nothing here is exported to Prometheus (it computes its own rates).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

LATENCY = "model_inference_latency_seconds"


@dataclass(frozen=True)
class Snapshot:
    at: float  # unix seconds
    requests: float
    errors: float  # 5xx answers
    latency: tuple[float, ...]  # bucket counts (the last is +Inf), then the sum, over every route


def take(
    counters: dict[tuple[str, tuple[str, ...]], float],
    histograms: dict[Any, list[float]],
    buckets: int,
    at: float,
) -> Snapshot:
    requests = errors = 0.0
    for (name, labels), value in counters.items():
        if name == "raychat_requests":
            requests += value
            if labels[-1].startswith("5"):
                errors += value
    latency = [0.0] * (buckets + 2)
    for (name, _), values in histograms.items():
        if name == LATENCY:
            latency = [a + b for a, b in zip(latency, values, strict=True)]
    return Snapshot(at, requests, errors, tuple(latency))


def quantile(counts: list[float], bounds: tuple[float, ...], q: float) -> float | None:
    """The upper bound of the bucket holding the q-th observation (Prometheus' histogram_quantile,
    without the interpolation); None without observations, the last finite bound for the +Inf bucket."""
    total = sum(counts)
    if total <= 0:
        return None
    seen = 0.0
    for bound, count in zip(bounds, counts, strict=False):
        seen += count
        if seen >= q * total:
            return bound
    return bounds[-1]


class History:
    def __init__(self, interval_s: float, window_s: float, bounds: tuple[float, ...]) -> None:
        self.interval_s = interval_s
        self.bounds = bounds
        self.snapshots: deque[Snapshot] = deque(maxlen=max(2, int(window_s / interval_s) + 1))

    def due(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return not self.snapshots or now - self.snapshots[-1].at >= self.interval_s

    def add(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)

    def points(self) -> list[dict[str, Any]]:
        """One point per interval: requests and 5xx answers in it, generation latency mean and p95."""
        out = []
        shots = list(self.snapshots)
        for before, after in zip(shots, shots[1:], strict=False):
            counts = [b - a for a, b in zip(before.latency[:-1], after.latency[:-1], strict=True)]
            finished = sum(counts)
            latency_sum = after.latency[-1] - before.latency[-1]
            out.append(
                {
                    "t": round(after.at, 3),
                    "requests": int(after.requests - before.requests),
                    "errors": int(after.errors - before.errors),
                    "latency_mean_s": round(latency_sum / finished, 4) if finished else None,
                    "latency_p95_s": quantile(counts, self.bounds, 0.95),
                }
            )
        return out
