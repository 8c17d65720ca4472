"""Conversations over HTTP: the real service on a real SQLite file, the fake OpenAI upstream.

What reaches the upstream is read from the fake's request records; what was saved is read back
through ``GET /conversations/{id}``. Messages carry a unique marker so each test finds its own
upstream requests in the shared fake.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.fake_upstream import FakeUpstream, expected_text
from tests.support.conversations import (
    ANSWER,
    ask,
    asked_upstream,
    history,
    new_id,
    openai_env,
    populate,
    sent_messages,
    upstream_request,
    wait_until,
)
from tests.support.service import ROOT, Service, clean_env
from tests.support.sse import Frame, answer_text, events_only, parse_lines, read_frames


@pytest.fixture(scope="module")
def service(upstream: FakeUpstream) -> Iterator[Service]:
    """One service on Chat Completions for the tests that need nothing special."""
    env = openai_env(upstream, CHAT_FIRST_TOKEN_TIMEOUT_S="1", CHAT_IDLE_TIMEOUT_S="1")
    with Service(env) as service:
        yield service


# --- the model gets the earlier turns ----------------------------------------------------------


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
def test_turn_two_when_sent_then_upstream_gets_turn_one_message_and_answer(
    upstream: FakeUpstream, api: str
) -> None:
    conversation_id = new_id()
    first, second = f"My name is Ada {uuid.uuid4().hex}.", f"What is my name {uuid.uuid4().hex}?"
    with Service(openai_env(upstream, api)) as service:
        one = ask(service, first, conversation_id)
        assert one.status_code == 200, one.text
        assert one.json()["text"] == ANSWER
        assert one.json()["conversation_id"] == conversation_id
        assert one.headers["x-conversation-id"] == conversation_id
        two = ask(service, second, conversation_id)
        assert two.status_code == 200, two.text
    assert sent_messages(upstream_request(upstream, first)) == [("user", first)]
    record = upstream_request(upstream, second)
    assert record.path == ("/v1/responses" if api == "responses" else "/v1/chat/completions")
    assert sent_messages(record) == [("user", first), ("assistant", ANSWER), ("user", second)]


def test_two_turns_when_streamed_then_history_header_and_terminal_carry_the_id(
    service: Service, upstream: FakeUpstream
) -> None:
    conversation_id = new_id()
    messages = [f"first {uuid.uuid4().hex}", f"second {uuid.uuid4().hex}"]
    for message in messages:
        with httpx.stream(
            "POST",
            service.base_url + "/chat",
            json={"message": message, "conversation_id": conversation_id},
            timeout=20,
        ) as response:
            frames = events_only(read_frames(response))
        assert response.headers["x-conversation-id"] == conversation_id
        assert answer_text(frames) == ANSWER
        assert frames[-1].event == "done"
        assert frames[-1].data["conversation_id"] == conversation_id
        assert list(frames[-1].data) == [
            "type",
            "finish_reason",
            "usage",
            "request_id",
            "conversation_id",
        ]
    assert history(service, conversation_id) == [
        {"role": "user", "text": messages[0]},
        {"role": "assistant", "text": ANSWER},
        {"role": "user", "text": messages[1]},
        {"role": "assistant", "text": ANSWER},
    ]


def test_request_when_no_conversation_then_no_id_anywhere_and_nothing_kept(
    service: Service,
) -> None:
    with httpx.stream(
        "POST", service.base_url + "/chat", json={"message": "alone"}, timeout=20
    ) as response:
        frames = events_only(read_frames(response))
    assert "x-conversation-id" not in response.headers
    assert "conversation_id" not in frames[-1].data
    reply = ask(service, "alone again", None)
    assert "conversation_id" not in reply.json()
    assert "x-conversation-id" not in reply.headers


def test_resumable_stream_when_conversation_named_then_saved_once_across_reconnects(
    service: Service, upstream: FakeUpstream
) -> None:
    conversation_id = new_id()
    marker = uuid.uuid4().hex
    created = httpx.post(
        service.base_url + "/chat/streams",
        json={"message": f"resumable {marker}", "conversation_id": conversation_id},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    assert created.headers["x-conversation-id"] == conversation_id
    url = service.base_url + created.json()["events_url"]
    reads: list[list[Frame]] = []
    for after in ("0", "0", "3"):  # two full reads, then a resume
        with httpx.stream("GET", url, headers={"Last-Event-ID": after}, timeout=20) as response:
            reads.append(events_only(read_frames(response)))
    assert reads[0][-1].data["conversation_id"] == conversation_id
    assert answer_text(reads[0]) == ANSWER
    assert reads[1] == reads[0]
    assert reads[2] == reads[0][3:]
    assert sum(marker in str(r.body) for r in upstream.requests) == 1
    assert history(service, conversation_id) == [
        {"role": "user", "text": f"resumable {marker}"},
        {"role": "assistant", "text": ANSWER},
    ]


# --- one run at a time -------------------------------------------------------------------------


def test_second_turn_when_first_still_running_then_409_before_any_model_call(
    service: Service, upstream: FakeUpstream
) -> None:
    conversation_id = new_id()
    slow, hasty = uuid.uuid4().hex, uuid.uuid4().hex
    created = httpx.post(
        service.base_url + "/chat/streams",
        json={"message": f"[[tokens=40 delay_ms=50]] {slow}", "conversation_id": conversation_id},
        timeout=10,
    )
    assert created.status_code == 201
    upstream_request(upstream, slow)
    busy = ask(service, hasty, conversation_id)
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "conversation_busy"
    assert busy.headers["retry-after"].isdigit()
    assert busy.json()["error"]["request_id"] == busy.headers["x-request-id"]
    assert not asked_upstream(upstream, hasty)
    # Other conversations are not held up by it.
    assert ask(service, "elsewhere", new_id()).status_code == 200
    events_url = created.json()["events_url"]
    with httpx.stream("GET", service.base_url + events_url, timeout=20) as response:
        assert events_only(read_frames(response))[-1].event == "done"
    assert ask(service, hasty, conversation_id).status_code == 200


def test_dead_worker_when_it_held_a_conversation_then_free_within_the_lock_lifetime(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    env = openai_env(upstream, CHAT_DATA_DIR=str(tmp_path), CHAT_CONVERSATION_LOCK_TTL_S="1")
    conversation_id = new_id()
    with Service(env) as doomed, Service(env) as survivor:
        created = httpx.post(
            doomed.base_url + "/chat/streams",
            json={
                "message": "[[tokens=200 delay_ms=50]] doomed",
                "conversation_id": conversation_id,
            },
            timeout=10,
        )
        assert created.status_code == 201
        assert ask(survivor, "meanwhile", conversation_id).status_code == 409
        doomed.proc.kill()  # no release, no renewal: only the lock's lifetime frees it
        doomed.proc.wait(10)
        killed_at = time.monotonic()
        status = 409
        for _ in range(100):  # bounded: 100 x (a refused turn + 50 ms), about 6 s
            status = ask(survivor, "after", conversation_id).status_code
            if status != 409:
                break
            time.sleep(0.05)
        assert status == 200
        assert time.monotonic() - killed_at < 5.0  # the lock lives 1 s
        assert history(survivor, conversation_id)[-2:] == [
            {"role": "user", "text": "after"},
            {"role": "assistant", "text": ANSWER},
        ]


# --- endings that cut the answer short --------------------------------------------------------


def delivered(service: Service, stream_id: str) -> str:
    """Every delta text the run wrote into its stream log (replayed from the start)."""
    with httpx.stream("GET", service.base_url + f"/chat/streams/{stream_id}", timeout=10) as r:
        return answer_text(events_only(read_frames(r)))


def test_upstream_error_when_after_three_deltas_then_those_are_saved(
    service: Service,
) -> None:
    conversation_id = new_id()
    message = "[[error_event_after=3]] fail midway"
    with httpx.stream(
        "POST",
        service.base_url + "/chat",
        json={"message": message, "conversation_id": conversation_id},
        timeout=20,
    ) as response:
        frames = events_only(read_frames(response))
    assert frames[-1].event == "error"
    assert frames[-1].data["conversation_id"] == conversation_id
    assert answer_text(frames) == expected_text(3)
    assert history(service, conversation_id) == [
        {"role": "user", "text": message},
        {"role": "assistant", "text": expected_text(3)},
    ]


def test_upstream_error_when_before_any_text_then_message_alone_saved(
    service: Service,
) -> None:
    conversation_id = new_id()
    reply = ask(service, "[[status=400]] refused", conversation_id)
    assert reply.status_code == 502
    assert history(service, conversation_id) == [{"role": "user", "text": "[[status=400]] refused"}]


def test_deadline_when_upstream_stalls_after_two_deltas_then_those_are_saved(
    service: Service,
) -> None:
    conversation_id = new_id()
    message = "[[hang_after=2]] stall"
    reply = ask(service, message, conversation_id)
    assert reply.status_code == 504
    assert reply.json()["error"]["code"] == "upstream_timeout"
    assert history(service, conversation_id) == [
        {"role": "user", "text": message},
        {"role": "assistant", "text": expected_text(2)},
    ]


def test_json_client_when_it_hangs_up_mid_answer_then_delivered_text_saved(
    service: Service, upstream: FakeUpstream
) -> None:
    conversation_id = new_id()
    request_id = uuid.uuid4().hex
    marker = uuid.uuid4().hex
    body = json.dumps(
        {"message": f"[[tokens=400 delay_ms=20]] {marker}", "conversation_id": conversation_id}
    ).encode()
    head = (
        f"POST /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Accept: application/json\r\nX-Request-ID: {request_id}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(head + body)
        record = upstream_request(upstream, marker)
        wait_until(lambda: record.tokens_sent >= 3, "a few tokens to be streamed")
    saved = service.wait_for_log(event="conversation_turn_saved", request_id=request_id)
    access = service.wait_for_log(event="request", request_id=request_id)
    assert access["outcome"] == "client_disconnected"
    text = delivered(service, access["stream_id"])
    assert saved["answer_chars"] == len(text)
    assert 0 < len(text) < len(expected_text(400))
    assert history(service, conversation_id)[1] == {"role": "assistant", "text": text}


def test_delete_of_stream_when_mid_answer_then_delivered_text_saved(service: Service) -> None:
    conversation_id = new_id()
    request_id = uuid.uuid4().hex
    created = httpx.post(
        service.base_url + "/chat/streams",
        json={"message": "[[tokens=200 delay_ms=20]] stop me", "conversation_id": conversation_id},
        headers={"X-Request-ID": request_id},
        timeout=10,
    )
    stream_id = created.json()["stream_id"]
    with httpx.stream("GET", service.base_url + f"/chat/streams/{stream_id}", timeout=20) as r:
        seen = 0
        for frame in parse_lines(r.iter_lines()):
            seen += frame.event == "delta"
            if seen == 3:
                assert (
                    httpx.delete(service.base_url + f"/chat/streams/{stream_id}").status_code == 204
                )
            if frame.event == "error":
                assert frame.data["code"] == "cancelled"
                assert frame.data["conversation_id"] == conversation_id
    service.wait_for_log(event="conversation_turn_saved", request_id=request_id)
    text = delivered(service, stream_id)
    assert text.startswith(expected_text(3))
    assert len(text) < len(expected_text(200))
    assert history(service, conversation_id) == [
        {"role": "user", "text": "[[tokens=200 delay_ms=20]] stop me"},
        {"role": "assistant", "text": text},
    ]


def test_client_gone_when_past_the_grace_period_then_delivered_text_saved(
    upstream: FakeUpstream,
) -> None:
    conversation_id = new_id()
    request_id = uuid.uuid4().hex
    message = "[[tokens=400 delay_ms=20]] leave early"
    with Service(openai_env(upstream, CHAT_DETACHED_GRACE_S="0.5")) as service:
        with httpx.stream(
            "POST",
            service.base_url + "/chat",
            json={"message": message, "conversation_id": conversation_id},
            headers={"X-Request-ID": request_id},
            timeout=20,
        ) as response:
            stream_id = response.headers["x-stream-id"]
            for frame in parse_lines(response.iter_lines()):
                if frame.event == "delta":
                    break  # and hang up
        saved = service.wait_for_log(event="conversation_turn_saved", request_id=request_id)
        cancelled = service.wait_for_log(event="stream_detached_cancel", stream_id=stream_id)
        assert cancelled["grace_s"] == 0.5
        text = delivered(service, stream_id)
        assert saved["answer_chars"] == len(text)
        assert 0 < len(text) < len(expected_text(400))
        assert history(service, conversation_id) == [
            {"role": "user", "text": message},
            {"role": "assistant", "text": text},
        ]


def test_shutdown_when_mid_answer_then_delivered_text_saved_and_kept_over_restart(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    conversation_id = new_id()
    message = "[[tokens=400 delay_ms=20]] interrupted"
    env = openai_env(upstream, CHAT_DATA_DIR=str(tmp_path), CHAT_SHUTDOWN_GRACE_S="0.5")
    first = Service(env)
    try:
        with httpx.stream(
            "POST",
            first.base_url + "/chat",
            json={"message": message, "conversation_id": conversation_id},
            timeout=20,
        ) as response:
            frames: list[Frame] = []
            for frame in parse_lines(response.iter_lines()):
                if frame.event == "delta" and not frames:
                    first.proc.send_signal(15)
                frames.append(frame)
        assert frames[-1].data["code"] == "shutting_down"
        assert frames[-1].data["conversation_id"] == conversation_id
        assert first.proc.wait(20) in {0, -15}
    finally:
        first.terminate()
    received = answer_text(events_only(frames))
    assert 0 < len(received) < len(expected_text(400))
    with Service(env) as second:
        assert history(second, conversation_id) == [
            {"role": "user", "text": message},
            {"role": "assistant", "text": received},
        ]


def test_restart_when_sqlite_file_kept_then_history_and_next_turn_continue(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    conversation_id = new_id()
    env = openai_env(upstream, CHAT_DATA_DIR=str(tmp_path))
    first, second = f"before {uuid.uuid4().hex}", f"after {uuid.uuid4().hex}"
    with Service(env) as service:
        assert ask(service, first, conversation_id).status_code == 200
    assert (tmp_path / "conversations.sqlite3").is_file()
    with Service(env) as service:
        assert ask(service, second, conversation_id).status_code == 200
        assert len(history(service, conversation_id)) == 4
    assert sent_messages(upstream_request(upstream, second)) == [
        ("user", first),
        ("assistant", ANSWER),
        ("user", second),
    ]


# --- trimming, limits, lifetime ---------------------------------------------------------------


def test_long_conversation_when_200_turns_then_answered_with_the_newest_50(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    conversation_id = new_id()
    populate(tmp_path, conversation_id, 200)
    marker = uuid.uuid4().hex
    with Service(openai_env(upstream, CHAT_DATA_DIR=str(tmp_path))) as service:
        reply = ask(service, f"turn 201 {marker}", conversation_id)
        assert reply.status_code == 200, reply.text
        assert reply.json()["text"] == ANSWER
        assert len(history(service, conversation_id)) == 402  # nothing stored was trimmed
        line = service.wait_for_log(event="request", path="/chat", conversation_id=conversation_id)
        assert line["history_turns"] == 50
    sent = sent_messages(upstream_request(upstream, marker))
    assert len(sent) == 101
    assert sent[0] == ("user", "u150")
    assert sent[-2:] == [("assistant", "a199"), ("user", f"turn 201 {marker}")]


def test_history_max_turns_when_set_then_only_that_many_sent(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    conversation_id = new_id()
    populate(tmp_path, conversation_id, 10)
    marker = uuid.uuid4().hex
    env = openai_env(upstream, CHAT_DATA_DIR=str(tmp_path), CHAT_HISTORY_MAX_TURNS="3")
    with Service(env) as service:
        assert ask(service, marker, conversation_id).status_code == 200
    assert [text for _, text in sent_messages(upstream_request(upstream, marker))] == [
        "u7",
        "a7",
        "u8",
        "a8",
        "u9",
        "a9",
        marker,
    ]


def test_limits_when_turns_or_bytes_exceeded_then_422_naming_the_limit(
    upstream: FakeUpstream,
) -> None:
    env = openai_env(upstream, CHAT_CONVERSATION_MAX_TURNS="2", CHAT_CONVERSATION_MAX_BYTES="2048")
    conversation_id = new_id()
    marker = uuid.uuid4().hex
    with Service(env) as service:
        assert ask(service, "one", conversation_id).status_code == 200
        assert ask(service, "two", conversation_id).status_code == 200
        full = ask(service, f"three {marker}", conversation_id)
        assert full.status_code == 422
        error = full.json()["error"]
        assert error["code"] == "invalid_request"
        assert error["details"] == [
            {
                "path": "$.conversation_id",
                "message": "the conversation holds at most 2 turns; start a new conversation",
            }
        ]
        big = ask(service, f"{marker} " + "x" * 3000, new_id())
        assert big.status_code == 422
        assert "2048 bytes" in big.json()["error"]["details"][0]["message"]
        assert ask(service, "still fine", new_id()).status_code == 200
    assert not asked_upstream(upstream, marker)


def test_expiry_when_idle_past_ttl_then_404_purged_and_a_new_turn_starts_fresh(
    upstream: FakeUpstream,
) -> None:
    conversation_id = new_id()
    first, again = f"old {uuid.uuid4().hex}", f"new {uuid.uuid4().hex}"
    with Service(openai_env(upstream, CHAT_CONVERSATION_TTL_S="1")) as service:
        assert ask(service, first, conversation_id).status_code == 200
        assert len(history(service, conversation_id)) == 2
        url = service.base_url + f"/conversations/{conversation_id}"
        wait_until(lambda: httpx.get(url).status_code == 404, "the conversation to expire")
        service.wait_for_log(event="conversations_purged")
        assert ask(service, again, conversation_id).status_code == 200
        assert history(service, conversation_id) == [
            {"role": "user", "text": again},
            {"role": "assistant", "text": ANSWER},
        ]
    assert sent_messages(upstream_request(upstream, again)) == [("user", again)]


# --- routes, ownership, logs, configuration ---------------------------------------------------


def test_delete_when_owner_asks_then_204_history_gone_and_404_after(service: Service) -> None:
    conversation_id = new_id()
    assert ask(service, "forget me", conversation_id).status_code == 200
    url = service.base_url + f"/conversations/{conversation_id}"
    assert httpx.delete(url).status_code == 204
    gone = httpx.get(url)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"
    assert httpx.delete(url).status_code == 404
    assert ask(service, "anew", conversation_id).status_code == 200
    assert history(service, conversation_id)[0] == {"role": "user", "text": "anew"}


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", "dot.dot", "é"])
def test_malformed_conversation_id_when_posted_then_422_when_read_then_404(
    service: Service, bad: str
) -> None:
    posted = ask(service, "hi", bad)
    assert posted.status_code == 422
    assert posted.json()["error"]["details"][0]["path"] == "$.conversation_id"
    read = httpx.get(service.base_url + "/conversations/" + httpx.URL(bad).raw_path.decode())
    assert read.status_code == 404  # no conversation can have that id
    assert read.json()["error"]["code"] == "not_found"


def test_unknown_conversation_when_read_then_404(service: Service) -> None:
    response = httpx.get(service.base_url + f"/conversations/{new_id()}")
    assert response.status_code == 404
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


def test_keys_when_another_key_asks_then_404_on_every_route_and_no_key_stored(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    alice, bob = "key-alice-" + uuid.uuid4().hex, "key-bob-" + uuid.uuid4().hex
    env = openai_env(upstream, CHAT_API_KEYS=f"{alice},{bob}", CHAT_DATA_DIR=str(tmp_path))
    conversation_id = new_id()
    marker = uuid.uuid4().hex
    with Service(env) as service:
        assert ask(service, "mine", conversation_id, key=alice).status_code == 200
        stolen = ask(service, marker, conversation_id, key=bob)
        assert stolen.status_code == 404
        assert stolen.json()["error"]["code"] == "not_found"
        url = service.base_url + f"/conversations/{conversation_id}"
        as_bob = {"Authorization": f"Bearer {bob}"}
        assert httpx.get(url, headers=as_bob).status_code == 404
        assert httpx.delete(url, headers=as_bob).status_code == 404
        assert httpx.get(url).status_code == 401
        assert httpx.delete(url).status_code == 401
        assert len(history(service, conversation_id, key=alice)) == 2
        streams = httpx.post(
            service.base_url + "/chat/streams",
            json={"message": marker, "conversation_id": conversation_id},
            headers=as_bob,
        )
        assert streams.status_code == 404
    assert not asked_upstream(upstream, marker)
    stored = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.is_file())
    assert alice.encode() not in stored
    assert bob.encode() not in stored


def test_logs_when_conversations_used_then_no_message_or_answer_text(service: Service) -> None:
    marker = "secret-" + uuid.uuid4().hex
    conversation_id = new_id()
    start = len(service.lines)
    assert ask(service, f"{marker} one", conversation_id).status_code == 200
    assert ask(service, f"{marker} two", conversation_id).status_code == 200
    assert len(history(service, conversation_id)) == 4
    assert httpx.delete(service.base_url + f"/conversations/{conversation_id}").status_code == 204
    saved = service.wait_for_log(event="conversation_turn_saved", conversation_id=conversation_id)
    assert (saved["message_chars"], saved["answer_chars"]) == (len(marker) + 4, len(ANSWER))
    service.wait_for_log(event="request", method="DELETE", conversation_id=conversation_id)
    lines = "\n".join(service.lines[start:])
    assert conversation_id in lines
    assert marker not in lines
    assert ANSWER.strip() not in lines


def test_data_dir_when_unwritable_then_one_line_configuration_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", "0"],
        cwd=ROOT,
        env=clean_env({"CHAT_BACKEND": "fake", "CHAT_DATA_DIR": "/etc/hostname/data"}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("configuration error: CHAT_DATA_DIR: expected a writable directory")
