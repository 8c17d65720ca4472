"""Stream logs in Redis Streams, so a reader can resume on another worker or replica.

Three keys per stream, with the id as hash tag so all sit in one Redis Cluster slot:

- ``{prefix}{<id>}:log``, a Redis stream: frame i is entry ``0-i`` with field ``f`` (its SSE
  bytes); the terminal entry also carries ``t``. A run closed without a terminal event gets one
  extra entry with ``t`` alone, so blocked followers wake at once instead of at their next poll.
- ``{prefix}{<id>}:meta``, a hash: ``last`` (frames written), ``finished``, ``readers``,
  ``cancel``.
- ``{prefix}{<id>}:lease``, present while the worker running the stream is alive: it expires
  ``2/3 * lease_s`` after its last renewal, and the worker renews it every ``lease_s / 3``. A
  follower that finds it gone (looking every ``lease_s / 3`` at most) ends the log with a
  terminal frame, so readers learn of a dead worker within ``lease_s``.

Every write that depends on the current state is a Lua script: atomic, one round trip, and safe
to retry, because redis-py retries a command whose reply was lost and a blind XADD would then
store a frame twice.

A failed or timed-out call raises ``StoreUnavailable`` and marks the store unavailable until a
call (or the health probe's PING) succeeds again; the connection pool reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import structlog
from redis import Redis as SyncRedis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry as SyncRetry

from chat.settings import SettingsError
from chat.stream_store import LapsedFrame, StoreUnavailable, StreamInfo, StreamNotFound

log = structlog.get_logger(__name__)

T = TypeVar("T")

# A log nobody finishes (its worker crashed) still vanishes: this long after create.
SAFETY_TTL_S: Final = 86_400.0
# Followers block this long per XREAD, then look whether the log still exists.
BLOCK_S: Final = 5.0
# Entries per XREAD: bounds one batch's memory for a reader that is far behind.
READ_COUNT: Final = 512
# Seconds between health probes (PING), whether the store is up or down.
HEALTH_INTERVAL_S: Final = 1.0

# KEYS: meta, log, lease. ARGV: safety expiry in ms, lease in ms.
_CREATE = """
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'last', 0, 'finished', 0, 'readers', 0, 'cancel', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
return 1
"""

# KEYS: meta, log, lease. ARGV: id of the first frame (0: the next free one), finished (0/1),
# ttl in ms, lapsed (0/1), frames... Ids up to ``last`` already landed (a retried call whose reply
# was lost): skip them. Returns 1 when appended, 0 when the log is gone, -1 when it is finished.
# lapsed=1 is a reader ending the log of a run whose worker died: it lands only while the lease
# is gone and nothing was added since the reader looked (first == last + 1), else -2. A slow
# worker that renews or appends first wins; once the log is finished nothing more is added, so
# only one terminal frame is ever written.
_APPEND = """
local state = redis.call('HMGET', KEYS[1], 'last', 'finished')
if not state[1] then
  return 0
end
if state[2] == '1' then
  return -1
end
local last = tonumber(state[1])
local first = tonumber(ARGV[1])
if ARGV[4] == '1' and (first ~= last + 1 or redis.call('EXISTS', KEYS[3]) == 1) then
  return -2
end
if first == 0 or first > last + 1 then
  first = last + 1
end
local finished = ARGV[2] == '1'
local n = #ARGV - 4
for i = 1, n do
  local id = first + i - 1
  if id > last then
    if finished and i == n then
      redis.call('XADD', KEYS[2], '0-' .. id, 'f', ARGV[4 + i], 't', '1')
    else
      redis.call('XADD', KEYS[2], '0-' .. id, 'f', ARGV[4 + i])
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
  redis.call('DEL', KEYS[3])
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

