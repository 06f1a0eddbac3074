"""The global limits, held in Redis and shared by every worker: in-flight slots and the
request budget; and what askq learns about run durations (predictive polling)."""

from __future__ import annotations

import redis

from worker import lua
from worker.durations import Durations
from worker.redis_store import RedisStore, request_id, text
from worker.settings import Settings

COLD_SCOUTS = 8
"""Runs of a key nothing is learned about that are polled as usual; the first looks of the
runs started after them wait for what the scouts learn (a cold batch's polls before any run
has ended find nothing: docs/benchmarks.md)."""


class LimitStore(RedisStore):
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        super().__init__(client, settings)
        self._acquire = client.register_script(lua.ACQUIRE_SLOT)
        self._reclaim = client.register_script(lua.RECLAIM_SLOTS)
        self._gcra = client.register_script(lua.GCRA)
        self._cold_start = client.register_script(lua.COLD_START)
        self._retarget = client.register_script(lua.RETARGET_COLD)

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

    def learn_duration(self, key: str, *, running_at: float, done_at: float) -> Durations | None:
        """Fold one finished run in; returns the durations when they are the key's first
        (the moment cold runs are re-targeted), else None. Read-modify-write: two workers
        racing lose one observation, which a learning estimate can afford."""
        known = self.durations(key)
        learned = (
            Durations.seed(running_at, done_at)
            if known is None
            else known.learn(running_at, done_at)
        )
        self._call(lambda: self.redis.hset(self.keys.durations, key, learned.dump()))
        return learned if known is None else None

    def defer_cold_look(
        self, key: str, job_id: str, *, started: float, deferred: float, earliest: float
    ) -> bool:
        """A run of a key nothing is learned about started: True when its first look is to
        be deferred (`deferred`) and re-targeted once a scout's run ends, False when it is a
        scout (polled as usual)."""
        k, ttl = self.keys, int(max(60.0, 4 * self.settings.poll_max_s))
        member = f"{job_id}|{started!r}|{deferred!r}"
        return bool(
            self._call(
                lambda: self._cold_start(
                    keys=[k.cold_scouts(key), k.cold_looks(key)],
                    args=[COLD_SCOUTS, ttl, member, repr(earliest)],
                )
            )
        )

    def retarget_cold(self, key: str, first_look_s: float) -> int:
        """The key's first duration is learned: bring the deferred first looks of its runs to
        started + `first_look_s` (never before their earliest look, nor now). How many moved."""
        k = self.keys
        return int(
            self._call(
                lambda: self._retarget(
                    keys=[k.cold_looks(key), k.due, k.wake, k.cold_scouts(key)],
                    args=[k.job_prefix, repr(first_look_s)],
                )
            )
        )
