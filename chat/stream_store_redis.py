"""Stream logs in Redis Streams, so a reader can resume on another worker or replica.

Two keys per stream, with the id as hash tag so both sit in one Redis Cluster slot:

- ``{prefix}{<id>}:log``, a Redis stream: frame i is entry ``0-i`` with field ``f`` (its SSE
  bytes); the terminal entry also carries ``t``. A run closed without a terminal event gets one
  extra entry with ``t`` alone, so blocked followers wake at once instead of at their next poll.
- ``{prefix}{<id>}:meta``, a hash: ``last`` (frames written), ``finished``, ``readers``,
  ``cancel``.

Every write that depends on the current state is a Lua script: atomic, one round trip, and safe
to retry, because redis-py retries a command whose reply was lost and a blind XADD would then
store a frame twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import structlog
from redis import Redis as SyncRedis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry

from chat.settings import SettingsError
from chat.stream_store import StreamInfo, StreamNotFound

log = structlog.get_logger(__name__)

T = TypeVar("T")

# A log nobody finishes (its worker crashed) still vanishes: this long after create.
SAFETY_TTL_S: Final = 86_400.0
# Followers block this long per XREAD, then look whether the log still exists.
BLOCK_S: Final = 5.0
# Entries per XREAD: bounds one batch's memory for a reader that is far behind.
READ_COUNT: Final = 512

# KEYS: meta, log. ARGV: safety expiry in ms.
_CREATE = """
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'last', 0, 'finished', 0, 'readers', 0, 'cancel', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: meta, log. ARGV: id of the first frame (0: the next free one), finished (0/1), ttl in ms,
# frames... Ids up to ``last`` already landed (a retried call whose reply was lost): skip them.
_APPEND = """
local state = redis.call('HMGET', KEYS[1], 'last', 'finished')
if not state[1] or state[2] == '1' then
  return 0
end
local last = tonumber(state[1])
local first = tonumber(ARGV[1])
if first == 0 or first > last + 1 then
  first = last + 1
end
local finished = ARGV[2] == '1'
local n = #ARGV - 3
for i = 1, n do
  local id = first + i - 1
  if id > last then
    if finished and i == n then
      redis.call('XADD', KEYS[2], '0-' .. id, 'f', ARGV[3 + i], 't', '1')
    else
      redis.call('XADD', KEYS[2], '0-' .. id, 'f', ARGV[3 + i])
    end
    last = id
  end
end
if finished then
  if n == 0 then
    redis.call('XADD', KEYS[2], '0-' .. (last + 1), 't', '1')
  end
  redis.call('HSET', KEYS[1], 'last', last, 'finished', 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
elseif n > 0 then
  redis.call('HSET', KEYS[1], 'last', last)
  if redis.call('PTTL', KEYS[2]) == -1 then
    local ttl = redis.call('PTTL', KEYS[1])
    if ttl > 0 then
      redis.call('PEXPIRE', KEYS[2], ttl)
    end
  end
end
return 1
"""

# KEYS: meta. Never creates the hash: a key without expiry would outlive every stream.
_READER_JOINED = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HINCRBY', KEYS[1], 'readers', 1)
end
return 0
"""

_READER_LEFT = """
local n = tonumber(redis.call('HGET', KEYS[1], 'readers'))
if n and n > 0 then
  return redis.call('HINCRBY', KEYS[1], 'readers', -1)
end
return 0
"""

_REQUEST_CANCEL = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'cancel', 1)
  return 1
end
return 0
"""


