"""``make bench``: the service against the naive design and a bare-ASGI ceiling, in one run.

One core runs the server under test (``taskset -c 0``); this process, hey and the fake upstream
share the other. Each server is measured alone, the same way (phase 1 on its own process):

1. scale, on a fresh server process: 1,000 streams of 100 tokens 50 ms apart, started at a
   steady 250/s so that all are open together: first-token time, inter-event gaps, errors,
   RSS and CPU (RSS growth over the idle server per open stream; CPU per token);
2. throughput: ``hey -c 50`` full streams of 64 tokens from an upstream without delay, with the
   server's CPU time read from /proc (CPU per stream and per token);
3. latency: one stream at a time, first-token time (the upstream's own is measured too);
4. a concurrency sweep for the plot (closed loop: each client starts its next stream at once).

Then three variants of the service for the notes: the stock SDK model, the client's httpx
transport instead of aiohttp, and the access log on. Last, ``python -m chat --workers 1`` against
``--workers 2``, unpinned (bench/workers.py).
Prints one markdown table; writes bench/results/<date>.json and docs/bench.png.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from bench import hey, report, workers
from bench.servers import LOAD_CORE, ROOT, Server, Upstream
from bench.sse_client import LoadResult, ProcSampler, Target, closed_loop, open_loop

RESULTS_DIR = ROOT / "bench" / "results"
PLOT_PATH = ROOT / "docs" / "bench.png"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Knobs; the defaults are the issue's workloads and fit in a few minutes on 2 cores."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tokens", type=int, default=64, help="tokens per stream (throughput)")
    parser.add_argument("--hey-seconds", type=float, default=8.0)
    parser.add_argument("--hey-concurrency", type=int, default=50)
    parser.add_argument("--latency-seconds", type=float, default=2.0)
    parser.add_argument("--sweep", default="1,10,50,200,500", help="concurrency levels")
    parser.add_argument("--sweep-seconds", type=float, default=2.0)
    parser.add_argument("--scale-streams", type=int, default=1000)
    parser.add_argument("--scale-tokens", type=int, default=100)
    parser.add_argument("--scale-delay-ms", type=float, default=50.0)
    parser.add_argument("--scale-rate", type=float, default=250.0, help="stream starts per second")
    parser.add_argument("--servers", default="service,naive,bare")
    parser.add_argument("--no-variants", action="store_true", help="skip the service variants")
    parser.add_argument(
        "--workers", default="1,2", help="worker counts to compare, unpinned ('' skips)"
    )
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--out", type=Path, default=None, help="results JSON path")
    args = parser.parse_args(argv)
    if args.quick:
        args.hey_seconds = 3.0
        args.latency_seconds = 1.0
        args.sweep = "1,50,200"
        args.sweep_seconds = 1.0
        args.scale_streams = 300
    return args


def service_env(upstream: Upstream, **extra: str) -> dict[str, str]:
    """The service on the fake upstream, as deployed: Chat Completions, warnings only."""
    return {
        "CHAT_BACKEND": "openai",
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "sk-bench",
        "CHAT_MODEL": "fake-model",
        "CHAT_LOG_LEVEL": "warning",
        "CHAT_MAX_CONCURRENT_STREAMS": "5000",
        **extra,
    }


def server_specs(upstream: Upstream) -> dict[str, tuple[str, dict[str, str], str]]:
    """name -> (ASGI app, environment, readiness path)."""
    naive_env = {
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "sk-bench",
        "CHAT_MODEL": "fake-model",
    }
    return {
        "service": ("app:app", service_env(upstream), "/readyz"),
        "naive": ("bench.naive_app:app", naive_env, "/healthz"),
        "bare": ("bench.bare_asgi:app", {}, "/healthz"),
        "service_stock": ("app:app", service_env(upstream, CHAT_OPENAI_IMPL="stock"), "/readyz"),
        "service_httpx": (
            "app:app",
            service_env(upstream, CHAT_OPENAI_TRANSPORT="httpx"),
            "/readyz",
        ),
        "service_info_log": ("app:app", service_env(upstream, CHAT_LOG_LEVEL="info"), "/readyz"),
    }


async def measure_throughput(
    server: Server, body_path: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """hey at fixed concurrency, with the server's CPU time over the run."""
    async with ProcSampler(server.pid) as sampler:
        result = await asyncio.to_thread(
            hey.run_hey,
            server.url + "/chat",
            body_path,
            concurrency=args.hey_concurrency,
            duration_s=args.hey_seconds,
        )
    cpu = sampler.summary()
    result["server"] = cpu
    if result["ok"]:
        per_stream = cpu["cpu_s"] / result["ok"]
        result["cpu_ms_per_stream"] = round(per_stream * 1000, 3)
        result["cpu_us_per_token"] = round(per_stream / args.tokens * 1e6, 2)
    return result


def scale_summary(load: LoadResult, sampler: ProcSampler) -> dict[str, Any]:
    """The load summary plus RSS growth per open stream."""
    summary = load.summary()
    summary["error_count"] = sum(summary["errors"].values())
    summary["server"] = sampler.summary()
    grown = max(sampler.rss_samples) - sampler.rss_samples[0]
    if load.peak_open:
        summary["kib_per_stream"] = round(grown / load.peak_open / 1024, 1)
    return summary


