"""The llama.cpp engine's worker process: a crash ends what it held, and a new worker takes over."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import anyio
import pytest

from chat.models.local.engine import LocalEngine
from chat.models.local.files import default_model_path
from chat.models.local.jobs import (
    EngineCrashedError,
    EngineNotReadyError,
    Finished,
    SamplingParams,
    build_messages,
)
from chat.settings import DEFAULT_INSTRUCTIONS

pytestmark = [pytest.mark.local_model, pytest.mark.anyio]

STEP_TIMEOUT_S = 60.0
QUESTION = "What is the capital of France?"
LONG_ANSWER = "Write a very long story about a dragon who learns to cook."


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def engine() -> AsyncIterator[LocalEngine]:
    pytest.importorskip("llama_cpp")
    engine = LocalEngine(
        default_model_path(), threads=1, context=2048, max_output_tokens=1000, max_queue=1
    )
    with anyio.fail_after(STEP_TIMEOUT_S):
        await engine.load()
    yield engine
    with anyio.fail_after(STEP_TIMEOUT_S):
        await engine.aclose()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


async def _until(predicate: object, what: str) -> None:
    assert callable(predicate)
    for _ in range(600):  # bounded: 60 s
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def _answer(engine: LocalEngine, message: str, max_tokens: int) -> str:
    messages = build_messages(DEFAULT_INSTRUCTIONS, message)
    pieces = []
    async for item in engine.generate(messages, SamplingParams(max_tokens=max_tokens)):
        if isinstance(item, str):
            pieces.append(item)
        else:
            assert isinstance(item, Finished)
    return "".join(pieces)


async def test_worker_when_killed_mid_stream_then_open_and_queued_requests_fail_and_it_comes_back(
    engine: LocalEngine,
) -> None:
    pid = engine.worker_pid
    assert pid is not None and pid != os.getpid()
    generating = engine.generate(build_messages(None, LONG_ANSWER), SamplingParams(max_tokens=1000))
    queued = engine.generate(build_messages(None, QUESTION), SamplingParams(max_tokens=8))
    with anyio.fail_after(STEP_TIMEOUT_S):
        assert isinstance(await anext(generating), str)
        waiting = asyncio.ensure_future(anext(queued))
        await _until(lambda: engine.in_flight == 2, "the second request to queue")

        os.kill(pid, signal.SIGKILL)

        with pytest.raises(EngineCrashedError):
            async for _ in generating:
                pass
        with pytest.raises(EngineCrashedError):
            await waiting
    assert engine.in_flight == 0
    assert not _alive(pid)

    # Not ready until a new worker has loaded the model; then it answers by itself.
    with anyio.fail_after(STEP_TIMEOUT_S):
        await _until(lambda: engine.ready, "the new worker to load")
        assert "Paris" in await _answer(engine, QUESTION, max_tokens=24)
    assert engine.restarts == 1
    assert engine.worker_pid not in (None, pid)


async def test_worker_when_killed_while_idle_then_not_ready_until_replaced(
    engine: LocalEngine,
) -> None:
    pid = engine.worker_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with anyio.fail_after(STEP_TIMEOUT_S):
        await _until(lambda: not engine.ready, "the engine to notice")
        with pytest.raises(EngineNotReadyError):
            await engine.count_prompt_tokens(None, QUESTION)
        await _until(lambda: engine.ready, "the new worker to load")
        assert await engine.count_prompt_tokens(None, QUESTION) > 5


async def test_aclose_when_streaming_then_worker_process_is_gone() -> None:
    pytest.importorskip("llama_cpp")
    engine = LocalEngine(default_model_path(), threads=1, max_output_tokens=1000, max_queue=0)
    with anyio.fail_after(STEP_TIMEOUT_S):
        await engine.load()
        pid = engine.worker_pid
        assert pid is not None
        stream = engine.generate(build_messages(None, LONG_ANSWER), SamplingParams(max_tokens=1000))
        assert isinstance(await anext(stream), str)
        await engine.aclose()
        with pytest.raises(EngineNotReadyError):
            async for _ in stream:
                pass
    assert engine.worker_pid is None
    assert not _alive(pid)
