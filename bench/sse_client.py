"""A small asyncio SSE load client: first-token time, inter-event gaps, errors, concurrency.

hey times whole responses; this client times the stream. Each stream is one HTTP/1.1 POST on its
own connection, read by an ``asyncio.Protocol`` (no coroutine per read, so one core can follow
thousands of streams): the first read holding a token event gives the first-token time, each
later one a gap. A stream counts as an error on a non-200 status, an ``error`` event, a
connection that ends before the terminal event, or its timeout.

Two shapes of load: ``closed_loop`` (N workers back to back for a while: throughput) and
``open_loop`` (streams started at a fixed rate: concurrency scale). ``ProcSampler`` reads a
server's CPU time and RSS from /proc meanwhile. Both loads run inside ``measuring()``, which
keeps this process's own garbage collection out of what it measures.

    python -m bench.sse_client --url http://127.0.0.1:8000/chat --concurrency 50 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

DELTA_MARKER: Final = b"event: delta"
SERVICE_TERMINALS: Final = {b"event: done": None, b"event: error": "error_event"}
UPSTREAM_TOKEN_MARKER: Final = b'"content":'
UPSTREAM_TERMINALS: Final = {b"data: [DONE]": None}
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Target:
    """Where to send what, and how to recognise token and terminal events in the reply."""

    host: str
    port: int
    path: str
    body: bytes
    token_marker: bytes = DELTA_MARKER
    terminals: dict[bytes, str | None] = field(default_factory=lambda: dict(SERVICE_TERMINALS))

    @classmethod
    def chat(cls, url: str, message: str, conversation_id: str | None = None) -> Target:
        """``POST url`` with ``{"message": message}`` (and the conversation), read as SSE."""
        parts = urlsplit(url)
        payload = {"message": message}
        if conversation_id is not None:
            payload["conversation_id"] = conversation_id
        body = json.dumps(payload).encode()
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/", body)

    @classmethod
    def upstream(cls, base_url: str, message: str) -> Target:
        """A streamed Chat Completions request straight to the (fake) upstream."""
        parts = urlsplit(base_url.rstrip("/") + "/chat/completions")
        payload = {
            "model": "fake-model",
            "stream": True,
            "messages": [{"role": "user", "content": message}],
        }
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 80,
            parts.path,
            json.dumps(payload).encode(),
            UPSTREAM_TOKEN_MARKER,
            dict(UPSTREAM_TERMINALS),
        )

    def request(self) -> bytes:
        """The raw HTTP/1.1 request."""
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            "Authorization: Bearer sk-bench\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        )
        return head.encode() + self.body


@dataclass
class StreamResult:
    """What one stream did; times in seconds from sending the request (``started_at``, on the
    ``perf_counter`` clock); ``status`` is the HTTP status, 0 before the head arrived."""

    first_token_s: float | None = None
    gaps_s: list[float] = field(default_factory=list)
    events: int = 0
    duration_s: float = 0.0
    error: str | None = None
    started_at: float = 0.0
    status: int = 0


class _StreamProtocol(asyncio.Protocol):
    """Sends the request, then times token events as the body arrives."""

    def __init__(
        self,
        target: Target,
        request: bytes,
        done: asyncio.Future[StreamResult],
        result: StreamResult | None = None,
    ):
        self._target = target
        self._request = request
        self._done = done
        self._result = result if result is not None else StreamResult()
        self._head = b""
        self._in_body = False
        self._carry = b""
        self._keep = max(len(m) for m in (target.token_marker, *target.terminals)) - 1
        self._sent_at = 0.0
        self._last_at = 0.0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._sent_at = self._result.started_at = time.perf_counter()
        transport.write(self._request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self._head[9:12]
            data = self._head[end + 4 :]
            self._in_body = True
            self._result.status = int(status) if status.isdigit() else -1
            if status != b"200":
                self._finish(f"status_{status.decode(errors='replace')}")
                return
        chunk = self._carry + data
        result = self._result
        count = chunk.count(self._target.token_marker)
        if count:
            if result.first_token_s is None:
                result.first_token_s = now - self._sent_at
            else:
                result.gaps_s.append(now - self._last_at)
            self._last_at = now
            result.events += count
        for marker, error in self._target.terminals.items():
            if marker in chunk:
                self._finish(error)
                return
        self._carry = chunk[-self._keep :]

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish("connection_lost")

    def abort(self, reason: str) -> None:
        """Give up on the stream (its timeout)."""
        self._finish(reason)

    def _finish(self, error: str | None) -> None:
        if self._done.done():
            return
        self._result.error = error
        self._result.duration_s = time.perf_counter() - self._sent_at
        self._done.set_result(self._result)
        if self._transport is not None:
            self._transport.close()


async def run_stream(
    target: Target, timeout_s: float = 60.0, live: list[StreamResult] | None = None
) -> StreamResult:
    """One request, read to its terminal event; cancelling it closes the connection.

    With ``live``, the result is appended there at once and filled in as the stream goes, so a
    watcher can judge a load before it ends.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[StreamResult] = loop.create_future()
    result = StreamResult()
    if live is not None:
        live.append(result)
    protocol = _StreamProtocol(target, target.request(), done, result)
    started = loop.time()
    try:
        await loop.create_connection(lambda: protocol, target.host, target.port)
    except OSError as exc:
        result.error = f"connect_{type(exc).__name__}"
        result.duration_s = loop.time() - started
        return result
    timer = loop.call_later(timeout_s, protocol.abort, "timeout")
    try:
        return await done
    except asyncio.CancelledError:
        protocol.abort("aborted")
        raise
    finally:
        timer.cancel()


