"""What a conversation costs: a turn with 20 turns of history against a turn with none.

Per store (the SQLite file, or Redis with ``REDIS_URL``), one server process pinned to the server
core like the other phases, Redis (when used) beside the load tools on the other core. Before the
server starts, ``CLIENTS`` conversations are written straight into the store with 20 turns each
(``hello`` and the fake upstream's 64-token answer, what 20 turns over HTTP would leave), and
``CHAT_HISTORY_MAX_TURNS=20`` keeps every later turn sending exactly 20 turns of history, however
many the phase adds. Then, on that one server, rounds alternate between requests naming a
conversation and requests naming none (the same message and answer), so the drift of a shared VM
falls on both alike; medians of the rounds are compared:

- first-token time at c=1 (p50 of each round; the worker cycles through the conversations);
- full 64-token streams/s at c=50 (the SSE client, each worker with conversations of its own:
  hey cannot vary the body, and one conversation takes one turn at a time).

Targets (issue 10): a conversation adds at most 2 ms to the first token and costs at most 15 % of
streams/s. About 35 s a store with the defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from bench.servers import LOAD_CORE, Server, Upstream
from bench.sse_client import Target, closed_loop
from bench.workers import Redis
from chat.conversations.ownership import owner_of
from chat.conversations.store import ConversationStore, Limits
from chat.conversations.turns import item_bytes, turn_items
from tests.support.fake_upstream import expected_text

HISTORY_TURNS: Final = 20
CLIENTS: Final = 50  # conversations written, one per c=50 worker
MESSAGE: Final = "hello"
BEARER: Final = "sk-bench"  # what the SSE client sends; without CHAT_API_KEYS it is still hashed
TARGET_FIRST_TOKEN_MS: Final = 2.0
TARGET_STREAMS_COST_PCT: Final = 15.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The phase's knobs on ``python -m bench.run``."""
    parser.add_argument(
        "--conversations",
        default="sqlite,redis",
        help="conversation stores to measure ('' skips)",
    )
    parser.add_argument("--conversation-rounds", type=int, default=3, help="rounds per side")
    parser.add_argument(
        "--conversation-seconds", type=float, default=2.0, help="seconds per round and side"
    )


async def populate(store: ConversationStore, ids: list[str], turns: int, answer: str) -> None:
    """Write ``turns`` turns into each conversation, through the store as the service does."""
    owner = owner_of(await store.secret(), BEARER)
    items = [item for _ in range(turns) for item in turn_items(MESSAGE, answer)]
    for conversation_id in ids:
        claim = await store.claim(conversation_id, owner, 0)
        session = await store.open_session(conversation_id)
        try:
            await session.add_items(items)
        finally:
            await store.close_session(session)
        await store.finish(
            conversation_id, claim.token, owner=owner, turns=turns, add_bytes=item_bytes(items)
        )


async def _open_store(name: str, data_dir: Path, redis_url: str | None) -> ConversationStore:
    limits = Limits(max_turns=1_000_000)
    if name == "redis":
        from chat.conversations.redis_store import RedisConversationStore

        assert redis_url is not None
        return RedisConversationStore.from_url(redis_url, limits)
    from chat.conversations.sqlite_store import SQLiteConversationStore

    return await SQLiteConversationStore.open(data_dir, limits)


@contextlib.contextmanager
def _redis_for(name: str, log_dir: Path) -> Iterator[Redis | None]:
    if name != "redis":
        yield None
        return
    redis = Redis(log_dir=log_dir, core=LOAD_CORE)
    try:
        redis.wait_ready()
        yield redis
    finally:
        redis.stop()


async def _rounds(
    server: Server, ids: list[str], concurrency: int, args: argparse.Namespace
) -> dict[str, list[dict[str, Any]]]:
    url = server.url + "/chat"
    sides = {
        "none": [Target.chat(url, MESSAGE)],
        "conversation": [Target.chat(url, MESSAGE, cid) for cid in ids],
    }
    out: dict[str, list[dict[str, Any]]] = {"none": [], "conversation": []}
    for i in range(args.conversation_rounds):
        order = ("none", "conversation") if i % 2 == 0 else ("conversation", "none")
        for side in order:
            load = await closed_loop(sides[side], concurrency, args.conversation_seconds)
            out[side].append(load.summary())
    return out


def _medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    first = [r["first_token_ms"]["p50"] for r in rounds if r["first_token_ms"]["p50"] is not None]
    return {
        "first_token_p50_ms": round(statistics.median(first), 2) if first else None,
        "streams_per_s": round(statistics.median(r["streams_per_s"] for r in rounds), 1),
        "errors": sum(sum(r["errors"].values()) for r in rounds),
    }


def _deltas(latency: dict[str, Any], throughput: dict[str, Any]) -> dict[str, Any]:
    base_ms = latency["none"]["first_token_p50_ms"]
    conv_ms = latency["conversation"]["first_token_p50_ms"]
    base_rate = throughput["none"]["streams_per_s"]
    conv_rate = throughput["conversation"]["streams_per_s"]
    out: dict[str, Any] = {}
    if base_ms and conv_ms:
        out["first_token_ms"] = round(conv_ms - base_ms, 2)
        out["first_token_pct"] = round((conv_ms - base_ms) / base_ms * 100, 1)
        out["first_token_met"] = out["first_token_ms"] <= TARGET_FIRST_TOKEN_MS
    if base_rate and conv_rate:
        out["streams_per_s_cost_pct"] = round((base_rate - conv_rate) / base_rate * 100, 1)
        out["streams_per_s_met"] = out["streams_per_s_cost_pct"] <= TARGET_STREAMS_COST_PCT
    return out


