"""The naive design, as a benchmark reference: what a first version of this service looks like.

FastAPI with a pydantic request model, ``StreamingResponse`` over an async generator,
``Runner.run_streamed`` on the stock ``OpenAIChatCompletionsModel``, and ``json.dumps`` per
delta. It emits the same SSE frames as the service (``event``, ``id``, one-line ``data``) so the
loads are comparable; it has none of the service's checks, deadlines or logs.

    OPENAI_BASE_URL=http://127.0.0.1:9001/v1 OPENAI_API_KEY=sk-bench \\
        uvicorn bench.naive_app:app --port 8002
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator

from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, RunConfig, Runner
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from openai import AsyncOpenAI
from pydantic import BaseModel

app = FastAPI()
client = AsyncOpenAI()
model = OpenAIChatCompletionsModel(
    model=os.environ.get("CHAT_MODEL", "fake-model"), openai_client=client
)
agent: Agent[None] = Agent(
    name="assistant",
    instructions="You are a helpful assistant.",
    model=model,
    model_settings=ModelSettings(include_usage=True),
)


class ChatRequest(BaseModel):
    """The request body."""

    message: str


def frame(event: str, event_id: int, data: dict[str, object]) -> str:
    """One SSE frame, encoded the obvious way."""
    return f"event: {event}\nid: {event_id}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@app.post("/chat")
async def chat(body: ChatRequest) -> StreamingResponse:
    """Stream the agent's answer to one message."""
    request_id = uuid.uuid4().hex

    async def events() -> AsyncIterator[str]:
        result = Runner.run_streamed(
            agent, input=body.message, run_config=RunConfig(tracing_disabled=True)
        )
        event_id = 0
        async for event in result.stream_events():
            if event.type == "raw_response_event" and event.data.type == (
                "response.output_text.delta"
            ):
                event_id += 1
                yield frame("delta", event_id, {"type": "delta", "text": event.data.delta})
        usage = result.context_wrapper.usage
        event_id += 1
        yield frame(
            "done",
            event_id,
            {
                "type": "done",
                "finish_reason": "stop",
                "usage": {
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "total_tokens": usage.total_tokens,
                },
                "request_id": request_id,
            },
        )

    return StreamingResponse(events(), media_type="text/event-stream")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness, for the benchmark's start-up wait."""
    return {"status": "ok"}