@dataclass
class LoadResult:
    """Every stream of one load run, and how many were open at once."""

    results: list[StreamResult]
    elapsed_s: float
    peak_open: int

    def summary(self) -> dict[str, Any]:
        """Throughput, first-token and gap percentiles (ms), errors by kind."""
        ok = [r for r in self.results if r.error is None]
        first = [r.first_token_s for r in self.results if r.first_token_s is not None]
        gaps = [g for r in self.results for g in r.gaps_s]
        errors: dict[str, int] = {}
        for r in self.results:
            if r.error is not None:
                errors[r.error] = errors.get(r.error, 0) + 1
        return {
            "streams": len(self.results),
            "ok": len(ok),
            "errors": errors,
            "elapsed_s": round(self.elapsed_s, 3),
            "streams_per_s": round(len(ok) / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "events": sum(r.events for r in self.results),
            "peak_open": self.peak_open,
            "first_token_ms": percentiles(first),
            "gap_ms": percentiles(gaps),
        }


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 90, 99)) -> dict[str, Any]:
    """Nearest-rank percentiles and the max, in ms."""
    if not values:
        return {f"p{p}": None for p in points} | {"max": None, "n": 0}
    ordered = sorted(values)
    out: dict[str, Any] = {}
    for p in points:
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        out[f"p{p}"] = round(ordered[rank - 1] * 1000, 2)
    out["max"] = round(ordered[-1] * 1000, 2)
    out["n"] = len(ordered)
    return out


# Loads running now in this process (they may overlap): the heap stays frozen while any does.
_loads_measuring = 0


@contextlib.contextmanager
def measuring() -> Iterator[None]:
    """Freeze this process's heap for one load, so its collections skip what earlier ones left.

    Every time here is read on this process's loop: a pause of ours is counted as the server's
    latency. After a few phases the bench holds enough (results, connections, the server
    objects) that a full collection took 100-116 ms, and one fell inside the overload phase:
    its 503 p99 read 57-97 ms while the server's core was 38 % busy, against 7-13 ms in a fresh
    process (gc callbacks, 2026-12-07). Frozen objects are never scanned; what the load itself
    allocates is collected as usual.
    """
    global _loads_measuring
    _loads_measuring += 1
    if _loads_measuring == 1:  # loads that overlap share one freeze
        gc.collect()
        gc.freeze()
    try:
        yield
    finally:
        _loads_measuring -= 1
        if _loads_measuring == 0:
            gc.unfreeze()


class _OpenCounter:
    def __init__(self) -> None:
        self.open = 0
        self.peak = 0

    async def run(
        self, target: Target, timeout_s: float, live: list[StreamResult] | None = None
    ) -> StreamResult:
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            return await run_stream(target, timeout_s, live)
        finally:
            self.open -= 1


