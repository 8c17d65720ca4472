"""``make bench``: the service against the naive design and a bare-ASGI ceiling, in one run.

One core runs the server under test (``taskset -c 0``); this process, hey and the fake upstream
share the other. Each server is measured alone, the same way (phase 1 on its own process):

1. scale, on a fresh server process: 1,000 streams of 100 tokens 50 ms apart, started at a
   steady 250/s so that all are open together: first-token time, inter-event gaps, errors,
   RSS and CPU (RSS growth over the idle server per open stream; CPU per token);
2. throughput: ``hey -c 50`` full streams of 64 tokens from an upstream without delay, with the
   server's CPU time read from /proc (CPU per stream and per token);
3. latency: one stream at a time, first-token time (the upstream's own is measured too);
4. a concurrency sweep for the plot (closed loop: each client starts its next stream at once);
5. capacity, on a fresh process: the most concurrent paced streams (100 tokens, 20/s) one core
   serves with first-token p99 <= 250 ms, gap p99 <= 100 ms and no error, by a bounded bisection
   (``bench/capacity.py``);
6. overload, the service only, on a fresh process with its defaults (the adaptive limit on):
   1,000 paced streams offered at 250/s; the admitted streams' first token and gaps, none broken,
   and how fast the rest hear 503.

Phases 1-5 run the service with ``CHAT_ADAPTIVE_LIMIT=false``: they measure what the code costs
and what one core can carry, and hey would count fast 503s as throughput. Phase 6 measures the
limit itself.

Then three variants of the service for the notes: the stock SDK model, the client's httpx
transport instead of aiohttp, and the access log on; and the cost of metrics: the same build
with ``CHAT_METRICS`` on and off, both servers up at once, hey alternating between them.
Then what a conversation costs, per store: a turn with 20 turns of history against one with none,
on one pinned server (bench/conversations.py). Last, ``python -m chat --workers 1`` against
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

from bench import capacity, conversations, hey, report, workers
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
    parser.add_argument("--capacity-steps", type=int, default=6, help="bisection steps a server")
    parser.add_argument("--capacity-max", type=int, default=2000, help="most streams tried")
    parser.add_argument(
        "--capacity-ramp-s", type=float, default=2.5, help="longest start-up of a step's streams"
    )
    parser.add_argument("--no-capacity", action="store_true", help="skip capacity and overload")
    parser.add_argument("--overload-streams", type=int, default=1000)
    parser.add_argument("--overload-rate", type=float, default=250.0, help="starts per second")
    parser.add_argument("--servers", default="service,naive,bare")
    parser.add_argument("--no-variants", action="store_true", help="skip the service variants")
    parser.add_argument("--metrics-rounds", type=int, default=10, help="on/off throughput rounds")
    parser.add_argument("--metrics-seconds", type=float, default=4.0, help="seconds per round")
    parser.add_argument(
        "--workers", default="1,2", help="worker counts to compare, unpinned ('' skips)"
    )
    conversations.add_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--out", type=Path, default=None, help="results JSON path")
    args = parser.parse_args(argv)
    if args.quick:
        args.hey_seconds = 3.0
        args.latency_seconds = 1.0
        args.sweep = "1,50,200"
        args.sweep_seconds = 1.0
        args.scale_streams = 300
        args.metrics_rounds = 2
        args.metrics_seconds = 2.0
        args.capacity_steps = 3
        args.capacity_max = 600
        args.overload_streams = 300
        args.conversation_rounds = 1
        args.conversation_seconds = 1.0
    return args


# Rounds of the metrics phase on one pair of server processes before a fresh pair starts.
METRICS_ROUNDS_PER_PAIR = 2


def service_env(upstream: Upstream, **extra: str) -> dict[str, str]:
    """The service on the fake upstream, as deployed: Chat Completions, warnings only."""
    return {
        "CHAT_BACKEND": "openai",
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "sk-bench",
        "CHAT_MODEL": "fake-model",
        "CHAT_LOG_LEVEL": "warning",
        "CHAT_MAX_CONCURRENT_STREAMS": "5000",
        # Off for the phases that measure cost and capacity; the overload phase turns it on.
        "CHAT_ADAPTIVE_LIMIT": "false",
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
        "service_shedding": (
            "app:app",
            service_env(upstream, CHAT_ADAPTIVE_LIMIT="true"),
            "/readyz",
        ),
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


async def measure_metrics_cost(
    upstream: Upstream, body_path: Path, log_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Streams/s with metrics on against the same build with them off, in alternating rounds.

    Both servers are up at once on the server core (an idle one costs nothing), and the order
    flips every round, so the drift of a shared VM falls on both alike. Two processes of the same
    build can differ by a few per cent for as long as they live (hash seeds, heap layout: seen
    with metrics off on both), so the pair is started afresh every ``METRICS_ROUNDS_PER_PAIR``
    rounds and that bias averages out over the pairs.
    """
    envs = {"on": service_env(upstream), "off": service_env(upstream, CHAT_METRICS="false")}
    per_round = argparse.Namespace(**{**vars(args), "hey_seconds": args.metrics_seconds})
    rounds: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    ready = "/readyz"
    done = 0
    while done < args.metrics_rounds:
        with (
            Server(
                "metrics_on", "app:app", env=envs["on"], log_dir=log_dir, ready_path=ready
            ) as on,
            Server(
                "metrics_off", "app:app", env=envs["off"], log_dir=log_dir, ready_path=ready
            ) as off,
        ):
            servers = {"on": on, "off": off}
            for server in servers.values():
                await closed_loop(Target.chat(server.url + "/chat", "hello"), 4, 0.5)
            for _ in range(min(METRICS_ROUNDS_PER_PAIR, args.metrics_rounds - done)):
                for name in ("on", "off") if done % 2 == 0 else ("off", "on"):
                    result = await measure_throughput(servers[name], body_path, per_round)
                    rounds[name].append(result)
                done += 1
    out: dict[str, Any] = {"rounds": rounds}
    for name, results in rounds.items():
        out[name] = {
            "requests_per_s": _median([r["requests_per_s"] for r in results]),
            "cpu_ms_per_stream": _median([r.get("cpu_ms_per_stream") for r in results]),
            "errors": sum(r["errors"] for r in results),
        }
    # Each round ran both back to back: its own ratio cancels the drift between rounds (a shared
    # VM's speed moves by more than 2 % within a minute), and the median drops outlier rounds.
    paired = [
        (off["requests_per_s"] - on["requests_per_s"]) / off["requests_per_s"] * 100
        for on, off in zip(rounds["on"], rounds["off"], strict=True)
        if off["requests_per_s"]
    ]
    cpu_paired = [
        (on["cpu_ms_per_stream"] / off["cpu_ms_per_stream"] - 1) * 100
        for on, off in zip(rounds["on"], rounds["off"], strict=True)
        if on.get("cpu_ms_per_stream") and off.get("cpu_ms_per_stream")
    ]
    on_rate, off_rate = out["on"]["requests_per_s"], out["off"]["requests_per_s"]
    if paired:
        out["cost_pct"] = round(_median(paired) or 0.0, 2)
        out["round_costs_pct"] = [round(c, 2) for c in paired]
    if cpu_paired:
        out["cpu_cost_pct"] = round(_median(cpu_paired) or 0.0, 2)
    print(
        f"  metrics on {on_rate:.1f}/s, off {off_rate:.1f}/s, cost {out.get('cost_pct')} % "
        f"(median of {len(paired)} paired rounds; CPU per stream {out.get('cpu_cost_pct')} %)",
        flush=True,
    )
    return out


