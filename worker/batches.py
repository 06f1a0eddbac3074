"""Submitting jobs and reading batches: the producer's side of Redis.

A submission only writes Redis (the workers' pumps publish the tasks). The batch id is
chosen before the first write, so a submission that fails part-way can always name the batch
it filled, and every batch dedupes its items by key: submitting the same items into the same
batch again adds only what is missing.

`BatchOps` holds this work as operations (worker/redis_ops.py), written once for the
blocking `producer.Client` and the asyncio `producer.AsyncClient`; `BatchStore` performs
them on a blocking client.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from worker import lua, outbox
from worker.errors import InputError, NotFound, PartialSubmit, RedisFull, StoreError
from worker.keys import Keys
from worker.models import BatchRecord, JobRecord, JobRequest
from worker.redis_ops import Command, Flow, Op, RoundTrip, ScriptCall, SyncRunner, command
from worker.redis_store import RedisStore, text
from worker.settings import Settings
from worker.states import JobStatus
from worker.store import Loaded, loaded_from, records_from, request_cancel

SUBMIT_CHUNK = 500
RETRIED_STATUSES = frozenset({JobStatus.FAILED, JobStatus.EXPIRED})
"""What `--retry-failed` runs again: not cancelled (asked for) nor incomplete (would repeat)."""
BATCH_ID = re.compile(r"^batch_[0-9a-f]{32}$")
CALLBACK_FIELDS = {"on_done", "webhook_url"}


def item_keys(requests: Sequence[JobRequest]) -> list[str]:
    """What makes an item "the same" on re-submission: its custom_id, else the request itself
    (with a count, so a question asked twice in one file is two items)."""
    seen: dict[str, int] = {}
    keys = []
    for request in requests:
        if request.custom_id is not None:
            keys.append(f"id:{request.custom_id}")
            continue
        # where to report an answer is not part of the question: adding --on-done to a
        # re-submission must not run its items again
        asked = request.model_dump_json(exclude=CALLBACK_FIELDS)
        digest = hashlib.sha1(asked.encode()).hexdigest()
        seen[digest] = seen.get(digest, 0) + 1
        keys.append(f"sha1:{digest}:{seen[digest]}")
    return keys


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex}"


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Submitted:
    batch_id: str | None
    job_ids: list[str]
    skipped: int = 0


class BatchOps:
    """The producer's Redis work as operations: what to send and what the replies mean."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)

    def server_time(self) -> Op[float]:
        seconds, micros = yield from command("time")
        return float(seconds) + float(micros) / 1e6

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

    def check_room(self) -> Op[None]:
        """Refuse new work while Redis is above ASKQ_REDIS_HIGH_WATER_PCT of its maxmemory:
        the rest is kept for the jobs already running, which must record their ends."""
        info = yield from command("info", "memory")
        limit = int(info.get("maxmemory") or 0)
        used = int(info.get("used_memory") or 0)
        high_water = self.settings.redis_high_water_pct
        if limit and used * 100 >= limit * high_water:
            raise RedisFull(
                f"Redis is {used * 100 / limit:.0f}% full ({used >> 20} MiB of maxmemory "
                f"{limit >> 20} MiB; ASKQ_REDIS_HIGH_WATER_PCT={high_water:g}): submission "
                "refused so running jobs can store their results; retry when results expire "
                "or raise maxmemory"
            )

    def submit(
        self,
        requests: Sequence[JobRequest],
        *,
        batch: bool,
        name: str | None = None,
        into: str | None = None,
        on_batch_done: str | None = None,
        webhook_url: str | None = None,
    ) -> Op[Submitted]:
        """Store the jobs and make them due. With `batch`, the batch id is settled before the
        first write (a new one; the batch already named `name`; or `into`), and any failure
        after that raises `PartialSubmit` naming it and how many jobs it accepted.
        `on_batch_done` (a Celery task name) and `webhook_url` get the batch's summary when
        its last job ends; a submission cut short sends it once one finishes the batch."""
        if into is not None and not BATCH_ID.match(into):
            raise InputError(f"{into!r} is not a batch id (batch_ and 32 hex digits)")
        yield from self.check_room()
        now = yield from self.server_time()
        named = (yield from self._named(name)) if batch and into is None else None
        batch_id = (into or named or new_batch_id()) if batch else None
        accepted: list[str] = []
        try:
            return (
                yield from self._submit_all(
                    requests, batch_id, name, now, accepted, (on_batch_done, webhook_url)
                )
            )
        except StoreError as exc:
            if batch_id is None:
                raise
            count, exact = yield from self._count_accepted(accepted)
            raise PartialSubmit(
                f"{exc}; {count if exact else f'at least {count}'} jobs of {batch_id} were "
                "accepted",
                batch_id=batch_id,
                accepted=count,
                exact=exact,
            ) from exc

    def _submit_all(
        self,
        requests: Sequence[JobRequest],
        batch_id: str | None,
        name: str | None,
        now: float,
        accepted: list[str],
        batch_callbacks: tuple[str | None, str | None],
    ) -> Op[Submitted]:
        k = self.keys
        batch_ttl = int(self.settings.result_ttl_s + self.settings.job_timeout_s)
        if batch_id is not None:
            yield from self._record_batch(batch_id, name, len(requests), batch_ttl, now)
            task, webhook = batch_callbacks
            yield RoundTrip(
                [outbox.open_batch(k, batch_id, task, webhook, name, created=now, ttl=batch_ttl)]
            )
        skipped = 0
        keys = item_keys(requests)
        for start in range(0, len(requests), SUBMIT_CHUNK):
            if start:
                yield from self.check_room()
            chunk = list(enumerate(requests[start : start + SUBMIT_CHUNK], start))
            calls: list[Command | ScriptCall] = []
            jobs = []
            for index, request in chunk:
                job = self.new_record(request, batch_id=batch_id, seq=index, now=now)
                jobs.append(job.job_id)
                thread = request.thread_id
                script_keys = [
                    k.job(job.job_id),
                    k.batch_jobs(batch_id) if batch_id else k.job(job.job_id),
                    k.batch_counts(batch_id) if batch_id else k.job(job.job_id),
                    k.counts,
                    k.due,
                    k.deadlines,
                    k.thread_queue(thread) if thread else k.job(job.job_id),
                    k.batch_items(batch_id) if batch_id else k.job(job.job_id),
                ]
                args: list[Any] = [
                    job.job_id,
                    job.to_json(),
                    # a microsecond apart: equal scores would start a batch in id order
                    repr(now + index * 1e-6),
                    repr(job.deadline_at.timestamp()),
                    "1" if batch_id else "0",
                    "1" if thread else "0",
                    batch_ttl,
                    keys[index],
                ]
                calls.append(ScriptCall(lua.SUBMIT, script_keys, args))
            calls.append(Command("rpush", (k.wake, "1")))
            calls.append(Command("ltrim", (k.wake, 0, 63)))
            try:
                outcomes = (yield RoundTrip(calls))[: len(jobs)]
            except StoreError:
                accepted.extend(jobs)  # some of these may be in: counted by the caller
                raise
            for job_id, ok in zip(jobs, outcomes, strict=True):
                if ok:
                    accepted.append(job_id)
                else:
                    skipped += 1
        if batch_id is not None:
            yield RoundTrip([outbox.seal_batch(k, self.settings, batch_id)])
        return Submitted(batch_id=batch_id, job_ids=accepted, skipped=skipped)

    def retry_failed(self, batch_id: str, requests: Sequence[JobRequest]) -> Op[int]:
        """Run again, under their own job ids, the items of `requests` whose job in the batch
        ended failed or expired (its run, answer and error forgotten). Returns how many."""
        k = self.keys
        found = yield from command("hmget", k.batch_items(batch_id), item_keys(requests))
        retried = 0
        now = yield from self.server_time()
        for job_id in dict.fromkeys(text(j) for j in found if j is not None):
            loaded = yield from self.find(job_id)
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
            args: list[Any] = [
                loaded.version,
                fresh.to_json(),
                old.status.value,
                repr(fresh.deadline_at.timestamp()),
                job_id,
                "1" if thread else "0",
            ]
            (done,) = yield RoundTrip([ScriptCall(lua.RETRY, keys, args)])
            retried += int(done)
        return retried

    def _count_accepted(self, candidates: list[str]) -> Op[tuple[int, bool]]:
        """How many of these jobs Redis holds; (lower bound, False) if it cannot be asked."""
        if not candidates:
            return 0, True
        try:
            keys = [self.keys.job(job_id) for job_id in candidates]
            return int((yield from command("exists", *keys))), True
        except StoreError:
            return 0, False

    def _named(self, name: str | None) -> Op[str | None]:
        """The live batch already submitted under `name`, if any."""
        if name is None:
            return None
        existing = yield from command("get", self.keys.batch_name(name))
        if existing is not None and (yield from command("exists", self.keys.batch(text(existing)))):
            return text(existing)
        return None

    def _record_batch(
        self, batch_id: str, name: str | None, size: int, ttl: int, now: float
    ) -> Op[None]:
        k = self.keys
        if name is not None:
            yield from command("set", k.batch_name(name), batch_id, ex=ttl)
        record = BatchRecord(
            batch_id=batch_id, name=name, size=size, created_at=datetime.fromtimestamp(now, UTC)
        )
        # NX: submitting into a batch keeps its first record (name, creation time)
        created = yield from command(
            "set", k.batch(batch_id), record.model_dump_json(), ex=ttl, nx=True
        )
        if created:
            stamp = record.created_at.timestamp()
            yield RoundTrip(
                [
                    Command("zadd", (k.batches, {record.batch_id: stamp})),
                    Command("zremrangebyscore", (k.batches, "-inf", stamp - ttl)),
                ]
            )

    # -- reading --------------------------------------------------------------------------

    def batch_id_for_name(self, name: str) -> Op[str | None]:
        raw = yield from command("get", self.keys.batch_name(name))
        return None if raw is None else text(raw)

    def recent_batches(self, limit: int) -> Op[list[BatchRecord]]:
        """The newest `limit` batches, newest first (those whose records expired are left out)."""
        ids = yield from command("zrevrange", self.keys.batches, 0, limit - 1)
        raws = yield RoundTrip([Command("get", (self.keys.batch(text(i)),)) for i in ids])
        return [BatchRecord.model_validate_json(raw) for raw in raws if raw]

    def batch(self, batch_id: str) -> Op[BatchRecord]:
        raw = yield from command("get", self.keys.batch(batch_id))
        if raw is None:
            raise NotFound(f"no batch {batch_id!r} (unknown, or its results expired)")
        return BatchRecord.model_validate_json(raw)

    def progress(self, batch_id: str) -> Op[tuple[int, dict[JobStatus, int]]]:
        """The batch's size and its counts by status, read together."""
        k = self.keys
        size, counts = yield RoundTrip(
            [
                Command("llen", (k.batch_jobs(batch_id),)),
                Command("hgetall", (k.batch_counts(batch_id),)),
            ]
        )
        return int(size), parse_counts(counts)

    def batch_job_ids(self, batch_id: str) -> Op[list[str]]:
        raw = yield from command("lrange", self.keys.batch_jobs(batch_id), 0, -1)
        return [text(item) for item in raw]

    def batch_records(self, batch_id: str, chunk: int = 1000) -> Flow:
        """The batch's job records in input order (jobs whose records expired are skipped)."""
        ids = yield from self.batch_job_ids(batch_id)
        for start in range(0, len(ids), chunk):
            for record in (yield from self.load_many(ids[start : start + chunk])):
                if record is not None:
                    yield record

    def ended(
        self, batch_id: str, after: str | None, count: int, block_ms: int | None = None
    ) -> Op[list[tuple[str, str]]]:
        """(stream id, job id) of the batch's job ends after the entry `after` (from the
        first with None), oldest first; with `block_ms`, waits that long for one to come."""
        key = self.keys.batch_ended(batch_id)
        if block_ms is None:
            start = "-" if after is None else f"({after}"
            entries = yield from command("xrange", key, start, "+", count=count)
        else:
            reply = yield from command("xread", {key: after or "0-0"}, count=count, block=block_ms)
            entries = reply[0][1] if reply else []
        return [(text(entry_id), text(fields[b"job"])) for entry_id, fields in entries]

    # -- jobs -----------------------------------------------------------------------------

    def find(self, job_id: str) -> Op[Loaded | None]:
        version, raw = yield from command("hmget", self.keys.job(job_id), ["version", "record"])
        return loaded_from(version, raw)

    def load(self, job_id: str) -> Op[Loaded]:
        loaded = yield from self.find(job_id)
        if loaded is None:
            raise NotFound(f"no job {job_id!r} (unknown, or its results expired)")
        return loaded

    def load_many(self, job_ids: Sequence[str]) -> Op[list[JobRecord | None]]:
        raws = yield RoundTrip([Command("hget", (self.keys.job(j), "record")) for j in job_ids])
        return records_from(raws)

    def request_cancel(self, job_id: str) -> Op[bool]:
        return (yield from request_cancel(self.keys, job_id))


