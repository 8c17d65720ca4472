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
CALM = 0.5  # the loop's thread busy half the window: room for more


@pytest.mark.parametrize(
    ("lag_ms", "expected"),
    [
        (0, 2.0),  # no lag (the decrease takes the gradient only above the target)
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
    ("limit", "in_use", "lag_ms", "busy", "expected"),
    [
        # keeping up: grows by a step (4 + 2 % of what is in use) from the larger of the two
        (100, 50, 0, 0.5, 100 + 4 + 1),
        (100, 150, 0, 0.5, 150 + 4 + 3),  # was shedding (limit under use): admits again at once
        (100, 100, 10, 0.5, 100 + 4 + 2),  # at the target: still a step
        (995, 100, 0, 0.5, 1000),  # the cap
        (1000, 0, 0, 0.0, 1000),  # idle at the cap stays there
        # keeping up, but the loop's thread is 80 % busy or more: one in as one leaves
        (1000, 300, 0, 0.8, 300),
        (200, 300, 2, 0.95, 200),  # already under what is in use: stays there
        (1000, 2, 0, 1.0, 4),  # never under the floor
        # overloaded: drops below what is in use, from this window on
        (1000, 300, 30, 1.0, 150),  # from in use, not from a limit far above it
        (200, 300, 20, 1.0, 200 * 2 / 3),
        (300, 300, 11, 1.0, 300 * 20 / 21),
        (1000, 6, 500, 1.0, 4),  # never under the floor
        (1000, 0, 500, 1.0, 4),  # a lagging loop with nothing in use: the floor
    ],
)
def test_next_limit_when_window_observed_then_expected(
    limit: float, in_use: int, lag_ms: float, busy: float, expected: float
) -> None:
    assert next_limit(limit, in_use, lag_ms * MS, POLICY, busy) == pytest.approx(expected)


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
    with pytest.raises(ValueError):
        LimitPolicy(cap=10, busy_ceiling=0)
    with pytest.raises(ValueError):
        LimitPolicy(cap=10, step=0)


def fill(slots: StreamSlots, count: int) -> int:
    """Acquire up to ``count`` slots; how many were granted."""
    return sum(slots.try_acquire() for _ in range(count))


def test_limit_when_lag_rises_then_sheds_and_when_lag_falls_then_recovers() -> None:
    slots = StreamSlots(1000)
    adaptive = AdaptiveLimit(slots, POLICY)
    assert adaptive.limit == 1000  # open until the loop says otherwise
    assert fill(slots, 300) == 300
    for _ in range(5):
        adaptive.observe(LoopSample(2 * MS, CALM))  # keeping up: nothing changes for the streams
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

    adaptive.observe(LoopSample(2 * MS, CALM))  # caught up: admits again, at once
    assert not slots.full
    limits = [adaptive.observe(LoopSample(0.0, CALM)) for _ in range(12)]
    assert limits == sorted(limits) and len(set(limits)) == 12  # a step every window


def test_limit_when_lag_near_target_then_grows_by_a_step() -> None:
    slots = StreamSlots(1000)
    adaptive = AdaptiveLimit(slots, POLICY)
    fill(slots, 200)
    adaptive.observe(LoopSample(50 * MS))
    assert adaptive.limit < 200
    adaptive.observe(LoopSample(9.5 * MS, CALM))  # just under the target: a few more, not a flood
    assert 200 < adaptive.limit <= 212


def test_limit_when_arrivals_pour_in_then_admits_a_step_a_window_not_a_flood() -> None:
    """What keeps refusals fast: however many arrive, a calm window lets in only a step."""
    slots = StreamSlots(1000)
    adaptive = AdaptiveLimit(slots, POLICY)
    fill(slots, 100)
    adaptive.observe(LoopSample(40 * MS))  # the set-ups of a burst made the loop late
    admitted = []
    for _ in range(10):
        adaptive.observe(LoopSample(1 * MS, CALM))
        admitted.append(fill(slots, 25))  # 25 arrive each window (250/s)
    assert all(count <= POLICY.step + 1 + slots.in_use * POLICY.growth for count in admitted)
    assert sum(admitted) < 100


def test_limit_when_loop_nearly_full_then_admits_only_as_streams_leave() -> None:
    slots = StreamSlots(1000)
    adaptive = AdaptiveLimit(slots, POLICY)
    fill(slots, 150)
    adaptive.observe(LoopSample(1 * MS, busy=0.9))  # on time, but 90 % busy
    assert adaptive.limit == 150 and fill(slots, 5) == 0
    slots.release()
    slots.release()
    adaptive.observe(LoopSample(1 * MS, busy=0.9))
    assert fill(slots, 5) == 0  # the limit followed what is in use down: none in
    adaptive.observe(LoopSample(1 * MS, CALM))  # room again
    assert fill(slots, 5) == 5
