"""Load shapes for the seed article's concurrency tiers: tier 1 (<50 users), tier 2 (50-200), tier 3
(>200, up to 500). Each steps through (duration, users, spawn rate) stages from config.yaml.

This module does not import Locust (importing it monkey-patches the process with gevent); the locustfile
mixes these classes with `locust.LoadTestShape`, which supplies `get_run_time()`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import yaml

CONFIG_PATH = Path(__file__).with_name("config.yaml")
Stage = tuple[float, int, float]


def load_config(path: Path = CONFIG_PATH) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def tier_stages(tier: str, config: dict[str, Any] | None = None) -> list[Stage]:
    tiers = (config or load_config())["tiers"]
    if tier not in tiers:
        raise ValueError(f"unknown tier {tier!r}; config.yaml has {', '.join(tiers)}")
    return [(float(d), int(u), float(r)) for d, u, r in tiers[tier]]


class StagedShape:
    """Holds each stage's user count for its duration, then the next; stops after the last."""

    abstract: ClassVar[bool] = True  # Locust must not pick a base class as a shape
    stages: ClassVar[list[Stage]] = []

    def get_run_time(self) -> float:  # LoadTestShape's, in the real shape classes
        raise NotImplementedError

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        end = 0.0
        for duration, users, rate in self.stages:
            end += duration
            if elapsed < end:
                return users, rate
        return None


class Tier1Shape(StagedShape):
    abstract = False
    stages = tier_stages("1")


class Tier2Shape(StagedShape):
    abstract = False
    stages = tier_stages("2")


class Tier3Shape(StagedShape):
    abstract = False
    stages = tier_stages("3")


SHAPES: dict[str, type[StagedShape]] = {"1": Tier1Shape, "2": Tier2Shape, "3": Tier3Shape}