# KEYS: meta, lease. What a follower whose XREAD timed out needs: {last, finished, leased}.
_STATE = """
local state = redis.call('HMGET', KEYS[1], 'last', 'finished')
return {state[1], state[2], redis.call('EXISTS', KEYS[2])}
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
        block_s: float | None = None,
        timeout_s: float = 5.0,
        lease_s: float = 10.0,
    ) -> None:
        self.ttl_s = ttl_s
        self.key_prefix = key_prefix
        self.lease_s = lease_s
        # A follower looks at the lease at least every lease_s / 3 (see the module docstring).
        self.block_s = min(BLOCK_S, lease_s / 3) if block_s is None else block_s
        self.available = True
        self._redis = redis
        self._pool = pool
        self._timeout_s = timeout_s
        self._closed = False
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._safety_ms = round((ttl_s + SAFETY_TTL_S) * 1000)
        self._lease_ms = max(1, round(lease_s * 2000 / 3))
        # Frames this process wrote per open stream: lets a retried append be recognised.
        self._written: dict[str, int] = {}
        self._releasing: set[asyncio.Future[None]] = set()
        self._create = redis.register_script(_CREATE)
        self._append = redis.register_script(_APPEND)
        self._state = redis.register_script(_STATE)
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
        block_s: float | None = None,
        lease_s: float = 10.0,
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
            redis,
            pool,
            ttl_s=ttl_s,
            key_prefix=key_prefix,
            block_s=block_s,
            timeout_s=timeout_s,
            lease_s=lease_s,
        )

    def _keys(self, stream_id: str) -> tuple[str, str]:
        base = f"{self.key_prefix}{{{stream_id}}}"
        return f"{base}:meta", f"{base}:log"

    def _lease_key(self, stream_id: str) -> str:
        return f"{self.key_prefix}{{{stream_id}}}:lease"

    async def create(self, stream_id: str) -> None:
        """Start an empty log that expires on its own if its run never finishes, and its lease."""
        keys = [*self._keys(stream_id), self._lease_key(stream_id)]
        await self._bounded(self._create(keys=keys, args=[self._safety_ms, self._lease_ms]))
        self._written[stream_id] = 0

    async def append(self, stream_id: str, frames: list[bytes], *, finished: bool) -> bool:
        """Add frames (and the end, when ``finished``) in one atomic round trip."""
        written = self._written.get(stream_id)
        # 0 asks the script to append at the end: a stream this process did not create.
        first = 0 if written is None else written + 1
        args: list[Any] = [first, 1 if finished else 0, self._ttl_ms, 0, *frames]
        keys = [*self._keys(stream_id), self._lease_key(stream_id)]
        try:
            landed = await self._bounded(self._append(keys=keys, args=args))
        finally:
            if finished:
                self._written.pop(stream_id, None)
        if written is not None and not finished:
            self._written[stream_id] = written + len(frames)
        # -1 on a finishing append may be our own earlier try whose reply was lost: it landed.
        return bool(landed == 1 or (finished and landed == -1 and written is not None))

    async def info(self, stream_id: str) -> StreamInfo | None:
        """The log's length and whether it is finished; None when unknown or expired."""
        meta = self._keys(stream_id)[0]
        last, finished = await self._bounded(self._redis.hmget(meta, ["last", "finished"]))
        if last is None:
            return None
        return StreamInfo(last_id=int(last), finished=finished == b"1")

    async def read(
        self, stream_id: str, after: int, *, lapsed: LapsedFrame | None = None
    ) -> AsyncIterator[bytes]:
        """Frames after ``after``, batched, following the log with XREAD BLOCK until its end.

        An open log that vanishes while followed (Redis lost its data) raises
        ``StoreUnavailable``: its readers must not take the silence for an end.
        """
        meta, log_key = self._keys(stream_id)
        lease = self._lease_key(stream_id)
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
            last, finished, leased = await self._bounded(self._state(keys=[meta, lease]))
            if last is None:
                raise StoreUnavailable("the stream log vanished while open")
            if finished == b"1":
                block = False  # finished between our XREAD and now: one more read gets the end
            elif not leased and lapsed is not None:
                block = not await self._end_lapsed(stream_id, int(last), lapsed)

    async def _end_lapsed(self, stream_id: str, last: int, lapsed: LapsedFrame) -> bool:
        """End the log of a run whose lease lapsed; True when it is finished now (by anyone)."""
        keys = [*self._keys(stream_id), self._lease_key(stream_id)]
        args: list[Any] = [last + 1, 1, self._ttl_ms, 1, lapsed(last + 1)]
        landed = await self._bounded(self._append(keys=keys, args=args))
        if landed == 0:
            raise StoreUnavailable("the stream log vanished while open")
        if landed == 1:
            log.warning("stream_lease_lapsed", stream_id=stream_id, last_id=last)
        return bool(landed in (1, -1))

    async def _bounded(self, call: Awaitable[T]) -> T:
        """One command, retries included, within ``timeout_s``; any failure is the store's."""
        try:
            async with asyncio.timeout(self._timeout_s):
                result = await call
        except TimeoutError:
            self._mark_unavailable("timeout")
            raise StoreUnavailable(f"Redis did not answer within {self._timeout_s}s") from None
        except (RedisError, OSError) as exc:
            self._mark_unavailable(type(exc).__name__)
            raise StoreUnavailable(f"Redis failed: {type(exc).__name__}") from None
        if not self.available:
            self._mark_available()
        return result

    def _mark_unavailable(self, reason: str) -> None:
        if self.available and not self._closed:
            self.available = False
            log.warning("stream_store_unavailable", store="redis", reason=reason)

    def _mark_available(self) -> None:
        if not self._closed:
            self.available = True
            log.info("stream_store_available", store="redis")

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
            self._mark_unavailable("timeout")
            raise StoreUnavailable("XREAD did not answer in time") from None
        except (RedisError, OSError) as exc:
            await conn.disconnect(nowait=True)
            self._mark_unavailable(type(exc).__name__)
            raise StoreUnavailable(f"XREAD failed: {type(exc).__name__}") from None
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

    async def renew_leases(self, stream_ids: list[str]) -> None:
        """Extend the leases of the runs of this process, in one round trip."""
        if not stream_ids:
            return
        pipe = self._redis.pipeline(transaction=False)
        for stream_id in stream_ids:
            # SET, not PEXPIRE: a lease that lapsed during a stall comes back; if a reader ended
            # the log meanwhile, that log is finished and the lease means nothing.
            pipe.set(self._lease_key(stream_id), b"1", px=self._lease_ms)
        await self._bounded(pipe.execute())

    async def watch_health(self, interval_s: float = HEALTH_INTERVAL_S) -> None:
        """PING every ``interval_s``: readiness turns 503 within it, and back once Redis is."""
        while True:
            await asyncio.sleep(interval_s)
            with contextlib.suppress(StoreUnavailable):
                await self._bounded(self._redis.ping())

    async def aclose(self) -> None:
        """Close every connection of the pool, including those of blocked readers."""
        self._closed = True
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
