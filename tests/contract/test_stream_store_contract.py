"""One contract for every ``StreamStore``: the memory store and Redis Streams behave alike.

Each test runs against ``MemoryStreamStore`` (with a fake clock) and ``RedisStreamStore`` (on a
real redis-server started for this module). Waits are on observable conditions (a reader blocked
in XREAD, a key gone), each bounded; none uses a sleep as synchronisation.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from typing import Any

import pytest
from redis.asyncio import Redis

from chat.settings import SettingsError
from chat.streams.memory import MemoryStreamStore
from chat.streams.redis_store import RedisStreamStore
from chat.streams.redis_url import check_redis_url, redact_url
from chat.streams.store import (
    LapsedFrame,
    StoreUnavailable,
    StreamInfo,
    StreamNotFound,
    StreamStore,
)
from tests.support.redis_server import RedisServer, start_redis

pytestmark = pytest.mark.anyio

WAIT_S = 5.0
FRAMES = [f"event: delta\nid: {i}\ndata: {{}}\n\n".encode() for i in range(1, 6)]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for this module's tests, stopped at the end of the session."""
    with start_redis() as server:
        yield server


async def wait_for(
    condition: Callable[[], Awaitable[bool]], what: str, limit_s: float = WAIT_S
) -> None:
    """Poll an observable condition until it holds; fail after ``limit_s`` seconds."""
    try:
        async with asyncio.timeout(limit_s):
            # Polling on purpose: the conditions live in another process (the Redis server).
            while not await condition():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {limit_s}s waiting for {what}") from None


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryHarness:
    """Memory stores on a fake clock."""

    name = "memory"

    def __init__(self) -> None:
        self.clock = FakeClock()

    async def make(self, *, ttl_s: float = 300.0) -> MemoryStreamStore:
        return MemoryStreamStore(ttl_s=ttl_s, clock=self.clock)

    async def pass_ttl(self, store: StreamStore, stream_id: str, ttl_s: float) -> None:
        self.clock.now += ttl_s + 0.001

    async def wait_until_waiting(self, store: StreamStore, stream_id: str, readers: int) -> None:
        assert isinstance(store, MemoryStreamStore)

        async def waiting() -> bool:
            log = store._logs.get(stream_id)
            pending = [w for w in log.waiters if not w.done()] if log is not None else []
            return len(pending) >= readers

        await wait_for(waiting, f"{readers} reader(s) waiting")

    async def aclose(self) -> None:
        return None


class RedisHarness:
    """Redis stores on the module's server, each under its own key prefix."""

    name = "redis"

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.admin = Redis.from_url(server.url)
        self.stores: list[RedisStreamStore] = []

    async def make(
        self, *, ttl_s: float = 300.0, query: str = "", **kwargs: Any
    ) -> RedisStreamStore:
        store = await RedisStreamStore.connect(
            self.server.url + query, ttl_s=ttl_s, key_prefix=f"test:{uuid.uuid4().hex}:", **kwargs
        )
        self.stores.append(store)
        return store

    async def pass_ttl(self, store: StreamStore, stream_id: str, ttl_s: float) -> None:
        async def gone() -> bool:
            return await store.info(stream_id) is None

        await wait_for(gone, "the finished log to expire", limit_s=ttl_s + WAIT_S)

    async def wait_until_waiting(self, store: StreamStore, stream_id: str, readers: int) -> None:
        async def blocked() -> bool:
            return await self.blocked_clients() >= readers

        await wait_for(blocked, f"{readers} reader(s) blocked in XREAD")

    async def blocked_clients(self) -> int:
        return int((await self.admin.info("clients"))["blocked_clients"])

    async def xread_calls(self) -> int:
        stats = await self.admin.info("commandstats")
        return int(stats.get("cmdstat_xread", {}).get("calls", 0))

    async def client_count(self) -> int:
        return len(await self.admin.client_list())

    async def aclose(self) -> None:
        for store in self.stores:
            await store.aclose()

        async def unblocked() -> bool:
            return await self.blocked_clients() == 0

        # The next test counts blocked clients: let the server see these readers go first.
        await wait_for(unblocked, "the closed stores' readers to leave the server")
        await self.admin.aclose()


