"""Benchmark results -> one markdown table (service, naive, bare; ratios; targets) and a plot."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

Results = dict[str, Any]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def _pct(a: Any, b: Any) -> str:
    return f"{100 * a / b:.0f}%" if a and b else "-"


def _pair(p: dict[str, Any] | None) -> str:
    if not p or p.get("p50") is None:
        return "-"
    return f"{p['p50']:.2f} / {p['p99']:.2f}"


def _admission(overload: dict[str, Any] | None) -> str:
    if not overload:
        return "-"
    return (
        f"{overload['admitted']:,} / {overload['refused_503']:,} / "
        f"{overload['admitted_peak_open']:,}"
    )


def _check(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "MISSED")


def _get(results: Results, server: str, *path: str) -> Any:
    value: Any = results.get("servers", {}).get(server)
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


_SERVERS = ("service", "naive", "bare")


def table(results: Results) -> str:
    """The markdown table of every measure against its target."""
    cfg = results["config"]
    scale = (
        f"{cfg['scale_streams']:,} streams x {cfg['scale_tokens']} tokens "
        f"@ {cfg['scale_delay_ms']:g} ms"
    )
    rows: list[list[str]] = []

    def row(label: str, path: tuple[str, ...], fmt: Any = _num, target: str = "",
            ok: Any = None, ratio: bool = True) -> None:  # fmt: skip
        values = {x: _get(results, x, *path) for x in _SERVERS}
        met = None
        if ok is not None and values["service"] is not None:
            met = ok(values["service"], values["naive"])
        rows.append([
            label, *(fmt(values[x]) for x in _SERVERS),
            _ratio(values["service"], values["naive"]) if ratio else "", target, _check(met),
        ])  # fmt: skip

    row(
        f"Full {cfg['tokens']}-token streams/s (hey, c={cfg['hey_concurrency']})",
        ("throughput", "requests_per_s"),
        target="≥ 8 x naive",
        ok=lambda s, n: bool(n) and s >= 8 * n,
    )
    bare = _get(results, "bare", "throughput", "requests_per_s")
    row(
        "Share of the bare-ASGI ceiling",
        ("throughput", "requests_per_s"),
        fmt=lambda v: _pct(v, bare),
        ratio=False,
    )
    row("Server CPU per stream (ms)", ("throughput", "cpu_ms_per_stream"), lambda v: _num(v, 2))
    row("Server CPU per token (µs, stream CPU ÷ tokens)", ("throughput", "cpu_us_per_token"))
    upstream = results.get("upstream_latency", {}).get("first_token_ms") or {}
    limit = upstream.get("p50")
    row(
        "First token at c=1, p50 / p99 (ms)",
        ("latency", "first_token_ms"),
        _pair,
        target=f"p50 ≤ upstream's + 2 ms (upstream: {_pair(upstream)})",
        ok=lambda s, n: limit is not None and s.get("p50") is not None and s["p50"] <= limit + 2,
        ratio=False,
    )
    row(
        f"{scale}: first token p99 (ms)",
        ("scale", "first_token_ms", "p99"),
        target="≤ 250",
        ok=lambda s, n: s <= 250,
    )
    row(
        f"{scale}: inter-event gap p99 (ms)",
        ("scale", "gap_ms", "p99"),
        target="≤ 100",
        ok=lambda s, n: s <= 100,
    )
    row(f"{scale}: errors", ("scale", "error_count"), target="0", ok=lambda s, n: s == 0)
    row(f"{scale}: streams open at once (peak)", ("scale", "peak_open"), ratio=False)
    row(
        f"{scale}: server RSS at peak (MiB)",
        ("scale", "server", "rss_peak_mib"),
        target="≤ naive",
        ok=lambda s, n: bool(n) and s <= n,
    )
    row(
        f"{scale}: memory per open stream (KiB)",
        ("scale", "kib_per_stream"),
        target="≤ 30",
        ok=lambda s, n: s <= 30,
    )
    row(
        f"{scale}: server CPU per token (µs)",
        ("scale", "cpu_us_per_token"),
        target="≤ 100",
        ok=lambda s, n: s <= 100,
    )
    row(
        f"Streams of {1000 / cfg['scale_delay_ms']:g} tokens/s one core carries (line above)",
        ("scale", "streams_per_core_estimate"),
    )
    row(
        f"{scale}: server core busy",
        ("scale", "server", "cpu_share"),
        fmt=lambda v: _pct(v, 1),
        ratio=False,
    )
    pace = f"{1000 / cfg['scale_delay_ms']:g} tok/s x {cfg['scale_tokens']} tokens"
    bare_capacity = _get(results, "bare", "capacity", "capacity")
    row(
        f"Capacity: concurrent {pace} streams with first token p99 ≤ 250 ms, gap p99 ≤ 100 ms, "
        "0 errors",
        ("capacity", "capacity"),
        target="≥ 4 x naive",
        ok=lambda s, n: bool(n) and s >= 4 * n,
    )
    row(
        "Capacity, share of bare ASGI's",
        ("capacity", "capacity"),
        fmt=lambda v: _pct(v, bare_capacity),
        target="≥ 40%",
        ok=lambda s, n: bool(bare_capacity) and s >= 0.4 * bare_capacity,
        ratio=False,
    )
    offered = f"Overload, {cfg.get('overload_streams', 0):,} offered (adaptive limit on)"
    row(
        f"{offered}: admitted / refused 503 / admitted at once (peak)",
        ("overload",),
        fmt=_admission,
        ratio=False,
    )
    row(
        f"{offered}: admitted first token p99 (ms)",
        ("overload", "admitted_first_token_ms", "p99"),
        target="≤ 250",
        ok=lambda s, n: s <= 250,
        ratio=False,
    )
    row(
        f"{offered}: admitted gap p99 (ms)",
        ("overload", "admitted_gap_ms", "p99"),
        target="≤ 100",
        ok=lambda s, n: s <= 100,
        ratio=False,
    )
    row(
        f"{offered}: 503 answered in, p99 (ms)",
        ("overload", "refusal_ms", "p99"),
        target="≤ 10",
        ok=lambda s, n: s <= 10,
        ratio=False,
    )
    row(
        f"{offered}: admitted streams broken",
        ("overload", "broken_admitted"),
        target="0",
        ok=lambda s, n: s == 0,
        ratio=False,
    )
    header = ["measure", "service", "naive", "bare ASGI", "service ÷ naive", "target", "result"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def extras(results: Results) -> str:
    """Lines on the service's variants: stock SDK model, httpx transport, access log."""
    lines = []
    base = _get(results, "service", "throughput") or {}
    for name, what in (
        ("service_stock", "service with the stock SDK model (CHAT_OPENAI_IMPL=stock)"),
        ("service_httpx", "service on the client's httpx transport (CHAT_OPENAI_TRANSPORT=httpx)"),
        ("service_info_log", "service with the access log on (CHAT_LOG_LEVEL=info)"),
    ):
        other = _get(results, name, "throughput")
        if not other:
            continue
        line = (
            f"- {what}: {_num(other.get('requests_per_s'))} streams/s, "
            f"{_num(other.get('cpu_ms_per_stream'), 2)} ms CPU per stream"
        )
        if other.get("cpu_ms_per_stream") and base.get("cpu_ms_per_stream"):
            delta = (other["cpu_ms_per_stream"] - base["cpu_ms_per_stream"]) * 1000
            line += f" ({delta:+,.0f} µs per stream against the default service)"
        latency = _get(results, name, "latency", "first_token_ms")
        if latency:
            line += f"; first token at c=1 {_pair(latency)} ms (p50 / p99)"
        lines.append(line)
    cost = results.get("metrics_cost")
    if cost and cost.get("cost_pct") is not None:
        on, off = cost["on"], cost["off"]
        line = (
            f"- metrics on against the same build with CHAT_METRICS=false (both up at once, "
            f"{len(cost['rounds']['on'])} alternating rounds each): "
            f"{_num(on['requests_per_s'])} vs {_num(off['requests_per_s'])} streams/s (medians), "
            f"cost {cost['cost_pct']:.1f}% as the median of the paired rounds' costs "
            f"(target ≤ 2%: {_check(cost['cost_pct'] <= 2)})"
        )
        if on.get("cpu_ms_per_stream") and off.get("cpu_ms_per_stream"):
            delta = (on["cpu_ms_per_stream"] - off["cpu_ms_per_stream"]) * 1000
            line += (
                f"; CPU per stream {_num(on['cpu_ms_per_stream'], 2)} vs "
                f"{_num(off['cpu_ms_per_stream'], 2)} ms ({delta:+,.0f} µs)"
            )
        lines.append(line)
    return "\n".join(lines)


