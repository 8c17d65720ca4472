"""The embedded llama.cpp engine, run in a worker process of its own and restarted when it dies.

The HTTP server never loads llama.cpp: a native crash (a CPU kernel that faults, an OOM kill)
would take every open stream and the server down with it. As vLLM keeps its engine core apart
from its API server, ``LocalEngine`` starts ``chat.models.local.worker`` as a child process and
speaks length-prefixed msgpack frames with it over pipes (``protocol.py``): one frame per
token, read by one task here. When the worker dies, every request it held ends with
``EngineCrashedError`` (``upstream_unavailable``, retryable), ``ready`` turns false, and a new
worker is started and loads the model by itself. Prompt and answer text are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec
import structlog

from chat.models.errors import ModelFailedError, ModelUnavailableError
from chat.models.local import protocol as proto
from chat.models.local.files import (
    LocalModelError,
    default_model_path,
    validate_model_file,
)
from chat.models.local.worker import WorkerConfig

__all__ = [
    "DEFAULT_CONTEXT_TOKENS",
    "ChatMessage",
    "ContextOverflowError",
    "EngineCrashedError",
    "EngineNotReadyError",
    "EngineOverloadedError",
    "Finished",
    "GenerationError",
    "LocalEngine",
    "LocalModelError",
    "SamplingParams",
    "build_messages",
    "default_model_path",
    "validate_model_file",
]

log = structlog.get_logger(__name__)

DEFAULT_CONTEXT_TOKENS: Final = 2048
# Greedy decoding by default: at llama.cpp's chat default (0.2) SmolLM2-135M answers simple
# factual questions wrongly in about half of the runs.
DEFAULT_TEMPERATURE: Final = 0.0
DEFAULT_TOP_P: Final = 0.95
# The worker exits within a token of its stdin closing, and by itself after 2 s at the most.
_EXIT_WAIT_S: Final = 5.0
_RESTART_DELAY_S: Final = (0.2, 10.0)  # first delay, and the most it backs off to
_STDERR_LINE_CHARS: Final = 500
_PACKAGE_ROOT: Final = Path(__file__).resolve().parents[3]  # the folder that holds chat/

ChatMessage = proto.Message
Finished = proto.Finished


class ContextOverflowError(ModelFailedError):
    """The prompt does not fit the context window."""

    def __init__(self, prompt_tokens: int, context_size: int) -> None:
        super().__init__(
            f"prompt is {prompt_tokens} tokens, the context window holds {context_size} "
            "including the answer"
        )
        self.prompt_tokens = prompt_tokens
        self.context_size = context_size


class EngineOverloadedError(ModelUnavailableError):
    """More requests than one generating plus ``max_queue`` waiting."""


class EngineNotReadyError(ModelUnavailableError):
    """The model is not loaded, or the engine is closed."""


class EngineCrashedError(ModelUnavailableError):
    """The worker process died while it held this request."""


class GenerationError(ModelFailedError):
    """llama.cpp failed while generating; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one generation samples and when it stops."""

    max_tokens: int
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P


JobObserver = Callable[[proto.Started | proto.Ended], None]
_Item = str | proto.Finished | proto.Failed | Exception


class LocalEngine:
    """A llama.cpp model served by one worker process, with a bounded FIFO of waiting requests."""

    def __init__(
        self,
        path: Path,
        *,
        threads: int | None = None,
        context: int = DEFAULT_CONTEXT_TOKENS,
        max_output_tokens: int,
        max_queue: int,
    ) -> None:
        if threads is not None and threads < 1:
            raise ValueError("threads must be at least 1")
        if context < 16:
            raise ValueError("context must be at least 16 tokens")
        if max_output_tokens < 1:
            raise ValueError("max_output_tokens must be at least 1")
        if max_queue < 0:
            raise ValueError("max_queue must be at least 0")
        self.path = path
        self.threads = threads if threads is not None else (os.cpu_count() or 1)
        self.max_output_tokens = max_output_tokens
        self._context = context
        self._max_queue = max_queue
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._jobs: dict[int, asyncio.Queue[_Item]] = {}
        self._counts: dict[int, asyncio.Future[int]] = {}
        self._ids = itertools.count(1)
        self._ready = False
        self._closed = False
        self.restarts = 0
        # Called when a request has to wait behind another: a run nobody reads can give way.
        self.on_contended: Callable[[], None] | None = None
        # Told when the worker starts and ends each job (tests watch the worker with it).
        self.observer: JobObserver | None = None

    @property
    def ready(self) -> bool:
        """Whether a worker has the model loaded and requests are accepted."""
        return self._ready and not self._closed

    @property
    def context_size(self) -> int:
        """Tokens the context window holds, prompt and answer together."""
        return self._context

    @property
    def max_in_flight(self) -> int:
        """Requests the engine takes at once: one generating plus ``max_queue`` waiting."""
        return 1 + self._max_queue

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet finished or cancelled."""
        return len(self._jobs)

    @property
    def waiting(self) -> int:
        """Requests queued behind the one generating."""
        return max(0, len(self._jobs) - 1)

    @property
    def worker_pid(self) -> int | None:
        """The worker process's pid while one runs."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def load(self) -> None:
        """Start the worker and wait until it has loaded the model; raises LocalModelError.

        A failed first load is final (a bad file stays bad): build a new engine to try again.
        Later, a worker that dies is replaced by itself.
        """
        if self._closed:
            raise EngineNotReadyError("the local model engine is closed")
        if self._supervisor is not None:
            return
        validate_model_file(self.path)
        try:
            await self._start_worker()
        except BaseException:
            self._closed = True
            await self._stop_worker()
            raise
        self._supervisor = asyncio.create_task(self._supervise(), name="llama-supervisor")

    async def aclose(self) -> None:
        """End open requests, stop the worker and wait for it to exit."""
        if self._closed:
            return
        self._closed = True
        self._ready = False
        self._fail_all(EngineNotReadyError("the local model engine is closed"))
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        await self._stop_worker()

    async def count_prompt_tokens(self, instructions: str | None, message: str) -> int:
        """Prompt tokens for one user message, with the chat template applied."""
        return await self.count_message_tokens(build_messages(instructions, message))

    async def count_message_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Prompt tokens for these chat messages, with the chat template applied."""
        self._require_ready()
        count_id = next(self._ids)
        counted: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._counts[count_id] = counted
        try:
            self._send(proto.Count(id=count_id, messages=list(messages)))
            tokens = await counted
        finally:
            self._counts.pop(count_id, None)
        if tokens < 0:
            raise GenerationError("the local model could not format the prompt")
        return tokens

    async def generate(
        self, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AsyncGenerator[str | Finished, None]:
        """Yield the answer's text pieces as they come, then one ``Finished``."""
        self._require_ready()
        if len(self._jobs) >= self.max_in_flight:
            raise EngineOverloadedError(
                f"local model busy: {len(self._jobs)} requests in flight, "
                f"limit {self.max_in_flight}"
            )
        job_id = next(self._ids)
        items: asyncio.Queue[_Item] = asyncio.Queue()
        self._jobs[job_id] = items
        finished = False
        try:
            self._send(
                proto.Generate(
                    id=job_id,
                    messages=list(messages),
                    max_tokens=params.max_tokens,
                    temperature=params.temperature,
                    top_p=params.top_p,
                )
            )
            if len(self._jobs) > 1 and self.on_contended is not None:
                self.on_contended()
            while True:
                item = await items.get()
                if type(item) is str:
                    yield item
                elif type(item) is proto.Finished:
                    finished = True
                    # Logged here, not in the worker, so the request's bound context is kept.
                    log.debug(
                        "local_generation_finished",
                        prompt_tokens=item.prompt_tokens,
                        completion_tokens=item.completion_tokens,
                        hit_max_tokens=item.hit_max_tokens,
                        queued_s=round(item.queued_s, 4),
                        generation_s=round(item.generation_s, 4),
                    )
                    yield item
                    return
                elif type(item) is proto.Failed:
                    finished = True
                    raise _failure(item)
                else:
                    assert isinstance(item, Exception)
                    finished = True
                    raise item
        finally:
            # The slot frees at once; the worker stops within a token and takes the next job.
            if self._jobs.pop(job_id, None) is not None and not finished:
                self._send_quietly(proto.Cancel(id=job_id))

    # --- the worker process ------------------------------------------------------------------

    def _require_ready(self) -> None:
        if not self.ready:
            raise EngineNotReadyError("the local model is not loaded")

    async def _start_worker(self) -> None:
        config = WorkerConfig(
            model_path=str(self.path), threads=self.threads, context=self._context
        )
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "chat.models.local.worker",
            msgspec.json.encode(config).decode(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_worker_environment(),
        )
        self._process = process
        assert process.stdout is not None and process.stderr is not None
        self._stderr_task = asyncio.create_task(_log_stderr(process.stderr, process.pid))
        first = await _read_report(process.stdout)
        if type(first) is proto.LoadFailed:
            raise LocalModelError(first.message)
        if type(first) is not proto.Loaded:
            code = await process.wait()
            raise LocalModelError(
                f"model file {str(self.path)!r} could not be loaded: the model worker "
                f"exited ({_exit_reason(code)})"
            )
        self._ready = True
        log.info(
            "local_model_loaded",
            path=str(self.path),
            size_bytes=self.path.stat().st_size,
            threads=self.threads,
            context=self._context,
            load_s=round(time.perf_counter() - started, 3),
            worker_pid=process.pid,
            system_info=first.system_info.strip(),
        )

    async def _stop_worker(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()  # the worker's reader sees the end and the worker exits
        try:
            await asyncio.wait_for(process.wait(), _EXIT_WAIT_S)
        except TimeoutError:
            log.warning("local_worker_kill", worker_pid=process.pid, waited_s=_EXIT_WAIT_S)
            process.kill()
            await process.wait()
        if self._stderr_task is not None:
            await asyncio.gather(self._stderr_task, return_exceptions=True)

    async def _supervise(self) -> None:
        """Route the worker's reports; when it dies, fail what it held and start another."""
        delay = _RESTART_DELAY_S[0]
        while not self._closed:
            process = self._process
            assert process is not None and process.stdout is not None
            await self._route_reports(process.stdout)
            self._ready = False
            code = await process.wait()
            if self._closed:
                return
            log.error(
                "local_worker_died",
                worker_pid=process.pid,
                exit=_exit_reason(code),
                open_requests=len(self._jobs),
            )
            self._fail_all(EngineCrashedError("the local model stopped unexpectedly"))
            await self._stop_worker()
            while not self._closed:
                await asyncio.sleep(delay)
                try:
                    await self._start_worker()
                except LocalModelError as exc:
                    log.error("local_worker_restart_failed", reason=str(exc))
                    await self._stop_worker()
                    delay = min(delay * 2, _RESTART_DELAY_S[1])
                else:
                    self.restarts += 1
                    delay = _RESTART_DELAY_S[0]
                    break

    async def _route_reports(self, stdout: asyncio.StreamReader) -> None:
        jobs, counts = self._jobs, self._counts
        while True:
            report = await _read_report(stdout)
            if report is None:
                return
            kind = type(report)
            if kind is proto.Piece:
                items = jobs.get(report.id)
                if items is not None:
                    items.put_nowait(report.text)
            elif kind is proto.Finished or kind is proto.Failed:
                items = jobs.get(report.id)
                if items is not None:
                    items.put_nowait(report)
            elif kind is proto.Counted:
                counted = counts.get(report.id)
                if counted is not None and not counted.done():
                    counted.set_result(report.tokens)
            elif kind is proto.Started or kind is proto.Ended:
                if self.observer is not None:
                    self.observer(report)
            elif kind is proto.Log:
                getattr(log, report.level, log.warning)(report.event, **report.fields)

    def _fail_all(self, error: Exception) -> None:
        for items in self._jobs.values():
            items.put_nowait(error)
        for counted in self._counts.values():
            if not counted.done():
                counted.set_exception(error)

    def _send(self, command: proto.Command) -> None:
        process = self._process
        if process is None or process.stdin is None or process.stdin.is_closing():
            raise EngineNotReadyError("the local model is not loaded")
        process.stdin.write(proto.frame(command))

    def _send_quietly(self, command: proto.Command) -> None:
        with contextlib.suppress(EngineNotReadyError, OSError):  # no worker: nothing to cancel
            self._send(command)


async def _read_report(stdout: asyncio.StreamReader) -> proto.Report | None:
    """The next frame from the worker; None when it has gone (end of pipe, or garbage)."""
    try:
        header = await stdout.readexactly(proto.HEADER.size)
        body = await stdout.readexactly(proto.body_length(header))
        return proto.report_decoder.decode(body)
    except (asyncio.IncompleteReadError, ValueError, msgspec.DecodeError):
        return None


async def _log_stderr(stderr: asyncio.StreamReader, pid: int) -> None:
    """The worker's stray output (a native crash report, say) as log lines."""
    while line := await stderr.readline():
        text = line.decode("utf-8", "replace").rstrip()
        if text:
            log.warning("local_worker_output", worker_pid=pid, line=text[:_STDERR_LINE_CHARS])


def _worker_environment() -> dict[str, str]:
    """This environment, with our package importable whatever the working directory is."""
    env = dict(os.environ)
    root = str(_PACKAGE_ROOT)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _failure(report: proto.Failed) -> Exception:
    if report.kind == "overflow":
        return ContextOverflowError(report.prompt_tokens, report.context)
    return GenerationError(f"the local model {report.message}")


def build_messages(instructions: str | None, message: str) -> list[ChatMessage]:
    """The chat messages for a single-turn request: optional system, then the user."""
    messages: list[ChatMessage] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    messages.append({"role": "user", "content": message})
    return messages