Harness = MemoryHarness | RedisHarness


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """A way to make stores of one kind, and to observe them."""
    made: Harness
    if request.param == "memory":
        made = MemoryHarness()
    else:
        made = RedisHarness(request.getfixturevalue("redis_server"))
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
async def redis_harness(redis_server: RedisServer) -> AsyncIterator[RedisHarness]:
    """Redis stores only, for what only Redis does."""
    made = RedisHarness(redis_server)
    try:
        yield made
    finally:
        await made.aclose()


async def read_all(store: StreamStore, stream_id: str, after: int = 0) -> bytes:
    """Everything a reader gets until the read ends, bounded in time."""
    chunks: list[bytes] = []

    async def consume() -> None:
        async with aclosing(store.read(stream_id, after)) as frames:
            async for chunk in frames:
                chunks.append(chunk)

    await asyncio.wait_for(consume(), WAIT_S)
    return b"".join(chunks)


class Follower:
    """A reader in its own task that reports each batch through an event."""

    def __init__(
        self,
        store: StreamStore,
        stream_id: str,
        after: int = 0,
        *,
        lapsed: LapsedFrame | None = None,
    ) -> None:
        self.chunks: list[bytes] = []
        self.got = asyncio.Event()
        self.task = asyncio.create_task(self._run(store, stream_id, after, lapsed))

    async def _run(
        self, store: StreamStore, stream_id: str, after: int, lapsed: LapsedFrame | None
    ) -> None:
        async with aclosing(store.read(stream_id, after, lapsed=lapsed)) as frames:
            async for chunk in frames:
                self.chunks.append(chunk)
                self.got.set()

    async def next_batch(self) -> None:
        await asyncio.wait_for(self.got.wait(), WAIT_S)
        self.got.clear()

    async def finished(self) -> bytes:
        await asyncio.wait_for(self.task, WAIT_S)
        return b"".join(self.chunks)


async def test_create_when_new_then_info_empty_and_open(harness: Harness) -> None:
    store = await harness.make()
    await store.create("s1")
    assert await store.info("s1") == StreamInfo(last_id=0, finished=False)


async def test_append_when_frames_added_then_info_counts_them(harness: Harness) -> None:
    store = await harness.make()
    await store.create("s1")
    await store.append("s1", FRAMES[:2], finished=False)
    await store.append("s1", FRAMES[2:3], finished=False)
    assert await store.info("s1") == StreamInfo(last_id=3, finished=False)
    await store.append("s1", FRAMES[3:], finished=True)
    assert await store.info("s1") == StreamInfo(last_id=5, finished=True)


async def test_append_when_finished_then_later_frames_ignored(harness: Harness) -> None:
    store = await harness.make()
    await store.create("s1")
    await store.append("s1", FRAMES[:2], finished=True)
    await store.append("s1", FRAMES[2:], finished=False)
    await store.append("s1", [], finished=True)
    assert await store.info("s1") == StreamInfo(last_id=2, finished=True)
    assert await read_all(store, "s1") == b"".join(FRAMES[:2])


@pytest.mark.parametrize("outcome", ["done", "upstream_timeout"])
async def test_append_when_finished_with_outcome_then_info_says_how_it_ended(
    harness: Harness, outcome: str
) -> None:
    store = await harness.make()
    await store.create("s1")
    await store.append("s1", FRAMES[:1], finished=False)
    assert (await store.info("s1")).outcome is None  # open: no outcome yet
    await store.append("s1", FRAMES[1:2], finished=True, outcome=outcome)
    assert await store.info("s1") == StreamInfo(last_id=2, finished=True, outcome=outcome)
    # A later finishing append (a retry, another writer) never rewrites how it ended.
    await store.append("s1", [], finished=True, outcome="cancelled")
    assert (await store.info("s1")).outcome == outcome