class RedisStreamStore:
    """``StreamStore`` on Redis Streams: logs, reader counts and cancel flags any worker sees."""

    def __init__(
        self,
        redis: Redis,
        pool: ConnectionPool,
        *,
        ttl_s: float = 300.0,
        key_prefix: str = "chat:stream:",
        block_s: float = BLOCK_S,
        timeout_s: float = 5.0,
    ) -> None:
        self.ttl_s = ttl_s
        self.key_prefix = key_prefix
        self.block_s = block_s
        self._redis = redis
        self._pool = pool
        self._timeout_s = timeout_s
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._safety_ms = round((ttl_s + SAFETY_TTL_S) * 1000)
        # Frames this process wrote per open stream: lets a retried append be recognised.
        self._written: dict[str, int] = {}
        self._releasing: set[asyncio.Future[None]] = set()
        self._create = redis.register_script(_CREATE)
        self._append = redis.register_script(_APPEND)
        self._reader_joined = redis.register_script(_READER_JOINED)
        self._reader_left = redis.register_script(_READER_LEFT)
        self._request_cancel = redis.register_script(_REQUEST_CANCEL)

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        ttl_s: float = 300.0,
        key_prefix: str = "chat:stream:",
        max_connections: int | None = None,
        timeout_s: float = 5.0,
        block_s: float = BLOCK_S,
    ) -> RedisStreamStore:
        """Open one pool and PING; an unusable URL raises ``SettingsError`` naming REDIS_URL."""
        try:
            pool = ConnectionPool.from_url(
                url,
                max_connections=max_connections,
                socket_connect_timeout=timeout_s,
                # No socket timeout: redis-py applies it to writes through asyncio.wait_for, which
                # on Python 3.11 can swallow a cancellation (fixed in 3.12), so a reader whose
                # client left would keep running. Every call is bounded by _bounded() instead.
                socket_timeout=None,
                health_check_interval=30,
                # Short and few: a stream should fail over to the client's reconnect, not hang.
                retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            )
        except ValueError as exc:
            raise SettingsError(f"REDIS_URL: {_scrub(str(exc), url)}") from None
        redis = Redis(connection_pool=pool)
        try:
            async with asyncio.timeout(timeout_s * 2):
                await redis.ping()
        except (RedisError, OSError) as exc:
            await redis.aclose()
            await pool.disconnect()
            raise _unreachable(url, exc) from None
        log.info(
            "stream_store_connected", store="redis", url=redact_url(url), key_prefix=key_prefix
        )
        return cls(
            redis, pool, ttl_s=ttl_s, key_prefix=key_prefix, block_s=block_s, timeout_s=timeout_s
        )

    def _keys(self, stream_id: str) -> tuple[str, str]:
        base = f"{self.key_prefix}{{{stream_id}}}"
        return f"{base}:meta", f"{base}:log"

    async def create(self, stream_id: str) -> None:
        """Start an empty log that expires on its own if its run never finishes."""
        await self._bounded(self._create(keys=self._keys(stream_id), args=[self._safety_ms]))
        self._written[stream_id] = 0

    async def append(self, stream_id: str, frames: list[bytes], *, finished: bool) -> None:
        """Add frames (and the end, when ``finished``) in one atomic round trip."""
        written = self._written.get(stream_id)
        # 0 asks the script to append at the end: a stream this process did not create.
        first = 0 if written is None else written + 1
        args: list[Any] = [first, 1 if finished else 0, self._ttl_ms, *frames]
        try:
            await self._bounded(self._append(keys=self._keys(stream_id), args=args))
        finally:
            if finished:
                self._written.pop(stream_id, None)
        if written is not None and not finished:
            self._written[stream_id] = written + len(frames)

    async def info(self, stream_id: str) -> StreamInfo | None:
        """The log's length and whether it is finished; None when unknown or expired."""
        meta = self._keys(stream_id)[0]
        last, finished = await self._bounded(self._redis.hmget(meta, ["last", "finished"]))
        if last is None:
            return None
        return StreamInfo(last_id=int(last), finished=finished == b"1")

    async def read(self, stream_id: str, after: int) -> AsyncIterator[bytes]:
        """Frames after ``after``, batched, following the log with XREAD BLOCK until its end."""
        meta, log_key = self._keys(stream_id)
        last, finished = await self._bounded(self._redis.hmget(meta, ["last", "finished"]))
        if last is None:
            raise StreamNotFound(stream_id)
        if finished == b"1" and after >= int(last):
            return
        cursor = after
        block = True
        while True:
            reply = await self._xread(log_key, cursor, block=block)
            if reply:
                frames: list[bytes] = []
                terminal = False
                # RESP3 (redis-py 8's default) answers a map; RESP2 (5.x, ``?protocol=2``) a list.
                entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
                for entry_id, fields in entries:
                    cursor = int(entry_id.partition(b"-")[2])
                    for i in range(0, len(fields), 2):
                        if fields[i] == b"f":
                            frames.append(fields[i + 1])
                        elif fields[i] == b"t":
                            terminal = True
                if frames:
                    yield frames[0] if len(frames) == 1 else b"".join(frames)
                if terminal:
                    return
                block = True
                continue
            if not block:
                return  # finished, and nothing after the cursor
            state = await self._bounded(self._redis.hget(meta, "finished"))
            if state is None:
                return  # expired or deleted while we waited
            # Finished between our XREAD and now: one more read, without blocking, gets the end.
            block = state != b"1"

    async def _bounded(self, call: Awaitable[T]) -> T:
        """One command, retries included, within ``timeout_s``; a hung server raises."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await call
        except TimeoutError:
            raise RedisTimeoutError(f"Redis did not answer within {self._timeout_s}s") from None

    async def _xread(self, key: str, cursor: int, *, block: bool) -> Any:
        """One XREAD on a connection of its own, discarded if the wait is cut short."""
        args: list[Any] = ["XREAD", "COUNT", READ_COUNT]
        if block:
            args += ["BLOCK", round(self.block_s * 1000)]
        args += ["STREAMS", key, f"0-{cursor}"]
        pool = self._pool
        conn = await self._bounded(pool.get_connection())
        try:
            # Cancelled or timed out mid-command, redis-py closes the socket: a connection with a
            # reply still in flight never goes back to the pool, and Redis drops the client.
            async with asyncio.timeout(self.block_s + self._timeout_s):
                await conn.send_command(*args)
                return await conn.read_response()
        except TimeoutError:
            await conn.disconnect(nowait=True)
            raise RedisTimeoutError("XREAD did not answer in time") from None
        finally:
            # In a task of its own: a second cancel must not strand the connection in "in use".
            release = asyncio.ensure_future(pool.release(conn))
            self._releasing.add(release)
            release.add_done_callback(self._releasing.discard)
            await asyncio.shield(release)

    async def reader_joined(self, stream_id: str) -> None:
        """A reader attached (on any worker)."""
        await self._bounded(self._reader_joined(keys=[self._keys(stream_id)[0]]))

    async def reader_left(self, stream_id: str) -> None:
        """A reader went away (on any worker); the count never goes below zero."""
        await self._bounded(self._reader_left(keys=[self._keys(stream_id)[0]]))

    async def readers(self, stream_id: str) -> int:
        """Readers attached now, across workers."""
        value = await self._bounded(self._redis.hget(self._keys(stream_id)[0], "readers"))
        return max(0, int(value)) if value is not None else 0

    async def request_cancel(self, stream_id: str) -> None:
        """Ask the worker that runs the stream to cancel it (it polls ``cancel_requested``)."""
        await self._bounded(self._request_cancel(keys=[self._keys(stream_id)[0]]))

    async def cancel_requested(self, stream_id: str) -> bool:
        """Whether someone asked to cancel the stream."""
        value = await self._bounded(self._redis.hget(self._keys(stream_id)[0], "cancel"))
        return bool(value == b"1")

    async def aclose(self) -> None:
        """Close every connection of the pool, including those of blocked readers."""
        self._written.clear()
        await self._redis.aclose()
        await self._pool.disconnect()


def check_redis_url(url: str, *, timeout_s: float = 5.0) -> None:
    """PING synchronously, for start-up checks that run before the event loop."""
    try:
        client = SyncRedis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            # At start-up one clear answer beats a minute of backoff.
            retry=SyncRetry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise SettingsError(f"REDIS_URL: {_scrub(str(exc), url)}") from None
    try:
        client.ping()
    except (RedisError, OSError) as exc:
        raise _unreachable(url, exc) from None
    finally:
        client.close()


def _unreachable(url: str, exc: BaseException) -> SettingsError:
    reason = _scrub(str(exc), url) or type(exc).__name__
    return SettingsError(f"REDIS_URL: cannot reach {redact_url(url)}: {reason}")


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``, fit for logs and error messages."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    if not password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def _scrub(text: str, url: str) -> str:
    """``text`` without the URL's password, wherever a library chose to quote it."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    text = text.replace(url, redact_url(url))
    if password:
        text = text.replace(password, "***")
    return " ".join(text.split())
