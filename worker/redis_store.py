"""What every askq store shares: the Redis connection, the server's clock, the error boundary.

askq's Redis side is split by what the caller is doing (as arq does): `store.JobStore` (one
job's record), `batches.BatchStore` (submitting, batch reads), `dispatch.DispatchStore`
(claiming due work, heartbeats, the sweep), `limits.LimitStore` (in-flight slots, the rate
budget, learned durations). Each is a thin typed face over Lua scripts in `worker/lua.py`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from worker.errors import RedisFull, StoreError
from worker.keys import Keys
from worker.settings import Settings

T = TypeVar("T")

REDIS_RETRIES = 2
"""redis-py re-sends a command after a timeout or a dropped connection (its default: 10
times). Every state-changing script answers a repeat with its first outcome (lua.py), so a
couple of quick re-sends are safe and save a task a lease's wait; more would only stretch an
outage into a hang."""


SOCKET_TIMEOUT_S = 10
"""A reply slower than this fails the command (a half-open link); blocking reads wait less."""
CONNECTION: dict[str, Any] = {
    "socket_timeout": SOCKET_TIMEOUT_S,
    "socket_connect_timeout": 5,
    "health_check_interval": 15,
    "retry_on_timeout": True,
}


def connect(settings: Settings) -> redis.Redis:
    """A Redis client with timeouts, so a half-open link fails fast instead of hanging."""
    return redis.Redis.from_url(
        settings.redis_url,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), REDIS_RETRIES),
        **CONNECTION,
    )


def connect_async(settings: Settings) -> redis.asyncio.Redis:
    """`connect` for asyncio: the same timeouts and re-sends."""
    return redis.asyncio.Redis.from_url(
        settings.redis_url,
        retry=redis.asyncio.retry.Retry(ExponentialBackoff(cap=0.5, base=0.05), REDIS_RETRIES),
        **CONNECTION,
    )


def store_error(exc: redis.RedisError) -> StoreError:
    """askq's error for a failed Redis call: `RedisFull` when it is out of memory."""
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM" in str(exc):
        return RedisFull(
            "Redis is out of memory (maxmemory reached); finished jobs free it as "
            "their results expire (ASKQ_RESULT_TTL_S), or raise maxmemory"
        )
    return StoreError(f"Redis failed: {exc}")


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def request_id() -> str:
    """Names one call of a state-changing script, so a re-sent call is recognised."""
    return uuid.uuid4().hex


class ServerClock:
    """Redis server time, read cheaply: the offset from this host's clock is learned from
    replies that carry the server's time (heartbeats, claims), so a host whose clock is off
    by minutes still agrees with every other on leases, due times and deadlines."""

    def __init__(self) -> None:
        self.offset = 0.0

    def sync(self, server_now: float) -> None:
        self.offset = server_now - time.time()

    def now(self) -> float:
        return time.time() + self.offset


class RedisStore:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)

    def server_time(self) -> float:
        seconds, micros = self._call(self.redis.time)
        return float(seconds) + float(micros) / 1e6

    @staticmethod
    def _call(operation: Callable[[], T]) -> T:
        try:
            return operation()
        except redis.RedisError as exc:
            raise store_error(exc) from exc
