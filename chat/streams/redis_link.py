"""The Redis stream store's connection: every call bounded in time, and the store's health.

A failed or timed-out call raises ``StoreUnavailable`` and marks the link unavailable until a
call (or the health probe's PING) succeeds again; the connection pool reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

import structlog
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from chat.settings import SettingsError
from chat.streams.redis_url import scrub, unreachable
from chat.streams.store import StoreUnavailable

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Seconds between health probes (PING), whether the store is up or down.
HEALTH_INTERVAL_S: Final = 1.0


class RedisLink:
    """One connection pool, its client, and whether Redis answered the last call."""

    def __init__(self, redis: Redis, pool: ConnectionPool, *, timeout_s: float) -> None:
        self.redis = redis
        self.pool = pool
        self.timeout_s = timeout_s
        self.available = True
        self._closed = False
        self._releasing: set[asyncio.Future[None]] = set()

    @classmethod
    async def connect(cls, url: str, *, max_connections: int | None, timeout_s: float) -> RedisLink:
        """Open one pool and PING; an unusable URL raises ``SettingsError`` naming REDIS_URL."""
        try:
            pool = ConnectionPool.from_url(
                url,
                max_connections=max_connections,
                socket_connect_timeout=timeout_s,
                # No socket timeout: redis-py applies it to writes through asyncio.wait_for, which
                # on Python 3.11 can swallow a cancellation (fixed in 3.12), so a reader whose
                # client left would keep running. Every call is bounded by call() instead.
                socket_timeout=None,
                health_check_interval=30,
                # Short and few: a stream should fail over to the client's reconnect, not hang.
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            )
        except ValueError as exc:
            raise SettingsError(f"REDIS_URL: {scrub(str(exc), url)}") from None
        redis = Redis(connection_pool=pool)
        try:
            async with asyncio.timeout(timeout_s * 2):
                await redis.ping()
        except (RedisError, OSError) as exc:
            await redis.aclose()
            await pool.disconnect()
            raise unreachable(url, exc) from None
        return cls(redis, pool, timeout_s=timeout_s)

    async def call(self, call: Awaitable[T]) -> T:
        """One command, retries included, within ``timeout_s``; any failure is the store's."""
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await call
        except TimeoutError:
            self._mark_unavailable("timeout")
            raise StoreUnavailable(f"Redis did not answer within {self.timeout_s}s") from None
        except (RedisError, OSError) as exc:
            self._mark_unavailable(type(exc).__name__)
            raise StoreUnavailable(f"Redis failed: {type(exc).__name__}") from None
        if not self.available:
            self._mark_available()
        return result

    async def blocking_call(self, args: list[Any], *, block_s: float) -> Any:
        """One blocking command (XREAD BLOCK) on a connection of its own, discarded if cut short."""
        name = args[0]
        pool = self.pool
        conn = await self.call(pool.get_connection())
        try:
            # Cancelled or timed out mid-command, redis-py closes the socket: a connection with a
            # reply still in flight never goes back to the pool, and Redis drops the client.
            async with asyncio.timeout(block_s + self.timeout_s):
                await conn.send_command(*args)
                return await conn.read_response()
        except TimeoutError:
            await conn.disconnect(nowait=True)
            self._mark_unavailable("timeout")
            raise StoreUnavailable(f"{name} did not answer in time") from None
        except (RedisError, OSError) as exc:
            await conn.disconnect(nowait=True)
            self._mark_unavailable(type(exc).__name__)
            raise StoreUnavailable(f"{name} failed: {type(exc).__name__}") from None
        finally:
            # In a task of its own: a second cancel must not strand the connection in "in use".
            release = asyncio.ensure_future(pool.release(conn))
            self._releasing.add(release)
            release.add_done_callback(self._releasing.discard)
            await asyncio.shield(release)

    def _mark_unavailable(self, reason: str) -> None:
        if self.available and not self._closed:
            self.available = False
            log.warning("stream_store_unavailable", store="redis", reason=reason)

    def _mark_available(self) -> None:
        if not self._closed:
            self.available = True
            log.info("stream_store_available", store="redis")

    async def watch_health(self, interval_s: float = HEALTH_INTERVAL_S) -> None:
        """PING every ``interval_s``: readiness turns 503 within it, and back once Redis is."""
        while True:
            await asyncio.sleep(interval_s)
            with contextlib.suppress(StoreUnavailable):
                await self.call(self.redis.ping())

    async def aclose(self) -> None:
        """Close every connection of the pool, including those of blocked readers."""
        self._closed = True
        await self.redis.aclose()
        await self.pool.disconnect()
