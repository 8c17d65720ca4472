"""Logs that are safe to ship: canary secrets and content go in, none comes out in any line."""

from __future__ import annotations

import httpx

from tests.support.fake_upstream import FakeUpstream
from tests.support.service import Service

UPSTREAM_KEY = "sk-proj-CANARYupstreamKEY0123456789abcdefABCDEF"
CLIENT_KEY = "client-CANARY-bearer-0123456789"
MESSAGE = "CANARY-MESSAGE-please-do-not-log-me"
CARD = "4111 1111 1111 1111"
EMAIL = "canary.person@example.com"
CANARIES = [UPSTREAM_KEY, CLIENT_KEY, MESSAGE, CARD, CARD.replace(" ", ""), EMAIL]


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
