"""The CORS allowlist (``CHAT_CORS_ORIGINS``) over real sockets: who gets which headers."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.service import Service
from tests.support.sse import events_only, read_frames

ALLOWED = "https://app.example"
ALSO_ALLOWED = "http://localhost:5173"
OTHER = "https://evil.example"
JSON_REPLY = {"Accept": "application/json"}


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def preflight(client: httpx.Client, origin: str, path: str = "/chat") -> httpx.Response:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    env = {
        "CHAT_BACKEND": "fake",
        "CHAT_FAKE_TOKENS": "3",
        "CHAT_CORS_ORIGINS": f"{ALLOWED},{ALSO_ALLOWED}",
    }
    with Service(env) as service, httpx.Client(base_url=service.base_url, timeout=20) as client:
        yield client


@pytest.mark.parametrize("origin", [ALLOWED, ALSO_ALLOWED])
def test_allowed_origin_when_posting_then_origin_echoed_and_ids_exposed(
    client: httpx.Client, origin: str
) -> None:
    response = client.post(
        "/chat", json={"message": "hi"}, headers={"Origin": origin, **JSON_REPLY}
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    assert "origin" in response.headers["vary"].lower()
    exposed = response.headers["access-control-expose-headers"].lower()
    assert {"x-request-id", "x-stream-id", "retry-after"} <= {h.strip() for h in exposed.split(",")}
    assert "access-control-allow-credentials" not in response.headers


def test_allowed_origin_when_streaming_then_event_stream_carries_allow_origin(
    client: httpx.Client,
) -> None:
    with client.stream(
        "POST", "/chat", json={"message": "hi"}, headers={"Origin": ALLOWED}
    ) as response:
        frames = events_only(read_frames(response))
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert frames[-1].event == "done"
    created = client.post("/chat/streams", json={"message": "hi"}, headers={"Origin": ALLOWED})
    assert created.headers["access-control-allow-origin"] == ALLOWED
    reader = client.get(created.json()["events_url"], headers={"Origin": ALLOWED})
    assert reader.headers["access-control-allow-origin"] == ALLOWED


@pytest.mark.parametrize("path", ["/chat", "/chat/streams"])
def test_preflight_when_json_post_from_allowed_origin_then_passes(
    client: httpx.Client, path: str
) -> None:
    response = preflight(client, ALLOWED, path)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    methods = {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    assert "POST" in methods
    allowed = response.headers["access-control-allow-headers"].lower()
    assert {"content-type", "authorization"} <= {h.strip() for h in allowed.split(",")}
    assert int(response.headers["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in response.headers


def test_other_origin_when_requesting_then_no_cors_headers(client: httpx.Client) -> None:
    response = client.post("/chat", json={"message": "hi"}, headers={"Origin": OTHER, **JSON_REPLY})
    assert response.status_code == 200  # CORS is the browser's check: the server only says no
    assert cors_headers(response) == {}
    with client.stream("POST", "/chat", json={"message": "hi"}, headers={"Origin": OTHER}) as r:
        r.read()
    assert cors_headers(r) == {}


def test_other_origin_when_preflighting_then_rejected_without_allow_origin(
    client: httpx.Client,
) -> None:
    response = preflight(client, OTHER)
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_no_origin_when_requesting_then_no_cors_headers(client: httpx.Client) -> None:
    response = client.post("/chat", json={"message": "hi"}, headers=JSON_REPLY)
    assert cors_headers(response) == {}


def test_wildcard_when_configured_then_never_echoed_with_credentials() -> None:
    """``*`` means any page may read answers, but never with the browser's credentials."""
    env = {"CHAT_BACKEND": "fake", "CHAT_FAKE_TOKENS": "3", "CHAT_CORS_ORIGINS": "*"}
    with Service(env) as service, httpx.Client(base_url=service.base_url, timeout=20) as client:
        answers = [
            client.post("/chat", json={"message": "hi"}, headers={"Origin": OTHER, **JSON_REPLY}),
            # A cookie makes the browser send credentials: it must not be allowed to read this.
            client.post(
                "/chat",
                json={"message": "hi"},
                headers={"Origin": OTHER, "Cookie": "session=1", **JSON_REPLY},
            ),
            preflight(client, OTHER),
        ]
    assert [r.status_code for r in answers] == [200, 200, 200]
    for response in answers:
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers
