"""The embedded llama.cpp engine, run in a worker process of its own and restarted when it dies.

The HTTP server never loads llama.cpp: a native crash (a CPU kernel that faults, an OOM kill)
would take every open stream and the server down with it. As vLLM keeps its engine core apart
from its API server, ``LocalEngine`` starts ``chat.models.local.worker`` as a child process
(``process.py``) and speaks length-prefixed msgpack frames with it over pipes (``protocol.py``):
one frame per token, read by one task here. When the worker dies, every request it held ends with
``EngineCrashedError`` (``upstream_unavailable``, retryable), ``ready`` turns false, and a new
worker is started and loads the model by itself. Prompt and answer text are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Final

import structlog

from chat.models.local import protocol as proto
from chat.models.local.files import LocalModelError, validate_model_file
from chat.models.local.jobs import (
    ChatMessage,
    EngineCrashedError,
    EngineNotReadyError,
    EngineOverloadedError,
    Finished,
    GenerationError,
    SamplingParams,
    build_messages,
    failure_of,
)
from chat.models.local.process import WorkerProcess, exit_reason, read_report

log = structlog.get_logger(__name__)

DEFAULT_CONTEXT_TOKENS: Final = 2048
_RESTART_DELAY_S: Final = (0.2, 10.0)  # first delay, and the most it backs off to

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
        self._worker: WorkerProcess | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._jobs: dict[int, asyncio.Queue[_Item]] = {}
        self._counts: dict[int, asyncio.Future[list[int]]] = {}
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
        worker = self._worker
        return worker.pid if worker is not None and worker.alive else None

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
        (tokens,) = await self.count_prompts([messages])
        return tokens

    async def count_prompts(self, prompts: Sequence[Sequence[ChatMessage]]) -> list[int]:
        """Prompt tokens of each message list, chat template applied, in one round trip."""
        self._require_ready()
        count_id = next(self._ids)
        counted: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._counts[count_id] = counted
        try:
            self._send(proto.Count(id=count_id, prompts=[list(m) for m in prompts]))
            tokens = await counted
        finally:
            self._counts.pop(count_id, None)
        if any(count < 0 for count in tokens):
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
                    raise failure_of(item)
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
        config = proto.WorkerConfig(
            model_path=str(self.path), threads=self.threads, context=self._context
        )
        started = time.perf_counter()
        self._worker = worker = await WorkerProcess.spawn(config)
        first = await read_report(worker.reports)
        if type(first) is proto.LoadFailed:
            raise LocalModelError(first.message)
        if type(first) is not proto.Loaded:
            code = await worker.wait()
            raise LocalModelError(
                f"model file {str(self.path)!r} could not be loaded: the model worker "
                f"exited ({exit_reason(code)})"
            )
        self._ready = True
        log.info(
            "local_model_loaded",
            path=str(self.path),
            size_bytes=self.path.stat().st_size,
            threads=self.threads,
            context=self._context,
            load_s=round(time.perf_counter() - started, 3),
            worker_pid=worker.pid,
            system_info=first.system_info.strip(),
        )

    async def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop()

    async def _supervise(self) -> None:
        """Route the worker's reports; when it dies, fail what it held and start another."""
        delay = _RESTART_DELAY_S[0]
        while not self._closed:
            worker = self._worker
            assert worker is not None
            await self._route_reports(worker.reports)
            self._ready = False
            code = await worker.wait()
            if self._closed:
                return
            log.error(
                "local_worker_died",
                worker_pid=worker.pid,
                exit=exit_reason(code),
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
            report = await read_report(stdout)
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
        worker = self._worker
        if worker is None or not worker.send(command):
            raise EngineNotReadyError("the local model is not loaded")

    def _send_quietly(self, command: proto.Command) -> None:
        with contextlib.suppress(EngineNotReadyError, OSError):  # no worker: nothing to cancel
            self._send(command)
