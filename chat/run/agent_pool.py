"""One Agent object per concurrent run, reused between runs.

The Agents SDK keeps, per Agent object, a list of the runs using it, and scans that list several
times per run (its guard against ``Agent.tools`` changing under concurrent runs). With a single
shared agent each scan costs O(concurrent runs), O(n^2) in all: 1.4 us with one run, 148 us with
100, 1.15 ms with 1,000, at least four scans a run. The SDK's own advice is an agent per run
(``agent.clone()``); clones are kept when their run ends, so a steady load clones nothing.
"""

from __future__ import annotations

from typing import Any

from agents import Agent

from chat.seams import install_sdk_fast_paths


class AgentPool:
    """Hands each run an Agent no other running run holds; all are copies of ``template``."""

    __slots__ = ("_idle", "template")

    def __init__(self, template: Agent[Any]) -> None:
        install_sdk_fast_paths()  # every run's agent comes from a pool: once is enough
        self.template = template
        self._idle: list[Agent[Any]] = [template]

    def acquire(self) -> Agent[Any]:
        """An idle agent, or a new clone when every one is running."""
        return self._idle.pop() if self._idle else self.template.clone()

    def release(self, agent: Agent[Any]) -> None:
        """Give back an agent whose run has ended (at most one per acquire)."""
        self._idle.append(agent)

    @property
    def size(self) -> int:
        """Idle agents; bounded by the peak number of concurrent runs."""
        return len(self._idle)
