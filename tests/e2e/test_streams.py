"""Resumable streams over real sockets: replay, resume from every id, 204, DELETE, grace, chaos."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from chat.models.fake import fake_tokens
from tests.support.fake_upstream import FakeUpstream
from tests.support.service import Service
from tests.support.sse import Frame, answer_text, events_only, parse_lines

TOKENS = 24
EXPECTED = "".join(fake_tokens(TOKENS))


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    env = {
        "CHAT_BACKEND": "fake",
        "CHAT_FAKE_TOKENS": str(TOKENS),
        "CHAT_FAKE_DELAY_MS": "15",
        "CHAT_API_KEYS": "test-key",
    }
    with Service(env) as service:
        yield service


@pytest.fixture
def client(service: Service) -> Iterator[httpx.Client]:
    headers = {"Authorization": "Bearer test-key"}
    with httpx.Client(base_url=service.base_url, timeout=20, headers=headers) as client:
        yield client


def create(client: httpx.Client, message: str = "hi") -> str:
    response = client.post("/chat/streams", json={"message": message})
    assert response.status_code == 201, response.text
    return str(response.json()["events_url"])


def read(
    client: httpx.Client, url: str, after: int | None = None, limit: int | None = None
) -> tuple[int, list[Frame]]:
    """GET the stream (optionally after an id); stop after ``limit`` events."""
    headers = {} if after is None else {"Last-Event-ID": str(after)}
    frames: list[Frame] = []
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code != 200:
            return response.status_code, []
        for frame in parse_lines(response.iter_lines()):
            frames.append(frame)
            if limit is not None and len(events_only(frames)) >= limit:
                break
    return 200, frames


def ids(frames: list[Frame]) -> list[int]:
    return [int(f.id) for f in events_only(frames) if f.id is not None]


def test_create_when_posted_then_201_with_location_and_unguessable_id(
    client: httpx.Client,
) -> None:
    response = client.post("/chat/streams", json={"message": "hi"})
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == body["events_url"]
    assert body["events_url"] == f"/chat/streams/{body['stream_id']}"
    assert len(body["stream_id"]) >= 22  # 128 random bits, base64url
    assert response.headers["x-request-id"] == body["request_id"]


def test_create_when_key_missing_then_401(service: Service) -> None:
    response = httpx.post(service.base_url + "/chat/streams", json={"message": "hi"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_read_when_from_start_then_retry_then_every_event_once(client: httpx.Client) -> None:
    url = create(client)
    status, frames = read(client, url)
    assert status == 200
    assert frames[0].retry == 1000
    assert ids(frames) == list(range(1, TOKENS + 2))
    assert answer_text(events_only(frames)) == EXPECTED
    assert events_only(frames)[-1].event == "done"


def test_resume_when_finished_then_every_last_event_id_reassembles(client: httpx.Client) -> None:
    url = create(client)
    _, full = read(client, url)
    events = events_only(full)
    last = len(events)
    for k in range(last):
        status, rest = read(client, url, after=k)
        assert status == 200
        assert ids(rest) == list(range(k + 1, last + 1))
        assert answer_text(events[:k] + events_only(rest)) == EXPECTED


def test_resume_when_running_then_every_last_event_id_reassembles(client: httpx.Client) -> None:
    """Reconnect after every single event while the run is still producing."""
    url = create(client)
    seen: list[Frame] = []
    for _ in range(TOKENS + 5):  # bounded: one reconnect per event
        after = int(seen[-1].id) if seen else 0
        status, frames = read(client, url, after=after, limit=1)
        if status == 204:
            break
        assert status == 200
        new = events_only(frames)
        assert ids(new) == [after + 1]
        seen.extend(new)
    assert ids(seen) == list(range(1, TOKENS + 2))
    assert answer_text(seen) == EXPECTED
    assert seen[-1].event == "done"


def test_last_event_id_query_when_given_then_used_like_the_header(client: httpx.Client) -> None:
    url = create(client)
    read(client, url)
    with client.stream("GET", url + "?lastEventId=20") as response:
        frames = events_only(list(parse_lines(response.iter_lines())))
    assert ids(frames) == list(range(21, TOKENS + 2))


def test_finished_stream_when_client_has_last_event_then_204(client: httpx.Client) -> None:
    url = create(client)
    _, full = read(client, url)
    last = ids(full)[-1]
    assert read(client, url, after=last)[0] == 204
    status, frames = read(client, url, after=last - 1)
    assert status == 200
    assert ids(frames) == [last]


def test_unknown_stream_when_read_then_404_json(client: httpx.Client) -> None:
    response = client.get("/chat/streams/" + "x" * 22)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "9" * 20])
def test_bad_last_event_id_when_read_then_400(client: httpx.Client, bad: str) -> None:
    url = create(client)
    response = client.get(url, headers={"Last-Event-ID": bad})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


def test_bad_query_last_event_id_when_header_also_sent_then_400(client: httpx.Client) -> None:
    # Found by schemathesis: the header won and a malformed ?lastEventId= was silently ignored.
    url = create(client)
    response = client.get(url + "?lastEventId=abc", headers={"Last-Event-ID": "1"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


def test_two_readers_when_following_then_each_gets_every_event(client: httpx.Client) -> None:
    url = create(client)
    results: dict[int, list[Frame]] = {}

    def reader(i: int) -> None:
        results[i] = read(client, url)[1]

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    for i in range(2):
        assert ids(results[i]) == list(range(1, TOKENS + 2))
        assert answer_text(events_only(results[i])) == EXPECTED


def test_delete_when_running_then_readers_get_cancelled_error(client: httpx.Client) -> None:
    url = create(client)
    with client.stream("GET", url) as response:
        lines = response.iter_lines()
        first = []
        for frame in parse_lines(lines):
            first.append(frame)
            if events_only(first):
                break
        assert client.delete(url).status_code == 204
        rest = events_only(list(parse_lines(lines)))
    assert rest[-1].event == "error"
    assert rest[-1].data["code"] == "cancelled"
    assert sum(f.event in {"done", "error"} for f in rest) == 1
    assert client.delete(url).status_code == 204  # finished: nothing left to cancel
    assert client.delete("/chat/streams/unknown-stream-id").status_code == 404


def test_readers_when_stream_ends_then_access_line_says_how(
    client: httpx.Client, service: Service
) -> None:
    finished = create(client)
    assert read(client, finished)[0] == 200
    assert read(client, finished, after=2)[0] == 200  # a resumed reader of a finished log
    for after in (0, 2):
        record = service.wait_for_log(event="request", path=finished, resumed_after=after)
        assert record["outcome"] == "done", record
    cancelled = create(client)
    with client.stream("GET", cancelled) as response:
        lines_in = response.iter_lines()
        for frame in parse_lines(lines_in):
            if frame.event == "delta":
                break
        assert client.delete(cancelled).status_code == 204
        assert events_only(list(parse_lines(lines_in)))[-1].data["code"] == "cancelled"
    record = service.wait_for_log(event="request", path=cancelled, method="GET")
    assert record["outcome"] == "cancelled"


def test_delete_when_key_missing_then_401(client: httpx.Client, service: Service) -> None:
    url = create(client)
    assert httpx.delete(service.base_url + url).status_code == 401


def test_post_chat_when_connection_drops_then_resume_by_stream_id(client: httpx.Client) -> None:
    with client.stream("POST", "/chat", json={"message": "hi"}) as response:
        stream_id = response.headers["x-stream-id"]
        got: list[Frame] = []
        for frame in parse_lines(response.iter_lines()):
            got.append(frame)
            if len(events_only(got)) == 5:
                break
    status, rest = read(client, f"/chat/streams/{stream_id}", after=5)
    assert status == 200
    assert ids(events_only(got) + events_only(rest)) == list(range(1, TOKENS + 2))
    assert answer_text(events_only(got) + events_only(rest)) == EXPECTED


def test_chaos_when_reader_drops_at_random_points_then_answer_exactly_once(
    client: httpx.Client,
) -> None:
    rng = random.Random(20261123)
    for _ in range(12):  # bounded rounds
        url = create(client)
        seen: list[Frame] = []
        for _ in range(TOKENS * 2):  # bounded reconnects
            after = int(seen[-1].id) if seen else 0
            status, frames = read(client, url, after=after, limit=rng.randint(1, 6))
            if status == 204:
                break
            seen.extend(events_only(frames))
        assert ids(seen) == list(range(1, TOKENS + 2))
        assert answer_text(seen) == EXPECTED


def test_finished_stream_when_ttl_passes_then_404() -> None:
    env = {"CHAT_BACKEND": "fake", "CHAT_FAKE_TOKENS": "2", "CHAT_STREAM_TTL_S": "1"}
    with Service(env) as service, httpx.Client(base_url=service.base_url, timeout=10) as client:
        url = create(client)
        assert read(client, url)[0] == 200
        deadline = time.monotonic() + 5
        status = 200
        while time.monotonic() < deadline and status != 404:  # bounded in time
            status = client.get(url, headers={"Last-Event-ID": "0"}).status_code
            if status != 404:
                time.sleep(0.1)
        assert status == 404


class TestDetachedGrace:
    """The run outlives its last reader by the grace period, then is cancelled upstream."""

    @pytest.fixture(scope="class")
    @classmethod
    def grace_service(cls, upstream: FakeUpstream) -> Iterator[Service]:
        env = {
            "CHAT_BACKEND": "openai",
            "OPENAI_BASE_URL": upstream.base_url,
            "OPENAI_API_KEY": "sk-test",
            "CHAT_DETACHED_GRACE_S": "1",
        }
        with Service(env) as service:
            yield service

    def test_reader_gone_when_grace_passes_then_upstream_cancelled(
        self, grace_service: Service, upstream: FakeUpstream
    ) -> None:
        marker = uuid.uuid4().hex
        with httpx.Client(base_url=grace_service.base_url, timeout=20) as client:
            url = create(client, f"[[tokens=400,delay_ms=25]] {marker}")
            read(client, url, limit=2)
            record = upstream.wait_for_request(lambda r: marker in str(r.body))
            left_at = time.monotonic()
            # Cancelled within grace (1 s) + 2 s, long before the 10 s answer would end.
            assert upstream.wait_for_disconnect(record, timeout=3.5)
            assert time.monotonic() - left_at >= 0.5
            status, rest = read(client, url, after=2)
        assert status == 200
        assert events_only(rest)[-1].data["code"] == "cancelled"

    def test_reader_back_within_grace_when_resuming_then_run_completes(
        self, grace_service: Service, upstream: FakeUpstream
    ) -> None:
        marker = uuid.uuid4().hex
        with httpx.Client(base_url=grace_service.base_url, timeout=20) as client:
            url = create(client, f"[[tokens=60,delay_ms=20]] {marker}")
            _, first = read(client, url, limit=3)
            status, rest = read(client, url, after=3)  # back at once, well within the grace
        assert status == 200
        frames = events_only(first) + events_only(rest)
        assert ids(frames) == list(range(1, 62))
        assert frames[-1].event == "done"
        record = upstream.wait_for_request(lambda r: marker in str(r.body))
        assert not record.disconnected
