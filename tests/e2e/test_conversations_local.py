"""Conversations on the embedded model: it remembers, and history is cut to fit its context."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.conversations import ask, history, new_id, populate
from tests.support.service import Service

pytestmark = pytest.mark.local_model


def test_name_when_told_in_turn_one_then_turn_two_answers_with_it() -> None:
    conversation_id = new_id()
    with Service({"CHAT_BACKEND": "local", "CHAT_MAX_OUTPUT_TOKENS": "32"}) as service:
        told = ask(service, "My name is Ada.", conversation_id)
        assert told.status_code == 200, told.text
        asked = ask(service, "What is my name?", conversation_id)
        assert asked.status_code == 200, asked.text
        assert len(history(service, conversation_id)) == 4
        alone = ask(service, "What is my name?", None)
    # The model was given turn 1: its prompt grew by at least that turn's message and answer.
    grown = asked.json()["usage"]["input_tokens"] - alone.json()["usage"]["input_tokens"]
    assert grown >= told.json()["usage"]["output_tokens"] + 4
    if "Ada" not in asked.json()["text"]:
        # Measured 2026-12-02 (llama.cpp x86-64-v3 build, the service's default instructions,
        # greedy decoding as served): 5 of 5 runs answer turn 2 with turn 1's answer again,
        # "I'm glad to have you as a help. I'm here to help with any kind of creative writing
        # project. What brings you here today?", though "My name is Ada." is in its prompt (the
        # usage check above). Sampling at temperature 0.7, 2 of 20 answers hold "Ada"; the rest
        # name itself ("Ember", "Emily") or say it cannot know. Imperative, so never strict:
        # a model that does answer "Ada" passes, and the history checks above stay hard.
        pytest.xfail(
            "SmolLM2-135M does not recall the name though it is in its prompt: greedy, 5/5 "
            "runs repeat turn 1's answer; at temperature 0.7, 2/20 answers hold 'Ada'"
        )
    assert "Ada" not in alone.json()["text"]


def test_long_history_when_over_the_context_then_newest_turns_that_fit_are_sent(
    tmp_path: Path,
) -> None:
    conversation_id = new_id()
    # 40 turns of ~60 words each: several thousand tokens, against a 512-token context.
    populate(
        tmp_path,
        conversation_id,
        40,
        text=lambda role, i: f"{role} {i}: " + "the quick brown fox jumps over the lazy dog " * 6,
    )
    env = {
        "CHAT_BACKEND": "local",
        "CHAT_LOCAL_CONTEXT": "512",
        "CHAT_MAX_OUTPUT_TOKENS": "16",
        "CHAT_DATA_DIR": str(tmp_path),
    }
    with Service(env) as service:
        reply = ask(service, "Say hello.", conversation_id)
        assert reply.status_code == 200, reply.text
        usage = reply.json()["usage"]
        assert usage["input_tokens"] <= 512 - 16  # the answer's room was kept
        line = service.wait_for_log(event="request", path="/chat", conversation_id=conversation_id)
        assert 0 < line["history_turns"] < 40
        # Each turn is about 130 tokens: the history sent uses most of the room, not a little.
        assert usage["input_tokens"] > 512 - 16 - 2 * 140
        assert len(history(service, conversation_id)) == 82
        too_long = httpx.post(
            service.base_url + "/chat",
            json={"message": "word " * 600, "conversation_id": conversation_id},
            headers={"Accept": "application/json"},
            timeout=30,
        )
        assert too_long.status_code == 422
        assert too_long.json()["error"]["details"][0]["path"] == "$.message"