async def test_append_when_stream_unknown_then_nothing_created(harness: Harness) -> None:
    store = await harness.make()
    await store.append("nope", FRAMES[:1], finished=False)
    assert await store.info("nope") is None


@pytest.mark.parametrize("after", range(len(FRAMES) + 1))
async def test_read_when_after_k_then_frames_k_plus_1_onwards(harness: Harness, after: int) -> None:
    store = await harness.make()
    await store.create("s1")
    await store.append("s1", FRAMES[:3], finished=False)
    await store.append("s1", FRAMES[3:], finished=True)
    assert await read_all(store, "s1", after) == b"".join(FRAMES[after:])


async def test_read_when_log_grows_while_waiting_then_follows_it(harness: Harness) -> None:
    store = await harness.make()
    await store.create("s1")
    await store.append("s1", FRAMES[:1], finished=False)
    reader = Follower(store, "s1")
    await reader.next_batch()
    assert reader.chunks == [FRAMES[0]]
    for frame in FRAMES[1:4]:
        await harness.wait_until_waiting(store, "s1", 1)
        await store.append("s1", [frame], finished=False)
        await reader.next_batch()
        assert reader.chunks[-1] == frame
    await harness.wait_until_waiting(store, "s1", 1)
    await store.append("s1", FRAMES[4:], finished=True)
    assert await reader.finished() == b"".join(FRAMES)


async def test_read_when_terminal_frame_delivered_then_read_ends(harness: Harness) -> None:
    store = await harness.make()
    await store.create("s1")
    reader = Follower(store, "s1")
    await harness.wait_until_waiting(store, "s1", 1)
    await store.append("s1", FRAMES[:2], finished=True)
    assert await reader.finished() == b"".join(FRAMES[:2])
    assert reader.task.done()


async def test_read_when_closed_without_terminal_frame_then_waiting_reader_ends(
    harness: Harness,
) -> None:
    store = await harness.make()
    await store.create("s1")
    await store.append("s1", FRAMES[:1], finished=False)
    reader = Follower(store, "s1")
    await reader.next_batch()
    await harness.wait_until_waiting(store, "s1", 1)
    # What the pump does when its task is cancelled before a terminal event.
    await store.append("s1", [], finished=True)
    assert await reader.finished() == FRAMES[0]
    assert await store.info("s1") == StreamInfo(last_id=1, finished=True)
    assert await read_all(store, "s1", 1) == b""


async def test_read_when_stream_unknown_then_stream_not_found(harness: Harness) -> None:
    store = await harness.make()
    with pytest.raises(StreamNotFound):
        await read_all(store, "never-created")


async def test_read_when_two_readers_follow_then_each_gets_every_frame(harness: Harness) -> None:
    store = await harness.make()
    await store.create("s1")
    first, second = Follower(store, "s1"), Follower(store, "s1")
    await harness.wait_until_waiting(store, "s1", 2)
    await store.append("s1", FRAMES[:2], finished=False)
    await first.next_batch()
    await second.next_batch()
    await harness.wait_until_waiting(store, "s1", 2)
    await store.append("s1", FRAMES[2:], finished=True)
    assert await first.finished() == b"".join(FRAMES)
    assert await second.finished() == b"".join(FRAMES)


async def test_read_when_one_waiting_reader_cancelled_then_the_other_still_follows(
    harness: Harness,
) -> None:
    store = await harness.make()
    await store.create("s1")
    leaving, staying = Follower(store, "s1"), Follower(store, "s1")
    await harness.wait_until_waiting(store, "s1", 2)
    leaving.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving.task
    await store.append("s1", FRAMES, finished=True)
    assert await staying.finished() == b"".join(FRAMES)


