"""Stream logs in Redis Streams, so a reader can resume on another worker or replica.

The keys and the Lua scripts that change them are in ``redis_scripts.py`` (with the layout);
the bounded calls and the store's health in ``redis_link.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import structlog

from chat.streams import redis_scripts as scripts
from chat.streams.redis_link import HEALTH_INTERVAL_S, RedisLink
from chat.streams.redis_url import redact_url
from chat.streams.store import (
    LAPSED_OUTCOME,
    LapsedFrame,
    StoreUnavailable,
    StreamInfo,
    StreamNotFound,
)

log = structlog.get_logger(__name__)

# A log nobody finishes (its worker crashed) still vanishes: this long after create.
SAFETY_TTL_S: Final = 86_400.0
# Followers block this long per XREAD, then look whether the log still exists.
BLOCK_S: Final = 5.0
# Entries per XREAD: bounds one batch's memory for a reader that is far behind.
READ_COUNT: Final = 512


class RedisStreamStore:
    """``StreamStore`` on Redis Streams: logs, reader counts and cancel flags any worker sees."""

    def __init__(
        self,
        link: RedisLink,
        *,
        ttl_s: float = 300.0,
        key_prefix: str = "chat:stream:",
        block_s: float | None = None,
        lease_s: float = 10.0,
    ) -> None:
        self.ttl_s = ttl_s
        self.key_prefix = key_prefix
        self.lease_s = lease_s
        # A follower looks at the lease at least every lease_s / 3 (see redis_scripts.py).
        self.block_s = min(BLOCK_S, lease_s / 3) if block_s is None else block_s
        self._link = link
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._safety_ms = round((ttl_s + SAFETY_TTL_S) * 1000)
        self._lease_ms = max(1, round(lease_s * 2000 / 3))
        # Frames this process wrote per open stream: lets a retried append be recognised.
        self._written: dict[str, int] = {}
        redis = link.redis
        self._create = redis.register_script(scripts.CREATE)
        self._append = redis.register_script(scripts.APPEND)
        self._state = redis.register_script(scripts.STATE)
        self._reader_joined = redis.register_script(scripts.READER_JOINED)
        self._reader_left = redis.register_script(scripts.READER_LEFT)
        self._request_cancel = redis.register_script(scripts.REQUEST_CANCEL)

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
        link = await RedisLink.connect(url, max_connections=max_connections, timeout_s=timeout_s)
        log.info(
            "stream_store_connected", store="redis", url=redact_url(url), key_prefix=key_prefix
        )
        return cls(link, ttl_s=ttl_s, key_prefix=key_prefix, block_s=block_s, lease_s=lease_s)

    @property
    def available(self) -> bool:
        """False from a failed call until Redis answers again."""
        return self._link.available

    def _keys(self, stream_id: str) -> tuple[str, str]:
        meta, log_key, _ = scripts.stream_keys(self.key_prefix, stream_id)
        return meta, log_key

    def _lease_key(self, stream_id: str) -> str:
        return scripts.stream_keys(self.key_prefix, stream_id)[2]

    async def create(self, stream_id: str) -> None:
        """Start an empty log that expires on its own if its run never finishes, and its lease."""
        keys = list(scripts.stream_keys(self.key_prefix, stream_id))
        await self._link.call(self._create(keys=keys, args=[self._safety_ms, self._lease_ms]))
        self._written[stream_id] = 0

    async def append(
        self, stream_id: str, frames: list[bytes], *, finished: bool, outcome: str | None = None
    ) -> bool:
        """Add frames (and the end, when ``finished``) in one atomic round trip."""
        written = self._written.get(stream_id)
        # 0 asks the script to append at the end: a stream this process did not create.
        first = 0 if written is None else written + 1
        ending = (outcome or "") if finished else ""
        args: list[Any] = [first, 1 if finished else 0, self._ttl_ms, 0, ending, *frames]
        keys = list(scripts.stream_keys(self.key_prefix, stream_id))
        try:
            landed = await self._link.call(self._append(keys=keys, args=args))
        finally:
            if finished:
                self._written.pop(stream_id, None)
        if written is not None and not finished:
            self._written[stream_id] = written + len(frames)
        # -1 on a finishing append may be our own earlier try whose reply was lost: it landed.
        return bool(landed == 1 or (finished and landed == -1 and written is not None))

    async def info(self, stream_id: str) -> StreamInfo | None:
        """The log's length, whether it is finished and how; None when unknown or expired."""
        meta = self._keys(stream_id)[0]
        fields = ["last", "finished", "outcome"]
        last, finished, outcome = await self._link.call(self._link.redis.hmget(meta, fields))
        if last is None:
            return None
        return StreamInfo(
            last_id=int(last),
            finished=finished == b"1",
            outcome=outcome.decode() if outcome else None,
        )

    async def read(
        self, stream_id: str, after: int, *, lapsed: LapsedFrame | None = None
    ) -> AsyncIterator[bytes]:
        """Frames after ``after``, batched, following the log with XREAD BLOCK until its end.

        An open log that vanishes while followed (Redis lost its data) raises
        ``StoreUnavailable``: its readers must not take the silence for an end.
        """
        meta, log_key, lease = scripts.stream_keys(self.key_prefix, stream_id)
        last, finished = await self._link.call(self._link.redis.hmget(meta, ["last", "finished"]))
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
            last, finished, leased = await self._link.call(self._state(keys=[meta, lease]))
            if last is None:
                raise StoreUnavailable("the stream log vanished while open")
            if finished == b"1":
                block = False  # finished between our XREAD and now: one more read gets the end
            elif not leased and lapsed is not None:
                block = not await self._end_lapsed(stream_id, int(last), lapsed)

    async def _end_lapsed(self, stream_id: str, last: int, lapsed: LapsedFrame) -> bool:
        """End the log of a run whose lease lapsed; True when it is finished now (by anyone)."""
        keys = list(scripts.stream_keys(self.key_prefix, stream_id))
        args: list[Any] = [last + 1, 1, self._ttl_ms, 1, LAPSED_OUTCOME, lapsed(last + 1)]
        landed = await self._link.call(self._append(keys=keys, args=args))
        if landed == 0:
            raise StoreUnavailable("the stream log vanished while open")
        if landed == 1:
            log.warning("stream_lease_lapsed", stream_id=stream_id, last_id=last)
        return bool(landed in (1, -1))

    async def _xread(self, key: str, cursor: int, *, block: bool) -> Any:
        """One XREAD, on a connection of its own (``RedisLink.blocking_call``)."""
        args: list[Any] = ["XREAD", "COUNT", READ_COUNT]
        if block:
            args += ["BLOCK", round(self.block_s * 1000)]
        args += ["STREAMS", key, f"0-{cursor}"]
        return await self._link.blocking_call(args, block_s=self.block_s)

    async def reader_joined(self, stream_id: str) -> None:
        """A reader attached (on any worker)."""
        await self._link.call(self._reader_joined(keys=[self._keys(stream_id)[0]]))

    async def reader_left(self, stream_id: str) -> None:
        """A reader went away (on any worker); the count never goes below zero."""
        await self._link.call(self._reader_left(keys=[self._keys(stream_id)[0]]))

    async def readers(self, stream_id: str) -> int:
        """Readers attached now, across workers."""
        value = await self._link.call(self._link.redis.hget(self._keys(stream_id)[0], "readers"))
        return max(0, int(value)) if value is not None else 0

    async def request_cancel(self, stream_id: str) -> None:
        """Ask the worker that runs the stream to cancel it (it polls ``cancel_requested``)."""
        await self._link.call(self._request_cancel(keys=[self._keys(stream_id)[0]]))

    async def cancel_requested(self, stream_id: str) -> bool:
        """Whether someone asked to cancel the stream."""
        value = await self._link.call(self._link.redis.hget(self._keys(stream_id)[0], "cancel"))
        return bool(value == b"1")

    async def renew_leases(self, stream_ids: list[str]) -> None:
        """Extend the leases of the runs of this process, in one round trip."""
        if not stream_ids:
            return
        pipe = self._link.redis.pipeline(transaction=False)
        for stream_id in stream_ids:
            # SET, not PEXPIRE: a lease that lapsed during a stall comes back; if a reader ended
            # the log meanwhile, that log is finished and the lease means nothing.
            pipe.set(self._lease_key(stream_id), b"1", px=self._lease_ms)
        await self._link.call(pipe.execute())

    async def watch_health(self, interval_s: float = HEALTH_INTERVAL_S) -> None:
        """PING every ``interval_s``: readiness turns 503 within it, and back once Redis is."""
        await self._link.watch_health(interval_s)

    async def aclose(self) -> None:
        """Close every connection of the pool, including those of blocked readers."""
        self._written.clear()
        await self._link.aclose()
