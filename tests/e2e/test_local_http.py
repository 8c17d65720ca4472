"""The embedded local model through the HTTP API: real answers, cancellation, queue bound."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.service import Service
from tests.support.sse import answer_text, events_only, parse_lines, read_frames

pytestmark = pytest.mark.local_model

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def local_service() -> Iterator[Service]:
    env = {
        "CHAT_BACKEND": "auto",
        "CHAT_MAX_OUTPUT_TOKENS": "24",
        "CHAT_LOCAL_QUEUE": "1",
        "CHAT_DETACHED_GRACE_S": "0",
    }
    with Service(env) as service:
        yield service


def test_question_when_asked_then_streamed_answer_mentions_paris(local_service: Service) -> None:
    ready = httpx.get(local_service.base_url + "/readyz").json()
    assert ready["backend"] == "local"
    with httpx.stream(
        "POST", local_service.base_url + "/chat", json={"message": QUESTION}, timeout=60
    ) as response:
        frames = events_only(read_frames(response))
    assert response.status_code == 200
    assert "Paris" in answer_text(frames)
    done = frames[-1]
    assert done.event == "done"
    usage = done.data["usage"]
    assert usage["input_tokens"] > 5
    assert 0 < usage["output_tokens"] <= 24
    assert done.data["finish_reason"] in {"stop", "length"}


def test_long_answer_when_capped_then_finish_reason_length(local_service: Service) -> None:
    reply = httpx.post(
        local_service.base_url + "/chat",
        json={"message": "Write a long story about a dragon and a knight."},
        headers={"Accept": "application/json"},
        timeout=60,
    )
    body = reply.json()
    assert body["finish_reason"] == "length"
    assert body["usage"]["output_tokens"] == 24


def test_cancel_mid_generation_when_client_leaves_then_next_request_starts_promptly(
    local_service: Service,
) -> None:
    url = local_service.base_url + "/chat"
    with httpx.stream("POST", url, json={"message": "Tell me a long story."}, timeout=60) as r:
        assert next(r.iter_lines()) == "event: delta"
    local_service.wait_for_log(event="request", outcome="client_disconnected")
    started = time.monotonic()
    with httpx.stream("POST", url, json={"message": QUESTION}, timeout=60) as response:
        lines = response.iter_lines()
        assert next(lines) == "event: delta"
        first_delta_s = time.monotonic() - started
        frames = events_only(list(parse_lines(lines)))
    assert frames[-1].event == "done"
    # Not a timing assert on speed: a leaked slot would make this wait for a whole answer.
    assert first_delta_s < 20
    assert httpx.get(local_service.base_url + "/readyz").json()["open_streams"] == 0


def test_requests_over_queue_bound_when_concurrent_then_two_complete_third_503() -> None:
    env = {"CHAT_BACKEND": "local", "CHAT_MAX_OUTPUT_TOKENS": "200", "CHAT_LOCAL_QUEUE": "1"}
    with Service(env) as service:
        _two_complete_third_refused(service)


def _two_complete_third_refused(local_service: Service) -> None:
    url = local_service.base_url + "/chat"
    story = "Write a long story about a dragon and a knight."
    results: dict[int, list[str]] = {}

    def stream(i: int) -> None:
        with httpx.stream("POST", url, json={"message": story}, timeout=60) as response:
            events = []
            for line in response.iter_lines():
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
            results[i] = events

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    # One generates, one waits in the queue: both hold their place before the third arrives.
    admitted = 0
    for _ in range(500):  # bounded (10 s): both streams are admitted once /readyz counts two
        admitted = httpx.get(local_service.base_url + "/readyz").json()["open_streams"]
        if admitted == 2:
            break
        time.sleep(0.02)
    assert admitted == 2
    third = httpx.post(url, json={"message": story}, timeout=60)
    for thread in threads:
        thread.join(60)
    assert third.status_code == 503
    assert third.json()["error"]["code"] == "overloaded"
    assert "retry-after" in third.headers
    assert results[0][-1] == "done" and results[1][-1] == "done"


def test_message_longer_than_context_when_posted_then_422() -> None:
    env = {"CHAT_BACKEND": "local", "CHAT_LOCAL_CONTEXT": "256"}
    with Service(env) as service:
        response = httpx.post(
            service.base_url + "/chat", json={"message": "word " * 600}, timeout=60
        )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["details"][0]["path"] == "$.message"
    assert "context window" in error["details"][0]["message"]


@pytest.mark.parametrize(
    ("path", "problem"),
    [("/nonexistent/model.gguf", "does not exist"), ("/etc/hostname", "not a GGUF file")],
)
def test_bad_model_file_when_starting_then_one_line_naming_path(path: str, problem: str) -> None:
    import subprocess
    import sys

    from tests.support.service import ROOT, clean_env

    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", "0"],
        cwd=ROOT,
        env=clean_env({"CHAT_BACKEND": "local", "CHAT_LOCAL_MODEL_PATH": path}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("configuration error: CHAT_LOCAL_MODEL_PATH: ")
    assert path in lines[0] and problem in lines[0]


def _readyz_status(service: Service) -> int:
    return httpx.get(service.base_url + "/readyz", timeout=5).status_code


def test_engine_worker_when_killed_mid_stream_then_one_error_and_service_recovers() -> None:
    env = {"CHAT_BACKEND": "local", "CHAT_MAX_OUTPUT_TOKENS": "400"}
    with Service(env) as service:
        pid = service.wait_for_log(event="local_model_loaded")["worker_pid"]
        story = {"message": "Write a long story about a dragon and a knight."}
        with httpx.stream("POST", service.base_url + "/chat", json=story, timeout=60) as response:
            lines = response.iter_lines()
            assert next(lines) == "event: delta"
            os.kill(pid, signal.SIGKILL)
            frames = events_only(list(parse_lines(lines)))
        terminal = [frame for frame in frames if frame.event in {"done", "error"}]
        assert [frame.event for frame in terminal] == ["error"]
        assert frames[-1] is terminal[0]
        error = terminal[0].data
        assert error["code"] == "upstream_unavailable"
        assert error["retryable"] is True
        assert service.proc.poll() is None  # the HTTP server lives on

        # 503 until a new worker has loaded the model, then 200, by itself.
        statuses = [_readyz_status(service)]
        for _ in range(300):  # bounded: 30 s
            if statuses[-1] == 200:
                break
            time.sleep(0.1)
            statuses.append(_readyz_status(service))
        assert statuses[0] == 503
        assert statuses[-1] == 200
        died = service.wait_for_log(event="local_worker_died")
        assert died["exit"] == "killed by SIGKILL"
        reloaded = [r for r in service.records() if r.get("event") == "local_model_loaded"]
        assert reloaded[-1]["worker_pid"] != pid

        with httpx.stream(
            "POST", service.base_url + "/chat", json={"message": QUESTION}, timeout=60
        ) as response:
            after = events_only(read_frames(response))
        assert after[-1].event == "done"
        assert "Paris" in answer_text(after)
    assert not os.path.exists(f"/proc/{reloaded[-1]['worker_pid']}/stat") or _is_zombie(
        reloaded[-1]["worker_pid"]
    )


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_detached_run_when_another_request_waits_then_it_gives_way_at_once() -> None:
    # The defaults: CHAT_DETACHED_GRACE_S=10, so a reader may come back for 10 s.
    env = {"CHAT_BACKEND": "local", "CHAT_MAX_OUTPUT_TOKENS": "500"}
    with Service(env) as service:
        url = service.base_url + "/chat"
        story = {"message": "Write a very long story about a dragon who learns to cook."}
        with httpx.stream("POST", url, json=story, timeout=60) as response:
            stream_id = response.headers["x-stream-id"]
            assert next(response.iter_lines()) == "event: delta"
        service.wait_for_log(event="request", outcome="client_disconnected")

        started = time.monotonic()
        with httpx.stream("POST", url, json={"message": QUESTION}, timeout=60) as response:
            lines = response.iter_lines()
            assert next(lines) == "event: delta"
            first_delta_s = time.monotonic() - started
            frames = events_only(list(parse_lines(lines)))
        assert frames[-1].event == "done"
        # Behind the detached run it would wait out the 10 s grace (measured: 10.25 s).
        assert first_delta_s < 5.0
        cancel = service.wait_for_log(event="stream_detached_cancel", stream_id=stream_id)
        assert cancel["reason"] == "contended"

        # The detached run's log ends as after its grace period: with `cancelled`.
        replay = httpx.get(f"{service.base_url}/chat/streams/{stream_id}", timeout=30)
        replayed = events_only(list(parse_lines(iter(replay.text.splitlines()))))
        assert replayed[-1].event == "error"
        assert replayed[-1].data["code"] == "cancelled"
