"""GET /metrics on the real service: after streams with known outcomes, the values moved by them.

Streams run against the fake OpenAI upstream over HTTP. Values are compared before and after, so
the test reads what an operator's dashboard would: counters that moved by exactly K.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from bench.fake_upstream import FakeUpstream
from chat.settings import load_settings
from tests.support.inprocess import ThreadedServer
from tests.support.redis_server import start_redis
from tests.support.service import ROOT, Service, clean_env
from tests.support.sse import events_only, parse_lines, read_frames

KEY = "k-metrics-test"
AUTH = {"Authorization": f"Bearer {KEY}"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist yet (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def scrape(client: httpx.Client, headers: Mapping[str, str] = AUTH) -> Samples:
    response = client.get("/metrics", headers=dict(headers))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def scrape_until(
    client: httpx.Client,
    done: Callable[[Samples], bool],
    timeout: float = 5.0,
    headers: Mapping[str, str] = AUTH,
) -> Samples:
    """Scrape until ``done(samples)``: a stream's figures land just after its last byte left."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(client, headers)
        if done(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


@pytest.fixture(scope="module")
def service(upstream: FakeUpstream) -> Iterator[Service]:
    env = {
        "CHAT_BACKEND": "openai",
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "sk-test",
        "CHAT_MODEL": "fake-model",
        "CHAT_OPENAI_API": "chat_completions",
        "CHAT_OPENAI_MAX_RETRIES": "0",
        "CHAT_API_KEYS": KEY,
        "CHAT_MAX_CONCURRENT_STREAMS": "1",
    }
    with Service(env) as running:
        yield running


def stream(client: httpx.Client, message: str) -> list[dict[str, object]]:
    with client.stream("POST", "/chat", json={"message": message}, headers=AUTH) as response:
        assert response.status_code == 200
        return [frame.data for frame in events_only(read_frames(response))]


def test_streams_with_known_outcomes_when_scraped_then_counters_moved_by_exactly_them(
    service: Service,
) -> None:
    with httpx.Client(base_url=service.base_url, timeout=20) as client:
        backend = client.get("/readyz").json()["backend"]  # the histograms' label
        before = scrape(client)
        terminals = [stream(client, f"hello {i}")[-1] for i in range(3)]
        failed = stream(client, "[[error_event_after=2]] fail")[-1]
        assert failed["type"] == "error"
        error_code = str(failed["code"])
        unauthorized = client.post("/chat", json={"message": "no key"})
        assert unauthorized.status_code == 401
        # The only slot is held by a slow stream: the next request is turned away.
        slow = "[[tokens=3,delay_ms=200]] slow"
        with client.stream("POST", "/chat", json={"message": slow}, headers=AUTH) as held:
            lines = held.iter_lines()
            assert next(lines) == "event: delta"
            overloaded = client.post("/chat", json={"message": "one too many"}, headers=AUTH)
            assert overloaded.status_code == 503
            assert overloaded.json()["error"]["code"] == "overloaded"
            terminals.append(events_only(list(parse_lines(lines)))[-1].data)
        assert [t["type"] for t in terminals] == ["done"] * 4

        def settled(samples: Samples) -> bool:
            return (
                moved(before, samples, "chat_requests_total", route="/chat", status="200") >= 5
                and value(samples, "chat_streams_active") == 0
            )

        after = scrape_until(client, settled)

    streams = 5  # four done, one upstream error; the 401 and the 503 never started one
    assert moved(before, after, "chat_stream_outcomes_total", outcome="done") == 4
    assert moved(before, after, "chat_stream_outcomes_total", outcome=error_code) == 1
    assert moved(before, after, "chat_upstream_errors_total", code=error_code) == 1
    assert moved(before, after, "chat_rejections_total", code="unauthorized") == 1
    assert moved(before, after, "chat_rejections_total", code="overloaded") == 1
    assert moved(before, after, "chat_requests_total", route="/chat", status="200") == streams
    assert moved(before, after, "chat_requests_total", route="/chat", status="401") == 1
    assert moved(before, after, "chat_requests_total", route="/chat", status="503") == 1
    for histogram in ("chat_stream_duration_seconds", "chat_time_to_first_token_seconds"):
        assert moved(before, after, histogram + "_count", backend=backend) == streams
        assert moved(before, after, histogram + "_bucket", backend=backend, le="+Inf") == streams
    usage = [t["usage"] for t in terminals]
    for kind in ("input", "output"):
        expected = sum(u[f"{kind}_tokens"] for u in usage)  # type: ignore[index]
        assert expected > 0
        assert moved(before, after, "chat_tokens_total", backend=backend, kind=kind) == expected
    assert value(after, "chat_streams_active") == 0
    assert value(after, "chat_streams_limit") == 1


def test_routes_when_ids_in_paths_then_labelled_by_template(service: Service) -> None:
    with httpx.Client(base_url=service.base_url, timeout=10) as client:
        before = scrape(client)
        for i in range(3):
            assert client.get(f"/chat/streams/unknown-{i}").status_code == 404
        assert client.get("/no/such/path").status_code == 404
        after = scrape_until(
            client,
            lambda s: moved(before, s, "chat_requests_total", route="unmatched", status="404") >= 1,
        )
    template = "/chat/streams/{stream_id}"
    assert moved(before, after, "chat_requests_total", route=template, status="404") == 3
    assert moved(before, after, "chat_requests_total", route="unmatched", status="404") == 1
    assert not any("unknown-" in dict(labels).get("route", "") for _, labels in after)


def test_metrics_when_api_keys_set_then_key_needed(service: Service) -> None:
    response = httpx.get(service.base_url + "/metrics", timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    wrong = httpx.get(
        service.base_url + "/metrics", headers={"Authorization": "Bearer nope"}, timeout=10
    )
    assert wrong.status_code == 401


def test_metrics_when_public_then_no_key_needed_and_when_off_then_404() -> None:
    public = load_settings({}, backend="fake", api_keys=(KEY,), metrics_public=True)
    with ThreadedServer(create_app(public)) as server:
        response = httpx.get(server.base_url + "/metrics", timeout=10)
        assert response.status_code == 200
        assert "chat_streams_active" in response.text
    off = load_settings({"CHAT_BACKEND": "fake", "CHAT_METRICS": "false"})
    with ThreadedServer(create_app(off)) as server:
        response = httpx.get(server.base_url + "/metrics", timeout=10)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        # Streams still work without metrics.
        assert httpx.post(server.base_url + "/chat", json={"message": "hi"}).status_code == 200


def test_client_when_it_leaves_mid_stream_then_outcome_client_disconnected() -> None:
    settings = load_settings(
        {"CHAT_BACKEND": "fake", "CHAT_FAKE_DELAY_MS": "50", "CHAT_DETACHED_GRACE_S": "0"}
    )
    with (
        ThreadedServer(create_app(settings)) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as client,
    ):
        with client.stream("POST", "/chat", json={"message": "bye"}) as response:
            assert next(response.iter_lines()) == "event: delta"
        samples = scrape_until(
            client,
            lambda s: value(s, "chat_stream_outcomes_total", outcome="client_disconnected") >= 1,
            headers={},
        )
    assert value(samples, "chat_stream_outcomes_total", outcome="client_disconnected") == 1
    assert value(samples, "chat_stream_outcomes_total", outcome="cancelled") == 0
    assert value(samples, "chat_streams_active") == 0


# --- several workers: python -m chat --workers 2 ------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with start_redis() as server:
        yield server.url


@pytest.mark.redis
def test_two_workers_when_scraped_then_every_scrape_sums_both(
    redis_url: str, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left by an earlier run")
    port = _free_port()
    env = clean_env(
        {
            "CHAT_BACKEND": "fake",
            "CHAT_FAKE_TOKENS": "3",
            "CHAT_MAX_CONCURRENT_STREAMS": "7",
            "REDIS_URL": redis_url,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "CHAT_LOG_LEVEL": "warning",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat", "--workers", "2", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # Both workers are up once both have written their gauge files (the limit: 7 + 7).
        deadline = time.monotonic() + 60
        limit = 0.0
        while time.monotonic() < deadline and limit != 14:
            try:
                samples = parse(httpx.get(base + "/metrics", timeout=5).text)
                limit = value(samples, "chat_streams_limit")
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert limit == 14, "the scrape did not sum both workers' admission limits"
        assert not (metrics_dir / "counter_1.db").exists()  # stale files removed at start
        streams = 12
        for i in range(streams):  # a new connection each: the kernel spreads them
            with httpx.Client(base_url=base, timeout=10) as client:
                assert client.post("/chat", json={"message": f"m{i}"}).status_code == 200
        totals = set()
        for _ in range(6):
            deadline = time.monotonic() + 5
            while True:
                with httpx.Client(base_url=base, timeout=5) as client:
                    samples = parse(client.get("/metrics").text)
                total = value(samples, "chat_stream_outcomes_total", outcome="done")
                if total >= streams or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            totals.add(total)
            duration = value(samples, "chat_stream_duration_seconds_count", backend="fake")
            assert duration == streams
        assert totals == {streams}
        pids = {p.name.rsplit("_", 1)[-1] for p in metrics_dir.glob("gauge_livesum_*.db")}
        assert len(pids) == 2  # two workers, each with its own files
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    # A worker that stopped cleanly takes its live gauges out of the sums.
    assert not list(metrics_dir.glob("gauge_livesum_*.db"))
