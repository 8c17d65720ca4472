"""Capacity at the latency target, and what happens to overload.

Capacity: the largest number of concurrent paced streams (by default 100 tokens, 50 ms apart:
20 tokens/s) that one core serves with first-token p99 <= 250 ms, inter-event gap p99 <= 100 ms
and no error. Found by a bisection in log steps, bounded in steps and in time: a step stops as
soon as its result is certain to fail (an error, or more late first tokens or gaps than its p99
allows), and the next one waits for the server to go idle.

Overload: many more streams than that, offered at a steady rate; what the admitted streams get
(first token, gaps, none broken) and how fast the rest hear 503.

The arithmetic (``Bisect``, ``judge``, ``LateCounter``, ``overload_summary``) is pure and tested
in ``tests/unit/bench``; the I/O is ``probe``, ``find_capacity`` and ``measure_overload``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.sse_client import LoadResult, ProcSampler, StreamResult, Target, open_loop, percentiles


@dataclass(frozen=True)
class Targets:
    """What a step must meet to count as served."""

    first_token_ms: float = 250.0
    gap_ms: float = 100.0


def allowed_over(count: int) -> int:
    """How many of ``count`` values may exceed a bound while the p99 (nearest rank) stays in."""
    return count - math.ceil(0.99 * count) if count else 0


def judge(summary: dict[str, Any], targets: Targets) -> tuple[bool, str]:
    """Whether one step's load summary meets the targets, and if not, why."""
    errors = summary.get("errors") or {}
    if errors:
        return False, "errors " + ", ".join(f"{k}={v}" for k, v in sorted(errors.items()))
    first = summary["first_token_ms"]["p99"]
    gap = summary["gap_ms"]["p99"]
    if first is None or first > targets.first_token_ms:
        return False, f"first-token p99 {first} ms"
    if gap is not None and gap > targets.gap_ms:
        return False, f"gap p99 {gap} ms"
    return True, "met"


class LateCounter:
    """Decides, while a step runs, that it cannot pass any more (so it can stop early).

    Sound: it only says so when the final p99 must be over, counting gaps against the most a
    stream can have (``tokens - 1``; coalesced reads give fewer), and any error fails a step.
    """

    def __init__(self, streams: int, tokens: int, targets: Targets) -> None:
        self._first_budget = allowed_over(streams)
        self._gap_budget = allowed_over(streams * max(0, tokens - 1))
        self._first_s = targets.first_token_ms / 1000
        self._gap_s = targets.gap_ms / 1000
        self._gaps_seen: list[int] = []  # per stream, gaps already counted: each counted once
        self._late_gaps = 0

    def failed(self, live: Sequence[StreamResult], now: float) -> str | None:
        """Why the step has failed already, or None."""
        seen = self._gaps_seen
        seen.extend([0] * (len(live) - len(seen)))
        late_first = 0
        for i, r in enumerate(live):
            if r.error is not None:
                return f"error {r.error}"
            if r.first_token_s is None:
                if r.started_at and now - r.started_at > self._first_s:
                    late_first += 1  # still waiting, and already later than allowed
            elif r.first_token_s > self._first_s:
                late_first += 1
            gaps = r.gaps_s
            if len(gaps) > seen[i]:
                self._late_gaps += sum(1 for g in gaps[seen[i] :] if g > self._gap_s)
                seen[i] = len(gaps)
        if late_first > self._first_budget:
            return f"{late_first} first tokens over {self._first_s * 1000:g} ms"
        if self._late_gaps > self._gap_budget:
            return f"{self._late_gaps} gaps over {self._gap_s * 1000:g} ms"
        return None


