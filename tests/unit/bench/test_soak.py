"""The soak's pure parts: the RSS slope it judges leaks by, and how it reads a stream's end."""

from __future__ import annotations

import pytest

from bench.soak import slope_per_minute, terminal_code


def test_slope_when_rss_grows_linearly_then_mib_per_minute() -> None:
    points = [(t, 100.0 + 0.05 * t) for t in range(0, 300, 10)]  # 0.05 MiB/s
    assert slope_per_minute(points) == pytest.approx(3.0)


def test_slope_when_flat_with_noise_then_near_zero() -> None:
    points = [(t, 100.0 + (0.5 if t % 20 else -0.5)) for t in range(0, 300, 10)]
    slope = slope_per_minute(points)
    assert slope is not None and abs(slope) < 0.1


@pytest.mark.parametrize("points", [[], [(10.0, 5.0)], [(10.0, 5.0), (10.0, 6.0)]])
def test_slope_when_too_few_distinct_times_then_none(points: list[tuple[float, float]]) -> None:
    assert slope_per_minute(points) is None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'event: delta\nid: 1\ndata: {"text":"a"}\n\nevent: done\nid: 2\ndata: {}\n\n', "done"),
        (b'event: error\nid: 3\ndata: {"type":"error","code":"upstream_rate_limited"}\n\n',
         "upstream_rate_limited"),
        (b"", "unknown"),
    ],
)  # fmt: skip
def test_terminal_code_when_body_ends_then_its_outcome(body: bytes, code: str) -> None:
    assert terminal_code(body) == code
