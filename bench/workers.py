"""``python -m chat --workers N``: one worker against two on this machine, unpinned.

The rest of ``make bench`` pins the server to one core to compare designs; this phase asks what
a second worker buys on the same machine, so nothing is pinned: the workers, Redis (needed for
more than one worker, and used for one too so that only the worker count differs), a fresh fake
upstream and hey all share every core, as they would on a small host. Measured per worker
count, on a fresh process tree: full 64-token streams/s (hey), the CPU of the whole tree (the
supervisor and its workers) per stream, and the first-token time at c=1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from bench import hey
from bench.servers import Process, Upstream
from bench.sse_client import Target, closed_loop

_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")
# /readyz answers from whichever worker accepts: this many 200s in a row on fresh connections
# means every worker has loaded (two workers: one chance in 2**19 of all hitting one of them).
_READY_IN_A_ROW: Final = 20


@contextlib.contextmanager
def unpinned() -> Iterator[None]:
    """Let this process, and the children it starts meanwhile, run on every core."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, range(os.cpu_count() or 1))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _on_every_core(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``function`` in this thread, moved to every core first (its children inherit it)."""
    os.sched_setaffinity(0, range(os.cpu_count() or 1))
    return function(*args, **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the supervisor and its workers)."""
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{current}/task/{current}/children").read_text()
            queue += [int(child) for child in children.split()]
    return pids


def tree_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process tree so far (live processes only)."""
    total = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_bytes().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process tree, summed (shared pages count once per process)."""
    total = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{member}/statm").read_bytes().split()[1]) * _PAGE
    return round(total / 2**20, 1)


class Redis(Process):
    """A throwaway redis-server on 127.0.0.1: no persistence."""

    def __init__(self, *, log_dir: Path, core: int | None = None) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        command = [
            shutil.which("redis-server") or "redis-server", "--port", str(self.port),
            "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        ]  # fmt: skip
        super().__init__("redis", command, env={}, log_dir=log_dir, core=core)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Until it answers PING."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{self.tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING")


class Workers(Process):
    """``python -m chat --workers N`` on a free port, as an operator starts it."""

    def __init__(self, workers: int, *, env: Mapping[str, str], log_dir: Path) -> None:
        self.workers = workers
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "chat", "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(workers),
        ]  # fmt: skip
        super().__init__(f"workers-{workers}", command, env=env, log_dir=log_dir, core=None)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until /readyz has said 200 on enough fresh connections in a row (every worker)."""
        deadline = time.monotonic() + timeout
        in_a_row = 0
        while time.monotonic() < deadline and in_a_row < _READY_IN_A_ROW:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as reply:
                    in_a_row = in_a_row + 1 if reply.status == 200 else 0
            except OSError:
                in_a_row = 0
                time.sleep(0.1)
        if in_a_row < _READY_IN_A_ROW:
            raise RuntimeError(f"{self.name} not ready in {timeout}s:\n{self.tail()}")


async def measure_one(server: Workers, body_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Throughput with the tree's CPU, then first-token latency at c=1."""
    burst = Target.chat(server.url + "/chat", "hello")
    await closed_loop(burst, 4, 0.5)  # warm-up: imports, pools, both workers
    cpu_before = tree_cpu_s(server.pid)
    # A pool thread keeps the affinity it was made with (affinity is per thread): widen it.
    result = await asyncio.to_thread(
        _on_every_core,
        hey.run_hey,
        server.url + "/chat",
        body_path,
        concurrency=args.hey_concurrency,
        duration_s=args.hey_seconds,
        core=None,
    )
    cpu = tree_cpu_s(server.pid) - cpu_before
    result["server_cpu_s"] = round(cpu, 3)
    result["server_rss_mib"] = tree_rss_mib(server.pid)
    if result["ok"]:
        result["cpu_ms_per_stream"] = round(cpu / result["ok"] * 1000, 3)
    latency = await closed_loop(burst, 1, args.latency_seconds)
    return {"throughput": result, "latency": latency.summary()}


async def measure_workers(
    counts: list[int],
    body_path: Path,
    args: argparse.Namespace,
    *,
    log_dir: Path,
    service_env: Callable[..., dict[str, str]],
) -> dict[str, Any]:
    """Each worker count on a fresh process tree, Redis and upstream shared, nothing pinned.

    ``service_env(upstream, **extra)`` is the service's environment as the rest of the bench
    deploys it.
    """
    if shutil.which("redis-server") is None:
        return {"skipped": "redis-server is not installed"}
    results: dict[str, Any] = {"pinned": False, "cores": os.cpu_count(), "counts": {}}
    with unpinned():
        redis = Redis(log_dir=log_dir)
        upstream = Upstream(log_dir=log_dir, core=None)
        try:
            redis.wait_ready()
            upstream.wait_ready()
            for count in counts:
                env = service_env(upstream, REDIS_URL=redis.url)
                server = Workers(count, env=env, log_dir=log_dir)
                try:
                    server.wait_ready()
                    results["counts"][str(count)] = await measure_one(server, body_path, args)
                finally:
                    server.stop(timeout=20)
                rate = results["counts"][str(count)]["throughput"]["requests_per_s"]
                print(f"  --workers {count}: throughput {rate:.1f}/s", flush=True)
        finally:
            upstream.stop()
            redis.stop()
    return results


def report_lines(results: dict[str, Any]) -> str:
    """Markdown lines for the workers phase."""
    phase = results.get("workers") or {}
    if "skipped" in phase:
        return f"- workers: skipped ({phase['skipped']})"
    counts = phase.get("counts") or {}
    if not counts:
        return ""
    base = counts.get("1", {}).get("throughput", {}).get("requests_per_s")
    lines = [
        f"`python -m chat --workers N` with REDIS_URL, unpinned on {phase.get('cores')} cores "
        "(workers, Redis, upstream and hey share them):",
        "",
        "| workers | streams/s (hey) | vs 1 worker | CPU per stream (ms, all workers) "
        "| RSS (MiB, all processes) | first token c=1 p50 / p99 (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for count, measured in counts.items():
        throughput = measured["throughput"]
        rate = throughput.get("requests_per_s")
        ratio = f"{rate / base:.2f}x" if rate and base else "-"
        first = measured.get("latency", {}).get("first_token_ms") or {}
        pair = f"{first['p50']:.2f} / {first['p99']:.2f}" if first.get("p50") is not None else "-"
        lines.append(
            f"| {count} | {rate:,.1f} | {ratio} | {throughput.get('cpu_ms_per_stream', '-')} "
            f"| {throughput.get('server_rss_mib', '-')} | {pair} |"
        )
    return "\n".join(lines)
