"""The Redis conversation store's two keys and the Lua scripts that check and set them.

- ``{prefix}meta:{id}``: a hash with ``owner``, ``turns`` and ``bytes``; it expires
  ``ttl`` after the last turn, and is refreshed after the SDK's session keys (which expire by
  the SDK's own ``ttl``), so it never expires before them.
- ``{prefix}lock:{id}``: the token of the run holding the conversation, ``SET NX PX``-style,
  renewed while the run lasts: a dead worker's lock ends with its lifetime.

Every check-and-set is one Lua script: atomic across workers, one round trip.
"""

from __future__ import annotations

from typing import Final

from chat.seams import REDIS_SESSION_APPEND_LUA

# KEYS: meta, lock, the SDK session's message list. ARGV: owner, token, lock ms, max turns,
# max bytes, added bytes, ttl ms, history items to return. Returns {status, value, items}: the
# newest items come with the claim, one round trip instead of two.
CLAIM: Final = """
local meta = redis.call('HMGET', KEYS[1], 'owner', 'turns', 'bytes')
if meta[1] and meta[1] ~= ARGV[1] then
  return {'not_found', 0}
end
local held = redis.call('PTTL', KEYS[2])
if held > 0 or held == -1 then
  return {'busy', held}
end
local turns = tonumber(meta[2] or '0')
local size = tonumber(meta[3] or '0')
if turns >= tonumber(ARGV[4]) then
  return {'full_turns', turns}
end
if size + tonumber(ARGV[6]) > tonumber(ARGV[5]) then
  return {'full_bytes', size}
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if not meta[1] then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'turns', 0, 'bytes', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  return {'fresh', 0}
end
local items = {}
if tonumber(ARGV[8]) > 0 then
  items = redis.call('LRANGE', KEYS[3], -tonumber(ARGV[8]), -1)
end
return {'ok', turns, items}
"""

# KEYS: meta, lock. ARGV: token, owner, turns, bytes, ttl ms.
FINISH: Final = """
local held = redis.call('GET', KEYS[2]) == ARGV[1]
if held then
  redis.call('DEL', KEYS[2])
end
redis.call('HSETNX', KEYS[1], 'owner', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'turns', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'bytes', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if held then return 1 end
return 0
"""

# A turn's save in one round trip: the items appended to the SDK session's keys as
# RedisSession.add_items writes them (chat.seams.REDIS_SESSION_APPEND_LUA), then FINISH. The
# SDK's add_items takes six round trips (WATCH, three TYPE checks, TIME, MULTI/EXEC); the
# conversation lock already makes this the one writer, and a script is atomic anyway.
# KEYS: meta, lock, session hash, session list, session counter.
# ARGV: token, owner, turns, bytes, ttl ms (FINISH's, in its places), session ttl ms, session id,
# items (JSON) ...
SAVE: Final = REDIS_SESSION_APPEND_LUA + FINISH

# KEYS: lock. ARGV: token, lock ms.
RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lock. ARGV: token.
RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: meta, lock. ARGV: owner, token, lock ms.
LOCK_FOR_DELETE: Final = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return {'not_found', 0}
end
local held = redis.call('PTTL', KEYS[2])
if held > 0 or held == -1 then
  return {'busy', held}
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return {'ok', 0}
"""

# KEYS: meta, lock. ARGV: token.
FORGET: Final = """
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"""
