"""Admission control: how many streams may run at once before new ones get 503."""

from __future__ import annotations


class StreamSlots:
    """A counter of open streams under a limit; no waiting, callers answer 503 instead.

    ``cap`` is the hard limit (``CHAT_MAX_CONCURRENT_STREAMS``); ``limit`` is the one in force,
    which the adaptive limit (``adaptive_limit.py``) moves between its floor and the cap.
    """

    __slots__ = ("_in_use", "cap", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.cap = limit
        self.limit = limit
        self._in_use = 0

    @property
    def in_use(self) -> int:
        """Slots currently taken."""
        return self._in_use

    @property
    def full(self) -> bool:
        """Whether ``try_acquire`` would refuse now (an O(1) check before any work)."""
        return self._in_use >= self.limit

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