def parse_counts(raw: dict[bytes, bytes]) -> dict[JobStatus, int]:
    return {JobStatus(text(key)): int(value) for key, value in raw.items() if int(value) > 0}


class BatchStore(RedisStore):
    """`BatchOps` performed on a blocking Redis client."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        super().__init__(client, settings)
        self.ops = BatchOps(settings)
        self.runner = SyncRunner(client)
        self.outbox = outbox.OutboxStore(client, settings)

    def submit(
        self,
        requests: Sequence[JobRequest],
        *,
        batch: bool,
        name: str | None = None,
        into: str | None = None,
        on_batch_done: str | None = None,
        webhook_url: str | None = None,
    ) -> Submitted:
        return self.runner.run(
            self.ops.submit(
                requests,
                batch=batch,
                name=name,
                into=into,
                on_batch_done=on_batch_done,
                webhook_url=webhook_url,
            )
        )

    def retry_failed(self, batch_id: str, requests: Sequence[JobRequest]) -> int:
        return self.runner.run(self.ops.retry_failed(batch_id, requests))

    def batch(self, batch_id: str) -> BatchRecord:
        return self.runner.run(self.ops.batch(batch_id))

    def batch_job_ids(self, batch_id: str) -> list[str]:
        return self.runner.run(self.ops.batch_job_ids(batch_id))

    def batch_size(self, batch_id: str) -> int:
        return self.runner.run(self.ops.progress(batch_id))[0]

    def batch_counts(self, batch_id: str) -> dict[JobStatus, int]:
        return self.runner.run(self.ops.progress(batch_id))[1]

    def batch_records(self, batch_id: str) -> Iterator[JobRecord]:
        return self.runner.iterate(self.ops.batch_records(batch_id))