async def measure_scale(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """Many paced streams open at once; first on a fresh server, so RSS growth is theirs."""
    message = f"[[tokens={args.scale_tokens},delay_ms={args.scale_delay_ms:g}]] hello"
    paced = Target.chat(server.url + "/chat", message)
    timeout = args.scale_tokens * args.scale_delay_ms / 1000 + 60
    async with ProcSampler(server.pid) as sampler:
        load = await open_loop(paced, args.scale_streams, args.scale_rate, timeout)
    summary = scale_summary(load, sampler)
    tokens = summary["ok"] * args.scale_tokens
    if tokens:
        per_token = summary["server"]["cpu_s"] / tokens
        summary["cpu_us_per_token"] = round(per_token * 1e6, 1)
        # Streams of this pace one core could carry, were all its time spent on their tokens.
        rate = 1000 / args.scale_delay_ms
        summary["streams_per_core_estimate"] = int(1 / (per_token * rate))
    return summary


async def measure_server(
    name: str, server: Server, body_path: Path, args: argparse.Namespace, *, full: bool
) -> dict[str, Any]:
    """Throughput, latency and (for the three main servers) the concurrency sweep."""
    burst = Target.chat(server.url + "/chat", "hello")
    await closed_loop(burst, 4, 0.5)  # warm-up: imports, pools, caches
    out: dict[str, Any] = {"throughput": await measure_throughput(server, body_path, args)}
    print(f"  {name}: throughput {out['throughput']['requests_per_s']:.1f}/s", flush=True)
    out["latency"] = (await closed_loop(burst, 1, args.latency_seconds)).summary()
    if full:
        sweep = []
        for level in (int(c) for c in args.sweep.split(",")):
            point = (await closed_loop(burst, level, args.sweep_seconds)).summary()
            sweep.append({"concurrency": level, **point})
        out["sweep"] = sweep
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the upstream, then each server in turn; return every result."""
    stamp = datetime.datetime.now(datetime.UTC)
    log_dir = RESULTS_DIR / "logs"
    body_path = RESULTS_DIR / "body.json"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    body_path.write_text(json.dumps({"message": "hello"}))
    results: dict[str, Any] = {
        "date": stamp.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": report.machine(),
        "config": {
            "tokens": args.tokens,
            "hey_concurrency": args.hey_concurrency,
            "hey_seconds": args.hey_seconds,
            "scale_streams": args.scale_streams,
            "scale_tokens": args.scale_tokens,
            "scale_delay_ms": args.scale_delay_ms,
            "scale_rate_per_s": args.scale_rate,
        },
        "servers": {},
    }
    upstream = Upstream(log_dir=log_dir)
    try:
        upstream.wait_ready()
        own = await closed_loop(Target.upstream(upstream.base_url, "hello"), 1, 2.0)
        results["upstream_latency"] = own.summary()
        specs = server_specs(upstream)
        names = [n for n in args.servers.split(",") if n]
        if not args.no_variants and "service" in names:
            names += ["service_stock", "service_httpx", "service_info_log"]
        for name in names:
            app, env, ready = specs[name]
            full = name in {"service", "naive", "bare"}
            print(f"{name}: starting {app}", flush=True)
            # Each phase on a fresh process: after 1,000 streams the heap and the upstream pool
            # (idle keep-alive connections) would tilt the throughput run, and vice versa.
            with Server(name, app, env=env, log_dir=log_dir, ready_path=ready) as server:
                results["servers"][name] = await measure_server(
                    name, server, body_path, args, full=full
                )
            if full:
                with Server(name, app, env=env, log_dir=log_dir, ready_path=ready) as server:
                    await closed_loop(Target.chat(server.url + "/chat", "hello"), 4, 0.5)
                    scale = await measure_scale(server, args)
                results["servers"][name]["scale"] = scale
                print(
                    f"  {name}: scale first-token p99 {scale['first_token_ms']['p99']} ms, "
                    f"gap p99 {scale['gap_ms']['p99']} ms, errors {scale['error_count']}",
                    flush=True,
                )
    finally:
        upstream.stop()
    counts = [int(n) for n in args.workers.split(",") if n]
    if counts:
        print(f"workers: {counts}, unpinned", flush=True)
        results["workers"] = await workers.measure_workers(
            counts, body_path, args, log_dir=log_dir, service_env=service_env
        )
    return results


def main(argv: list[str] | None = None) -> int:
    """Run everything, print the table, write the JSON and the plot."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not hey.available():
        print("hey is not installed: apt-get install -y hey", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) > LOAD_CORE:
        os.sched_setaffinity(0, {LOAD_CORE})
    try:
        import uvloop

        results = uvloop.run(run(args))
    except ImportError:
        results = asyncio.run(run(args))
    day = results["date"][:10]
    out = args.out or RESULTS_DIR / f"{day}.json"
    out.write_text(json.dumps(results, indent=2))
    drew = report.plot(results, PLOT_PATH)
    info = results["machine"]
    print()
    print(f"{results['date']} · {info['cpu']} · {info['cores']} cores · Python {info['python']}")
    print()
    print(report.table(results))
    print()
    print(report.extras(results))
    print()
    print(workers.report_lines(results))
    print()
    print(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    print(f"plot: {PLOT_PATH.relative_to(ROOT)}" if drew else "plot: skipped (no matplotlib)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
