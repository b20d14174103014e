"""Rate limits, shared through Redis when MAILING_REDIS_URL is set, else in-process: fixed
windows for requests and emails per address, and the global send rate of update emails.

Keys never hold a raw address: callers pass a keyed hash. Per-IP keys name `client_bucket(ip)`:
an IPv4 address as it is, an IPv6 client by its /64 (one customer's network: the addresses in
it cost nothing to rotate through).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv6Address, IPv6Network, ip_address
from typing import Any, Protocol
from weakref import WeakKeyDictionary

from mailing.config import get_settings


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int  # seconds until the window resets


def client_bucket(ip: str) -> str:
    """The per-IP key part for a client: IPv4 as it is, IPv6 by its /64."""
    try:
        address = ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(IPv6Network((address, 64), strict=False))
    return str(address)


class Limiter(Protocol):
    def hit(self, key: str, limit: int, window: int) -> Verdict: ...
    def count(self, key: str) -> tuple[int, int]:
        """(hits in the key's current window, seconds left of it), without counting one."""
        ...

    def extend(self, key: str, window: int) -> int:
        """Count a hit and restart the key's window: the count lasts until `window` seconds pass
        without one. Returns the count."""
        ...

    def hold(self, key: str, seconds: int) -> None:
        """Mark the key for `seconds` (`count` answers 1 and the seconds left until then)."""
        ...

    def clear(self, key: str) -> None:
        """Forget one key's count."""
        ...

    def acquire(self, key: str, seconds: int) -> bool:
        """`hold` the key, unless it is held or counted already: True if this call took it."""
        ...

    async def hit_async(self, key: str, limit: int, window: int) -> Verdict: ...
    def hit_many(self, keys: Sequence[str], limit: int, window: int) -> list[Verdict]: ...
    def forget(self, key_prefix: str, key: str) -> None: ...


class MemoryLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}

    def hit(self, key: str, limit: int, window: int) -> Verdict:
        now = time.monotonic()
        with self._lock:
            count, reset = self._counts.get(key, (0, now + window))
            if now >= reset:
                count, reset = 0, now + window
            count += 1
            self._counts[key] = (count, reset)
            if len(self._counts) > 100_000:
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        return Verdict(count <= limit, max(1, math.ceil(reset - now)))

    def count(self, key: str) -> tuple[int, int]:
        now = time.monotonic()
        with self._lock:
            count, reset = self._counts.get(key, (0, now))
        return (count, math.ceil(reset - now)) if reset > now else (0, 0)

    def extend(self, key: str, window: int) -> int:
        now = time.monotonic()
        with self._lock:
            count, reset = self._counts.get(key, (0, now))
            count = count + 1 if reset > now else 1
            self._counts[key] = (count, now + window)
        return count

    def hold(self, key: str, seconds: int) -> None:
        with self._lock:
            self._counts[key] = (1, time.monotonic() + seconds)

    def clear(self, key: str) -> None:
        with self._lock:
            self._counts.pop(key, None)

    def acquire(self, key: str, seconds: int) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._counts.get(key, (0, now))[1] > now:
                return False
            self._counts[key] = (1, now + seconds)
        return True

    async def hit_async(self, key: str, limit: int, window: int) -> Verdict:
        return self.hit(key, limit, window)  # a dict under a lock: nothing to wait for

    def hit_many(self, keys: Sequence[str], limit: int, window: int) -> list[Verdict]:
        return [self.hit(key, limit, window) for key in keys]

    def forget(self, key_prefix: str, key: str) -> None:
        with self._lock:
            for k in [k for k in self._counts if k.startswith(key_prefix) and k.endswith(key)]:
                del self._counts[k]


