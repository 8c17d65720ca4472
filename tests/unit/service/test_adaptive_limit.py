"""The adaptive stream limit: the arithmetic by table, then its behaviour on fed lag samples."""

from __future__ import annotations

import pytest

from chat.service.adaptive_limit import (
    AdaptiveLimit,
    LimitPolicy,
    LoopSample,
    counted_lag,
    gradient,
    next_limit,
    window_lag,
)
from chat.service.admission import StreamSlots

MS = 0.001
POLICY = LimitPolicy(cap=1000, floor=4, target_lag_s=10 * MS)


@pytest.mark.parametrize(
    ("lag_ms", "expected"),
    [
        (0, 2.0),  # no lag: may double
        (-3, 2.0),  # a timer that fired early is no lag
        (5, 4 / 3),
        (10, 1.0),  # at the target: hold
        (20, 2 / 3),
        (30, 0.5),  # three times the target: halve
        (500, 0.5),  # never more than halve in one window
    ],
)
def test_gradient_when_lag_given_then_clamped_ratio(lag_ms: float, expected: float) -> None:
    assert gradient(lag_ms * MS, 10 * MS) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("limit", "in_use", "lag_ms", "expected"),
    [
        # healthy: grows from the larger of limit and in use, never past the cap
        (100, 50, 0, 200),
        (100, 150, 0, 300),  # was shedding (limit under use): admits again at once
        (100, 100, 10, 101),  # at the target: at least one more than in use
        (900, 100, 0, 1000),  # the cap
        (1000, 0, 0, 1000),  # idle at the cap stays there
        # overloaded: drops below what is in use, from this window on
        (1000, 300, 30, 150),  # from in use, not from a limit far above it
        (200, 300, 20, 200 * 2 / 3),
        (300, 300, 11, 300 * 20 / 21),
        (1000, 6, 500, 4),  # never under the floor
        (1000, 0, 500, 4),  # a lagging loop with nothing in use: the floor
    ],
)
def test_next_limit_when_window_observed_then_expected(
    limit: float, in_use: int, lag_ms: float, expected: float
) -> None:
    assert next_limit(limit, in_use, lag_ms * MS, POLICY) == pytest.approx(expected)


def test_next_limit_when_cap_under_floor_then_cap() -> None:
    policy = LimitPolicy(cap=2, floor=4, target_lag_s=10 * MS)
    assert next_limit(2, 2, 1.0, policy) == 2


@pytest.mark.parametrize(
    ("samples_ms", "expected_ms"),
    [
        ([], 0),
        ([3], 3),
        ([1, 1, 1, 1, 1, 1, 1, 1, 1, 80], 1),  # one stray pause in ten is not overload
        ([1, 1, 1, 1, 1, 1, 1, 1, 70, 80], 70),  # two are
        ([40, 50, 60], 60),  # few ticks (the loop is that late): the worst
    ],
)
def test_window_lag_when_samples_then_p90(samples_ms: list[float], expected_ms: float) -> None:
    assert window_lag([s * MS for s in samples_ms]) == pytest.approx(expected_ms * MS)


@pytest.mark.parametrize(
    ("lag_ms", "busy", "counted_ms"),
    [
        (40, 1.0, 40),  # behind on our own work
        (40, 0.5, 40),
        (40, 0.1, 0),  # late while hardly running: waiting for a core others use
        (3, 0.0, 0),
    ],
)
def test_counted_lag_when_busy_or_not_then_counted_or_ignored(
    lag_ms: float, busy: float, counted_ms: float
) -> None:
    assert counted_lag(LoopSample(lag_ms * MS, busy), POLICY) == pytest.approx(counted_ms * MS)


def test_limit_when_lag_high_but_process_idle_then_not_shedding() -> None:
    slots = StreamSlots(1000)
    adaptive = AdaptiveLimit(slots, POLICY)
    fill(slots, 6)
    for _ in range(5):
        adaptive.observe(LoopSample(80 * MS, busy=0.05))
    assert adaptive.limit == 1000 and not slots.full


def test_policy_when_out_of_range_then_value_error() -> None:
    with pytest.raises(ValueError):
        LimitPolicy(cap=0)
    with pytest.raises(ValueError):
        LimitPolicy(cap=10, target_lag_s=0)
    with pytest.raises(ValueError):
        LimitPolicy(cap=10, busy_share=1.5)


def fill(slots: StreamSlots, count: int) -> int:
    """Acquire up to ``count`` slots; how many were granted."""
    return sum(slots.try_acquire() for _ in range(count))


def test_limit_when_lag_rises_then_sheds_and_when_lag_falls_then_recovers() -> None:
    slots = StreamSlots(1000)
    adaptive = AdaptiveLimit(slots, POLICY)
    assert adaptive.limit == 1000  # open until the loop says otherwise
    assert fill(slots, 300) == 300
    for _ in range(5):
        adaptive.observe(LoopSample(2 * MS))  # keeping up: nothing changes for the streams
    assert fill(slots, 10) == 10

    adaptive.observe(LoopSample(40 * MS))  # a backlog: refuse from this window on
    assert adaptive.limit < slots.in_use == 310
    assert slots.full and fill(slots, 50) == 0
    for _ in range(3):
        adaptive.observe(LoopSample(40 * MS))  # still behind: still refusing
    assert slots.in_use == 310 and fill(slots, 50) == 0

    for _ in range(400):  # streams end meanwhile; the limit follows them down, not past the floor
        if slots.in_use:
            slots.release()
        adaptive.observe(LoopSample(40 * MS))
    assert adaptive.limit == POLICY.floor
    assert fill(slots, 10) == POLICY.floor  # the floor is always admitted

    adaptive.observe(LoopSample(2 * MS))  # caught up: admits again, at once
    assert not slots.full
    limits = [adaptive.observe(LoopSample(0.0)) for _ in range(12)]
    assert limits == sorted(limits) and limits[-1] == POLICY.cap


def test_limit_when_lag_near_target_then_grows_slowly() -> None:
    slots = StreamSlots(1000)
    adaptive = AdaptiveLimit(slots, POLICY)
    fill(slots, 200)
    adaptive.observe(LoopSample(50 * MS))
    assert adaptive.limit < 200
    adaptive.observe(LoopSample(9.5 * MS))  # just under the target: a few more, not a flood
    assert 200 < adaptive.limit <= 212
