"""Where the response cache keeps answers: in this process or in Redis, bounded both ways.

Both stores bound the number of entries and their total bytes, evict the least recently
used first, and expire entries after a TTL. For the semantic cache an entry may also
carry a prompt embedding, filed under a bucket (everything of the key but the prompt);
evicting the entry drops its vector too.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class CacheLimits:
    max_entries: int
    max_bytes: int
    ttl_s: float


class CacheStore(Protocol):
    async def get(self, key: str) -> bytes | None:
        """The value, refreshed as recently used; None if absent or expired."""

    async def put(
        self, key: str, value: bytes, bucket: str | None = None, vector: np.ndarray | None = None
    ) -> None:
        """Stores `value` (and its embedding under `bucket`), evicting as needed."""

    async def vectors(self, bucket: str) -> tuple[list[str], np.ndarray]:
        """Keys and (K, D) float32 embeddings of a bucket's live entries."""


class MemoryCacheStore:
    """An LRU dict in this process."""

    def __init__(self, limits: CacheLimits, clock=time.monotonic):
        self.limits = limits
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes, str | None]] = OrderedDict()
        self._vectors: dict[str, dict[str, np.ndarray]] = {}
        self._bytes = 0

    @property
    def num_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[1]

    async def put(
        self, key: str, value: bytes, bucket: str | None = None, vector: np.ndarray | None = None
    ) -> None:
        if len(value) > self.limits.max_bytes:
            return  # larger than the whole cache: not worth evicting everything for
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self._clock() + self.limits.ttl_s, value, bucket)
        self._bytes += len(value)
        if bucket is not None and vector is not None:
            self._vectors.setdefault(bucket, {})[key] = np.asarray(vector, dtype=np.float32)
        while len(self._entries) > self.limits.max_entries or self._bytes > self.limits.max_bytes:
            self._drop(next(iter(self._entries)))

    async def vectors(self, bucket: str) -> tuple[list[str], np.ndarray]:
        now = self._clock()
        found = self._vectors.get(bucket, {})
        keys = [k for k in found if self._entries[k][0] >= now]
        if not keys:
            return [], np.zeros((0, 0), dtype=np.float32)
        return keys, np.stack([found[k] for k in keys])

    def _drop(self, key: str) -> None:
        _, value, bucket = self._entries.pop(key)
        self._bytes -= len(value)
        if bucket is not None:
            vectors = self._vectors.get(bucket)
            if vectors is not None:
                vectors.pop(key, None)
                if not vectors:
                    del self._vectors[bucket]


# KEYS: 1 lru zset, 2 sizes hash, 3 bytes counter, 4 bucket-of hash, 5 the entry,
# 6 its vector hash (or ""); ARGV: key, value, ttl ms, now, max entries, max bytes,
# vector bytes (or ""). Evicted entries take their vectors with them.
_PUT = """
local prefix = ARGV[8]
redis.call('SET', KEYS[5], ARGV[2], 'PX', ARGV[3])
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
redis.call('HSET', KEYS[2], ARGV[1], string.len(ARGV[2]))
redis.call('INCRBY', KEYS[3], string.len(ARGV[2]) - old)
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
if KEYS[6] ~= '' then
  redis.call('HSET', KEYS[6], ARGV[1], ARGV[7])
  redis.call('HSET', KEYS[4], ARGV[1], KEYS[6])
end
while redis.call('ZCARD', KEYS[1]) > tonumber(ARGV[5])
      or tonumber(redis.call('GET', KEYS[3]) or '0') > tonumber(ARGV[6]) do
  local victim = redis.call('ZPOPMIN', KEYS[1])[1]
  if not victim then break end
  local size = tonumber(redis.call('HGET', KEYS[2], victim) or '0')
  redis.call('HDEL', KEYS[2], victim)
  redis.call('DECRBY', KEYS[3], size)
  redis.call('DEL', prefix .. 'e:' .. victim)
  local vhash = redis.call('HGET', KEYS[4], victim)
  if vhash then
    redis.call('HDEL', vhash, victim)
    redis.call('HDEL', KEYS[4], victim)
  end
end
return 1
"""


class RedisCacheStore:
    """The same bounds in Redis, shared by every process pointing at it."""

    def __init__(self, client, limits: CacheLimits, prefix: str = "tokenmill:cache:"):
        self._client = client
        self.limits = limits
        self._p = prefix
        self._put = client.register_script(_PUT)

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(self._p + "e:" + key)
        if value is None:
            return None
        await self._client.zadd(self._p + "lru", {key: time.time()})
        return value

    async def put(
        self, key: str, value: bytes, bucket: str | None = None, vector: np.ndarray | None = None
    ) -> None:
        if len(value) > self.limits.max_bytes:
            return
        vhash = self._p + "v:" + bucket if bucket is not None and vector is not None else ""
        vbytes = np.asarray(vector, dtype="<f4").tobytes() if vhash else b""
        await self._put(
            keys=[
                self._p + "lru",
                self._p + "sizes",
                self._p + "bytes",
                self._p + "bucket",
                self._p + "e:" + key,
                vhash,
            ],
            args=[
                key,
                value,
                int(self.limits.ttl_s * 1000),
                time.time(),
                self.limits.max_entries,
                self.limits.max_bytes,
                vbytes,
                self._p,
            ],
        )

    async def vectors(self, bucket: str) -> tuple[list[str], np.ndarray]:
        found = await self._client.hgetall(self._p + "v:" + bucket)
        keys, rows = [], []
        for key, raw in found.items():
            key = key.decode() if isinstance(key, bytes) else key
            keys.append(key)
            rows.append(np.frombuffer(raw, dtype="<f4"))
        if not keys:
            return [], np.zeros((0, 0), dtype=np.float32)
        return keys, np.stack(rows)
