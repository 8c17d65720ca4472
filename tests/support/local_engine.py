"""The embedded model's engine for tests, loaded once and closed after; skips without llama.cpp."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from chat.models.local.model import LocalEngine, default_model_path

# Generous: the suite shares two cores with other work; a load takes well under a second.
STEP_TIMEOUT_S = 60.0


@asynccontextmanager
async def loaded_engine(
    *, max_output_tokens: int, context: int = 2048
) -> AsyncIterator[LocalEngine]:
    """A ``LocalEngine`` on the shipped GGUF with its worker running; skips when unavailable."""
    pytest.importorskip("llama_cpp")
    engine = LocalEngine(
        default_model_path(),
        threads=None,
        context=context,
        max_output_tokens=max_output_tokens,
        max_queue=2,
    )
    with anyio.fail_after(STEP_TIMEOUT_S):
        await engine.load()
    try:
        yield engine
    finally:
        with anyio.fail_after(STEP_TIMEOUT_S):
            await engine.aclose()
