"""The capacity search's arithmetic: bisection, verdict, early stop, the overload split."""

from __future__ import annotations

import pytest

from bench.capacity import (
    Bisect,
    LateCounter,
    Targets,
    allowed_over,
    judge,
    overload_summary,
    peak_concurrency,
)
from bench.sse_client import LoadResult, StreamResult


def run_search(search: Bisect, capacity: int) -> list[int]:
    """Drive ``search`` against a server that serves up to ``capacity``; the counts tried."""
    tried = []
    for _ in range(50):  # bounded: the search has its own step limit
        count = search.next()
        if count is None:
            break
        tried.append(count)
        search.record(count, count <= capacity)
    return tried


@pytest.mark.parametrize(
    ("start", "capacity", "max_steps", "expected_passed"),
    [
        (250, 300, 6, 300),  # up, then down to within 10%
        (250, 200, 6, 200),  # down first
        (100, 5000, 6, 2000),  # the upper bound passes: that is the answer
        (64, 0, 6, 0),  # nothing passes at all
    ],
)
def test_bisect_when_driven_then_bounded_and_close(
    start: int, capacity: int, max_steps: int, expected_passed: int
) -> None:
    search = Bisect(start=start, high=2000, max_steps=max_steps)
    tried = run_search(search, capacity)
    assert len(tried) <= max_steps
    assert len(set(tried)) == len(tried)  # never the same count twice
    assert search.passed <= min(capacity, 2000)
    if expected_passed and search.failed is not None:
        # Within the resolution, or out of steps with the bracket as tight as steps allow.
        assert search.passed >= expected_passed / 1.25
    if capacity >= 2000:
        assert search.passed == 2000
    if capacity == 0:
        assert search.passed == 0


def test_bisect_when_bracket_tight_then_stops() -> None:
    search = Bisect(start=100, max_steps=20)
    search.record(100, True)
    search.record(105, False)
    assert search.next() is None


@pytest.mark.parametrize(("count", "expected"), [(0, 0), (1, 0), (99, 0), (100, 1), (250, 2)])
def test_allowed_over_when_count_then_p99_budget(count: int, expected: int) -> None:
    assert allowed_over(count) == expected


def summary(first_p99: float | None, gap_p99: float | None, **errors: int) -> dict[str, object]:
    return {"errors": errors, "first_token_ms": {"p99": first_p99}, "gap_ms": {"p99": gap_p99}}


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (summary(120.0, 60.0), True),
        (summary(250.0, 100.0), True),  # at the targets
        (summary(251.0, 60.0), False),
        (summary(120.0, 101.0), False),
        (summary(120.0, 60.0, status_503=1), False),
        (summary(None, None), False),  # no first token at all
    ],
)
def test_judge_when_summary_then_verdict(value: dict[str, object], ok: bool) -> None:
    assert judge(value, Targets())[0] is ok


def test_late_counter_when_more_late_first_tokens_than_p99_allows_then_failed() -> None:
    counter = LateCounter(streams=100, tokens=10, targets=Targets())
    live = [StreamResult(first_token_s=0.01, started_at=1.0) for _ in range(98)]
    live.append(StreamResult(first_token_s=0.3, started_at=1.0))
    assert counter.failed(live, now=2.0) is None  # one late in 100 still passes p99
    live.append(StreamResult(started_at=1.5))  # no first token yet, 0.5 s after it was sent
    assert counter.failed(live, now=2.0) is not None


def test_late_counter_when_gaps_counted_twice_then_once() -> None:
    counter = LateCounter(streams=2, tokens=51, targets=Targets())  # 100 gaps at most: 1 allowed
    stream = StreamResult(first_token_s=0.01, started_at=1.0, gaps_s=[0.2])
    assert counter.failed([stream], now=1.1) is None
    assert counter.failed([stream], now=1.2) is None  # the same late gap, not a second one
    stream.gaps_s.append(0.2)
    assert counter.failed([stream], now=1.3) is not None


def test_late_counter_when_any_error_then_failed() -> None:
    counter = LateCounter(streams=1000, tokens=100, targets=Targets())
    assert counter.failed([StreamResult(error="status_503", started_at=1.0)], now=1.0)


def test_overload_summary_when_mixed_then_admitted_refused_and_broken_apart() -> None:
    ok = StreamResult(first_token_s=0.02, gaps_s=[0.05, 0.06], status=200, duration_s=5.0)
    broken = StreamResult(
        first_token_s=0.02, status=200, error="connection_lost", started_at=1.0, duration_s=1.0
    )
    refused = StreamResult(status=503, error="status_503", started_at=2.0, duration_s=0.004)
    load = LoadResult([ok, broken, refused, refused], elapsed_s=6.0, peak_open=3)
    out = overload_summary(load)
    assert (out["admitted"], out["refused_503"], out["broken_admitted"]) == (2, 2, 1)
    assert out["broken_kinds"] == {"connection_lost": 1}
    assert out["refusal_ms"]["p99"] == 4.0
    assert out["admitted_peak_open"] == 2
    assert out["other_failures"] == 0


def test_peak_concurrency_when_intervals_overlap_then_most_at_once() -> None:
    runs = [StreamResult(started_at=s, duration_s=d) for s, d in [(0, 5), (1, 1), (1.5, 3), (6, 1)]]
    assert peak_concurrency(runs) == 3
