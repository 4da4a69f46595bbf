"""`wait_until`: returns the first truthy answer, gives up with a message naming what and how long,
lets the predicate fail early, never sleeps past the deadline, and ticks for progress lines."""

from __future__ import annotations

import time
from itertools import pairwise

import pytest

from cluster import waiting
from cluster.processes import ProcessError, ProcessTimeout
from cluster.waiting import WaitTimeout, wait_until


class FakeClock:
    """Stands in for the `time` module inside cluster.waiting: sleeping advances the clock at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(waiting, "time", fake)
    return fake


def test_returns_the_first_truthy_answer(clock: FakeClock) -> None:
    answers = iter([None, 0, "", "ready", "later"])
    assert wait_until(lambda: next(answers), timeout_s=10, interval_s=1, what="x") == "ready"
    assert clock.sleeps == [1, 1, 1]


def test_no_sleep_when_already_true(clock: FakeClock) -> None:
    assert wait_until(lambda: True, timeout_s=10, interval_s=1, what="x") is True
    assert clock.sleeps == []


def test_timeout_names_what_and_seconds(clock: FakeClock) -> None:
    calls: list[float] = []

    def never() -> bool:
        calls.append(clock.now)
        return False

    with pytest.raises(WaitTimeout) as info:
        wait_until(never, timeout_s=1.0, interval_s=0.3, what="the head opens port 6380")
    assert str(info.value) == "timed out after 1s waiting until the head opens port 6380"
    assert isinstance(info.value, TimeoutError)
    # The last sleep is cut to the deadline, and the predicate gets a final look right at it.
    assert clock.sleeps == pytest.approx([0.3, 0.3, 0.3, 0.1])
    assert calls[-1] == pytest.approx(1.0)


def test_timeout_detail_and_error_type(clock: FakeClock) -> None:
    last = ["no answer"]

    def probe() -> bool:
        last[0] = "HTTP 503"
        return False

    with pytest.raises(ProcessError) as info:  # callers that catch ProcessError still do
        wait_until(
            probe,
            timeout_s=2.5,
            interval_s=1,
            what="nginx is ready",
            detail=lambda: last[0],
            error=ProcessTimeout,
        )
    assert isinstance(info.value, ProcessTimeout) and isinstance(info.value, TimeoutError)
    assert str(info.value) == "timed out after 2.5s waiting until nginx is ready (HTTP 503)"


def test_zero_timeout_still_asks_once(clock: FakeClock) -> None:
    calls: list[int] = []
    with pytest.raises(WaitTimeout, match="after 0s"):
        wait_until(lambda: calls.append(1), timeout_s=0, interval_s=1, what="x")
    assert calls == [1] and clock.sleeps == []


def test_predicate_error_propagates_at_once(clock: FakeClock) -> None:
    calls: list[int] = []

    def exited() -> bool:
        calls.append(1)
        if len(calls) == 2:
            raise ProcessError("ray start exited; see ray-head.log")
        return False

    with pytest.raises(ProcessError, match="ray start exited") as info:
        wait_until(exited, timeout_s=60, interval_s=0.5, what="x")
    assert not isinstance(info.value, WaitTimeout)
    assert len(calls) == 2 and clock.sleeps == [0.5]


def test_ticks_about_every_tick_s(clock: FakeClock) -> None:
    ticks: list[float] = []
    wait_until(
        lambda: clock.now >= 35, timeout_s=100, interval_s=0.5, what="x", on_tick=ticks.append, tick_s=10
    )
    assert [round(t) for t in ticks] == [10, 20, 30]


def test_one_tick_per_period_after_a_slow_check(clock: FakeClock) -> None:
    ticks: list[float] = []

    def slow() -> bool:
        clock.now += 25  # one check took 25 s (an HTTP timeout, say)
        return clock.now >= 100

    wait_until(slow, timeout_s=200, interval_s=1, what="x", on_tick=ticks.append, tick_s=10)
    assert [round(t) for t in ticks] == [25, 51, 77]  # not a burst of the periods a check skipped


def test_no_ticks_without_on_tick(clock: FakeClock) -> None:
    with pytest.raises(WaitTimeout):
        wait_until(lambda: False, timeout_s=30, interval_s=1, what="x", tick_s=10)


@pytest.mark.parametrize(
    "kwargs", [{"timeout_s": -1, "interval_s": 1}, {"timeout_s": 1, "interval_s": 0}, {"tick_s": 0}]
)
def test_bad_arguments(kwargs: dict[str, float]) -> None:
    args: dict[str, float] = {"timeout_s": 1, "interval_s": 1, **kwargs}
    with pytest.raises(ValueError):
        wait_until(lambda: True, what="x", **args)


def test_real_clock_keeps_the_interval() -> None:
    """On the real clock: checks are at least interval_s apart (only lower bounds: a busy host is slow,
    never early), and the wait ends in a timeout no sooner than timeout_s."""
    seen: list[float] = []

    def never() -> bool:
        seen.append(time.monotonic())
        return False

    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        wait_until(never, timeout_s=0.3, interval_s=0.05, what="x")
    assert time.monotonic() - started >= 0.3
    assert len(seen) >= 2
    gaps = [b - a for a, b in pairwise(seen)]
    assert all(gap >= 0.05 - 0.002 for gap in gaps[:-1])  # the last sleep is cut to the deadline