class RedisLimiter:
    """Fixed windows in Redis: each key is counted and given its expiry by one script, so any
    number of keys costs one command and one round trip (a pipeline of INCR, EXPIRE and TTL per
    key cost the web process 1.3 times the CPU for one key, 1.7 times for four)."""

    def __init__(self, url: str) -> None:
        import redis

        self._url = url
        self._redis = redis.Redis.from_url(url, **REDIS_TIMEOUTS)
        self._count = self._redis.register_script(_COUNT_HITS)
        # An asyncio client belongs to the loop it first ran on: one per loop.
        self._async: WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = WeakKeyDictionary()

    def hit(self, key: str, limit: int, window: int) -> Verdict:
        return self.hit_many([key], limit, window)[0]

    def count(self, key: str) -> tuple[int, int]:
        pipe = self._redis.pipeline()
        pipe.get(_key(key))
        pipe.ttl(_key(key))
        count, left = pipe.execute()
        return (int(count), max(1, int(left))) if count is not None else (0, 0)

    def extend(self, key: str, window: int) -> int:
        pipe = self._redis.pipeline()
        pipe.incr(_key(key))
        pipe.expire(_key(key), window)
        return int(pipe.execute()[0])

    def hold(self, key: str, seconds: int) -> None:
        self._redis.set(_key(key), 1, ex=seconds)

    def clear(self, key: str) -> None:
        self._redis.delete(_key(key))

    def acquire(self, key: str, seconds: int) -> bool:
        return bool(self._redis.set(_key(key), 1, ex=seconds, nx=True))

    async def hit_async(self, key: str, limit: int, window: int) -> Verdict:
        """`hit` from the event loop: no hand-off to a thread (with one for the per-IP limit,
        sign-ups were 7-18 % slower at 8 connections and 30 % at 32), and the loop is never
        blocked, even by a Redis that hangs."""
        loop = asyncio.get_running_loop()
        count = self._async.get(loop)
        if count is None:
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(self._url, **REDIS_TIMEOUTS)
            count = self._async[loop] = client.register_script(_COUNT_HITS)
        return _verdicts(await count(keys=[_key(key)], args=[window]), limit, window)[0]

    def hit_many(self, keys: Sequence[str], limit: int, window: int) -> list[Verdict]:
        """Count a hit on each key, in one round trip."""
        if not keys:
            return []
        return _verdicts(self._count(keys=[_key(k) for k in keys], args=[window]), limit, window)

    def forget(self, key_prefix: str, key: str) -> None:
        for k in self._redis.scan_iter(match=f"mailing:rl:{key_prefix}*{key}"):
            self._redis.delete(k)


REDIS_TIMEOUTS: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}

# For each key: count the hit; a key without an expiry (a new window) gets the window's length;
# answer the count and the seconds left, two numbers per key.
_COUNT_HITS = """
local answers = {}
for _, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  local left = redis.call('TTL', key)
  if left < 0 then
    redis.call('EXPIRE', key, ARGV[1])
    left = tonumber(ARGV[1])
  end
  answers[#answers + 1] = count
  answers[#answers + 1] = left
end
return answers
"""


def _key(key: str) -> str:
    return f"mailing:rl:{key}"


def _verdicts(answers: list[Any], limit: int, window: int) -> list[Verdict]:
    return [
        Verdict(int(count) <= limit, max(1, int(left) if int(left) > 0 else window))
        for count, left in zip(answers[0::2], answers[1::2], strict=True)
    ]


@lru_cache
def get_limiter() -> Limiter:
    url = get_settings().redis_url
    return RedisLimiter(url) if url else MemoryLimiter()


class SendRate:
    """MAILING_SEND_RATE messages a second across every worker: a per-second counter in Redis
    (in-process without Redis). A batch takes a commit chunk's worth at a time."""

    def __init__(self, rate: float, redis_url: str | None) -> None:
        self.rate = int(rate)
        self._lock = threading.Lock()
        self._counts: dict[int, int] = {}
        self._redis: Any = None
        if self.rate > 0 and redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=2)

    def acquire(self, n: int) -> None:
        """Block until `n` messages may go (at once, when unlimited)."""
        if self.rate <= 0:
            return
        needed = n
        while needed > 0:
            now = time.time()
            second = int(now)
            needed -= self._take(second, min(needed, self.rate))
            if needed > 0:
                time.sleep(max(0.001, second + 1 - now))

    def _take(self, second: int, want: int) -> int:
        if self._redis is not None:
            key = f"mailing:send-rate:{second}"
            pipe = self._redis.pipeline()
            pipe.incrby(key, want)
            pipe.expire(key, 5)
            used = int(pipe.execute()[0])
        else:
            with self._lock:
                used = self._counts.get(second, 0) + want
                self._counts = {second: used}
        before = used - want
        return max(0, min(want, self.rate - before))


_rates: dict[tuple[float, str | None], SendRate] = {}


def send_rate() -> SendRate:
    settings = get_settings()
    key = (settings.send_rate, settings.redis_url)
    if key not in _rates:
        _rates[key] = SendRate(settings.send_rate, settings.redis_url)
    return _rates[key]
