"""End-to-end fixtures: the real service in a subprocess, the fake OpenAI upstream in-process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.service import Service


@pytest.fixture(scope="session")
def fake_service() -> Iterator[Service]:
    """The service on the deterministic fake model, 16 tokens per answer."""
    with Service({"CHAT_BACKEND": "fake", "CHAT_FAKE_TOKENS": "16"}) as service:
        yield service


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    """A local fake OpenAI-compatible server, over real HTTP."""
    with FakeUpstream(tokens=8) as fake:
        yield fake