async def measure_store(
    name: str,
    upstream: Upstream,
    args: argparse.Namespace,
    *,
    log_dir: Path,
    service_env: Callable[..., dict[str, str]],
) -> dict[str, Any]:
    """One store: write the conversations, start the server, alternate the rounds."""
    ids = [f"bench-{name}-{i}" for i in range(CLIENTS)]
    with (
        tempfile.TemporaryDirectory(prefix="bench-conv-") as data_dir,
        _redis_for(name, log_dir) as redis,
    ):
        redis_url = redis.url if redis is not None else None
        store = await _open_store(name, Path(data_dir), redis_url)
        try:
            await populate(store, ids, HISTORY_TURNS, expected_text(args.tokens))
        finally:
            await store.aclose()
        extra = {
            "CHAT_DATA_DIR": data_dir,
            "CHAT_HISTORY_MAX_TURNS": str(HISTORY_TURNS),
            "CHAT_CONVERSATION_MAX_TURNS": "1000000",
        }
        if redis_url is not None:
            extra["REDIS_URL"] = redis_url
        env = service_env(upstream, **extra)
        with Server(f"conversations-{name}", "app:app", env=env, log_dir=log_dir) as server:
            # Warm-up on both paths: imports, pools, the SQLite file's pages, Redis scripts.
            await closed_loop([Target.chat(server.url + "/chat", MESSAGE, c) for c in ids], 4, 0.5)
            await closed_loop(Target.chat(server.url + "/chat", MESSAGE), 4, 0.5)
            latency_rounds = await _rounds(server, ids, 1, args)
            throughput_rounds = await _rounds(server, ids, args.hey_concurrency, args)
    latency = {side: _medians(rounds) for side, rounds in latency_rounds.items()}
    throughput = {side: _medians(rounds) for side, rounds in throughput_rounds.items()}
    result = {
        "latency_c1": latency,
        "throughput": throughput,
        "delta": _deltas(latency, throughput),
        "rounds": {"latency_c1": latency_rounds, "throughput": throughput_rounds},
    }
    delta = result["delta"]
    print(
        f"  {name}: first token c=1 p50 {_arrow(latency, 'first_token_p50_ms')} ms "
        f"({_signed(delta.get('first_token_ms'), 'ms')}, "
        f"{_signed(delta.get('first_token_pct'), '%')}); streams/s c={args.hey_concurrency} "
        f"{_arrow(throughput, 'streams_per_s')} "
        f"(cost {_signed(delta.get('streams_per_s_cost_pct'), '%')})",
        flush=True,
    )
    return result


async def measure_conversations(
    stores: list[str],
    upstream: Upstream,
    args: argparse.Namespace,
    *,
    log_dir: Path,
    service_env: Callable[..., dict[str, str]],
) -> dict[str, Any]:
    """Each store in turn; Redis is skipped (and said so) without redis-server."""
    results: dict[str, Any] = {
        "history_turns": HISTORY_TURNS,
        "tokens": args.tokens,
        "concurrency": args.hey_concurrency,
        "stores": {},
    }
    for name in stores:
        if name == "redis" and shutil.which("redis-server") is None:
            results["stores"][name] = {"skipped": "redis-server is not installed"}
            continue
        if name not in ("sqlite", "redis"):
            raise ValueError(f"unknown conversation store {name!r}: sqlite or redis")
        results["stores"][name] = await measure_store(
            name, upstream, args, log_dir=log_dir, service_env=service_env
        )
    return results


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "MISSED")


def _signed(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:+g} {unit}"


def _arrow(sides: dict[str, Any], key: str) -> str:
    return f"{sides['none'][key]} → {sides['conversation'][key]}"


def report_lines(results: dict[str, Any]) -> str:
    """Markdown lines for the conversations phase."""
    phase = results.get("conversations") or {}
    stores = phase.get("stores") or {}
    if not stores:
        return ""
    lines = [
        f"Conversations: a turn with {phase['history_turns']} turns of history against none, "
        "same server, alternating rounds (medians):",
        "",
        "| store | first token c=1 p50 (ms), none → conversation | Δ | ≤ +2 ms "
        f"| streams/s c={phase['concurrency']}, none → conversation | cost | ≤ 15 % |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, measured in stores.items():
        if "skipped" in measured:
            lines.append(f"| {name} | skipped ({measured['skipped']}) |  |  |  |  |  |")
            continue
        delta = measured["delta"]
        first = _signed(delta.get("first_token_ms"), "ms")
        first_pct = _signed(delta.get("first_token_pct"), "%")
        lines.append(
            f"| {name} | {_arrow(measured['latency_c1'], 'first_token_p50_ms')} "
            f"| {first} ({first_pct}) | {_met(delta.get('first_token_met'))} "
            f"| {_arrow(measured['throughput'], 'streams_per_s')} "
            f"| {_signed(delta.get('streams_per_s_cost_pct'), '%')} "
            f"| {_met(delta.get('streams_per_s_met'))} |"
        )
    return "\n".join(lines)
