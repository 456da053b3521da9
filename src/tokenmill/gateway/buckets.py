"""Token buckets for rate limits, in this process or shared through Redis.

A bucket of `capacity` refills at `capacity / 60` per second (a per-minute limit that
never resets all at once). `take` removes an amount if it is there; `adjust` corrects a
reservation afterwards and may leave the bucket negative, so over-use is paid back by
waiting. In Redis one Lua script does each update atomically with the server's clock,
so every tokenmill process behind a load balancer sees one bucket per key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Take:
    """The outcome of a take: whether it was granted, what is left, when to retry."""

    allowed: bool
    remaining: float
    retry_after_s: float


class BucketStore(Protocol):
    async def take(self, key: str, amount: float, capacity: float) -> Take:
        """Removes `amount` from the bucket if it holds that much (refilled first)."""

    async def adjust(self, key: str, delta: float, capacity: float) -> float:
        """Adds `delta` (negative charges more), capped at capacity; returns the level."""


def _refill(level: float, last: float, now: float, capacity: float) -> float:
    return min(capacity, level + (now - last) * capacity / 60.0)


class MemoryBuckets:
    """Buckets in this process (the default). Not shared between processes."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._state: dict[str, tuple[float, float]] = {}

    async def take(self, key: str, amount: float, capacity: float) -> Take:
        now = self._clock()
        level, last = self._state.get(key, (capacity, now))
        level = _refill(level, last, now, capacity)
        if level >= amount:
            self._state[key] = (level - amount, now)
            return Take(True, level - amount, 0.0)
        self._state[key] = (level, now)
        return Take(False, level, (amount - level) * 60.0 / capacity)

    async def adjust(self, key: str, delta: float, capacity: float) -> float:
        now = self._clock()
        level, last = self._state.get(key, (capacity, now))
        level = min(capacity, _refill(level, last, now, capacity) + delta)
        self._state[key] = (level, now)
        return level


# KEYS[1] bucket; ARGV: amount (take) or delta (adjust), capacity, mode ("take"/"adjust").
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local cap = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'level', 'last')
local level = tonumber(state[1]) or cap
local last = tonumber(state[2]) or now
level = math.min(cap, level + (now - last) * cap / 60.0)
local amount = tonumber(ARGV[1])
local allowed = 1
if ARGV[3] == 'take' then
  if level >= amount then level = level - amount else allowed = 0 end
else
  level = math.min(cap, level + amount)
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'last', tostring(now))
redis.call('EXPIRE', KEYS[1], 120)
return {allowed, tostring(level)}
"""


class RedisBuckets:
    """Buckets in Redis, shared by every process that points at the same server."""

    def __init__(self, client, prefix: str = "tokenmill:rl:"):
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_SCRIPT)

    async def take(self, key: str, amount: float, capacity: float) -> Take:
        allowed, level = await self._script(
            keys=[self._prefix + key], args=[amount, capacity, "take"]
        )
        level = float(level)
        if allowed:
            return Take(True, level, 0.0)
        return Take(False, level, (amount - level) * 60.0 / capacity)

    async def adjust(self, key: str, delta: float, capacity: float) -> float:
        _, level = await self._script(keys=[self._prefix + key], args=[delta, capacity, "adjust"])
        return float(level)
