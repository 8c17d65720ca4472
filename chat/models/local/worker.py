"""The llama.cpp worker process: one model, one generation at a time, jobs over stdin.

Started by ``LocalEngine`` as ``python -m chat.models.local.worker CONFIG_JSON``. It reads
``Generate``/``Cancel``/``Count`` frames from stdin on a reader thread and answers on stdout
(``protocol.py``). llama.cpp contexts are not thread-safe, so every evaluation runs on the
main thread, taking jobs from a FIFO; a ``Cancel`` sets the job's event, which stops generation
within a token (an abort callback also interrupts a long prompt evaluation). End of stdin means
the service closed us or died: the worker exits. Prompt and answer text are never logged.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import os
import queue
import signal
import sys
import threading
import time
from typing import Any, Final

import msgspec

from chat.models.local import protocol as proto

_EXIT_AFTER_EOF_S: Final = 2.0
# ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continuation.
_LOG_LEVELS: Final = {3: "warning", 4: "error"}
_PR_SET_PDEATHSIG: Final = 1


class _Job:
    __slots__ = ("cancelled", "enqueued_at", "request")

    def __init__(self, request: proto.Generate) -> None:
        self.request = request
        self.cancelled = threading.Event()
        self.enqueued_at = time.perf_counter()


class _Output:
    """Frames to the service; the reader thread and the main thread both write."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def send(self, message: proto.Report) -> None:
        data = proto.frame(message)
        with self._lock:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]

    def log(self, level: str, event: str, **fields: str | int | float) -> None:
        with contextlib.suppress(OSError):
            self.send(proto.Log(level=level, event=event, fields=fields))


