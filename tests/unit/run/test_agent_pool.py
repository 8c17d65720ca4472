"""Each concurrent run gets an Agent of its own; idle ones are reused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agents import Agent, ModelSettings
from agents.run_internal import agent_tool_configuration

from chat.models.fake import FakeModel
from chat.run.agent_pool import AgentPool
from chat.run.consumer import stream_chat
from chat.run.deadlines import Deadlines

pytestmark = pytest.mark.anyio

TEMPLATE: Agent[Any] = Agent(name="assistant", instructions="Be brief.")


def test_acquire_when_runs_overlap_then_distinct_copies_of_the_template() -> None:
    pool = AgentPool(TEMPLATE)
    first, second, third = pool.acquire(), pool.acquire(), pool.acquire()
    assert len({id(first), id(second), id(third)}) == 3
    for agent in (first, second, third):
        assert (agent.name, agent.instructions) == ("assistant", "Be brief.")


def test_acquire_when_agents_released_then_reused_without_new_clones() -> None:
    pool = AgentPool(TEMPLATE)
    held = [pool.acquire() for _ in range(3)]
    for agent in held:
        pool.release(agent)
    again = [pool.acquire() for _ in range(3)]
    assert {id(a) for a in again} == {id(a) for a in held}
    assert pool.size == 0


class GatedModel(FakeModel):
    """One token, then holds the run open until the gate opens."""

    def __init__(self, gate: asyncio.Event) -> None:
        super().__init__(tokens=1)
        self.gate = gate

    async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        async for event in super().stream_response(*args, **kwargs):
            if event.type == "response.completed":
                await self.gate.wait()
            yield event


async def test_concurrent_runs_on_pooled_agents_then_sdk_tracks_one_run_per_agent() -> None:
    # The SDK's per-agent list of runs (scanned several times per run) stays at one entry.
    pool = AgentPool(TEMPLATE)
    gate = asyncio.Event()
    streams = []
    for _ in range(5):
        agent = pool.acquire()
        events = stream_chat(
            agent=agent,
            model=GatedModel(gate),
            message="hi",
            request_id="r",
            deadlines=Deadlines(),
            model_settings=ModelSettings(),
        )
        await anext(events)  # each run is under way, holding its agent
        streams.append((agent, events))
    active = agent_tool_configuration._resolutions
    assert all(len(active.get(id(agent), [])) == 1 for agent, _ in streams)
    gate.set()
    for agent, events in streams:
        async for _ in events:
            pass
        pool.release(agent)
    assert all(id(agent) not in active for agent, _ in streams)
