"""The global limits, held in Redis and shared by every worker: in-flight slots and the
request budget; and what askq learns about run durations (predictive polling)."""

from __future__ import annotations

import redis

from worker import lua
from worker.durations import Durations
from worker.redis_store import RedisStore, request_id, text
from worker.settings import Settings


class LimitStore(RedisStore):
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        super().__init__(client, settings)
        self._acquire = client.register_script(lua.ACQUIRE_SLOT)
        self._reclaim = client.register_script(lua.RECLAIM_SLOTS)
        self._gcra = client.register_script(lua.GCRA)

    def acquire_slot(self, job_id: str) -> bool:
        """One of ASKQ_MAX_INFLIGHT slots, shared by all workers. False queues the job; the
        slot is handed to it when one frees (transition script) or by the sweep."""
        k = self.keys
        return bool(
            self._call(
                lambda: self._acquire(
                    keys=[k.inflight, k.waiting, k.due, k.seq],
                    args=[job_id, self.settings.max_inflight],
                )
            )
        )

    def reclaim_slots(self, limit: int = 500) -> int:
        """(Sweep) free the slots of finished or vanished jobs and hand them to waiters. Each
        slot is looked at once a lease (a job's end frees its own slot), at most `limit` a
        call."""
        k, s = self.keys, self.settings
        return int(
            self._call(
                lambda: self._reclaim(
                    keys=[k.inflight, k.waiting, k.due, k.wake],
                    args=[k.job_prefix, s.max_inflight, repr(s.lease_s), limit],
                )
            )
        )

    def inflight_count(self) -> int:
        return int(self._call(lambda: self.redis.zcard(self.keys.inflight)))

    def spend_requests(self, count: int, *, force: bool = False) -> float:
        """Take `count` requests from the global ASKQ_RATE_LIMIT_RPM budget: the seconds to
        wait before trying again, or 0.0 when they may go now."""
        rpm = self.settings.rate_limit_rpm
        if rpm <= 0:
            return 0.0
        interval_ms = 60000.0 / rpm
        burst = max(1, rpm // 60)
        args: list[str | int] = [repr(interval_ms), burst, count, "1" if force else "0"]
        args.append(request_id())
        wait_ms = self._call(lambda: self._gcra(keys=[self.keys.rate_limit], args=args))
        return float(text(wait_ms)) / 1000.0

    def durations(self, key: str) -> Durations | None:
        """What was learned of runs of this assistant or model, or None before any ended."""
        raw = self._call(lambda: self.redis.hget(self.keys.durations, key))
        return Durations.parse(text(raw)) if raw is not None else None

    def learn_duration(self, key: str, *, running_at: float, done_at: float) -> None:
        """Fold one finished run in. Read-modify-write: two workers racing lose one
        observation, which a learning estimate can afford."""
        known = self.durations(key)
        learned = (
            Durations.seed(running_at, done_at)
            if known is None
            else known.learn(running_at, done_at)
        )
        self._call(lambda: self.redis.hset(self.keys.durations, key, learned.dump()))
