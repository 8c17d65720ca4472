"""Operational behaviour: overload, keep-alive pings, graceful shutdown, bad configuration."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from tests.support.service import ROOT, Service, clean_env
from tests.support.sse import events_only, parse_lines, read_frames


def test_streams_over_limit_when_posted_then_503_overloaded_with_retry_after() -> None:
    env = {
        "CHAT_BACKEND": "fake",
        "CHAT_FAKE_DELAY_MS": "100",
        "CHAT_MAX_CONCURRENT_STREAMS": "1",
        "CHAT_DETACHED_GRACE_S": "0",
    }
    with Service(env) as service, httpx.Client(base_url=service.base_url, timeout=20) as client:
        with client.stream("POST", "/chat", json={"message": "first"}) as first:
            lines = first.iter_lines()
            assert next(lines) == "event: delta"  # the first stream holds the only slot
            second = client.post("/chat", json={"message": "second"})
            assert second.status_code == 503
            assert second.json()["error"]["code"] == "overloaded"
            assert second.headers["retry-after"].isdigit()
            assert second.json()["error"]["request_id"] == second.headers["x-request-id"]
        # Shedding is the service working as designed: its access line is a warning, not an
        # error an alert would fire on.
        refusal = service.wait_for_log(event="request", request_id=second.headers["x-request-id"])
        assert (refusal["status"], refusal["outcome"], refusal["level"]) == (
            503,
            "overloaded",
            "warning",
        )
        # The slot is free again once the first client has gone and its run was cancelled.
        service.wait_for_log(event="stream_detached_cancel")
        for _ in range(100):  # bounded: the cancelled run ends within a few loop turns
            if client.get("/readyz").json()["open_streams"] == 0:
                break
            time.sleep(0.02)
        third = client.post(
            "/chat", json={"message": "third"}, headers={"Accept": "application/json"}
        )
        assert third.status_code == 200


def test_quiet_stream_when_ping_interval_passes_then_ping_comment() -> None:
    env = {
        "CHAT_BACKEND": "fake",
        "CHAT_FAKE_TOKENS": "2",
        "CHAT_FAKE_DELAY_MS": "600",
        "CHAT_PING_INTERVAL_S": "0.2",
    }
    with (
        Service(env) as service,
        httpx.stream(
            "POST", service.base_url + "/chat", json={"message": "hi"}, timeout=20
        ) as response,
    ):
        frames = read_frames(response)
    assert any(f.comment == "ping" for f in frames)
    assert [f.event for f in events_only(frames)] == ["delta", "delta", "done"]
    assert [f.id for f in events_only(frames)] == ["1", "2", "3"]


def test_sigterm_when_stream_open_then_error_shutting_down_and_clean_exit() -> None:
    env = {
        "CHAT_BACKEND": "fake",
        "CHAT_FAKE_TOKENS": "1000",
        "CHAT_FAKE_DELAY_MS": "50",
        "CHAT_SHUTDOWN_GRACE_S": "0.5",
    }
    service = Service(env)
    try:
        with httpx.stream(
            "POST", service.base_url + "/chat", json={"message": "long"}, timeout=20
        ) as response:
            lines = response.iter_lines()
            assert next(lines) == "event: delta"
            service.proc.send_signal(15)
            service.wait_for_log(event="draining")
            rest = events_only(list(parse_lines(lines)))
        assert rest[-1].event == "error"
        assert rest[-1].data["code"] == "shutting_down"
        assert rest[-1].data["retryable"] is True
        assert sum(f.event in {"done", "error"} for f in rest) == 1
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
        assert service.proc.wait(20) in {0, -15}
        assert service.wait_for_log(event="stopped")
    finally:
        service.terminate()


def test_sigterm_when_stream_open_then_readyz_503_while_draining() -> None:
    env = {
        "CHAT_BACKEND": "fake",
        "CHAT_FAKE_TOKENS": "1000",
        "CHAT_FAKE_DELAY_MS": "50",
        "CHAT_SHUTDOWN_GRACE_S": "3",
    }
    service = Service(env)
    try:
        with httpx.Client(base_url=service.base_url, timeout=5) as probe:
            assert probe.get("/readyz").status_code == 200
            with httpx.stream(
                "POST", service.base_url + "/chat", json={"message": "long"}, timeout=20
            ) as response:
                lines = response.iter_lines()
                assert next(lines) == "event: delta"
                service.proc.send_signal(15)
                service.wait_for_log(event="draining")
                answers: list[httpx.Response | Exception] = []
                for _ in range(20):  # bounded: the grace period is 3 s, this polls for ~2 s
                    try:
                        answers.append(httpx.get(service.base_url + "/readyz", timeout=1))
                    except httpx.HTTPError as exc:
                        answers.append(exc)
                    if isinstance(answers[-1], httpx.Response) and answers[-1].status_code == 503:
                        break
                    time.sleep(0.1)
                refused = httpx.post(service.base_url + "/chat", json={"message": "x"}, timeout=5)
                rest = events_only(list(parse_lines(lines)))
        last = answers[-1]
        assert isinstance(last, httpx.Response), f"/readyz unreachable while draining: {answers}"
        assert last.status_code == 503
        assert last.json()["error"]["code"] == "shutting_down"
        assert (refused.status_code, refused.json()["error"]["code"]) == (503, "shutting_down")
        assert refused.headers["retry-after"].isdigit()
        # The open stream still ends with its one terminal event.
        assert [f.event for f in rest if f.event in {"done", "error"}] == ["error"]
        assert rest[-1].data["code"] == "shutting_down"
        assert service.proc.wait(20) in {0, -15}
    finally:
        service.terminate()


def test_bad_setting_when_starting_then_one_line_naming_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", "0"],
        cwd=ROOT,
        env=clean_env({"CHAT_MAX_BODY_BYTES": "lots"}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == [
        "configuration error: CHAT_MAX_BODY_BYTES: expected an integer between 64 and 67108864"
    ]


def test_module_entry_when_bad_setting_then_same_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chat"],
        cwd=ROOT,
        env=clean_env({"CHAT_BACKEND": "gpt"}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "configuration error: CHAT_BACKEND: expected one of auto, openai, local, fake"
    )
