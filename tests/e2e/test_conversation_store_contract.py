"""One contract for both conversation stores: a real SQLite file and a real redis-server.

Lifetimes are short (a fraction of a second) so expiry runs on the real clock; every wait polls
an observable condition with a bound, never a bare sleep as synchronisation.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chat.conversations.redis_store import RedisConversationStore
from chat.conversations.sqlite_store import SQLiteConversationStore
from chat.conversations.store import (
    ConversationBusy,
    ConversationFull,
    ConversationNotFound,
    ConversationStore,
    Limits,
)
from chat.conversations.turns import turn_items
from tests.support.redis_server import RedisServer, start_redis

pytestmark = pytest.mark.anyio

WAIT_S = 5.0
ALICE = "owner-alice"
BOB = "owner-bob"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for this module."""
    with start_redis() as server:
        yield server


StoreFactory = Callable[..., Awaitable[ConversationStore]]


@pytest.fixture(params=["sqlite", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Build stores of one kind over one backing (file or server); all closed at the end."""
    made: list[ConversationStore] = []
    prefix = f"test:{uuid.uuid4().hex}:"

    async def make(**limits: Any) -> ConversationStore:
        store: ConversationStore
        if request.param == "sqlite":
            store = await SQLiteConversationStore.open(tmp_path, Limits(**limits))
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            store = RedisConversationStore.from_url(server.url, Limits(**limits), key_prefix=prefix)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll until ``condition`` holds; fail after WAIT_S."""
    try:
        async with asyncio.timeout(WAIT_S):
            while not await condition():  # noqa: ASYNC110 - the state lives in another process
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def save_turn(
    store: ConversationStore, conversation_id: str, owner: str, message: str, answer: str
) -> None:
    """One whole turn as the service does it: claim, add the items, finish."""
    claim = await store.claim(conversation_id, owner, len(message))
    session = await store.open_session(conversation_id)
    try:
        if claim.stale:
            await session.clear_session()
        items = turn_items(message, answer)
        await session.add_items(items)
    finally:
        await store.close_session(session)
    held = await store.finish(
        conversation_id, claim.token, owner=owner, turns=1, add_bytes=len(message + answer)
    )
    assert held


async def items_of(store: ConversationStore, conversation_id: str) -> list[Any]:
    session = await store.open_session(conversation_id)
    try:
        return await session.get_items()
    finally:
        await store.close_session(session)


async def test_claim_when_new_then_fresh_and_a_second_claim_is_busy(
    make_store: StoreFactory,
) -> None:
    store = await make_store()
    claim = await store.claim("c1", ALICE, 5)
    assert (claim.fresh, claim.turns) == (True, 0)
    with pytest.raises(ConversationBusy):
        await store.claim("c1", ALICE, 5)
    # Another owner never learns that it exists, busy or not.
    with pytest.raises(ConversationNotFound):
        await store.claim("c1", BOB, 5)
    await store.release("c1", claim.token)
    again = await store.claim("c1", ALICE, 5)
    assert again.token != claim.token


async def test_finish_when_turn_saved_then_counted_owned_and_history_kept(
    make_store: StoreFactory,
) -> None:
    store = await make_store()
    await save_turn(store, "c1", ALICE, "hi", "Hello!")
    assert await store.owned("c1", ALICE)
    assert not await store.owned("c1", BOB)
    claim = await store.claim("c1", ALICE, 5)
    assert (claim.fresh, claim.stale, claim.turns) == (False, False, 1)
    await store.release("c1", claim.token)
    assert await items_of(store, "c1") == turn_items("hi", "Hello!")
    with pytest.raises(ConversationNotFound):
        await store.claim("c1", BOB, 5)


async def test_finish_when_lock_was_taken_over_then_reports_it_lost(
    make_store: StoreFactory,
) -> None:
    store = await make_store(lock_ttl_s=0.3)
    first = await store.claim("c1", ALICE, 1)
    await asyncio.sleep(0.4)  # the lock's lifetime passing is the point of this test
    second = await store.claim("c1", ALICE, 1)
    assert not await store.finish("c1", first.token, owner=ALICE, turns=1, add_bytes=1)
    assert await store.finish("c1", second.token, owner=ALICE, turns=1, add_bytes=1)


async def test_lock_when_holder_stops_renewing_then_free_within_its_lifetime(
    make_store: StoreFactory,
) -> None:
    store = await make_store(lock_ttl_s=0.3)
    await store.claim("c1", ALICE, 1)  # a worker that dies now never renews or releases

    async def claimable() -> bool:
        try:
            await store.claim("c1", ALICE, 1)
        except ConversationBusy:
            return False
        return True

    await wait_for(claimable, "the dead holder's lock to expire")


async def test_renew_when_holder_alive_then_lock_outlives_its_lifetime(
    make_store: StoreFactory,
) -> None:
    store = await make_store(lock_ttl_s=0.3)
    claim = await store.claim("c1", ALICE, 1)
    for _ in range(6):  # 0.6 s in all: twice the lifetime
        assert await store.renew([("c1", claim.token)]) == []
        await asyncio.sleep(0.1)
    with pytest.raises(ConversationBusy):
        await store.claim("c1", ALICE, 1)
    assert await store.renew([("c1", "not-the-token"), ("c2", "x")]) == ["c1", "c2"]


async def test_claim_when_turn_limit_reached_then_full(make_store: StoreFactory) -> None:
    store = await make_store(max_turns=2)
    await save_turn(store, "c1", ALICE, "one", "1")
    await save_turn(store, "c1", ALICE, "two", "2")
    with pytest.raises(ConversationFull) as info:
        await store.claim("c1", ALICE, 3)
    assert (info.value.what, info.value.limit) == ("turns", 2)


async def test_claim_when_bytes_would_pass_limit_then_full(make_store: StoreFactory) -> None:
    store = await make_store(max_bytes=100)
    await save_turn(store, "c1", ALICE, "x" * 40, "y" * 40)
    with pytest.raises(ConversationFull) as info:
        await store.claim("c1", ALICE, 21)
    assert (info.value.what, info.value.limit) == ("bytes", 100)
    claim = await store.claim("c1", ALICE, 20)  # exactly at the limit is allowed
    await store.release("c1", claim.token)


async def test_expiry_when_idle_past_ttl_then_gone_and_starts_anew(
    make_store: StoreFactory,
) -> None:
    store = await make_store(ttl_s=0.5)
    await save_turn(store, "c1", ALICE, "hi", "Hello!")

    async def gone() -> bool:
        return not await store.owned("c1", ALICE)

    await wait_for(gone, "the conversation to expire")
    # Expired means gone for everyone: another key may start a conversation of that id.
    claim = await store.claim("c1", BOB, 2)
    assert claim.fresh
    assert claim.stale or await items_of(store, "c1") == []


async def test_purge_when_expired_then_history_removed(make_store: StoreFactory) -> None:
    store = await make_store(ttl_s=0.5)
    await save_turn(store, "c1", ALICE, "hi", "Hello!")

    async def purged() -> bool:
        await store.purge_expired()
        return await items_of(store, "c1") == []

    await wait_for(purged, "the expired history to be removed")


async def test_delete_when_owner_asks_then_history_and_record_gone(
    make_store: StoreFactory,
) -> None:
    store = await make_store()
    await save_turn(store, "c1", ALICE, "hi", "Hello!")
    with pytest.raises(ConversationNotFound):
        await store.delete("c1", BOB)
    claim = await store.claim("c1", ALICE, 1)
    with pytest.raises(ConversationBusy):
        await store.delete("c1", ALICE)
    await store.release("c1", claim.token)
    await store.delete("c1", ALICE)
    assert not await store.owned("c1", ALICE)
    assert await items_of(store, "c1") == []
    with pytest.raises(ConversationNotFound):
        await store.delete("c1", ALICE)
    assert (await store.claim("c1", BOB, 1)).fresh


async def test_secret_when_two_stores_share_a_backing_then_same_secret(
    make_store: StoreFactory,
) -> None:
    one, two = await make_store(), await make_store()
    secret = await one.secret()
    assert len(secret) == 32
    assert await two.secret() == secret


async def test_save_when_turn_saved_then_next_claim_reads_it_with_the_lock(
    make_store: StoreFactory,
) -> None:
    store = await make_store()
    await save_turn(store, "c1", ALICE, "hi", "hello")
    claim = await store.claim("c1", ALICE, 3, history_limit=10)
    session = await store.open_session("c1")
    try:
        held = await store.save(
            "c1", claim.token, session, turn_items("and", "more"), owner=ALICE, turns=1, add_bytes=7
        )
    finally:
        await store.close_session(session)
    assert held
    assert claim.history == turn_items("hi", "hello")
    assert await items_of(store, "c1") == [*turn_items("hi", "hello"), *turn_items("and", "more")]
    newest = await store.claim("c1", ALICE, 0, history_limit=2)
    assert (newest.turns, newest.history) == (2, turn_items("and", "more"))


async def test_redis_save_when_compared_with_the_sdk_add_items_then_same_keys_and_bytes(
    redis_server: RedisServer,
) -> None:
    # The save script writes RedisSession's keys itself (one round trip instead of six): what
    # it leaves must be what the SDK's add_items leaves.
    from redis.asyncio import Redis

    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisConversationStore.from_url(redis_server.url, Limits(ttl_s=600), key_prefix=prefix)
    client = Redis.from_url(redis_server.url)
    items = [*turn_items('héllo "quoted"', "ünïcode ✓"), *turn_items("x", "")]
    try:
        sdk = await store.open_session("by-sdk")
        await sdk.add_items(items)
        claim = await store.claim("by-save", ALICE, 0)
        ours = await store.open_session("by-save")
        await store.save("by-save", claim.token, ours, items, owner=ALICE, turns=1, add_bytes=0)
        session = f"{prefix}session"
        for suffix in ("", ":messages"):
            a, b = f"{session}:by-sdk{suffix}", f"{session}:by-save{suffix}"
            assert await client.type(a) == await client.type(b)
            assert 590_000 < await client.pttl(b) <= 600_000
            assert abs(await client.pttl(a) - await client.pttl(b)) < 2_000
        sdk_hash = await client.hgetall(f"{session}:by-sdk")
        our_hash = await client.hgetall(f"{session}:by-save")
        assert set(sdk_hash) == set(our_hash) == {b"session_id", b"created_at", b"updated_at"}
        assert our_hash[b"session_id"] == b"by-save"
        assert await client.lrange(f"{session}:by-sdk:messages", 0, -1) == await client.lrange(
            f"{session}:by-save:messages", 0, -1
        )
        assert await ours.get_items() == items
    finally:
        await client.aclose()
        await store.aclose()
