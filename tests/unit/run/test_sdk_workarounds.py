"""The Agents SDK behaviours our workarounds exist for, checked on the installed version.

When one of these fails after an upgrade, the SDK changed the behaviour, and the workaround it
names may be removable or may need a change: ``TapModel`` (chat/run/consumer.py) here;
``AgentPool`` (chat/run/agent_pool.py) in tests/unit/run/test_agent_pool.py, which reads the
SDK's per-agent run list. tests/unit/test_seams.py does the same for private APIs.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import httpx
import openai
import pytest
from agents import Agent, RunConfig, Runner

from tests.unit.run.test_consumer import ScriptModel

pytestmark = pytest.mark.anyio


def _changed(what: str) -> str:
    return f"openai-agents {version('openai-agents')} changed {what}"


async def test_sdk_when_stream_fails_after_deltas_then_queued_deltas_dropped() -> None:
    request = httpx.Request("POST", "http://upstream/v1/chat/completions")
    model = ScriptModel(["a", "b", "c"], fail_with=openai.APIConnectionError(request=request))
    agent: Agent[Any] = Agent(name="t", instructions="Be brief.", model=model)
    result = Runner.run_streamed(agent, "hi", run_config=RunConfig(tracing_disabled=True))
    deltas: list[str] = []

    async def read_all() -> None:
        async for event in result.stream_events():
            data = getattr(event, "data", None)
            if getattr(data, "type", None) == "response.output_text.delta":
                deltas.append(data.delta)

    with pytest.raises(openai.APIConnectionError):
        await read_all()
    assert deltas != ["a", "b", "c"], _changed(
        "how a failed stream ends: queued deltas now arrive (TapModel may go)"
    )
