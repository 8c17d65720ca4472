"""The Redis stream store's keys and the Lua scripts that change them.

Three keys per stream, with the id as hash tag so all sit in one Redis Cluster slot:

- ``{prefix}{<id>}:log``, a Redis stream: frame i is entry ``0-i`` with field ``f`` (its SSE
  bytes); the terminal entry also carries ``t``. A run closed without a terminal event gets one
  extra entry with ``t`` alone, so blocked followers wake at once instead of at their next poll.
- ``{prefix}{<id>}:meta``, a hash: ``last`` (frames written), ``finished``, ``readers``,
  ``cancel``, and once finished with a terminal event ``outcome`` (``done`` or its error code).
- ``{prefix}{<id>}:lease``, present while the worker running the stream is alive: it expires
  ``2/3 * lease_s`` after its last renewal, and the worker renews it every ``lease_s / 3``. A
  follower that finds it gone (looking every ``lease_s / 3`` at most) ends the log with a
  terminal frame, so readers learn of a dead worker within ``lease_s``.

Every write that depends on the current state is a Lua script: atomic, one round trip, and safe
to retry, because redis-py retries a command whose reply was lost and a blind XADD would then
store a frame twice.
"""

from __future__ import annotations

from typing import Final


def stream_keys(prefix: str, stream_id: str) -> tuple[str, str, str]:
    """The stream's meta, log and lease keys, the order the scripts take them in."""
    base = f"{prefix}{{{stream_id}}}"
    return f"{base}:meta", f"{base}:log", f"{base}:lease"


# KEYS: meta, log, lease. ARGV: safety expiry in ms, lease in ms.
CREATE: Final = """
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'last', 0, 'finished', 0, 'readers', 0, 'cancel', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
return 1
"""

# KEYS: meta, log, lease. ARGV: id of the first frame (0: the next free one), finished (0/1),
# ttl in ms, lapsed (0/1), outcome ('' for none), frames... Ids up to ``last`` already landed
# (a retried call whose reply was lost): skip them. Returns 1 when appended, 0 when the log is
# gone, -1 when it is finished.
# lapsed=1 is a reader ending the log of a run whose worker died: it lands only while the lease
# is gone and nothing was added since the reader looked (first == last + 1), else -2. A slow
# worker that renews or appends first wins; once the log is finished nothing more is added, so
# only one terminal frame is ever written.
APPEND: Final = """
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
local n = #ARGV - 5
for i = 1, n do
  local id = first + i - 1
  if id > last then
    if finished and i == n then
      redis.call('XADD', KEYS[2], '0-' .. id, 'f', ARGV[5 + i], 't', '1')
    else
      redis.call('XADD', KEYS[2], '0-' .. id, 'f', ARGV[5 + i])
    end
    last = id
  end
end
if finished then
  if n == 0 then
    redis.call('XADD', KEYS[2], '0-' .. (last + 1), 't', '1')
  end
  redis.call('HSET', KEYS[1], 'last', last, 'finished', 1)
  if ARGV[5] ~= '' then
    redis.call('HSET', KEYS[1], 'outcome', ARGV[5])
  end
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
STATE: Final = """
local state = redis.call('HMGET', KEYS[1], 'last', 'finished')
return {state[1], state[2], redis.call('EXISTS', KEYS[2])}
"""

# KEYS: meta. Never creates the hash: a key without expiry would outlive every stream.
READER_JOINED: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HINCRBY', KEYS[1], 'readers', 1)
end
return 0
"""

READER_LEFT: Final = """
local n = tonumber(redis.call('HGET', KEYS[1], 'readers'))
if n and n > 0 then
  return redis.call('HINCRBY', KEYS[1], 'readers', -1)
end
return 0
"""

REQUEST_CANCEL: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'cancel', 1)
  return 1
end
return 0
"""
