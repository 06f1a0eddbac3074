"""The job store: reading one job's record and changing it.

The job record is the source of truth (Celery messages carry only job ids); every change
is a compare-and-set on the record's version, fenced by the epoch of the task's claim, made
by one Lua script together with the indexes it affects, so neither a duplicate or late task
nor a task whose claim was taken over can overwrite a newer record.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from worker import lua
from worker.errors import ClaimLost, NotFound, RecordError
from worker.keys import Keys, job_latency_bucket
from worker.models import JobRecord
from worker.outbox import callback_spec
from worker.redis_ops import Command, Op, RoundTrip, SyncRunner, command
from worker.redis_store import RedisStore, request_id, text
from worker.settings import Settings
from worker.states import JobStatus


@dataclass(frozen=True)
class Loaded:
    record: JobRecord
    version: int
    cancel_asked: bool | None = None
    """Whether a cancel request waited when the record was read (None: not read with it)."""


@dataclass(frozen=True)
class Taken:
    """A task message's job after its ticket was taken: the claim's epoch (None: no ticket,
    the message is a duplicate or stale) and the record read in the same round trip."""

    job_id: str
    fence: int | None
    loaded: Loaded | None


def loaded_from(version: bytes | str | None, raw: bytes | str | None) -> Loaded | None:
    """A job as its hash's `version` and `record` fields give it; None when it is not there."""
    if raw is None or version is None:
        return None
    return Loaded(JobRecord.from_json(raw), int(version))


def records_from(raws: Sequence[bytes | None]) -> list[JobRecord | None]:
    return [JobRecord.from_json(raw) if raw else None for raw in raws]


def request_cancel(keys: Keys, job_id: str) -> Op[bool]:
    """Mark a cancel request; False when the job is unknown."""
    key = keys.job(job_id)
    exists, _ = yield RoundTrip(
        [Command("exists", (key,)), Command("hset", (key, "cancel", "requested"))],
        transaction=True,
    )
    if not exists:
        yield from command("delete", key)
        return False
    return True


