"""The connection policy: each worker process keeps up to MAILING_SMTP_CONNECTIONS persistent
relay connections, each used by one lane at a time (a thread with its own connection and its
own chunk), and all workers together hold at most MAILING_SMTP_CONNECTIONS_TOTAL.

A connection is opened only with a lease: a member of one Redis sorted set scored by its expiry,
taken by one script only while fewer than the cap are alive (in-process without Redis, and if
Redis cannot be reached: then only the per-process cap holds). A lease is renewed while its
connection is used and given back when the connection closes; a killed worker's leases expire
after LEASE_SECONDS. A connection idle for IDLE_SECONDS is closed and its lease given back, so
idle workers do not hold the relay's connection slots. Nothing opens a connection for one email.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mailing.config import Settings, get_settings
from mailing.mail.relay import Mailer
from mailing.ratelimit import REDIS_TIMEOUTS

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0  # a lease not renewed this long is free again (its worker was killed)
IDLE_SECONDS = 10.0  # an idle connection is closed after this long
WAIT_SECONDS = 1.0  # how long a lane waits for a free connection before giving up its turn
LEASES_KEY = "mailing:smtp-leases"

# Drop expired leases, then add this one if fewer than the cap are alive (1) or not (0).
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  redis.call('EXPIRE', KEYS[1], math.ceil(ARGV[5]))
  return 1
end
return 0
"""


class Leases:
    """The global cap: Redis when configured, else this process's count."""

    def __init__(self, redis_url: str | None) -> None:
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._redis: Any = None
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url, **REDIS_TIMEOUTS)
            self._acquire = self._redis.register_script(_ACQUIRE)

    def acquire(self, member: str, cap: int) -> bool:
        """Take (or renew) the lease `member`; False if `cap` leases are alive already."""
        if self._redis is not None:
            now = time.time()
            try:
                args = [now, now + LEASE_SECONDS, member, cap, LEASE_SECONDS]
                return bool(self._acquire(keys=[LEASES_KEY], args=args))
            except Exception as exc:  # Redis away: the per-process cap still holds
                log.warning("connection leases unavailable (%s)", type(exc).__name__)
                return True
        with self._lock:
            if member in self._held or len(self._held) < cap:
                self._held.add(member)
                return True
            return False

    def release(self, member: str) -> None:
        if self._redis is not None:
            try:
                self._redis.zrem(LEASES_KEY, member)
            except Exception as exc:  # it expires by itself
                log.warning("connection lease not given back (%s)", type(exc).__name__)
        with self._lock:
            self._held.discard(member)


@dataclass
class Lane:
    """One relay connection and its lease, used by one thread at a time."""

    mailer: Mailer
    lease: str
    relay: tuple[Any, ...]
    renewed_at: float = field(default_factory=time.monotonic)
    used_at: float = field(default_factory=time.monotonic)


def relay_of(settings: Settings) -> tuple[Any, ...]:
    return (settings.smtp_host, settings.smtp_port, settings.smtp_username, settings.redis_url)


class Pool:
    """This process's relay connections."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[Lane] = []
        self._open = 0
        self._leases: dict[str | None, Leases] = {}
        self._janitor: threading.Thread | None = None
        self._executor: tuple[int, ThreadPoolExecutor] | None = None
        # Lanes the last pipeline run had left at its end, by relay and the lane count it was
        # given (mail/pipeline.py starts the next with twice as many).
        self.lanes_kept: dict[tuple[Any, ...], int] = {}

    def leases(self, settings: Settings) -> Leases:
        with self._lock:
            if settings.redis_url not in self._leases:
                self._leases[settings.redis_url] = Leases(settings.redis_url)
            return self._leases[settings.redis_url]

    def take(self, wait: float = WAIT_SECONDS) -> Lane | None:
        """A lane with a live lease: an idle one, or a new one if both caps allow; waits up to
        `wait` seconds for one, else None."""
        deadline = time.monotonic() + wait
        while True:
            lane = self._try_take(get_settings())
            if lane is not None or time.monotonic() >= deadline:
                return lane
            time.sleep(0.02)

    def _try_take(self, settings: Settings) -> Lane | None:
        relay = relay_of(settings)
        with self._lock:
            stale = [lane for lane in self._idle if lane.relay != relay]
            self._idle = [lane for lane in self._idle if lane.relay == relay]
            lane = self._idle.pop() if self._idle else None
        for old in stale:
            self._close(old, settings)
        if lane is not None and self.renew(lane, force=True):
            return lane
        if lane is not None:
            self._close(lane, settings)
        with self._lock:
            if self._open >= settings.smtp_connections:
                return None
            self._open += 1
        member = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        if not self.leases(settings).acquire(member, settings.smtp_connections_total):
            with self._lock:
                self._open -= 1
            return None
        return Lane(Mailer(settings), member, relay)

    def renew(self, lane: Lane, *, force: bool = False) -> bool:
        """Keep the lane's lease alive (a round trip to Redis every LEASE_SECONDS / 3)."""
        now = time.monotonic()
        if not force and now - lane.renewed_at < LEASE_SECONDS / 3:
            return True
        settings = get_settings()
        if not self.leases(settings).acquire(lane.lease, settings.smtp_connections_total):
            return False
        lane.renewed_at = now
        return True

    def give(self, lane: Lane) -> None:
        lane.used_at = time.monotonic()
        with self._lock:
            self._idle.append(lane)
            if self._janitor is None or not self._janitor.is_alive():
                self._janitor = threading.Thread(target=self._sweep, daemon=True)
                self._janitor.start()

    def close(self, lane: Lane) -> None:
        self._close(lane, get_settings())

    def _close(self, lane: Lane, settings: Settings) -> None:
        lane.mailer.close()
        self.leases(settings).release(lane.lease)
        with self._lock:
            self._open -= 1

    def _sweep(self) -> None:
        """Close connections idle for IDLE_SECONDS; ends when none is idle."""
        while True:
            time.sleep(IDLE_SECONDS / 4)
            now = time.monotonic()
            with self._lock:
                old = [lane for lane in self._idle if now - lane.used_at >= IDLE_SECONDS]
                self._idle = [lane for lane in self._idle if lane not in old]
                if not self._idle and not old:
                    self._janitor = None
                    return
            for lane in old:
                self.close(lane)

    def executor(self, lanes: int) -> ThreadPoolExecutor:
        """The threads lanes run in (made in the process that uses them, after any fork)."""
        with self._lock:
            if self._executor is None or self._executor[0] < lanes:
                self._executor = (lanes, ThreadPoolExecutor(lanes, thread_name_prefix="lane"))
            return self._executor[1]

    def close_all(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for lane in idle:
            self.close(lane)


POOL = Pool()