async def test_readers_when_joined_and_left_then_counted_never_below_zero(
    harness: Harness,
) -> None:
    store = await harness.make()
    await store.create("s1")
    assert await store.readers("s1") == 0
    await store.reader_joined("s1")
    await store.reader_joined("s1")
    assert await store.readers("s1") == 2
    await store.reader_left("s1")
    await store.reader_left("s1")
    await store.reader_left("s1")
    assert await store.readers("s1") == 0
    await store.reader_joined("s1")
    assert await store.readers("s1") == 1


async def test_readers_when_stream_unknown_then_zero_and_nothing_created(
    harness: Harness,
) -> None:
    store = await harness.make()
    await store.reader_joined("nope")
    await store.reader_left("nope")
    assert await store.readers("nope") == 0
    assert await store.info("nope") is None


async def test_cancel_when_requested_then_flag_seen(harness: Harness) -> None:
    store = await harness.make()
    await store.create("s1")
    await store.create("s2")
    assert not await store.cancel_requested("s1")
    await store.request_cancel("s1")
    assert await store.cancel_requested("s1")
    assert not await store.cancel_requested("s2")


async def test_cancel_when_stream_unknown_then_no_flag_and_nothing_created(
    harness: Harness,
) -> None:
    store = await harness.make()
    await store.request_cancel("nope")
    assert not await store.cancel_requested("nope")
    assert await store.info("nope") is None


async def test_finished_log_when_ttl_passes_then_gone(harness: Harness) -> None:
    store = await harness.make(ttl_s=1.0)
    await store.create("s1")
    await store.create("open")
    await store.append("s1", FRAMES, finished=True)
    assert await store.info("s1") is not None
    await harness.pass_ttl(store, "s1", 1.0)
    assert await store.info("s1") is None
    with pytest.raises(StreamNotFound):
        await read_all(store, "s1")
    assert await store.info("open") == StreamInfo(last_id=0, finished=False)


async def test_create_when_id_reused_then_log_starts_empty(harness: Harness) -> None:
    store = await harness.make()
    await store.create("s1")
    await store.append("s1", FRAMES[:2], finished=True)
    await store.create("s1")
    assert await store.info("s1") == StreamInfo(last_id=0, finished=False)
    await store.append("s1", FRAMES[2:3], finished=True)
    assert await read_all(store, "s1") == FRAMES[2]


# Redis only: how the store uses the server.


@pytest.mark.redis
async def test_append_when_several_frames_then_one_round_trip(redis_harness: RedisHarness) -> None:
    store = await redis_harness.make()
    await store.create("s1")
    await store.append("s1", FRAMES[:1], finished=False)  # loads the script once
    before = await redis_harness.admin.info("commandstats")
    await store.append("s1", FRAMES[1:4], finished=False)
    after = await redis_harness.admin.info("commandstats")

    def calls(stats: dict[str, Any], command: str) -> int:
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    assert calls(after, "evalsha") - calls(before, "evalsha") == 1
    assert calls(after, "xadd") - calls(before, "xadd") == 3
    assert calls(after, "eval") == calls(before, "eval")


@pytest.mark.redis
async def test_append_when_retried_after_lost_reply_then_no_duplicate(
    redis_harness: RedisHarness,
) -> None:
    store = await redis_harness.make()
    await store.create("s1")
    await store.append("s1", FRAMES[:2], finished=False)
    # As if the reply had been lost: the store thinks nothing landed and sends it again.
    store._written["s1"] = 0
    await store.append("s1", FRAMES[:2], finished=False)
    await store.append("s1", FRAMES[2:3], finished=True)
    assert await store.info("s1") == StreamInfo(last_id=3, finished=True)
    assert await read_all(store, "s1") == b"".join(FRAMES[:3])