def plot(results: Results, path: Path) -> bool:
    """Throughput and first-token p99 against concurrency, one line per server, and capacity at
    the latency target; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right, third) = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = {"service": "o-", "naive": "s--", "bare": "^:"}
    for server, style in styles.items():
        sweep = _get(results, server, "sweep") or []
        if not sweep:
            continue
        xs = [point["concurrency"] for point in sweep]
        left.plot(xs, [p["streams_per_s"] for p in sweep], style, label=server)
        right.plot(xs, [p["first_token_ms"]["p99"] for p in sweep], style, label=server)
    tokens = results["config"]["tokens"]
    left.set(xscale="log", yscale="log", xlabel="concurrent streams", ylabel="full streams / s",
             title=f"Throughput ({tokens} tokens, upstream without delay)")  # fmt: skip
    right.set(xscale="log", yscale="log", xlabel="concurrent streams",
              ylabel="first-token p99 (ms)", title="First-token latency, p99")  # fmt: skip
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    _capacity_bars(third, results)
    info = results["machine"]
    fig.suptitle(
        f"{results['date']} · {info['cpu']} · server pinned to 1 core, load on another",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _capacity_bars(axis: Any, results: Results) -> None:
    """One bar per server: concurrent paced streams within the latency targets."""
    names = [x for x in _SERVERS if _get(results, x, "capacity", "capacity") is not None]
    values = [_get(results, x, "capacity", "capacity") for x in names]
    bars = axis.bar(names, values, color=["tab:blue", "tab:orange", "tab:green"][: len(names)])
    for bar, value in zip(bars, values, strict=True):
        axis.annotate(f"{value:,}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=9)  # fmt: skip
    cfg = results["config"]
    axis.set(ylabel="concurrent streams",
             title=f"Capacity: {1000 / cfg['scale_delay_ms']:g} tok/s streams within\n"
             "first token p99 ≤ 250 ms, gaps p99 ≤ 100 ms")  # fmt: skip
    axis.title.set_fontsize(10)
    axis.grid(True, axis="y", alpha=0.3)
