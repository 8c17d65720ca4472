"""Prometheus metrics, recorded once per request and once per stream, never per token.

A stream's figures (first-token time, duration, tokens, outcome) are taken from its ``RunStats``
when its run ends; the request counter is fed by the access-log middleware when a response ends.
Nothing here runs between two tokens.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``python -m chat --workers N`` sets it), every worker
writes its values to files there and a scrape of any worker sums them all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase

from chat.metrics_dir import MULTIPROC_ENV
from chat.run.control import RunStats

UNMATCHED_ROUTE: Final = "unmatched"

# First tokens come in milliseconds from a local upstream and in seconds from a loaded model.
TTFT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DURATION_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def route_label(scope: Mapping[str, Any]) -> str:
    """The matched route's template (``/chat/streams/{stream_id}``), never the raw path.

    The router leaves the matched route in ``scope["route"]``; a mount (it has ``routes``, a
    route has not) stands for everything below its path.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED_ROUTE
    if hasattr(route, "routes"):
        return path + "/{path}"
    return path


def status_label(status: int | None) -> str:
    """The response status; ``none`` when the client left before a response started."""
    return "none" if status is None else str(status)


def stream_outcome(stats: RunStats, *, detached: bool, stop_code: str | None) -> str:
    """``done``, the terminal error's code, or ``client_disconnected``.

    A run cancelled because nobody was reading it any more (the grace period ran out, or a
    JSON client hung up) ended for its client's sake: ``client_disconnected``.
    """
    outcome = stats.outcome or stop_code or "internal_error"
    if detached and outcome == "cancelled":
        return "client_disconnected"
    return outcome


