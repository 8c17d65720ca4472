"""Stream slots: a hard limit, no waiting."""

from __future__ import annotations

import pytest

from chat.service.admission import StreamSlots


def test_slots_when_full_then_refuse_until_released() -> None:
    slots = StreamSlots(2)
    assert slots.try_acquire() and slots.try_acquire()
    assert not slots.try_acquire()
    slots.release()
    assert slots.in_use == 1
    assert slots.try_acquire()


def test_release_without_acquire_when_called_then_raises() -> None:
    with pytest.raises(RuntimeError):
        StreamSlots(1).release()
