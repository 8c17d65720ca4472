"""Metrics: labels from route templates, one observation per stream, outcomes as the API names."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.routing import Mount, Route

from chat.events import Usage
from chat.metrics import (
    Metrics,
    NoMetrics,
    build_metrics,
    route_label,
    status_label,
    stream_outcome,
)
from chat.metrics_dir import MULTIPROC_ENV, prepare_multiprocess_dir
from chat.run.control import RunStats


async def _endpoint() -> None:
    return None


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ({"route": Route("/chat/streams/{stream_id}", _endpoint)}, "/chat/streams/{stream_id}"),
        ({"route": Route("/chat", _endpoint)}, "/chat"),
        ({"route": Mount("/static", app=_endpoint)}, "/static/{path}"),
        ({"path": "/chat/streams/abc123"}, "unmatched"),
        ({}, "unmatched"),
    ],
)
def test_route_label_when_scope_then_template_never_raw_path(
    scope: dict[str, object], expected: str
) -> None:
    assert route_label(scope) == expected


def test_status_label_when_no_response_then_none() -> None:
    assert status_label(None) == "none"
    assert status_label(503) == "503"


def _stats(
    outcome: str | None, *, first_token: bool = True, usage: Usage | None = None
) -> RunStats:
    stats = RunStats()
    stats.started_at -= 0.5
    if first_token:
        stats.first_token_at = stats.started_at + 0.1
    stats.outcome = outcome
    stats.usage = usage
    return stats


@pytest.mark.parametrize(
    ("outcome", "detached", "stop_code", "expected"),
    [
        ("done", False, None, "done"),
        ("done", True, "cancelled", "done"),
        ("upstream_timeout", False, None, "upstream_timeout"),
        ("cancelled", False, "cancelled", "cancelled"),
        ("cancelled", True, "cancelled", "client_disconnected"),
        (None, False, "shutting_down", "shutting_down"),
        (None, False, None, "internal_error"),
    ],
)
def test_stream_outcome_when_run_ends_then_api_outcome(
    outcome: str | None, detached: bool, stop_code: str | None, expected: str
) -> None:
    assert stream_outcome(_stats(outcome), detached=detached, stop_code=stop_code) == expected


class TestMetrics:
    def test_run_finished_when_streams_end_then_one_observation_each_and_counters(self) -> None:
        metrics = Metrics()
        metrics.started(backend="fake", limit=7)
        metrics.run_finished(_stats("done", usage=Usage(9, 2, 11)))
        metrics.run_finished(_stats("done", usage=Usage(5, 3, 8)))
        metrics.run_finished(_stats("upstream_error"))
        metrics.run_finished(_stats("upstream_timeout", first_token=False))
        value = metrics.registry.get_sample_value
        assert value("chat_stream_outcomes_total", {"outcome": "done"}) == 2
        assert value("chat_stream_outcomes_total", {"outcome": "upstream_error"}) == 1
        assert value("chat_upstream_errors_total", {"code": "upstream_error"}) == 1
        assert value("chat_upstream_errors_total", {"code": "upstream_timeout"}) == 1
        assert value("chat_upstream_errors_total", {"code": "done"}) is None
        assert value("chat_stream_duration_seconds_count", {"backend": "fake"}) == 4
        # The stream that never produced a token has no first-token time.
        assert value("chat_time_to_first_token_seconds_count", {"backend": "fake"}) == 3
        ttft_sum = value("chat_time_to_first_token_seconds_sum", {"backend": "fake"})
        assert ttft_sum == pytest.approx(0.3)
        assert value("chat_tokens_total", {"backend": "fake", "kind": "input"}) == 14
        assert value("chat_tokens_total", {"backend": "fake", "kind": "output"}) == 5
        assert value("chat_streams_limit") == 7

    def test_scrape_when_no_stream_ended_yet_then_no_backend_series(self) -> None:
        metrics = Metrics()
        metrics.started(backend="fake", limit=7)
        body, _ = metrics.render(None)
        assert b'backend="fake"' not in body
        metrics.run_finished(_stats("done", usage=Usage(9, 2, 11)))
        body, _ = metrics.render(None)
        assert b'chat_stream_duration_seconds_count{backend="fake"} 1.0' in body

    def test_slots_when_taken_and_given_back_then_active_gauge_follows(self) -> None:
        metrics = Metrics()
        metrics.run_started()
        metrics.run_started()
        metrics.run_released()
        assert metrics.registry.get_sample_value("chat_streams_active") == 1

    def test_requests_and_rejections_when_recorded_then_labelled_by_template_and_code(
        self,
    ) -> None:
        metrics = Metrics()
        route = Route("/chat/streams/{stream_id}", _endpoint)
        for _ in range(3):
            metrics.request_finished({"route": route, "path": "/chat/streams/x"}, 404, {})
        metrics.rejected("overloaded")
        value = metrics.registry.get_sample_value
        assert (
            value("chat_requests_total", {"route": "/chat/streams/{stream_id}", "status": "404"})
            == 3
        )
        assert value("chat_rejections_total", {"code": "overloaded"}) == 1

    def test_render_when_openmetrics_asked_then_openmetrics_else_text(self) -> None:
        metrics = Metrics()
        metrics.rejected("unauthorized")
        body, content_type = metrics.render(None)
        assert content_type.startswith("text/plain; version=0.0.4")
        assert b'chat_rejections_total{code="unauthorized"} 1.0' in body
        assert b"_created" not in body
        body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
        assert content_type.startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")

    def test_two_apps_in_one_process_when_built_then_no_clash(self) -> None:
        first, second = Metrics(), Metrics()
        first.rejected("overloaded")
        assert (
            second.registry.get_sample_value("chat_rejections_total", {"code": "overloaded"})
            is None
        )


def test_build_metrics_when_disabled_then_nothing_is_recorded() -> None:
    metrics = build_metrics(False, {})
    assert isinstance(metrics, NoMetrics)
    assert metrics.enabled is False
    metrics.run_finished(_stats("done"))  # no-op, no error
    assert isinstance(build_metrics(True, {}), Metrics)


class TestMultiprocessDir:
    def test_several_workers_without_dir_when_prepared_then_fresh_dir_removed_at_exit(
        self,
    ) -> None:
        env: dict[str, str] = {}
        cleanup = prepare_multiprocess_dir(2, env)
        made = Path(env[MULTIPROC_ENV])
        assert made.is_dir() and not any(made.iterdir())
        cleanup()
        assert not made.exists()

    def test_operator_dir_when_prepared_then_stale_files_removed_dir_kept(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "metrics"
        path.mkdir()
        (path / "counter_12345.db").write_bytes(b"stale")
        (path / "keep.txt").write_text("not ours")
        prepare_multiprocess_dir(1, {MULTIPROC_ENV: str(path)})()
        assert sorted(p.name for p in path.iterdir()) == ["keep.txt"]

    def test_one_worker_without_dir_when_prepared_then_in_memory(self) -> None:
        env: dict[str, str] = {}
        prepare_multiprocess_dir(1, env)()
        assert MULTIPROC_ENV not in env
