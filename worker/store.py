"""The job store: every read and write askq makes to Redis about jobs and batches.

The job record is the source of truth (Celery messages carry only job ids); every change
is a compare-and-set on the record's version, made by one Lua script together with the
indexes it affects, so a duplicate or late task can never corrupt a job.
"""

from __future__ import annotations

import functools
import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar, cast

import redis

from worker import lua
from worker.durations import Durations
from worker.errors import NotFound, PartialSubmit, StoreError
from worker.keys import Keys, job_latency_bucket
from worker.models import BatchRecord, JobRecord, JobRequest
from worker.settings import Settings
from worker.states import JobStatus

SUBMIT_CHUNK = 500
RETRIED_STATUSES = frozenset({JobStatus.FAILED, JobStatus.EXPIRED})
"""What `--retry-failed` runs again: not cancelled (asked for) nor incomplete (would repeat)."""
T = TypeVar("T")


def item_keys(requests: Sequence[JobRequest]) -> list[str]:
    """What makes an item "the same" on re-submission: its custom_id, else the request itself
    (with a count, so a question asked twice in one file is two items)."""
    seen: dict[str, int] = {}
    keys = []
    for request in requests:
        if request.custom_id is not None:
            keys.append(f"id:{request.custom_id}")
            continue
        digest = hashlib.sha1(request.model_dump_json().encode()).hexdigest()
        seen[digest] = seen.get(digest, 0) + 1
        keys.append(f"sha1:{digest}:{seen[digest]}")
    return keys


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex}"


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex}"