def _median(values: list[Any]) -> float | None:
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    middle = len(present) // 2
    if len(present) % 2:
        return float(present[middle])
    return (present[middle - 1] + present[middle]) / 2


async def measure_capacity(
    name: str, server: Server, args: argparse.Namespace, hint: int
) -> dict[str, Any]:
    """The bounded bisection of ``bench/capacity.py`` on one fresh server."""
    await closed_loop(Target.chat(server.url + "/chat", "hello"), 4, 0.5)
    return await capacity.find_capacity(
        server.url,
        server.pid,
        hint=hint,
        tokens=args.scale_tokens,
        delay_ms=args.scale_delay_ms,
        base_rate=args.scale_rate,
        ramp_max_s=args.capacity_ramp_s,
        max_streams=args.capacity_max,
        max_steps=args.capacity_steps,
        targets=capacity.Targets(),
        name=name,
    )


async def measure_overload(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """Many more paced streams than one core carries, at a steady rate, with shedding on."""
    await closed_loop(Target.chat(server.url + "/chat", "hello"), 4, 0.5)
    async with ProcSampler(server.pid) as sampler:
        out = await capacity.measure_overload(
            server.url,
            streams=args.overload_streams,
            rate_per_s=args.overload_rate,
            tokens=args.scale_tokens,
            delay_ms=args.scale_delay_ms,
        )
    out["server"] = sampler.summary()
    return out


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
            "capacity_steps": args.capacity_steps,
            "capacity_max": args.capacity_max,
            "overload_streams": args.overload_streams,
            "overload_rate_per_s": args.overload_rate,
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
            if full and not args.no_capacity:
                hint = results["servers"][name]["scale"].get("streams_per_core_estimate") or 100
                # A step that stops early hangs up on its streams: their runs should end then.
                quick_cancel = {**env, "CHAT_DETACHED_GRACE_S": "0"}
                with Server(
                    name, app, env=quick_cancel, log_dir=log_dir, ready_path=ready
                ) as server:
                    found = await measure_capacity(name, server, args, hint)
                results["servers"][name]["capacity"] = found
                print(f"  {name}: capacity {found['capacity']} streams", flush=True)
            if name == "service" and not args.no_capacity:
                shed_app, shed_env, shed_ready = specs["service_shedding"]
                with Server(
                    "service_shedding",
                    shed_app,
                    env=shed_env,
                    log_dir=log_dir,
                    ready_path=shed_ready,
                ) as server:
                    shed = await measure_overload(server, args)
                results["servers"][name]["overload"] = shed
                print(
                    f"  {name}: overload admitted {shed['admitted']} "
                    f"(first-token p99 {shed['admitted_first_token_ms']['p99']} ms, "
                    f"gap p99 {shed['admitted_gap_ms']['p99']} ms, "
                    f"broken {shed['broken_admitted']}), refused {shed['refused_503']} "
                    f"(p99 {shed['refusal_ms']['p99']} ms)",
                    flush=True,
                )
        if not args.no_variants and "service" in names and args.metrics_rounds > 0:
            print("metrics cost: service with CHAT_METRICS on and off", flush=True)
            results["metrics_cost"] = await measure_metrics_cost(upstream, body_path, log_dir, args)
        stores = [s for s in args.conversations.split(",") if s]
        if stores:
            print(f"conversations: {stores}, {conversations.HISTORY_TURNS} turns", flush=True)
            results["conversations"] = await conversations.measure_conversations(
                stores, upstream, args, log_dir=log_dir, service_env=service_env
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
    # The README's plot only from a whole run; a partial one (--servers, --quick) goes beside
    # its results.
    whole = {"service", "naive", "bare"} <= results["servers"].keys() and not args.quick
    plot_path = PLOT_PATH if whole else out.with_suffix(".png")
    drew = report.plot(results, plot_path)
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
    print(conversations.report_lines(results))
    print()
    print(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    shown = plot_path.relative_to(ROOT) if plot_path.is_relative_to(ROOT) else plot_path
    print(f"plot: {shown}" if drew else "plot: skipped (no matplotlib)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
