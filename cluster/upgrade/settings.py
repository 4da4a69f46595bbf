"""The `upgrade` section of the settings: how a new version takes over from the running one."""

from __future__ import annotations

from pydantic import Field, field_validator

from deployments.config import Section


class UpgradeSettings(Section):
    """`raychat upgrade`: the new version (green) starts beside the running one (blue), passes a smoke
    test, then takes a growing share of requests, each share held and judged against blue's."""

    steps: list[int] = Field(
        default_factory=lambda: [10, 50, 100],
        description="green's share of requests (percent) at each step; rising, the last one 100",
    )
    hold_s: float = Field(60, gt=0, description="how long each step is held and judged")
    check_interval_s: float = Field(2, gt=0, description="how often a hold compares green with blue")
    max_error_rate_increase: float = Field(
        0.02,
        ge=0,
        le=1,
        description="roll back when green's share of 5xx answers exceeds blue's by more than this",
    )
    max_p95_ratio: float = Field(
        1.5, ge=1, description="roll back when green's p95 generation latency is over this times blue's"
    )
    p95_min_gap_s: float = Field(
        0.5, ge=0, description="...and at least this many seconds over it (small absolute noise is not)"
    )
    min_requests: int = Field(
        10, ge=1, description="generations green must have answered in a hold before its p95 is judged"
    )
    drain_timeout_s: float = Field(
        300, gt=0, description="how long blue's streams in flight may take to finish before it is deleted"
    )
    smoke_timeout_s: float = Field(180, gt=0, description="each smoke-test request's time limit")
    keep_previous_model_name: bool = Field(
        True,
        description="when llm.model_id changes, the previous name keeps working as an alias of the new "
        "model until it is left out of llm.model_aliases at a later upgrade",
    )

    @field_validator("steps")
    @classmethod
    def _rising_to_100(cls, steps: list[int]) -> list[int]:
        if not steps or steps[-1] != 100:
            raise ValueError("the last step must be 100")
        if any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
            raise ValueError("steps must rise strictly, each between 1 and 100")
        return steps