def connect(settings: Settings) -> redis.Redis:
    """A Redis client with timeouts, so a half-open link fails fast instead of hanging."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=15,
        retry_on_timeout=True,
    )


@dataclass(frozen=True)
class Loaded:
    record: JobRecord
    version: int


@dataclass(frozen=True)
class Claim:
    job_id: str
    task: str


@dataclass(frozen=True)
class Submitted:
    batch_id: str | None
    job_ids: list[str]
    skipped: int = 0


class JobStore:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._submit = client.register_script(lua.SUBMIT)
        self._transition = client.register_script(lua.TRANSITION)
        self._claim = client.register_script(lua.CLAIM_DUE)
        self._acquire = client.register_script(lua.ACQUIRE_SLOT)
        self._reclaim = client.register_script(lua.RECLAIM_SLOTS)
        self._gcra = client.register_script(lua.GCRA)
        self._take_cancel = client.register_script(lua.TAKE_CANCEL)
        self._retry = client.register_script(lua.RETRY)
        self._take_ticket = client.register_script(lua.TAKE_TICKET)

    # -- submitting -----------------------------------------------------------------------

    def new_record(
        self, request: JobRequest, *, batch_id: str | None, seq: int, now: float
    ) -> JobRecord:
        created = datetime.fromtimestamp(now, UTC)
        deadline = datetime.fromtimestamp(now + self.settings.job_timeout_s, UTC)
        return JobRecord(
            job_id=new_job_id(),
            batch_id=batch_id,
            seq=seq,
            request=request,
            created_at=created,
            deadline_at=deadline,
        )

    def submit(
        self, requests: Sequence[JobRequest], *, batch: bool, name: str | None = None
    ) -> Submitted:
        """Store the jobs and make them due. The batch record is written first, so a batch
        interrupted half-way still lists every job it accepted. Submitting to a batch name
        used before adds to that batch and skips the items it already holds."""
        now = time.time()
        k = self.keys
        batch_ttl = int(self.settings.result_ttl_s + self.settings.job_timeout_s)
        batch_id = self._batch_for(name, len(requests), batch_ttl) if batch else None
        job_ids: list[str] = []
        skipped = 0
        keys = item_keys(requests)
        for start in range(0, len(requests), SUBMIT_CHUNK):
            chunk = list(enumerate(requests[start : start + SUBMIT_CHUNK], start))
            pipe = self.redis.pipeline(transaction=False)
            jobs = []
            for index, request in chunk:
                job = self.new_record(request, batch_id=batch_id, seq=index, now=now)
                jobs.append(job.job_id)
                thread = request.thread_id
                self._submit(
                    keys=[
                        k.job(job.job_id),
                        k.batch_jobs(batch_id) if batch_id else k.job(job.job_id),
                        k.batch_counts(batch_id) if batch_id else k.job(job.job_id),
                        k.counts,
                        k.due,
                        k.deadlines,
                        k.thread_queue(thread) if thread else k.job(job.job_id),
                        k.batch_items(batch_id) if batch_id else k.job(job.job_id),
                    ],
                    args=[
                        job.job_id,
                        job.to_json(),
                        # a microsecond apart: equal scores would start a batch in id order
                        repr(now + index * 1e-6),
                        repr(job.deadline_at.timestamp()),
                        "1" if batch_id else "0",
                        "1" if thread else "0",
                        batch_ttl,
                        keys[index],
                    ],
                    client=pipe,
                )
            pipe.rpush(k.wake, "1")
            pipe.ltrim(k.wake, 0, 63)
            try:
                outcomes = self._call(pipe.execute)[: len(jobs)]
            except StoreError as exc:
                if batch_id is None or not job_ids:
                    raise
                raise PartialSubmit(
                    f"{exc}; {len(job_ids)} jobs of {batch_id} were accepted before it",
                    batch_id=batch_id,
                    accepted=len(job_ids),
                ) from exc
            for job_id, accepted in zip(jobs, outcomes, strict=True):
                if accepted:
                    job_ids.append(job_id)
                else:
                    skipped += 1
        return Submitted(batch_id=batch_id, job_ids=job_ids, skipped=skipped)

    def retry_failed(self, batch_id: str, requests: Sequence[JobRequest]) -> int:
        """Run again, under their own job ids, the items of `requests` whose job in the batch
        ended failed or expired (its run, answer and error forgotten). Returns how many."""
        k = self.keys
        items = item_keys(requests)
        found = self._call(lambda: self.redis.hmget(k.batch_items(batch_id), items))
        retried = 0
        now = time.time()
        for job_id in dict.fromkeys(text(j) for j in found if j is not None):
            loaded = self.find(job_id)
            if loaded is None or loaded.record.status not in RETRIED_STATUSES:
                continue
            old = loaded.record
            fresh = self.new_record(old.request, batch_id=batch_id, seq=old.seq, now=now)
            fresh = fresh.model_copy(update={"job_id": job_id})
            thread = old.request.thread_id
            keys = [
                k.job(job_id),
                k.due,
                k.deadlines,
                k.counts,
                k.batch_counts(batch_id),
                k.thread_queue(thread) if thread else k.job(job_id),
                k.wake,
            ]
            args: list[str | int] = [
                loaded.version,
                fresh.to_json(),
                old.status.value,
                repr(now),
                repr(fresh.deadline_at.timestamp()),
                job_id,
                "1" if thread else "0",
            ]
            retried += self._call(functools.partial(self._retry, keys=keys, args=args))
        return retried

    def _batch_for(self, name: str | None, size: int, ttl: int) -> str:
        k = self.keys
        batch_id = new_batch_id()
        if name is not None:
            claimed = self._call(
                lambda: self.redis.set(k.batch_name(name), batch_id, nx=True, ex=ttl)
            )
            if not claimed:
                existing = self._call(lambda: self.redis.get(k.batch_name(name)))
                if existing is not None and self._call(
                    lambda: self.redis.exists(k.batch(text(existing)))
                ):
                    return text(existing)
                self._call(lambda: self.redis.set(k.batch_name(name), batch_id, ex=ttl))
        record = BatchRecord(batch_id=batch_id, name=name, size=size)
        self._call(lambda: self.redis.set(k.batch(batch_id), record.model_dump_json(), ex=ttl))
        self._index_batch(record, ttl)
        return batch_id

    def _index_batch(self, record: BatchRecord, ttl: int) -> None:
        created = record.created_at.timestamp()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.keys.batches, {record.batch_id: created})
        pipe.zremrangebyscore(self.keys.batches, "-inf", created - ttl)
        self._call(pipe.execute)

    # -- reading --------------------------------------------------------------------------

    def load(self, job_id: str) -> Loaded:
        version, raw = self._call(
            lambda: self.redis.hmget(self.keys.job(job_id), ["version", "record"])
        )
        if raw is None or version is None:
            raise NotFound(f"no job {job_id!r} (unknown, or its results expired)")
        return Loaded(JobRecord.from_json(raw), int(version))

    def find(self, job_id: str) -> Loaded | None:
        try:
            return self.load(job_id)
        except NotFound:
            return None

    def load_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self.keys.job(job_id), "record")
        raws = self._call(pipe.execute)
        return [JobRecord.from_json(raw) if raw else None for raw in raws]

    def batch(self, batch_id: str) -> BatchRecord:
        raw = self._call(lambda: self.redis.get(self.keys.batch(batch_id)))
        if raw is None:
            raise NotFound(f"no batch {batch_id!r} (unknown, or its results expired)")
        return BatchRecord.model_validate_json(raw)

    def batch_id_for_name(self, name: str) -> str | None:
        raw = self._call(lambda: self.redis.get(self.keys.batch_name(name)))
        return None if raw is None else text(raw)

    def recent_batches(self, limit: int) -> list[BatchRecord]:
        """The newest `limit` batches, newest first (those whose records expired are left out)."""
        raw = self._call(lambda: self.redis.zrevrange(self.keys.batches, 0, limit - 1))
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in raw:
            assert isinstance(batch_id, bytes)  # no scores asked for
            pipe.get(self.keys.batch(text(batch_id)))
        return [BatchRecord.model_validate_json(raw) for raw in self._call(pipe.execute) if raw]

    def batch_size(self, batch_id: str) -> int:
        return int(self._call(lambda: self.redis.llen(self.keys.batch_jobs(batch_id))))

    def batch_job_ids(self, batch_id: str) -> list[str]:
        raw = self._call(lambda: self.redis.lrange(self.keys.batch_jobs(batch_id), 0, -1))
        return [text(item) for item in raw]

    def batch_counts(self, batch_id: str) -> dict[JobStatus, int]:
        raw = self._call(lambda: self.redis.hgetall(self.keys.batch_counts(batch_id)))
        return {JobStatus(text(key)): int(value) for key, value in raw.items() if int(value) > 0}

    def batch_records(self, batch_id: str, chunk: int = 1000) -> Iterator[JobRecord]:
        """The batch's job records in input order (jobs whose records expired are skipped)."""
        ids = self.batch_job_ids(batch_id)
        for start in range(0, len(ids), chunk):
            for record in self.load_many(ids[start : start + chunk]):
                if record is not None:
                    yield record

    def counts(self) -> dict[JobStatus, int]:
        raw = self._call(lambda: self.redis.hgetall(self.keys.counts))
        return {JobStatus(text(key)): int(value) for key, value in raw.items()}

    # -- changing -------------------------------------------------------------------------

    def transition(
        self,
        loaded: Loaded,
        record: JobRecord,
        *,
        next_task: str | None,
        due_at: float | None,
        now: float | None = None,
    ) -> Loaded | None:
        """Compare-and-set `record` over `loaded`. `due_at` None removes the job from the due
        set. Returns the stored state, or None when the record moved on meanwhile (the
        caller's view is stale and it must do nothing more)."""
        now = time.time() if now is None else now
        k = self.keys
        old = loaded.record
        terminal = record.status.terminal
        thread = record.request.thread_id
        due = "-" if due_at is None else repr(due_at)
        ends = terminal and not old.status.terminal
        latency = max(0.0, now - old.created_at.timestamp())
        version = self._call(
            lambda: self._transition(
                keys=[
                    k.job(record.job_id),
                    k.due,
                    k.deadlines,
                    k.inflight,
                    k.waiting,
                    k.counts,
                    k.batch_counts(old.batch_id) if old.batch_id else k.counts,
                    k.thread_queue(thread) if thread else k.job(record.job_id),
                    k.wake,
                    k.job_latency,
                ],
                args=[
                    loaded.version,
                    record.to_json(),
                    old.status.value,
                    record.status.value,
                    "" if terminal or next_task is None else next_task,
                    due,
                    "1" if terminal else "0",
                    self.settings.result_ttl_s,
                    repr(now),
                    "1" if old.batch_id else "0",
                    "1" if thread else "0",
                    self.settings.max_inflight,
                    record.job_id,
                    job_latency_bucket(latency) if ends else "",
                    repr(latency),
                ],
            )
        )
        if not version:
            return None
        return Loaded(record, int(version))

    def take_ticket(self, job_id: str, task: str) -> bool:
        """True for exactly one task per published message: duplicates and redeliveries of
        the same message find no ticket (or one for another task) and do nothing."""
        return bool(
            self._call(lambda: self._take_ticket(keys=[self.keys.job(job_id)], args=[task]))
        )

    def extend_lease(self, job_id: str, until: float) -> None:
        """Push this job's lease out (only ever later), for tasks that run long."""
        self._call(lambda: self.redis.zadd(self.keys.due, {job_id: until}, xx=True, gt=True))

    def claim_due(self, now: float, limit: int) -> list[Claim]:
        lease_until = now + self.settings.lease_s
        k = self.keys
        raw = self._call(
            lambda: self._claim(
                keys=[k.due, k.inflight, k.waiting, k.seq, k.deadlines],
                args=[
                    repr(now),
                    limit,
                    repr(lease_until),
                    k.job_prefix,
                    self.settings.max_inflight,
                ],
            )
        )
        return [Claim(text(raw[i]), text(raw[i + 1])) for i in range(0, len(raw), 2)]

    def next_due_at(self) -> float | None:
        first = self._call(lambda: self.redis.zrange(self.keys.due, 0, 0, withscores=True))
        return float(first[0][1]) if first else None

    def wait_for_wake(self, timeout: float) -> bool:
        """Block up to `timeout` s for a poke; True when poked."""
        timeout = max(0.01, min(timeout, 5.0))
        try:
            return self.redis.blpop([self.keys.wake], timeout=timeout) is not None
        except redis.TimeoutError:
            return False

    def acquire_slot(self, job_id: str, now: float) -> bool:
        """One of ASKQ_MAX_INFLIGHT slots, shared by all workers. False queues the job; the
        slot is handed to it when one frees (transition script) or by the sweep."""
        k = self.keys
        return bool(
            self._call(
                lambda: self._acquire(
                    keys=[k.inflight, k.waiting, k.due, k.seq],
                    args=[job_id, self.settings.max_inflight, repr(now)],
                )
            )
        )

    def spend_requests(self, count: int, *, force: bool = False) -> float:
        """Take `count` requests from the global ASKQ_RATE_LIMIT_RPM budget: the seconds to
        wait before trying again, or 0.0 when they may go now."""
        rpm = self.settings.rate_limit_rpm
        if rpm <= 0:
            return 0.0
        interval_ms = 60000.0 / rpm
        burst = max(1, rpm // 60)
        wait_ms = self._call(
            lambda: self._gcra(
                keys=[self.keys.rate_limit],
                args=[
                    repr(time.time() * 1000),
                    repr(interval_ms),
                    burst,
                    count,
                    "1" if force else "0",
                ],
            )
        )
        return float(wait_ms) / 1000.0

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

    def request_cancel(self, job_id: str) -> bool:
        """Mark a cancel request; False when the job is unknown."""
        key = self.keys.job(job_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.exists(key)
        pipe.hset(key, "cancel", "requested")
        exists, _ = self._call(pipe.execute)
        if not exists:
            self._call(lambda: self.redis.delete(key))
            return False
        return True

    def take_cancel(self, job_id: str) -> bool:
        now = time.time()
        return bool(
            self._call(
                lambda: self._take_cancel(
                    keys=[self.keys.job(job_id)],
                    args=[repr(now), repr(now - self.settings.lease_s)],
                )
            )
        )

    def cancel_unfinished(self, job_id: str) -> bool:
        """A cancel was asked for and has not been carried out yet."""
        flag = self._call(lambda: self.redis.hget(self.keys.job(job_id), "cancel"))
        return flag is not None and text(flag) != "done"

    def cancel_done(self, job_id: str) -> None:
        self._call(lambda: self.redis.hset(self.keys.job(job_id), "cancel", "done"))

    # -- sweeping -------------------------------------------------------------------------

    def try_sweep_lock(self, holder: str, ttl_s: float) -> bool:
        return bool(
            self._call(
                lambda: self.redis.set(
                    self.keys.sweep_lock, holder, nx=True, px=max(1, int(ttl_s * 1000))
                )
            )
        )

    def overdue(self, now: float, limit: int = 500) -> list[str]:
        raw = self._call(
            lambda: self.redis.zrangebyscore(self.keys.deadlines, "-inf", repr(now), 0, limit)
        )
        return [text(item) for item in cast(list[bytes], raw)]

    def make_due_now(self, job_ids: Iterable[str], now: float) -> None:
        ids = list(job_ids)
        if not ids:
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.keys.due, dict.fromkeys(ids, now), lt=True)
        pipe.zadd(self.keys.due, dict.fromkeys(ids, now), nx=True)
        pipe.rpush(self.keys.wake, "1")
        self._call(pipe.execute)

    def reclaim_slots(self, now: float) -> int:
        k = self.keys
        return int(
            self._call(
                lambda: self._reclaim(
                    keys=[k.inflight, k.waiting, k.due, k.wake],
                    args=[k.job_prefix, self.settings.max_inflight, repr(now)],
                )
            )
        )

    def inflight_count(self) -> int:
        return int(self._call(lambda: self.redis.zcard(self.keys.inflight)))

    # -- plumbing -------------------------------------------------------------------------

    @staticmethod
    def _call(operation: Callable[[], T]) -> T:
        try:
            return operation()
        except redis.RedisError as exc:
            raise StoreError(f"Redis failed: {exc}") from exc