class Metrics:
    """The service's metrics and the calls that record them."""

    enabled: Final = True

    def __init__(self, *, multiprocess_dir: str | None = None) -> None:
        self.multiprocess = multiprocess_dir is not None
        # No `_created` series next to every counter: they double the scrape for no reader.
        disable_created_metrics()
        # Metrics live in a registry of this app, so several apps in one process (tests) never
        # clash; in multiprocess mode they live in files and the scrape registry reads those.
        self.registry = CollectorRegistry(auto_describe=True)
        own: CollectorRegistry | None = None if self.multiprocess else self.registry
        if multiprocess_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry, path=multiprocess_dir)
        else:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        self.requests = Counter(
            "chat_requests_total",
            "HTTP requests by route template and status, counted when the response ends.",
            ("route", "status"),
            registry=own,
        )
        self.streams_active = Gauge(
            "chat_streams_active",
            "Runs in progress, each holding one admission slot.",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.streams_limit = Gauge(
            "chat_streams_limit",
            "Admission slots: runs allowed at once before new requests get 503 overloaded.",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.outcomes = Counter(
            "chat_stream_outcomes_total",
            "Finished streams by outcome: done, an error code, or client_disconnected.",
            ("outcome",),
            registry=own,
        )
        self.ttft = Histogram(
            "chat_time_to_first_token_seconds",
            "Seconds from the start of a run to its first delta, one observation per stream.",
            ("backend",),
            registry=own,
            buckets=TTFT_BUCKETS,
        )
        self.duration = Histogram(
            "chat_stream_duration_seconds",
            "Seconds from the start of a run to its terminal event, one observation per stream.",
            ("backend",),
            registry=own,
            buckets=DURATION_BUCKETS,
        )
        self.tokens = Counter(
            "chat_tokens_total",
            "Tokens the provider reported for completed streams, by kind (input, output).",
            ("backend", "kind"),
            registry=own,
        )
        self.rejections = Counter(
            "chat_rejections_total",
            "Requests to start a stream refused before any model call, by error code.",
            ("code",),
            registry=own,
        )
        self.upstream_errors = Counter(
            "chat_upstream_errors_total",
            "Streams ended by a failure of the model provider, by error code.",
            ("code",),
            registry=own,
        )
        # Labelled children, looked up by plain label values: `labels()` costs more than the
        # update itself, and every label here takes a few values only (routes, codes, statuses).
        self._requests: dict[tuple[str, int | None], Any] = {}
        self._outcomes: dict[str, Any] = {}
        self._upstream_errors: dict[str, Any] = {}
        self._rejections: dict[str, Any] = {}
        # The backend's series, bound at the first stream: a scrape before any stream shows
        # none of them, as when each was looked up per call.
        self._backend = "unknown"
        self._backend_series: _BackendSeries | None = None
        self._limit = -1

    def started(self, *, backend: str, limit: int) -> None:
        """The app is up: its backend's name labels the stream metrics; its slot limit."""
        self._backend = backend
        self._backend_series = None
        self.streams_limit.set(limit)

    def limit_changed(self, limit: int) -> None:
        """The admission limit now (the adaptive limit moves it every window)."""
        if limit != self._limit:
            self._limit = limit
            self.streams_limit.set(limit)

    def request_finished(
        self, scope: Mapping[str, Any], status: int | None, record: Mapping[str, object]
    ) -> None:
        """One HTTP request ended (called by the access-log middleware)."""
        route = route_label(scope)
        child = self._requests.get((route, status))
        if child is None:
            child = self._requests[route, status] = self.requests.labels(
                route, status_label(status)
            )
        child.inc()

    def rejected(self, code: str) -> None:
        """A request to start a stream was refused with ``code``."""
        _child(self._rejections, self.rejections, code).inc()

    def run_started(self) -> None:
        """A run took an admission slot."""
        self.streams_active.inc()

    def run_released(self) -> None:
        """A run gave its admission slot back."""
        self.streams_active.dec()

    def run_finished(
        self, stats: RunStats, *, detached: bool = False, stop_code: str | None = None
    ) -> None:
        """A stream ended: its outcome, its timings and its tokens, once."""
        now = time.perf_counter()
        series = self._backend_series
        if series is None:
            series = self._backend_series = _BackendSeries(self, self._backend)
        outcome = stream_outcome(stats, detached=detached, stop_code=stop_code)
        _child(self._outcomes, self.outcomes, outcome).inc()
        if outcome.startswith("upstream_"):
            _child(self._upstream_errors, self.upstream_errors, outcome).inc()
        if stats.first_token_at is not None:
            series.ttft.observe(stats.first_token_at - stats.started_at)
        series.duration.observe(now - stats.started_at)
        usage = stats.usage
        if usage is not None:
            series.input_tokens.inc(usage.input_tokens)
            series.output_tokens.inc(usage.output_tokens)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition (text format, or OpenMetrics when asked for) and its content type."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

    def stopped(self) -> None:
        """This process stops: in multiprocess mode, its live gauges leave the sums."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())


class _BackendSeries:
    """The children of the stream metrics labelled with one backend, bound once."""

    __slots__ = ("duration", "input_tokens", "output_tokens", "ttft")

    def __init__(self, metrics: Metrics, backend: str) -> None:
        self.ttft = metrics.ttft.labels(backend)
        self.duration = metrics.duration.labels(backend)
        self.input_tokens = metrics.tokens.labels(backend, "input")
        self.output_tokens = metrics.tokens.labels(backend, "output")


def _child(children: dict[str, Any], metric: MetricWrapperBase, label: str) -> Any:
    """``metric.labels(label)``, made once per value and kept in ``children``."""
    child = children.get(label)
    if child is None:
        child = children[label] = metric.labels(label)
    return child


class NoMetrics:
    """``CHAT_METRICS=false``: every call does nothing and ``/metrics`` answers 404."""

    enabled: Final = False

    def started(self, *, backend: str, limit: int) -> None:
        """Nothing to record."""

    def limit_changed(self, limit: int) -> None:
        """Nothing to record."""

    def rejected(self, code: str) -> None:
        """Nothing to record."""

    def run_started(self) -> None:
        """Nothing to record."""

    def run_released(self) -> None:
        """Nothing to record."""

    def run_finished(
        self, stats: RunStats, *, detached: bool = False, stop_code: str | None = None
    ) -> None:
        """Nothing to record."""

    def stopped(self) -> None:
        """Nothing to record."""


def build_metrics(enabled: bool, environ: Mapping[str, str] | None = None) -> Metrics | NoMetrics:
    """The service's metrics, in multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set."""
    if not enabled:
        return NoMetrics()
    env = os.environ if environ is None else environ
    return Metrics(multiprocess_dir=env.get(MULTIPROC_ENV) or None)
