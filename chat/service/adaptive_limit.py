"""The adaptive stream limit: how many streams to admit, from how late the event loop runs.

Pure arithmetic, no clock and no I/O: ``chat/service/loop_lag.py`` measures the lag and calls
``AdaptiveLimit.observe`` once per window.

The decrease has the shape of Envoy's adaptive-concurrency gradient controller and Netflix's
Gradient2 (``limit = gradient * limit``, the gradient clamped so that one window can at most halve
it), with the event loop's lag in place of a request's round-trip time. On one core a
stream costs CPU per token, so what it costs depends on its token rate; a count of streams per
core cannot know that, but the loop can: while the core keeps up, a timer fires on time; once
the work offered outruns it, every callback (a token to forward, a first token) waits behind the
backlog, and the timer fires that much late. Lag is also blind to the provider's own latency,
which a first-token baseline is not.

- lag above the target: the limit drops below what is in use (to half at three times the target),
  so new streams are refused from this window on while the admitted ones keep their pace;
- lag at or below the target while the loop's thread is ``busy_ceiling`` (80 %) busy or more: the
  limit holds at what is in use, so a stream is admitted only when another leaves;
- otherwise the limit grows by a step (``step`` plus ``growth`` of what is in use) from the larger
  of the limit and what is in use, so the last window's shedding ends at once.

The increase is additive and the decrease multiplicative (AIMD, as in TCP and the AIMD limit of
Netflix's concurrency-limits), and it stops short of a full core, because what a new stream costs
first is its set-up (about 3 ms of CPU here, against about 110 us a token): a limit that doubles
after one calm window lets a whole window's arrivals in at once, their set-ups make the next
window late, and every refusal then waits behind them. Measured at 1,000 streams offered at 250/s
(same machine, same hour): a limit that doubled refused in p99 224 ms and admitted with
first-token p99 307 ms; this rule refused in 8 ms and admitted with 85 ms.

Lag counts only while this process is busy (its loop thread used at least ``busy_share`` of the
window's wall time): a loop that is late while the process hardly runs is waiting for a core that
others use, not behind on its own work, and refusing streams would not help it. The floor keeps a
few streams admitted whatever happens; ``CHAT_MAX_CONCURRENT_STREAMS`` stays the cap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

MIN_GRADIENT = 0.5
MAX_GRADIENT = 2.0


@dataclass(frozen=True, slots=True)
class LoopSample:
    """One window of the event loop: its timer lag (p90) and the CPU share its thread used."""

    lag_s: float
    busy: float = 1.0


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """The bounds and the target of the adaptive limit."""

    cap: int
    floor: int = 4
    target_lag_s: float = 0.005
    busy_share: float = 0.5
    busy_ceiling: float = 0.8
    step: int = 4
    growth: float = 0.02

    def __post_init__(self) -> None:
        if self.cap < 1 or self.floor < 1:
            raise ValueError("cap and floor must be at least 1")
        if self.target_lag_s <= 0:
            raise ValueError("target_lag_s must be positive")
        if not 0 <= self.busy_share <= 1 or not 0 < self.busy_ceiling <= 1:
            raise ValueError("busy_share and busy_ceiling must be between 0 and 1")
        if self.step < 1 or self.growth < 0:
            raise ValueError("step must be at least 1 and growth not negative")


def gradient(lag_s: float, target_s: float) -> float:
    """``2T / (lag + T)`` clamped to [0.5, 2]: 2 with no lag, 1 at the target, 0.5 from 3T."""
    value = 2 * target_s / (max(lag_s, 0.0) + target_s)
    return min(MAX_GRADIENT, max(MIN_GRADIENT, value))


def counted_lag(sample: LoopSample, policy: LimitPolicy) -> float:
    """The window's lag if the process was busy; else none of it is ours."""
    return sample.lag_s if sample.busy >= policy.busy_share else 0.0


def next_limit(
    limit: float, in_use: int, lag_s: float, policy: LimitPolicy, busy: float = 0.0
) -> float:
    """The limit for the next window, from this window's (counted) lag, the share of the window
    the loop's thread was busy, and the streams in use."""
    if lag_s > policy.target_lag_s:
        # From what is in use, not from a limit that may stand far above it: the streams in use
        # are what makes the loop late, and refusing must start now, not after several windows.
        new = min(limit, in_use) * gradient(lag_s, policy.target_lag_s)
    elif busy >= policy.busy_ceiling:
        new = min(limit, in_use)  # nearly a full core: one in only as one leaves
    else:
        new = max(limit, in_use) + policy.step + in_use * policy.growth
    return float(min(policy.cap, max(policy.floor, new)))


def window_lag(samples: Sequence[float]) -> float:
    """One window's lag: the p90 (nearest rank) of its timer lags, so one stray pause (a GC
    collection, a moment descheduled) does not count as overload, while a backlog, which makes
    every timer late, does."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


class Slots(Protocol):
    """What the limit steers: a counter in use and a settable limit (``StreamSlots``)."""

    limit: int

    @property
    def in_use(self) -> int: ...


class AdaptiveLimit:
    """Steers ``slots.limit`` from one lag sample a window."""

    __slots__ = ("_estimate", "_slots", "last", "policy")

    def __init__(self, slots: Slots, policy: LimitPolicy) -> None:
        self._slots = slots
        self.policy = policy
        # Start open (at the cap): the first overload is seen in the lag within a window.
        self._estimate = float(policy.cap)
        self._slots.limit = policy.cap
        self.last = LoopSample(0.0, 0.0)

    @property
    def limit(self) -> int:
        """The limit now in force."""
        return self._slots.limit

    def observe(self, sample: LoopSample) -> int:
        """Take one window's sample; set and return the new limit."""
        self.last = sample
        lag_s = counted_lag(sample, self.policy)
        self._estimate = next_limit(
            self._estimate, self._slots.in_use, lag_s, self.policy, sample.busy
        )
        self._slots.limit = int(self._estimate)
        return self._slots.limit
