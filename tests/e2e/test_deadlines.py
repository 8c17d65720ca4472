"""Deadlines on the model, end to end: when they fire, measured from what the client sees.

The service talks to the fake upstream over real HTTP; the client reads the stream over a real
socket and stamps each frame as it arrives. Bounds are generous (the machine is shared) but
each one separates the right deadline from the wrong one by seconds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream, expected_text
from tests.support.service import Service
from tests.support.sse import Frame, FrameParser

IDLE_S = 0.5
FIRST_TOKEN_S = 4.0
TOTAL_S = 3.0
# Scheduling slack on a busy 2-core machine; still well below the other deadlines.
SLACK_S = 1.0


@pytest.fixture(scope="module")
def service(upstream: FakeUpstream) -> Iterator[Service]:
    env = {
        "CHAT_BACKEND": "openai",
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "sk-test-deadlines",
        "CHAT_OPENAI_API": "chat_completions",
        "CHAT_MODEL": "fake-model",
        "CHAT_FIRST_TOKEN_TIMEOUT_S": str(FIRST_TOKEN_S),
        "CHAT_IDLE_TIMEOUT_S": str(IDLE_S),
        "CHAT_TOTAL_TIMEOUT_S": str(TOTAL_S),
        "CHAT_DETACHED_GRACE_S": "0",
    }
    with Service(env) as service:
        yield service


def timed_frames(service: Service, message: str) -> tuple[float, list[tuple[float, Frame]]]:
    """The request's start and every event frame with the monotonic time it arrived."""
    parser = FrameParser()
    frames: list[tuple[float, Frame]] = []
    started = time.monotonic()
    with httpx.stream(
        "POST", service.base_url + "/chat", json={"message": message}, timeout=20
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            frame = parser.feed(line)
            if frame is not None and frame.event is not None:
                frames.append((time.monotonic(), frame))
    return started, frames


def test_idle_deadline_when_shorter_than_first_token_then_fires_after_idle_not_first_token(
    service: Service,
) -> None:
    _, frames = timed_frames(service, f"[[hang_after=2]] {uuid.uuid4().hex}")
    events = [frame for _, frame in frames]
    assert "".join(f.data["text"] for f in events if f.event == "delta") == expected_text(2)
    assert [f.event for f in events][-1] == "error"
    assert events[-1].data["code"] == "upstream_timeout"
    last_delta_at = max(at for at, frame in frames if frame.event == "delta")
    gap = frames[-1][0] - last_delta_at
    # Idle 0.5 s after the last token; the first-token deadline (4 s) and the total one (3 s)
    # are seconds later, so a gap under 1.5 s can only be the idle deadline.
    assert IDLE_S * 0.8 <= gap < IDLE_S + SLACK_S, f"idle deadline fired {gap:.2f} s after"


def test_total_deadline_when_tokens_keep_coming_then_one_timeout_error_at_total(
    service: Service, upstream: FakeUpstream
) -> None:
    marker = uuid.uuid4().hex
    # 100 tokens 100 ms apart: never idle for 0.5 s, but 10 s in all, over the 3 s total.
    started, frames = timed_frames(service, f"[[tokens=100,delay_ms=100]] {marker}")
    events = [frame for _, frame in frames]
    terminals = [f for f in events if f.event in {"done", "error"}]
    assert len(terminals) == 1 and terminals[0] is events[-1]
    assert (events[-1].data["code"], events[-1].data["retryable"]) == ("upstream_timeout", True)
    deltas = [f for f in events if f.event == "delta"]
    assert 3 <= len(deltas) < 100
    elapsed = frames[-1][0] - started
    assert TOTAL_S * 0.8 <= elapsed < TOTAL_S + SLACK_S, f"total deadline fired at {elapsed:.2f} s"
    record = upstream.wait_for_request(lambda r: marker in str(r.body), timeout=5)
    assert upstream.wait_for_disconnect(record, timeout=2)
    assert record.tokens_sent < 100