@pytest.mark.redis
async def test_keys_when_created_then_safety_expiry_then_ttl_once_finished(
    redis_harness: RedisHarness,
) -> None:
    store = await redis_harness.make(ttl_s=60.0)
    meta, log = store._keys("s1")
    admin = redis_harness.admin
    await store.create("s1")
    assert await admin.ttl(meta) > 86_400
    await store.append("s1", FRAMES[:1], finished=False)
    assert await admin.ttl(log) > 86_400
    await store.append("s1", FRAMES[1:2], finished=True)
    assert 0 < await admin.ttl(meta) <= 60
    assert 0 < await admin.ttl(log) <= 60
    assert await admin.xrange(log) == [
        (b"0-1", {b"f": FRAMES[0]}),
        (b"0-2", {b"f": FRAMES[1], b"t": b"1"}),
    ]


@pytest.mark.redis
async def test_read_when_open_log_deleted_while_blocked_then_store_unavailable(
    redis_harness: RedisHarness,
) -> None:
    # An open log only vanishes when Redis loses data (a restart, eviction): its readers must
    # not take that silence for an end, so the read fails instead of ending quietly.
    store = await redis_harness.make(block_s=0.2)
    await store.create("s1")
    reader = Follower(store, "s1")
    await redis_harness.wait_until_waiting(store, "s1", 1)
    await redis_harness.admin.delete(*store._keys("s1"))
    with pytest.raises(StoreUnavailable):
        await reader.finished()
    assert await store.append("s1", FRAMES[:1], finished=False) is False


def lapsed_frame(event_id: int) -> bytes:
    return f"event: error\nid: {event_id}\ndata: {{}}\n\n".encode()


async def wait_lease_gone(harness: RedisHarness, store: RedisStreamStore, stream_id: str) -> None:
    async def gone() -> bool:
        return not await harness.admin.exists(store._lease_key(stream_id))

    await wait_for(gone, "the lease to lapse", limit_s=store.lease_s + WAIT_S)


@pytest.mark.redis
async def test_lease_when_renewed_then_followers_keep_waiting(redis_harness: RedisHarness) -> None:
    store = await redis_harness.make(lease_s=0.6, block_s=0.05)
    await store.create("s1")
    start = await redis_harness.xread_calls()
    reader = Follower(store, "s1", lapsed=lapsed_frame)

    async def renewed_through_many_blocks() -> bool:
        await store.renew_leases(["s1"])
        return await redis_harness.xread_calls() >= start + 20

    # Twenty XREAD periods, longer than the lease, with the lease renewed all along.
    await wait_for(renewed_through_many_blocks, "twenty XREAD BLOCK periods to pass")
    assert not reader.task.done()
    assert await store.append("s1", FRAMES[:1], finished=True)
    assert await reader.finished() == FRAMES[0]


@pytest.mark.redis
async def test_lease_when_lapsed_then_every_follower_gets_one_terminal_frame(
    redis_harness: RedisHarness,
) -> None:
    store = await redis_harness.make(lease_s=0.3, block_s=0.05)
    other_worker = await redis_harness.make(lease_s=0.3, block_s=0.05)
    other_worker.key_prefix = store.key_prefix  # same keys, as another process would see them
    await store.create("s1")
    assert await store.append("s1", FRAMES[:2], finished=False)
    # Three followers on two "workers" race to end the log once the lease lapses.
    readers = [
        Follower(store, "s1", lapsed=lapsed_frame),
        Follower(other_worker, "s1", lapsed=lapsed_frame),
        Follower(other_worker, "s1", after=1, lapsed=lapsed_frame),
    ]
    got = [await reader.finished() for reader in readers]
    ended = b"".join(FRAMES[:2]) + lapsed_frame(3)
    assert got == [ended, ended, ended[len(FRAMES[0]) :]]
    assert await store.info("s1") == StreamInfo(
        last_id=3, finished=True, outcome="upstream_unavailable"
    )
    # The worker was only slow: what it writes now is refused, the log keeps its one end.
    assert await store.append("s1", FRAMES[2:3], finished=False) is False
    assert await store.append("s1", FRAMES[3:4], finished=True) is True  # finished either way
    assert await read_all(store, "s1") == ended


