"""Soak: the service for ``--minutes`` under faults and reconnects, watching for leaks.

The fake upstream (in this process, its own thread and loop) answers 10% of requests with 429
and drops 1% mid-stream (chosen per request by directives in the message). ``--concurrency``
(200) clients stream ``POST /chat`` back to back, and ``--readers`` (20) behave like
EventSource: ``POST /chat/streams``, then ``GET`` with ``Last-Event-ID``, hanging up mid-stream a
few times and reconnecting, and once more after the end (which must be 204). Every
``--sample-s`` (10) the soak records the server's RSS, open fds, asyncio tasks and open streams.

It reports, and checks:

- the slope of RSS over the last half of the run (MiB per minute, at most ``--max-slope``);
- the server's task count after the load, back at its baseline from before the load;
- every stream ended with exactly one terminal event, readers saw every id once, in order;
- upstream attempts at most 3 x streams.

The server runs on core 0, this process on core 1. It writes ``artifacts/soak/summary.json``
and ``docs/soak.png`` and exits 1 when a check fails.

    python -m bench.soak --minutes 10        # or: make soak SOAK_ARGS="--minutes 2"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from bench.fake_upstream import FakeUpstream
from bench.servers import LOAD_CORE, ROOT, SERVER_CORE, Process

ARTIFACTS: Final = ROOT / "artifacts" / "soak"
PLOT_PATH: Final = ROOT / "docs" / "soak.png"
STREAM_TIMEOUT_S: Final = 60.0
MIB: Final = 2**20
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")
_TERMINALS: Final = (b"event: done\n", b"event: error\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Knobs; the defaults are the issue's soak."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load")
    parser.add_argument("--concurrency", type=int, default=200, help="POST /chat streams at once")
    parser.add_argument("--readers", type=int, default=20, help="EventSource-like readers")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per answer")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="upstream delay per token")
    parser.add_argument("--rate-limited", type=float, default=0.10, help="share answered 429")
    parser.add_argument("--dropped", type=float, default=0.01, help="share dropped mid-stream")
    parser.add_argument("--sample-s", type=float, default=10.0, help="sampling period")
    parser.add_argument(
        "--settle-s", type=float, default=60.0, help="wait for tasks and fds to settle"
    )
    parser.add_argument(
        "--stream-ttl-s",
        type=float,
        default=60.0,
        help="CHAT_STREAM_TTL_S: finished logs kept in memory; shorter than the default 300 s so "
        "the retained set reaches its steady state early and the RSS slope measures leaks",
    )
    parser.add_argument("--max-slope", type=float, default=1.0, help="RSS MiB/min, last half")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--plot", type=Path, default=PLOT_PATH)
    parser.add_argument("--out", type=Path, default=ARTIFACTS / "summary.json")
    return parser.parse_args(argv)


# --- the server under test ----------------------------------------------------------------


class SoakServer(Process):
    """``bench.soak_server`` (the app plus a task counter) on a socket made here, on core 0."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(4096)
        self.port: int = self._sock.getsockname()[1]
        self.tasks_file = log_dir / "tasks.json"
        fd = self._sock.fileno()
        command = [
            sys.executable, "-m", "bench.soak_server",
            "--fd", str(fd), "--tasks-file", str(self.tasks_file),
        ]  # fmt: skip
        super().__init__("soak-server", command, env=env, log_dir=log_dir, core=SERVER_CORE,
                         pass_fds=(fd,))  # fmt: skip

    def rss_mib(self) -> float:
        with open(f"/proc/{self.pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / MIB

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def tasks(self) -> int | None:
        try:
            return int(json.loads(self.tasks_file.read_text())["tasks"])
        except (OSError, ValueError, KeyError):
            return None

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self._sock.close()


def service_env(upstream_url: str, stream_ttl_s: float = 300.0) -> dict[str, str]:
    """The service as deployed on an OpenAI-compatible provider, warnings only in its log."""
    return {
        "CHAT_STREAM_TTL_S": str(stream_ttl_s),
        "CHAT_BACKEND": "openai",
        "OPENAI_BASE_URL": upstream_url,
        "OPENAI_API_KEY": "sk-soak",
        "CHAT_MODEL": "fake-model",
        "CHAT_LOG_LEVEL": "warning",
        "CHAT_MAX_CONCURRENT_STREAMS": "5000",
    }


# --- HTTP/1.1 by hand: cheap enough for hundreds of streams on one core --------------------


async def send_request(
    host: str, port: int, method: str, path: str, body: bytes = b"", headers: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, dict[str, str]]:
    """Open a connection, send one request, read the status line and headers."""
    reader, writer = await asyncio.open_connection(host, port)
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return reader, writer, status, fields


async def read_body(reader: asyncio.StreamReader, fields: dict[str, str]) -> bytes:
    """A whole (small) body: Content-Length or chunked."""
    if "content-length" in fields:
        return await reader.readexactly(int(fields["content-length"]))
    parts = []
    while (chunk := await read_chunk(reader)) is not None:
        parts.append(chunk)
    return b"".join(parts)


async def read_chunk(reader: asyncio.StreamReader) -> bytes | None:
    """One chunk of a chunked body; None after the last (the clean end)."""
    size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
    if size == 0:
        await reader.readline()
        return None
    return (await reader.readexactly(size + 2))[:-2]


def close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        writer.close()


def terminal_code(body: bytes) -> str:
    """``done`` or the code of the last ``error`` event in ``body``."""
    start = body.rfind(b"event: ")
    if body.startswith(b"event: done", start):
        return "done"
    code = body.find(b'"code":"', start)
    return body[code + 8 : body.find(b'"', code + 8)].decode() if code >= 0 else "unknown"


# --- the load ------------------------------------------------------------------------------


@dataclass
class Tally:
    """Everything the clients saw."""

    streams: int = 0  # runs the service accepted (200 or 201)
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0

    def violation(self, text: str) -> None:
        if len(self.violations) < 50:
            self.violations.append(text)
        self.outcomes["violation"] += 1


class Load:
    """The two kinds of clients, choosing each request's fault by a seeded draw."""

    def __init__(self, args: argparse.Namespace, port: int) -> None:
        self.args = args
        self.host = "127.0.0.1"
        self.port = port
        self.rng = random.Random(args.seed)
        self.tally = Tally()
        self._n = 0

    def message(self) -> bytes:
        """A fresh message (``times=`` counts per text), with this request's fault, if any."""
        self._n += 1
        draw = self.rng.random()
        fault = ""
        if draw < self.args.rate_limited:
            fault = " [[status=429]]"
        elif draw < self.args.rate_limited + self.args.dropped:
            fault = f" [[fail_after={self.rng.randint(1, max(1, self.args.tokens - 1))}]]"
        return json.dumps({"message": f"soak {self._n}{fault}"}).encode()

    async def chat_once(self) -> None:
        """One POST /chat stream, read to the clean end of its body."""
        tally = self.tally
        reader, writer, status, fields = await send_request(
            self.host, self.port, "POST", "/chat", self.message()
        )
        try:
            if status != 200:
                tally.rejected[str(status)] += 1
                return
            tally.streams += 1
            body = await read_body(reader, fields)
        finally:
            close(writer)
        terminals = sum(body.count(marker) for marker in _TERMINALS)
        if terminals != 1 or not body.endswith(b"\n\n"):
            tally.violation(f"POST /chat: {terminals} terminal events")
            return
        tally.outcomes[terminal_code(body)] += 1

    async def eventsource_once(self) -> None:
        """POST /chat/streams, then GETs with Last-Event-ID across hang-ups, then the 204."""
        tally = self.tally
        reader, writer, status, fields = await send_request(
            self.host, self.port, "POST", "/chat/streams", self.message()
        )
        try:
            created = await read_body(reader, fields)
        finally:
            close(writer)
        if status != 201:
            tally.rejected[str(status)] += 1
            return
        tally.streams += 1
        url = json.loads(created)["events_url"]
        ids: list[int] = []
        terminals: list[bytes] = []
        hangups = self.rng.randint(0, 3)
        for _ in range(hangups + 8):  # bounded: hang-ups, the end, the 204, some slack
            last = f"Last-Event-ID: {ids[-1]}\r\n" if ids else ""
            reader, writer, status, fields = await send_request(
                self.host, self.port, "GET", url, headers=last
            )
            try:
                if status == 204:
                    break
                if status != 200:
                    tally.violation(f"GET stream: status {status}")
                    return
                limit = self.rng.randint(1, 20) if hangups > 0 else None
                got = 0
                while (chunk := await read_chunk(reader)) is not None:
                    for frame in chunk.split(b"\n\n"):
                        if not frame.startswith(b"event: "):
                            continue  # retry field, pings
                        event, _, rest = frame.partition(b"\nid: ")
                        ids.append(int(rest.partition(b"\n")[0]))
                        if event != b"event: delta":
                            terminals.append(frame)
                        got += 1
                    if limit is not None and got >= limit:
                        break  # hang up mid-stream, as a flaky network would
                if limit is not None and got >= limit:
                    hangups -= 1
                    tally.reconnects += 1
            finally:
                close(writer)
        else:
            tally.violation("GET stream: no 204 after the end")
            return
        if ids != list(range(1, len(ids) + 1)) or len(terminals) != 1:
            tally.violation(f"GET stream: ids {ids[:3]}..{ids[-3:]}, {len(terminals)} terminals")
            return
        tally.outcomes[terminal_code(terminals[0] + b"\n")] += 1

    async def worker(self, once: Any, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            try:
                async with asyncio.timeout(STREAM_TIMEOUT_S):
                    await once()
            except TimeoutError:
                self.tally.violation("a stream took longer than its timeout")
            except (OSError, EOFError, asyncio.LimitOverrunError, ValueError) as exc:
                self.tally.violation(f"{type(exc).__name__}: {exc}"[:200])

    async def run(self, seconds: float) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        workers = [self.worker(self.chat_once, deadline) for _ in range(self.args.concurrency)]
        workers += [self.worker(self.eventsource_once, deadline) for _ in range(self.args.readers)]
        await asyncio.gather(*workers)


# --- sampling and the report ---------------------------------------------------------------


@dataclass
class Sample:
    t_s: float
    rss_mib: float
    fds: int
    tasks: int | None
    open_streams: int | None
    streams: int


async def open_streams(load: Load) -> int | None:
    try:
        reader, writer, status, fields = await send_request(load.host, load.port, "GET", "/readyz")
        try:
            body = await read_body(reader, fields)
        finally:
            close(writer)
        return int(json.loads(body)["open_streams"]) if status == 200 else None
    except (OSError, ValueError, KeyError, asyncio.IncompleteReadError):
        return None


async def sample(server: SoakServer, load: Load, started: float) -> Sample:
    return Sample(
        t_s=round(time.monotonic() - started, 1),
        rss_mib=round(server.rss_mib(), 2),
        fds=server.fds(),
        tasks=server.tasks(),
        open_streams=await open_streams(load),
        streams=load.tally.streams,
    )


async def sample_every(
    period_s: float, server: SoakServer, load: Load, started: float, into: list[Sample]
) -> None:
    while True:
        into.append(await sample(server, load, started))
        print(json.dumps(asdict(into[-1])), flush=True)
        await asyncio.sleep(period_s)


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) points, in MiB per minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return round(cov / var * 60, 3)


# Open fds may exceed the baseline by this much after the load (a pooled upstream connection).
FD_SLACK: Final = 4


async def settle(
    server: SoakServer, tasks: int, fds: int, limit_s: float
) -> tuple[int | None, int]:
    """Task and fd counts once back at their baselines, or the last seen after ``limit_s``.

    Idle keep-alive connections to the upstream stay pooled for a while after the load, so the
    fds come back later than the tasks.
    """
    deadline = time.monotonic() + limit_s
    count, open_fds = server.tasks(), server.fds()
    for _ in range(int(limit_s / 0.5) + 1):  # bounded in count and time
        settled = count is not None and count <= tasks and open_fds <= fds + FD_SLACK
        if settled or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
        count, open_fds = server.tasks(), server.fds()
    return count, open_fds


def plot(samples: list[Sample], load_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    series = [
        ("RSS (MiB)", [s.rss_mib for s in samples]),
        ("asyncio tasks", [s.tasks for s in samples]),
        ("open fds / open streams", [s.fds for s in samples]),
    ]
    for ax, (label, values) in zip(axes, series, strict=True):
        ax.plot(t, values, marker=".", label=label.split(" / ")[0])
        ax.set_ylabel(label)
        ax.axvline(load_s / 60, color="grey", linestyle="--", linewidth=0.8)
        ax.grid(alpha=0.3)
    axes[2].plot(t, [s.open_streams for s in samples], marker=".", label="open streams")
    axes[2].legend(loc="upper right")
    axes[2].set_xlabel("minutes (dashed: load ends)")
    fig.suptitle("make soak: the service under 429s, drops and EventSource reconnects")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with FakeUpstream(tokens=args.tokens, delay_ms=args.delay_ms, max_records=1000) as upstream:
        server = SoakServer(service_env(upstream.base_url, args.stream_ttl_s), ARTIFACTS)
        try:
            return await drive(args, server, upstream)
        finally:
            server.stop()


async def drive(args: argparse.Namespace, server: SoakServer, upstream: FakeUpstream) -> dict:
    load = Load(args, server.port)
    for _ in range(600):  # bounded: 60 s for the service to answer /readyz
        if await open_streams(load) is not None and server.tasks() is not None:
            break
        if server.proc.poll() is not None:
            raise RuntimeError(f"the server exited:\n{server.tail()}")
        await asyncio.sleep(0.1)
    else:
        raise RuntimeError(f"the server never got ready:\n{server.tail()}")
    # Warm up (what lives as long as the loop starts now), then take the baselines.
    warm = Load(args, server.port)
    warm.args = argparse.Namespace(**{**vars(args), "rate_limited": 0.0, "dropped": 0.0})
    await asyncio.gather(*(warm.chat_once() for _ in range(20)), warm.eventsource_once())
    await asyncio.sleep(2.0)
    baseline_tasks, baseline_fds = await settle(server, 0, 0, 1.0)
    baseline_tasks = baseline_tasks or 0
    upstream.reset()
    started = time.monotonic()
    samples: list[Sample] = []
    load_s = args.minutes * 60
    sampler = asyncio.create_task(sample_every(args.sample_s, server, load, started, samples))
    try:
        await load.run(load_s)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    load_ended = time.monotonic() - started
    final_tasks, final_fds = await settle(server, baseline_tasks, baseline_fds, args.settle_s)
    samples.append(await sample(server, load, started))
    attempts = upstream.request_count
    tally = load.tally
    during = [(s.t_s, s.rss_mib) for s in samples if load_s / 2 <= s.t_s <= load_ended]
    slope = slope_per_minute(during)
    checks = {
        "rss_slope_ok": slope is not None and slope <= args.max_slope,
        "tasks_back_at_baseline": final_tasks is not None and final_tasks <= baseline_tasks,
        "fds_back_at_baseline": final_fds <= baseline_fds + FD_SLACK,
        "one_terminal_event_each": not tally.violations and tally.streams > 0,
        "attempts_at_most_3x_streams": attempts <= 3 * tally.streams,
    }
    summary = {
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "readers": args.readers,
        "stream_ttl_s": args.stream_ttl_s,
        "streams": tally.streams,
        "streams_per_s": round(tally.streams / load_ended, 1) if load_ended else None,
        "outcomes": dict(tally.outcomes),
        "rejected": dict(tally.rejected),
        "reconnects": tally.reconnects,
        "violations": tally.violations,
        "upstream_attempts": attempts,
        "attempts_per_stream": round(attempts / tally.streams, 3) if tally.streams else None,
        "rss_mib": {
            "start": samples[0].rss_mib if samples else None,
            "peak": max(s.rss_mib for s in samples) if samples else None,
            "end": samples[-1].rss_mib if samples else None,
            "slope_last_half_mib_per_min": slope,
        },
        "fds": {
            "baseline": baseline_fds,
            "peak": max(s.fds for s in samples),
            "after": final_fds,
        },
        "tasks": {
            "baseline": baseline_tasks,
            "peak": max((s.tasks or 0) for s in samples),
            "after": final_tasks,
        },
        "checks": checks,
        "samples": [asdict(s) for s in samples],
    }
    plot(samples, load_ended, args.plot)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with contextlib.suppress(AttributeError, OSError, ValueError):
        if (os.cpu_count() or 1) > LOAD_CORE:
            os.sched_setaffinity(0, {LOAD_CORE})  # the server has core 0 to itself
    summary = asyncio.run(soak(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    shown = {k: v for k, v in summary.items() if k != "samples"}
    print(json.dumps(shown, indent=2))
    print(f"plot: {args.plot}; summary: {args.out}")
    return 0 if all(summary["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