async def closed_loop(
    target: Target | Sequence[Target],
    concurrency: int,
    duration_s: float,
    timeout_s: float = 60.0,
) -> LoadResult:
    """``concurrency`` workers, each starting its next stream when the last one ends.

    With several targets, worker ``i`` takes targets ``i``, ``i + concurrency``, ... in turn:
    no two workers ever share one (a conversation takes one turn at a time).
    """
    loop = asyncio.get_running_loop()
    counter = _OpenCounter()
    results: list[StreamResult] = []
    started = loop.time()
    deadline = started + duration_s
    targets = [target] if isinstance(target, Target) else list(target)

    async def worker(own: list[Target]) -> None:
        turn = 0
        while loop.time() < deadline:
            results.append(await counter.run(own[turn % len(own)], timeout_s))
            turn += 1

    if len(targets) == 1:
        owned = [targets] * concurrency
    elif len(targets) >= concurrency:
        owned = [targets[i::concurrency] for i in range(concurrency)]
    else:
        raise ValueError(f"{len(targets)} targets cannot keep {concurrency} workers apart")
    with measuring():
        await asyncio.gather(*(worker(own) for own in owned))
    return LoadResult(results, loop.time() - started, counter.peak)


async def open_loop(
    target: Target,
    streams: int,
    rate_per_s: float,
    timeout_s: float = 60.0,
    live: list[StreamResult] | None = None,
) -> LoadResult:
    """``streams`` streams started ``1/rate_per_s`` apart, whatever the server's pace.

    Cancelling it closes every connection it opened (see ``run_stream``).
    """
    loop = asyncio.get_running_loop()
    counter = _OpenCounter()
    with measuring():
        started = loop.time()
        tasks = []
        try:
            for i in range(streams):
                delay = started + i / rate_per_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(counter.run(target, timeout_s, live)))
            results = list(await asyncio.gather(*tasks))
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    return LoadResult(results, loop.time() - started, counter.peak)


class ProcSampler:
    """Samples a process's CPU time and RSS from /proc while a load runs."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.rss_samples: list[int] = []
        self.cpu_start = 0.0
        self.cpu_end = 0.0
        self.wall_s = 0.0
        self._task: asyncio.Task[None] | None = None
        self._started = 0.0

    def cpu_s(self) -> float:
        """User plus system CPU seconds of the process so far."""
        with open(f"/proc/{self.pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def rss_bytes(self) -> int:
        """Resident set size now."""
        with open(f"/proc/{self.pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE

    async def __aenter__(self) -> ProcSampler:
        self.cpu_start = self.cpu_s()
        self._started = time.perf_counter()
        self.rss_samples.append(self.rss_bytes())
        self._task = asyncio.ensure_future(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.cpu_end = self.cpu_s()
        self.wall_s = time.perf_counter() - self._started
        self.rss_samples.append(self.rss_bytes())

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.rss_samples.append(self.rss_bytes())

    def summary(self) -> dict[str, Any]:
        """CPU seconds used, mean CPU share, RSS at start and at peak (MiB)."""
        used = self.cpu_end - self.cpu_start
        return {
            "cpu_s": round(used, 3),
            "cpu_share": round(used / self.wall_s, 3) if self.wall_s else None,
            "rss_start_mib": round(self.rss_samples[0] / 2**20, 1),
            "rss_peak_mib": round(max(self.rss_samples) / 2**20, 1),
        }


def main(argv: list[str] | None = None) -> None:
    """Run one load from the command line and print its summary as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000/chat")
    parser.add_argument("--message", default="hello")
    parser.add_argument("--concurrency", type=int, default=1, help="closed loop: workers")
    parser.add_argument("--duration", type=float, default=5.0, help="closed loop: seconds")
    parser.add_argument("--streams", type=int, default=0, help="open loop: streams to start")
    parser.add_argument("--rate", type=float, default=100.0, help="open loop: starts per second")
    parser.add_argument("--timeout", type=float, default=60.0, help="per stream, seconds")
    parser.add_argument("--pid", type=int, default=0, help="server process to sample")
    args = parser.parse_args(argv)
    target = Target.chat(args.url, args.message)

    async def run() -> dict[str, Any]:
        sampler = ProcSampler(args.pid) if args.pid else None
        if sampler is not None:
            await sampler.__aenter__()
        if args.streams:
            load = await open_loop(target, args.streams, args.rate, args.timeout)
        else:
            load = await closed_loop(target, args.concurrency, args.duration, args.timeout)
        summary = load.summary()
        if sampler is not None:
            await sampler.__aexit__()
            summary["server"] = sampler.summary()
        return summary

    print(json.dumps(asyncio.run(run()), indent=2))


if __name__ == "__main__":
    main()