@pytest.mark.redis
async def test_lease_when_worker_renews_before_the_reader_acts_then_log_not_ended(
    redis_harness: RedisHarness,
) -> None:
    store = await redis_harness.make(lease_s=0.3)
    await store.create("s1")
    assert await store.append("s1", FRAMES[:1], finished=False)
    await wait_lease_gone(redis_harness, store, "s1")
    # Between the reader's look (lease gone, last id 1) and its append, the worker comes back.
    await store.renew_leases(["s1"])
    assert await store._end_lapsed("s1", 1, lapsed_frame) is False
    # Or the worker appended meanwhile: the reader's view of the log is stale, it backs off.
    await wait_lease_gone(redis_harness, store, "s1")
    assert await store.append("s1", FRAMES[1:2], finished=False)
    assert await store._end_lapsed("s1", 1, lapsed_frame) is False
    assert await store.info("s1") == StreamInfo(last_id=2, finished=False)


@pytest.mark.redis
async def test_lease_when_created_then_expires_unless_renewed_and_goes_at_finish(
    redis_harness: RedisHarness,
) -> None:
    store = await redis_harness.make(lease_s=9.0)
    lease = store._lease_key("s1")
    await store.create("s1")
    assert 0 < await redis_harness.admin.pttl(lease) <= 6000  # two thirds of the lease
    assert await store.append("s1", FRAMES[:1], finished=True)
    assert not await redis_harness.admin.exists(lease)


@pytest.mark.redis
async def test_read_when_block_times_out_repeatedly_then_still_follows(
    redis_harness: RedisHarness,
) -> None:
    store = await redis_harness.make(block_s=0.1)
    await store.create("s1")
    start = await redis_harness.xread_calls()
    reader = Follower(store, "s1")

    async def polled_thrice() -> bool:
        return await redis_harness.xread_calls() >= start + 3

    # Each XREAD that times out is followed by a look at the log and another XREAD.
    await wait_for(polled_thrice, "three XREAD BLOCK periods to pass")
    assert not reader.task.done()
    await store.append("s1", FRAMES[:1], finished=True)
    assert await reader.finished() == FRAMES[0]


@pytest.mark.redis
async def test_readers_when_many_cancelled_then_no_connection_left(
    redis_harness: RedisHarness,
) -> None:
    store = await redis_harness.make(max_connections=4)
    await store.create("s1")
    await store.append("s1", FRAMES[:1], finished=False)
    baseline = await redis_harness.client_count()

    async def no_blocked_client() -> bool:
        return await redis_harness.blocked_clients() == 0

    for _ in range(20):
        readers = [Follower(store, "s1", after=1) for _ in range(3)]
        await redis_harness.wait_until_waiting(store, "s1", 3)
        for reader in readers:
            reader.task.cancel()
        done, pending = await asyncio.wait([r.task for r in readers], timeout=WAIT_S)
        assert not pending, "a cancelled reader did not stop promptly"
        assert all(task.cancelled() for task in done)
        # So that the next wave's "3 blocked" counts its own readers only.
        await wait_for(no_blocked_client, "Redis to drop the cancelled readers")
    assert len(store._link.pool._in_use_connections) == 0

    async def back_to_baseline() -> bool:
        return await redis_harness.client_count() <= baseline

    await wait_for(back_to_baseline, "the server to drop the cancelled readers' connections")
    # The pool of 4 is still whole: a reader and a writer both get a connection.
    reader = Follower(store, "s1")
    await reader.next_batch()
    await store.append("s1", FRAMES[1:2], finished=True)
    assert await reader.finished() == b"".join(FRAMES[:2])


