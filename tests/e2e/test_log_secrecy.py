"""Logs that are safe to ship: canary secrets and content go in, none comes out in any line."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.service import Service
from tests.support.sse import events_only, read_frames

UPSTREAM_KEY = "sk-proj-CANARYupstreamKEY0123456789abcdefABCDEF"
CLIENT_KEY = "client-CANARY-bearer-0123456789"
MESSAGE = "CANARY-MESSAGE-please-do-not-log-me"
CARD = "4111 1111 1111 1111"
EMAIL = "canary.person@example.com"
CANARIES = [UPSTREAM_KEY, CLIENT_KEY, MESSAGE, CARD, CARD.replace(" ", ""), EMAIL]
# A JWT the provider answers in two deltas, cut inside its payload: neither half looks like a
# JWT (or any other secret) to the redactor, only the whole does.
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW5hcnktdXNlciJ9.c2lnbmF0dXJlQ0FOQVJZY2FuYXJ5"
JWT_HALVES = (JWT[:30], JWT[30:])
# Loggers allowed to write DEBUG lines: ours and uvicorn's; no library logs payloads here.
OWN_LOGGERS = ("chat", "logging_config", "app", "uvicorn")


def run_scenarios(service: Service) -> None:
    url = service.base_url + "/chat"
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    prompt = f"{MESSAGE} my card is {CARD}, mail {EMAIL}"
    with httpx.Client(timeout=20) as client:
        for message in [prompt, f"[[echo_key]] {prompt}", f"[[fail_after=2]] {prompt}"]:
            with client.stream("POST", url, json={"message": message}, headers=auth) as response:
                assert response.status_code == 200
                response.read()
        client.post(url, json={"message": prompt}, headers={**auth, "Accept": "application/json"})
        # Rejected requests carry secrets too: a wrong key, and a bad body echoing the card.
        client.post(
            url, json={"message": prompt}, headers={"Authorization": f"Bearer {UPSTREAM_KEY}"}
        )
        client.post(
            url,
            content=f'{{"message": 1, "card": "{CARD}"}}',
            headers={**auth, "Content-Type": "application/json"},
        )
        client.get(service.base_url + "/nope", headers=auth)


def test_canaries_when_logging_at_debug_then_never_in_any_log_line(upstream: FakeUpstream) -> None:
    env = {
        "CHAT_BACKEND": "openai",
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "CHAT_OPENAI_API": "chat_completions",
        "CHAT_API_KEYS": CLIENT_KEY,
        "CHAT_LOG_LEVEL": "debug",
    }
    with Service(env) as service:
        run_scenarios(service)
        service.wait_for_log(event="request", path="/nope")
        lines = list(service.lines)
    assert len(lines) > 10
    leaks = [(canary, line) for line in lines for canary in CANARIES if canary in line]
    assert leaks == []
    # The provider got the key and the message: the canaries were really in play.
    assert any(
        r.headers.get("authorization") == f"Bearer {UPSTREAM_KEY}" for r in upstream.requests
    )
    assert any(MESSAGE in str(r.body) for r in upstream.requests)


def test_content_logging_when_turned_on_then_message_and_answer_logged() -> None:
    env = {"CHAT_BACKEND": "fake", "CHAT_FAKE_TOKENS": "3", "CHAT_LOG_CONTENT": "true"}
    with Service(env) as service:
        httpx.post(service.base_url + "/chat", json={"message": MESSAGE}, timeout=20).read()
        access = service.wait_for_log(event="request", path="/chat")
    assert access["message_text"] == MESSAGE
    assert access["answer_text"].startswith("This is a")


@pytest.mark.parametrize("log_content", ["false", "true"])
def test_secret_split_across_deltas_when_logging_at_debug_then_in_no_log_line(
    log_content: str,
) -> None:
    # Server-wide, so the secret is only in the answer, never in the prompt; 200 ms apart, so
    # each piece arrives in a read (and a delta) of its own.
    say = f"say=token:|{JWT_HALVES[0]}|{JWT_HALVES[1]}, delay_ms=200"
    with FakeUpstream(directives=say) as provider:
        env = {
            "CHAT_BACKEND": "openai",
            "OPENAI_BASE_URL": provider.base_url,
            "OPENAI_API_KEY": UPSTREAM_KEY,
            "CHAT_OPENAI_API": "chat_completions",
            "CHAT_LOG_LEVEL": "debug",
            "CHAT_LOG_CONTENT": log_content,
        }
        with Service(env) as service, httpx.Client(base_url=service.base_url, timeout=20) as c:
            with c.stream("POST", "/chat", json={"message": "what is the token?"}) as response:
                frames = events_only(read_frames(response))
            reply = c.post(
                "/chat", json={"message": "again?"}, headers={"Accept": "application/json"}
            )
            created = c.post("/chat/streams", json={"message": "and once more?"})
            with c.stream("GET", created.json()["events_url"]) as response:
                resumed = events_only(read_frames(response))
            service.wait_for_log(event="request", path=created.json()["events_url"])
            lines = list(service.lines)
    # The secret reached the client, in two deltas, by each route.
    deltas = [f.data["text"] for f in frames if f.event == "delta"]
    assert deltas == ["token:", *JWT_HALVES]
    assert reply.json()["text"] == "token:" + JWT
    assert "".join(f.data["text"] for f in resumed if f.event == "delta") == "token:" + JWT
    assert len(lines) > 10
    leaks = [line for line in lines for secret in (JWT, *JWT_HALVES) if secret in line]
    assert leaks == []
    records = [json.loads(line) for line in lines if line.startswith("{")]
    library_debug = [
        r
        for r in records
        if r.get("level") == "debug" and not str(r.get("logger", "")).startswith(OWN_LOGGERS)
    ]
    assert library_debug == []
    assert not [line for line in lines if "sse_starlette" in line or "chunk:" in line]
