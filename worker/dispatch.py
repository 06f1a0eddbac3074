"""The dispatching side of Redis: claiming due work, worker heartbeats, the sweep.

Claimed due entries are re-scored to a lease end rather than removed, so `due` is also the
lease index. A task's lease lives as long as its worker's heartbeat (per worker process, one
call a beat): a slow but alive task is never raced by a second dispatch, and the jobs of a
worker whose heartbeat lapsed are made due at once by the sweep.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import redis

from worker import lua
from worker.redis_store import RedisStore, request_id, text
from worker.settings import Settings

QUEUE_HIGH_WATER = 8
"""Messages waiting in a task's queue (not yet taken by any worker) past which the claim
leaves that task's due entries due: a backed-up queue gains nothing from more messages, and
entries that wait in the due set are packed into fewer messages when it drains."""


@dataclass(frozen=True)
class Claim:
    job_id: str
    task: str


@dataclass(frozen=True)
class Claimed:
    now: float
    """The server's time when the claim ran."""
    claims: list[Claim]
    held: int = 0
    """Due entries left due because their task's queue is backed up (QUEUE_HIGH_WATER)."""


@dataclass(frozen=True)
class Beat:
    now: float
    """The server's time."""
    moved: int
    """Jobs of dead workers this beat moved on."""


@dataclass(frozen=True)
class Expired:
    due: int
    pruned: int


class DispatchStore(RedisStore):
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        super().__init__(client, settings)
        self._claim = client.register_script(lua.CLAIM_DUE)
        self._heartbeat = client.register_script(lua.HEARTBEAT)
        self._expire = client.register_script(lua.EXPIRE_OVERDUE)

    def claim_due(self, limit: int, worker_id: str) -> Claimed:
        k, s = self.keys, self.settings
        req = request_id()
        raw = self._call(
            lambda: self._claim(
                keys=[
                    k.due,
                    k.inflight,
                    k.waiting,
                    k.seq,
                    k.deadlines,
                    k.workers,
                    k.claim_reply(req),
                ],
                args=[
                    limit,
                    repr(s.lease_s),
                    k.job_prefix,
                    s.max_inflight,
                    repr(s.worker_dead_after_s),
                    repr(s.task_bound_s),
                    k.worker_prefix,
                    k.worker_suffix,
                    worker_id,
                    repr(s.held_lease_s),
                    k.broker_queue_prefix,
                    repr(s.queued_bound_s),
                    QUEUE_HIGH_WATER,
                ],
            )
        )
        claims = [Claim(text(raw[i]), text(raw[i + 1])) for i in range(2, len(raw), 2)]
        return Claimed(float(text(raw[0])), claims, int(raw[1]))

    def next_due_at(self) -> float | None:
        first = self._call(lambda: self.redis.zrange(self.keys.due, 0, 0, withscores=True))
        return float(first[0][1]) if first else None

    def wait_for_wake(self, timeout: float) -> bool:
        """Block up to `timeout` s for a poke; True when poked."""
        timeout = max(0.01, min(timeout, 5.0))

        def pop() -> bool:
            try:
                return self.redis.blpop([self.keys.wake], timeout=timeout) is not None
            except redis.TimeoutError:
                return False

        return self._call(pop)

    def heartbeat(self, worker_id: str, running: Iterable[str]) -> Beat:
        """This worker process is alive and running these jobs. Every beat also moves on the
        jobs of workers whose heartbeat lapsed (ASKQ_WORKER_DEAD_AFTER_S): found within a
        beat of that, by whichever worker beats first."""
        k, s = self.keys, self.settings
        ttl_ms = int(s.worker_dead_after_s * 4000)
        now, moved = self._call(
            lambda: self._heartbeat(
                keys=[k.workers, k.worker_jobs(worker_id), k.due, k.wake],
                args=[
                    *(worker_id, ttl_ms, repr(s.worker_dead_after_s), k.job_prefix),
                    *(k.worker_prefix, k.worker_suffix),
                    *running,
                ],
            )
        )
        return Beat(float(text(now)), int(moved))

    # -- sweeping -------------------------------------------------------------------------

    def try_sweep_lock(self, holder: str, ttl_s: float) -> bool:
        return bool(
            self._call(
                lambda: self.redis.set(
                    self.keys.sweep_lock, holder, nx=True, px=max(1, int(ttl_s * 1000))
                )
            )
        )

    def expire_overdue(self, limit: int = 500) -> Expired:
        """Make jobs past their deadline due (their task expires them); prune the deadline
        entries of jobs that already ended or vanished."""
        k = self.keys
        due, pruned = self._call(
            lambda: self._expire(keys=[k.deadlines, k.due, k.wake], args=[k.job_prefix, limit])
        )
        return Expired(int(due), int(pruned))