@pytest.mark.redis
async def test_reader_when_cancelled_at_any_await_then_stops_and_returns_connection(
    redis_harness: RedisHarness,
) -> None:
    store = await redis_harness.make(max_connections=4)
    await store.create("s1")
    await store.append("s1", FRAMES[:1], finished=False)
    # Step the loop k times before cancelling, so the cancel lands on every await of a read
    # (connect, HMGET, XREAD send, XREAD wait) at least once.
    for steps in range(40):
        reader = Follower(store, "s1")
        for _ in range(steps):
            await asyncio.sleep(0)
        reader.task.cancel()
        done, _ = await asyncio.wait([reader.task], timeout=WAIT_S)
        assert done, f"a reader cancelled after {steps} loop steps kept running"
        assert reader.task.cancelled()
    assert len(store._link.pool._in_use_connections) == 0

    async def unblocked() -> bool:
        return await redis_harness.blocked_clients() == 0

    await wait_for(unblocked, "Redis to drop the cancelled readers")


@pytest.mark.redis
@pytest.mark.parametrize("protocol", ["2", "3"])
async def test_read_when_either_resp_protocol_then_same_frames(
    redis_harness: RedisHarness, protocol: str
) -> None:
    store = await redis_harness.make(query=f"?protocol={protocol}")
    await store.create("s1")
    reader = Follower(store, "s1")
    await redis_harness.wait_until_waiting(store, "s1", 1)
    await store.append("s1", FRAMES[:2], finished=False)
    await reader.next_batch()
    await store.append("s1", FRAMES[2:], finished=True)
    assert await reader.finished() == b"".join(FRAMES)
    assert await read_all(store, "s1", 3) == b"".join(FRAMES[3:])


@pytest.mark.redis
async def test_aclose_when_reader_blocked_then_reader_fails_fast(
    redis_harness: RedisHarness,
) -> None:
    store = await redis_harness.make()
    await store.create("s1")
    reader = Follower(store, "s1")
    await redis_harness.wait_until_waiting(store, "s1", 1)
    await store.aclose()
    done, _ = await asyncio.wait([reader.task], timeout=WAIT_S)
    assert done, "a reader outlived the store"
    assert reader.task.exception() is not None


async def test_connect_when_server_unreachable_then_settings_error_without_password() -> None:
    url = f"redis://app:hunter2@127.0.0.1:{unused_port()}/0"
    with pytest.raises(SettingsError) as caught:
        await RedisStreamStore.connect(url, timeout_s=1.0)
    message = str(caught.value)
    assert message.startswith("REDIS_URL: cannot reach redis://app:***@127.0.0.1:")
    assert "hunter2" not in message
    assert "\n" not in message


@pytest.mark.redis
def test_check_redis_url_when_server_answers_then_passes(redis_server: RedisServer) -> None:
    check_redis_url(redis_server.url, timeout_s=2.0)


def test_check_redis_url_when_unreachable_then_one_line_without_password() -> None:
    url = f"redis://app:hunter2@127.0.0.1:{unused_port()}/0"
    with pytest.raises(SettingsError) as caught:
        check_redis_url(url, timeout_s=1.0)
    message = str(caught.value)
    assert message.startswith("REDIS_URL: cannot reach redis://app:***@127.0.0.1:")
    assert "hunter2" not in message
    assert "\n" not in message


async def test_connect_when_url_malformed_then_settings_error() -> None:
    with pytest.raises(SettingsError, match=r"^REDIS_URL: ") as caught:
        await RedisStreamStore.connect("redis://:hunter2@127.0.0.1:notaport/0", timeout_s=1.0)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://app:s3cret@cache:6380", "rediss://app:***@cache:6380"),
        ("redis://app@cache", "redis://app@cache"),
    ],
)
def test_redact_url_when_url_given_then_only_password_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def unused_port() -> int:
    """A port nothing listens on: bound, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