class JobStore(RedisStore):
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        super().__init__(client, settings)
        self._transition = client.register_script(lua.TRANSITION)
        self._take_cancel = client.register_script(lua.TAKE_CANCEL)
        self._take_ticket = client.register_script(lua.TAKE_TICKET)
        self._runner = SyncRunner(client)

    # -- reading --------------------------------------------------------------------------

    def load(self, job_id: str) -> Loaded:
        version, raw = self._call(
            lambda: self.redis.hmget(self.keys.job(job_id), ["version", "record"])
        )
        loaded = loaded_from(version, raw)
        if loaded is None:
            raise NotFound(f"no job {job_id!r} (unknown, or its results expired)")
        return loaded

    def find(self, job_id: str) -> Loaded | None:
        try:
            return self.load(job_id)
        except NotFound:
            return None

    def load_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self.keys.job(job_id), "record")
        return records_from(self._call(pipe.execute))

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
        now: float,
        fence: int | None = None,
        release: bool = True,
    ) -> Loaded | None:
        """Compare-and-set `record` over `loaded`. `due_at` None removes the job from the due
        set. Returns the stored state, or None when the record moved on meanwhile (the
        caller's view is stale and it must do nothing more). With a `fence` (the epoch its
        ticket gave the task), raises `ClaimLost` when another task owns the job now.
        `release` False keeps the task's ownership (an intermediate save: it goes on)."""
        k = self.keys
        old = loaded.record
        terminal = record.status.terminal
        thread = record.request.thread_id
        due = "-" if due_at is None else repr(due_at)
        ends = terminal and not old.status.terminal
        latency = max(0.0, now - old.created_at.timestamp())
        args: list[str | int] = [
            loaded.version,
            record.to_json(),
            old.status.value,
            record.status.value,
            "" if terminal or next_task is None else next_task,
            due,
            "1" if terminal else "0",
            self.settings.result_ttl_s,
            "" if fence is None else str(fence),
            "1" if old.batch_id else "0",
            "1" if thread else "0",
            self.settings.max_inflight,
            record.job_id,
            job_latency_bucket(latency) if ends else "",
            repr(latency),
            request_id(),
            "1" if release else "0",
            self._callbacks_spec(record) if ends else "",
        ]
        version = int(
            self._call(
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
                        k.batch_ended(old.batch_id) if old.batch_id else k.counts,
                        k.outbox,
                        k.batch_callbacks(old.batch_id) if old.batch_id else k.outbox,
                    ],
                    args=args,
                )
            )
        )
        if version < 0:
            raise ClaimLost(f"job {record.job_id}: another task owns it now")
        if not version:
            return None
        return Loaded(record, version)

    def _callbacks_spec(self, record: JobRecord) -> str:
        """What the transition script writes to the outbox as this job ends (worker/outbox.py):
        its callbacks with the result record they carry, and its batch (which may end too)."""
        request = record.request
        if not (request.on_done or request.webhook_url or record.batch_id):
            return ""
        spec = callback_spec(self.keys, self.settings)
        if request.on_done or request.webhook_url:
            spec["payload"] = record.result().model_dump_json()
        spec.update(
            (name, value)
            for name, value in (
                ("task", request.on_done),
                ("webhook", request.webhook_url),
                ("batch", record.batch_id),
            )
            if value
        )
        return json.dumps(spec)

    def take_and_load(self, job_ids: Sequence[str], task: str, worker_id: str) -> list[Taken]:
        """Take the ticket of each job of one task message and read its record and cancel
        flag: one pipelined round trip for the whole message, whatever its size."""
        k, held = self.keys, repr(self.settings.held_lease_s)
        takes = [(job_id, request_id()) for job_id in job_ids]

        def send(loaded: bool = False) -> list[Any]:
            # EVALSHA directly: redis-py's pipelined Script asks SCRIPT EXISTS first, one
            # more round trip per call; a take re-sent after a NOSCRIPT is recognised by its
            # request id (lua.TAKE_TICKET)
            pipe = self.redis.pipeline(transaction=False)
            for job_id, req in takes:
                keys = [k.job(job_id), k.worker_jobs(worker_id), k.due, k.poll_lateness]
                pipe.evalsha(self._take_ticket.sha, 4, *keys, task, worker_id, req, job_id, held)
                pipe.hmget(k.job(job_id), ["version", "record", "cancel"])
            try:
                return pipe.execute()
            except redis.exceptions.NoScriptError:
                if loaded:
                    raise
                self._take_ticket.sha = self.redis.script_load(lua.TAKE_TICKET)
                return send(loaded=True)

        replies = self._call(send)
        taken = []
        for i, job_id in enumerate(job_ids):
            epoch, (version, raw, cancel) = replies[2 * i], replies[2 * i + 1]
            loaded = None
            if epoch and version is not None and raw is not None:
                asked = cancel is not None and text(cancel) != "done"
                # an unreadable record is left for the job's own read to report, so it
                # fails that job alone, not the message
                with contextlib.suppress(RecordError):
                    loaded = Loaded(JobRecord.from_json(raw), int(version), asked)
            taken.append(Taken(job_id, int(epoch) if epoch else None, loaded))
        return taken

    def take_ticket(self, job_id: str, task: str, worker_id: str) -> int | None:
        """The epoch of this task's claim, for exactly one task per published message:
        duplicates and redeliveries of the same message find no ticket (or one for another
        task) and get None. The taker owns the job until its last save."""
        k = self.keys
        epoch = self._call(
            lambda: self._take_ticket(
                keys=[k.job(job_id), k.worker_jobs(worker_id), k.due, k.poll_lateness],
                args=[task, worker_id, request_id(), job_id, repr(self.settings.held_lease_s)],
            )
        )
        return int(epoch) if epoch else None

    def request_cancel(self, job_id: str) -> bool:
        """Mark a cancel request; False when the job is unknown."""
        return self._runner.run(request_cancel(self.keys, job_id))

    def take_cancel(self, job_id: str) -> bool:
        return bool(
            self._call(
                lambda: self._take_cancel(
                    keys=[self.keys.job(job_id)], args=[repr(self.settings.lease_s), request_id()]
                )
            )
        )

    def cancel_unfinished(self, job_id: str) -> bool:
        """A cancel was asked for and has not been carried out yet."""
        flag = self._call(lambda: self.redis.hget(self.keys.job(job_id), "cancel"))
        return flag is not None and text(flag) != "done"

    def cancel_done(self, job_id: str) -> None:
        self._call(lambda: self.redis.hset(self.keys.job(job_id), "cancel", "done"))
