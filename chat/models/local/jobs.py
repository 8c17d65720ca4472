"""One request to the local engine: its messages and sampling, its result, and its errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from chat.models.errors import ModelFailedError, ModelUnavailableError
from chat.models.local import protocol as proto

# Greedy decoding by default: at llama.cpp's chat default (0.2) SmolLM2-135M answers simple
# factual questions wrongly in about half of the runs.
DEFAULT_TEMPERATURE: Final = 0.0
DEFAULT_TOP_P: Final = 0.95

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


def failure_of(report: proto.Failed) -> Exception:
    """The exception that ends a job the worker reported as failed."""
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