class Worker:
    """The model, its FIFO of jobs and the cancel events of jobs not yet ended."""

    def __init__(self, config: proto.WorkerConfig, output: _Output) -> None:
        self.config = config
        self.out = output
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.pending: dict[int, _Job] = {}
        self.pending_lock = threading.Lock()
        self.llama: Any = None
        self.llama_cpp: Any = None
        self.formatter: Any = None
        self.vocab: Any = None
        self._evaluating: threading.Event | None = None
        self._aborting = False
        self._abort_callback: Any = None
        self._log_callback: Any = None

    # --- loading -----------------------------------------------------------------------------

    def load(self) -> proto.Loaded | proto.LoadFailed:
        path = self.config.model_path
        started = time.perf_counter()
        try:
            import llama_cpp
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:
            return proto.LoadFailed(f"llama-cpp-python is not installed ({exc.name})")
        self.llama_cpp = llama_cpp
        self._route_llama_logs()
        try:
            llama = llama_cpp.Llama(
                model_path=path,
                n_ctx=self.config.context,
                n_threads=self.config.threads,
                n_threads_batch=self.config.threads,
                verbose=False,
            )
        except Exception as exc:
            return proto.LoadFailed(
                f"model file {path!r} could not be loaded by llama.cpp ({type(exc).__name__})"
            )
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            return proto.LoadFailed(f"model file {path!r} has no chat template")
        eos, bos = llama.token_eos(), llama.token_bos()
        # The formatter llama-cpp-python builds for create_chat_completion from GGUF metadata:
        # applying it here gives the exact prompt tokens, so usage is real.
        self.formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llama.detokenize([eos], special=True).decode() if eos >= 0 else "",
            bos_token=llama.detokenize([bos], special=True).decode() if bos >= 0 else "",
        )
        self.vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._abort_callback = llama_cpp.ggml_abort_callback(self._should_abort)
        self.llama = llama
        info = llama_cpp.llama_print_system_info()
        return proto.Loaded(
            load_s=time.perf_counter() - started,
            system_info=info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info),
        )

    def _route_llama_logs(self) -> None:
        llama_cpp = self.llama_cpp

        def forward(level: int, text: bytes, _user_data: Any) -> None:
            name = _LOG_LEVELS.get(level)
            if name is not None and not self._aborting:
                line = text.decode("utf-8", errors="replace").strip()
                if line:
                    self.out.log(name, "llama_cpp_log", message=line)

        # ctypes only keeps the C pointer: the Python callback must stay referenced.
        self._log_callback = llama_cpp.llama_log_callback(forward)
        llama_cpp.llama_log_set(self._log_callback, ctypes.c_void_p(0))

    # --- the reader thread -------------------------------------------------------------------

    def read_commands(self, stdin: Any) -> None:
        """Take frames from the service until its end of the pipe closes."""
        try:
            while True:
                header = _read_exactly(stdin, proto.HEADER.size)
                if header is None:
                    break
                body = _read_exactly(stdin, proto.body_length(header))
                if body is None:
                    break
                self._handle(proto.command_decoder.decode(body))
        finally:
            self._stop_everything()

    def _handle(self, command: proto.Command) -> None:
        if type(command) is proto.Generate:
            job = _Job(command)
            with self.pending_lock:
                self.pending[command.id] = job
            self.jobs.put(job)
        elif type(command) is proto.Cancel:
            with self.pending_lock:
                cancelled = self.pending.get(command.id)
            if cancelled is not None:
                cancelled.cancelled.set()
        elif type(command) is proto.Count:
            tokens = [self._count(messages) for messages in command.prompts]
            self.out.send(proto.Counted(id=command.id, tokens=tokens))

    def _count(self, messages: list[proto.Message]) -> int:
        try:
            return len(self._prompt_tokens(messages))
        except Exception as exc:
            self.out.log("warning", "local_prompt_format_failed", error_type=type(exc).__name__)
            return -1

    def _stop_everything(self) -> None:
        with self.pending_lock:
            for job in self.pending.values():
                job.cancelled.set()
        self.jobs.put(None)
        # The main thread stops within a token; should it not (stuck in llama.cpp), leave anyway.
        timer = threading.Timer(_EXIT_AFTER_EOF_S, os._exit, args=(0,))
        timer.daemon = True
        timer.start()

    # --- the main thread ---------------------------------------------------------------------

    def serve(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            completion = 0
            try:
                if not job.cancelled.is_set():
                    self.out.send(proto.Started(id=job.request.id))
                    completion = self._run(job)
            finally:
                with self.pending_lock:
                    self.pending.pop(job.request.id, None)
                self.out.send(
                    proto.Ended(
                        id=job.request.id,
                        completion_tokens=completion,
                        cancelled=job.cancelled.is_set(),
                    )
                )

    def _prompt_tokens(self, messages: list[proto.Message]) -> list[int]:
        prompt = self.formatter(messages=list(messages)).prompt
        # The template writes the special tokens itself, as create_chat_completion does.
        tokens: list[int] = self.llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        return tokens

    def _should_abort(self, _data: Any) -> bool:
        evaluating = self._evaluating
        if evaluating is None or not evaluating.is_set():
            return False
        # llama.cpp reports an aborted decode as three errors; it is a cancellation, not a fault.
        self._aborting = True
        return True

    def _set_abort(self, on: bool) -> None:
        callback = self._abort_callback if on else self.llama_cpp.ggml_abort_callback()
        self.llama_cpp.llama_set_abort_callback(self.llama.ctx, callback, None)

    def _run(self, job: _Job) -> int:
        """Generate one answer; returns the tokens generated."""
        request, out, llama = job.request, self.out, self.llama
        started = time.perf_counter()
        try:
            prompt = self._prompt_tokens(request.messages)
        except Exception as exc:
            out.log("warning", "local_prompt_format_failed", error_type=type(exc).__name__)
            out.send(proto.Failed(request.id, "generation", "could not format the prompt"))
            return 0
        context = self.config.context
        if len(prompt) >= context:
            out.send(proto.Failed(request.id, "overflow", "", len(prompt), context))
            return 0
        budget = min(request.max_tokens, context - len(prompt))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        is_eog = self.llama_cpp.llama_vocab_is_eog
        vocab, cancelled, job_id = self.vocab, job.cancelled, request.id
        completion = 0
        hit_max = False
        first_token = True
        tokens = llama.generate(
            prompt,
            temp=request.temperature,
            top_p=request.top_p,
            top_k=40,
            min_p=0.05,
            repeat_penalty=1.0,
        )
        # A long prompt evaluates in one blocking call; the abort callback lets cancellation
        # interrupt it. It runs ~600 times a token, so it is switched off after the prompt.
        self._evaluating = cancelled
        self._set_abort(True)
        try:
            for token in tokens:
                if first_token:
                    first_token = False
                    self._evaluating = None
                    self._set_abort(False)
                if is_eog(vocab, token):
                    break
                completion += 1
                text = decoder.decode(llama.detokenize([token]))
                if text:
                    out.send(proto.Piece(job_id, text))
                if completion >= budget:
                    hit_max = True
                    break
                if cancelled.is_set():
                    break
        except Exception as exc:
            if not cancelled.is_set():
                # The exception text may quote the prompt (tokenizer errors do): the type only.
                kind = type(exc).__name__
                out.log("warning", "local_generation_failed", error_type=kind)
                out.send(proto.Failed(job_id, "generation", f"failed while generating ({kind})"))
            return completion
        finally:
            tokens.close()
            self._aborting = False
            self._evaluating = None
            self._set_abort(False)
        tail = decoder.decode(b"", final=True)
        if tail:
            out.send(proto.Piece(job_id, tail))
        out.send(
            proto.Finished(
                id=job_id,
                prompt_tokens=len(prompt),
                completion_tokens=completion,
                hit_max_tokens=hit_max,
                queued_s=started - job.enqueued_at,
                generation_s=time.perf_counter() - started,
            )
        )
        return completion


def _read_exactly(stream: Any, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the service dies, even if a pipe is held elsewhere."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def main(argv: list[str]) -> int:
    config = msgspec.json.decode(argv[1], type=proto.WorkerConfig)
    _die_with_parent()
    # SIGINT (Ctrl-C in a terminal) goes to the whole process group: the service decides when
    # the worker stops, by closing its stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Frames own the original stdout; anything native code prints goes to stderr instead.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    output = _Output(out_fd)
    worker = Worker(config, output)
    status = worker.load()
    output.send(status)
    if isinstance(status, proto.LoadFailed):
        return 3
    reader = threading.Thread(
        target=worker.read_commands, args=(sys.stdin.buffer,), name="commands", daemon=True
    )
    reader.start()
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
