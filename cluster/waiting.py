"""Polling until something is true: one deadline rule and one timeout error for the cluster package."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """`wait_until` gave up; the message names what it waited for and for how many seconds."""


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout_s: float,
    interval_s: float,
    what: str,
    on_tick: Callable[[float], object] | None = None,
    tick_s: float = 10.0,
    detail: Callable[[], str] | None = None,
    error: type[WaitTimeout] = WaitTimeout,
) -> T:
    """Call `predicate` every `interval_s` until it returns something truthy, and return that.

    `what` completes "waiting until ...", e.g. "the Ray head opens port 6380". An exception from the
    predicate propagates at once (how a caller fails early when the process it waits for has exited).
    `on_tick(elapsed_s)` runs about every `tick_s` seconds while still waiting (progress lines).
    On timeout raises `error` (a WaitTimeout subclass, so callers can keep their own error types), its
    message ending in `detail()` when given (e.g. the last answer seen).
    """
    if timeout_s < 0 or interval_s <= 0 or tick_s <= 0:
        raise ValueError("wait_until: timeout_s >= 0, interval_s > 0 and tick_s > 0 required")
    started = time.monotonic()
    next_tick = tick_s
    while True:
        result = predicate()
        if result:
            return result
        elapsed = time.monotonic() - started
        if elapsed >= timeout_s:
            suffix = f" ({detail()})" if detail is not None else ""
            raise error(f"timed out after {timeout_s:g}s waiting until {what}{suffix}")
        if on_tick is not None and elapsed >= next_tick:
            on_tick(elapsed)
            next_tick = (elapsed // tick_s + 1) * tick_s  # one line per tick even after a slow check
        # Never sleep past the deadline: the predicate gets a last look right at it.
        time.sleep(min(interval_s, timeout_s - elapsed))
