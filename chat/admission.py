"""Admission control: how many streams may run at once before new ones get 503."""

from __future__ import annotations


class StreamSlots:
    """A counter of open streams with a hard limit; no waiting, callers answer 503 instead."""

    __slots__ = ("_in_use", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._in_use = 0

    @property
    def in_use(self) -> int:
        """Slots currently taken."""
        return self._in_use

    def try_acquire(self) -> bool:
        """Take a slot if one is free."""
        if self._in_use >= self.limit:
            return False
        self._in_use += 1
        return True

    def release(self) -> None:
        """Give a slot back; called exactly once per successful ``try_acquire``."""
        if self._in_use <= 0:
            raise RuntimeError("release() without a matching try_acquire()")
        self._in_use -= 1
