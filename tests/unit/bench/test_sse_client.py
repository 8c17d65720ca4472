"""The load client keeps its own garbage collection out of what it measures."""

from __future__ import annotations

import gc

from bench.sse_client import measuring


def test_measuring_when_loads_overlap_then_heap_frozen_until_the_last_ends() -> None:
    alive = [[i] for i in range(1000)]  # what earlier phases left: never scanned during a load
    with measuring():
        frozen = gc.get_freeze_count()
        assert frozen >= len(alive)
        with measuring():
            assert gc.get_freeze_count() == frozen  # one freeze for overlapping loads
        assert gc.get_freeze_count() == frozen  # the outer load still runs
    assert gc.get_freeze_count() == 0  # collected as usual again between loads