@dataclass
class Bisect:
    """Steps towards the largest passing count: up from ``start`` by doubling until one fails
    (or down by halving until one passes), then geometric midpoints; at most ``max_steps``."""

    start: int
    low: int = 1
    high: int = 2000
    max_steps: int = 6
    resolution: float = 1.1  # stop once the failing count is within 10% of the passing one
    history: list[tuple[int, bool]] = field(default_factory=list)

    @property
    def passed(self) -> int:
        """The largest count that passed (0 if none)."""
        return max((n for n, ok in self.history if ok), default=0)

    @property
    def failed(self) -> int | None:
        """The smallest count that failed above the largest pass, if any."""
        above = [n for n, ok in self.history if not ok and n > self.passed]
        return min(above, default=None)

    def record(self, count: int, ok: bool) -> None:
        """Note one step's result."""
        self.history.append((count, ok))

    def next(self) -> int | None:
        """The next count to try, or None when done."""
        if len(self.history) >= self.max_steps:
            return None
        if not self.history:
            return min(self.high, max(self.low, self.start))
        lo, hi = self.passed, self.failed
        if hi is None:  # nothing failed yet: go up
            if lo >= self.high:
                return None
            return min(self.high, lo * 2)
        if lo == 0:  # nothing passed yet: go down
            if hi <= self.low:
                return None
            return max(self.low, hi // 2)
        if hi <= lo + 1 or hi / lo <= self.resolution:
            return None
        mid = round(math.sqrt(lo * hi))
        return min(hi - 1, max(lo + 1, mid))


def peak_concurrency(results: Sequence[StreamResult]) -> int:
    """Most of ``results`` open at one moment (from each start and duration)."""
    edges: list[tuple[float, int]] = []
    for r in results:
        edges.append((r.started_at, 1))
        edges.append((r.started_at + r.duration_s, -1))
    edges.sort()
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


def overload_summary(load: LoadResult) -> dict[str, Any]:
    """Admitted streams (HTTP 200) against refused ones (503): their latencies and failures."""
    admitted = [r for r in load.results if r.status == 200]
    refused = [r for r in load.results if r.status == 503]
    other = len(load.results) - len(admitted) - len(refused)
    broken = [r for r in admitted if r.error is not None]
    kinds: dict[str, int] = {}
    for r in broken:
        kinds[r.error or ""] = kinds.get(r.error or "", 0) + 1
    return {
        "offered": len(load.results),
        "admitted": len(admitted),
        "admitted_peak_open": peak_concurrency(admitted),
        "refused_503": len(refused),
        "other_failures": other,
        "broken_admitted": len(broken),
        "broken_kinds": kinds,
        "admitted_first_token_ms": percentiles(
            [r.first_token_s for r in admitted if r.first_token_s is not None]
        ),
        "admitted_gap_ms": percentiles([g for r in admitted for g in r.gaps_s]),
        "refusal_ms": percentiles([r.duration_s for r in refused]),
        "elapsed_s": round(load.elapsed_s, 3),
    }


# --- I/O --------------------------------------------------------------------------------------


async def wait_idle(pid: int, *, share: float = 0.1, timeout_s: float = 10.0) -> float:
    """Wait until the server uses under ``share`` of a core over 0.25 s; the seconds waited."""
    sampler = ProcSampler(pid)
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        before = sampler.cpu_s()
        await asyncio.sleep(0.25)
        if (sampler.cpu_s() - before) / 0.25 < share:
            break
    return round(time.perf_counter() - started, 2)


def paced_target(url: str, tokens: int, delay_ms: float) -> Target:
    """The fake upstream's paced answer, asked for through the chat request."""
    return Target.chat(url + "/chat", f"[[tokens={tokens},delay_ms={delay_ms:g}]] hello")


async def probe(
    target: Target,
    streams: int,
    *,
    rate_per_s: float,
    tokens: int,
    delay_ms: float,
    targets: Targets,
) -> dict[str, Any]:
    """One step: ``streams`` paced streams; the summary, whether it met the targets, and why."""
    nominal_s = tokens * delay_ms / 1000
    live: list[StreamResult] = []
    watcher = LateCounter(streams, tokens, targets)
    loop = asyncio.get_running_loop()
    began = loop.time()
    load_task = asyncio.ensure_future(
        open_loop(target, streams, rate_per_s, timeout_s=nominal_s + 5.0, live=live)
    )
    stopped: str | None = None
    try:
        while not load_task.done():
            await asyncio.wait((load_task,), timeout=0.1)
            if not load_task.done():
                stopped = watcher.failed(live, time.perf_counter())
                if stopped:
                    break
    finally:
        if not load_task.done():
            load_task.cancel()
            await asyncio.gather(load_task, return_exceptions=True)
    if stopped:
        elapsed = round(loop.time() - began, 3)
        return {"streams": streams, "ok": False, "why": f"stopped: {stopped}", "elapsed_s": elapsed}
    summary = load_task.result().summary()
    ok, why = judge(summary, targets)
    return {
        "streams": streams,
        "ok": ok,
        "why": why,
        "first_token_p99_ms": summary["first_token_ms"]["p99"],
        "gap_p99_ms": summary["gap_ms"]["p99"],
        "errors": summary["errors"],
        "elapsed_s": summary["elapsed_s"],
    }


async def find_capacity(
    url: str,
    pid: int,
    *,
    hint: int,
    tokens: int,
    delay_ms: float,
    base_rate: float,
    ramp_max_s: float,
    max_streams: int,
    max_steps: int,
    targets: Targets,
    name: str = "",
) -> dict[str, Any]:
    """Bisect the largest count of concurrent paced streams that meets ``targets``.

    Streams start at ``base_rate`` per second, faster when that would take longer than
    ``ramp_max_s``, so that all of a step's streams are open together.
    """
    target = paced_target(url, tokens, delay_ms)
    search = Bisect(start=hint, high=max_streams, max_steps=max_steps)
    steps = []
    started = time.perf_counter()
    while (count := search.next()) is not None:
        rate = max(base_rate, count / ramp_max_s)
        step = await probe(
            target, count, rate_per_s=rate, tokens=tokens, delay_ms=delay_ms, targets=targets
        )
        step["rate_per_s"] = rate
        step["idle_wait_s"] = await wait_idle(pid)
        search.record(count, step["ok"])
        steps.append(step)
        print(f"    {name} capacity step: {count} streams -> {step['why']}", flush=True)
    return {
        "capacity": search.passed,
        "failed_at": search.failed,
        "steps": steps,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "tokens": tokens,
        "delay_ms": delay_ms,
    }


async def measure_overload(
    url: str, *, streams: int, rate_per_s: float, tokens: int, delay_ms: float
) -> dict[str, Any]:
    """Offer ``streams`` paced streams at ``rate_per_s``; admitted against refused."""
    target = paced_target(url, tokens, delay_ms)
    load = await open_loop(target, streams, rate_per_s, timeout_s=tokens * delay_ms / 1000 + 30)
    summary = overload_summary(load)
    summary["rate_per_s"] = rate_per_s
    return summary
