"""Judging green against blue during a hold: each colour's own metrics (its Metrics deployment sums its
gateway replicas), read at the start of the hold and again at each check; the difference is the hold.

An error is a 5xx answer to an API route (`/v1/...`); latency is the generation latency histogram
(`model_inference_latency_seconds`), whose p95 is estimated within its buckets as Prometheus'
`histogram_quantile` does. The in-flight gauge (`raychat_requests_in_flight`) tells when a colour has drained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from cluster.upgrade.settings import UpgradeSettings

REQUESTS = "raychat_requests"
LATENCY = "model_inference_latency_seconds"
IN_FLIGHT = "raychat_requests_in_flight"


@dataclass(frozen=True)
class Sample:
    """One reading of a colour's counters."""

    requests: int = 0
    errors: int = 0
    # cumulative bucket counts by upper bound (inf included), summed over models and endpoints
    latency: dict[float, float] = field(default_factory=dict)
    in_flight: int = 0  # a gauge: API requests being served at the reading

    def minus(self, earlier: Sample) -> Sample:
        return Sample(
            requests=self.requests - earlier.requests,
            errors=self.errors - earlier.errors,
            latency={b: c - earlier.latency.get(b, 0.0) for b, c in self.latency.items()},
            in_flight=self.in_flight,
        )

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def generations(self) -> int:
        return int(self.latency.get(float("inf"), 0))

    def p95(self) -> float | None:
        return quantile(0.95, self.latency)

    def summary(self) -> dict[str, int | float | None]:
        """What a report keeps of a judged window."""
        return {"requests": self.requests, "errors": self.errors, "p95_s": self.p95()}


def parse(text: str) -> Sample:
    requests = errors = in_flight = 0
    latency: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if family.name == REQUESTS and s.name == f"{REQUESTS}_total":
                if not s.labels.get("endpoint", "").startswith("/v1/"):
                    continue  # health checks and metric scrapes say nothing about answers
                requests += int(s.value)
                if s.labels.get("status", "").startswith("5"):
                    errors += int(s.value)
            elif family.name == LATENCY and s.name == f"{LATENCY}_bucket":
                bound = float(s.labels["le"])
                latency[bound] = latency.get(bound, 0.0) + s.value
            elif family.name == IN_FLIGHT:
                in_flight += int(s.value)
    return Sample(requests, errors, latency, in_flight)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of a cumulative histogram, linear within the bucket it falls in; None if empty."""
    bounds = sorted(buckets)
    total = buckets.get(float("inf"), 0.0)
    if not bounds or total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower  # beyond the last finite bound: its value is the best estimate
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def verdict(
    blue: Sample, green: Sample, rules: UpgradeSettings, *, names: tuple[str, str] = ("green", "blue")
) -> str | None:
    """Why green must be rolled back, from one hold's samples of both colours; None while it is fine.
    `names`: what the reason calls the new and the running version."""
    new, old = names
    if green.errors and green.error_rate > blue.error_rate + rules.max_error_rate_increase:
        return (
            f"{new} answered {green.errors} of {green.requests} requests with 5xx "
            f"({green.error_rate:.1%}, {old} {blue.error_rate:.1%}; allowed "
            f"+{rules.max_error_rate_increase:.1%})"
        )
    if green.generations >= rules.min_requests:
        green_p95, blue_p95 = green.p95(), blue.p95()
        if green_p95 is not None and blue_p95 is not None:
            if green_p95 > blue_p95 * rules.max_p95_ratio and green_p95 - blue_p95 > rules.p95_min_gap_s:
                return (
                    f"{new}'s p95 generation latency {green_p95:.2f} s is over {rules.max_p95_ratio:g}x "
                    f"{old}'s {blue_p95:.2f} s"
                )
    return None
