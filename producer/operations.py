"""What the Python API does, written once for `Client` and `AsyncClient`.

Each method here is an operation (worker/redis_ops.py): it checks its input, says which
Redis commands to send and what their replies mean, and returns the caller's answer. The
two clients only perform the operations, on a blocking or a `redis.asyncio` connection, so
their behaviour cannot drift apart: same checks, same Lua scripts, same records.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker import outbox
from worker.batches import BatchOps
from worker.errors import InputError, NotFound
from worker.models import (
    TASK_NAME_PATTERN,
    BatchRecord,
    Delivery,
    JobRecord,
    JobRequest,
    JobResult,
    check_task_name,
    check_webhook_url,
)
from worker.redis_ops import Flow, Op, Pause
from worker.redis_store import SOCKET_TIMEOUT_S
from worker.settings import Settings
from worker.states import TERMINAL, JobStatus

WAIT_INTERVAL_S = 0.2
FOLLOW_BLOCK_MS = int(SOCKET_TIMEOUT_S * 1000 / 2)
"""How long one blocking read of a batch's ends waits before the follower looks at the
batch's counts again: well inside the socket timeout, so the wait is not taken for a dead
link."""
FOLLOW_CHUNK = 500
"""Most job ends read (and records loaded) in one round trip while following."""

ID_PREFIXES = ("job_", "batch_")
"""How job and batch ids start (worker/batches.py makes them); a batch name may not."""


def is_batch_id(identifier: str) -> bool:
    return identifier.startswith("batch_")


def ended_count(counts: Mapping[JobStatus, int]) -> int:
    """How many jobs these counts say have ended."""
    return sum(n for status, n in counts.items() if status in TERMINAL)


@dataclass(frozen=True)
class BatchStatus:
    """Where a batch stands: counts of its jobs by status."""

    batch: BatchRecord
    counts: dict[JobStatus, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.batch.size

    @property
    def finished(self) -> int:
        return ended_count(self.counts)

    @property
    def completed(self) -> int:
        return self.counts.get(JobStatus.COMPLETED, 0)

    @property
    def done(self) -> bool:
        return self.finished >= self.size

    @property
    def in_flight(self) -> int:
        return sum(
            n
            for status, n in self.counts.items()
            if status in (JobStatus.RUNNING, JobStatus.REQUIRES_ACTION, JobStatus.CANCELLING)
        )

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch.batch_id,
            "name": self.batch.name,
            "size": self.size,
            "counts": {status.value: n for status, n in sorted(self.counts.items())},
            "finished": self.finished,
            "done": self.done,
            "created_at": self.batch.created_at.isoformat(),
        }


def is_finished(status: JobResult | BatchStatus) -> bool:
    return status.done if isinstance(status, BatchStatus) else status.status.terminal


@dataclass(frozen=True)
class SubmittedBatch:
    batch_id: str
    accepted: int
    skipped: int = 0
    retried: int = 0


@dataclass(frozen=True)
class CancelOutcome:
    requested: int
    already_finished: int


@dataclass(frozen=True)
class CancelRequests:
    """Cancels recorded in Redis; an `askq.cancel` task is due for each of `job_ids`."""

    job_ids: list[str]
    asked: int

    @property
    def outcome(self) -> CancelOutcome:
        return CancelOutcome(len(self.job_ids), self.asked - len(self.job_ids))


@dataclass(frozen=True)
class Callbacks:
    """A batch's callbacks: `on_done` (a Celery task name) gets each job's result record as
    it ends, `on_batch_done` the batch summary once its last job ends; `webhook_url` is
    POSTed both (signed). Items naming their own `on_done` / `webhook_url` keep them."""

    on_done: str | None = None
    on_batch_done: str | None = None
    webhook_url: str | None = None

    def check(self) -> None:
        """Checked as a job's own are (`JobRequest`)."""
        try:
            for task in (self.on_done, self.on_batch_done):
                if task is not None and not re.fullmatch(TASK_NAME_PATTERN, task):
                    raise ValueError(f"{task!r} is not a Celery task name")
                check_task_name(task)
            check_webhook_url(self.webhook_url)
        except ValueError as exc:
            raise InputError(str(exc)) from None


def as_request(item: JobRequest | str | dict[str, Any]) -> JobRequest:
    if isinstance(item, JobRequest):
        return item
    if isinstance(item, str):
        return JobRequest(question=item)
    try:
        return JobRequest.model_validate(item)
    except ValueError as exc:
        raise InputError(f"bad job: {exc}") from exc


class ClientOps:
    """The operations behind every public method of the two clients."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.batches = BatchOps(settings)

    # -- submitting -----------------------------------------------------------------------

    def too_long(self, request: JobRequest) -> str | None:
        """Why `request` is refused for its size (ASKQ_MAX_QUESTION_CHARS), or None."""
        limit = self.settings.max_question_chars
        longest = max(len(message.content) for message in request.conversation())
        if longest <= limit:
            return None
        return (
            f"the question is {longest:,} characters long; the limit is {limit:,} "
            "(ASKQ_MAX_QUESTION_CHARS)"
        )

    def check(self, request: JobRequest) -> JobRequest:
        problem = self.too_long(request)
        if problem is not None:
            raise InputError(problem)
        s = self.settings
        if s.api_style == "assistants" and not request.assistant_id and not s.assistant_id:
            raise InputError("no assistant: set ASKQ_ASSISTANT_ID or pass an assistant id")
        if s.api_style == "responses" and not (request.model or s.model):
            raise InputError("no model: set ASKQ_MODEL or pass a model")
        if s.api_style == "agents" and not (
            request.agent_id or request.model or s.agent_id or s.model
        ):
            raise InputError("no agent: set ASKQ_AGENT_ID (or ASKQ_MODEL) or pass an agent id")
        return request

    def ask(self, question: str | JobRequest, fields: Mapping[str, Any]) -> Op[str]:
        request = (
            question
            if isinstance(question, JobRequest)
            else JobRequest(question=question, **fields)
        )
        submitted = yield from self.batches.submit([self.check(request)], batch=False)
        return submitted.job_ids[0]

    def submit(
        self,
        items: Iterable[JobRequest | str | dict[str, Any]],
        name: str | None,
        into: str | None,
        retry_failed: bool,
        callbacks: Callbacks,
    ) -> Op[SubmittedBatch]:
        if name is not None and name.startswith(ID_PREFIXES):
            raise InputError(f"a batch name may not start with {' or '.join(ID_PREFIXES)}")
        callbacks.check()
        requests = [self.check(as_request(item)) for item in items]
        if not requests:
            raise InputError("the batch is empty")
        defaults = {"on_done": callbacks.on_done, "webhook_url": callbacks.webhook_url}
        requests = [
            request.model_copy(
                update={k: v for k, v in defaults.items() if v and getattr(request, k) is None}
            )
            for request in requests
        ]
        submitted = yield from self.batches.submit(
            requests,
            batch=True,
            name=name,
            into=into,
            on_batch_done=callbacks.on_batch_done,
            webhook_url=callbacks.webhook_url,
        )
        assert submitted.batch_id is not None
        retried = 0
        if retry_failed:
            retried = yield from self.batches.retry_failed(submitted.batch_id, requests)
        return SubmittedBatch(
            submitted.batch_id, len(submitted.job_ids), submitted.skipped - retried, retried
        )

    # -- reading --------------------------------------------------------------------------

    def resolve(self, identifier: str) -> Op[str]:
        if identifier.startswith(ID_PREFIXES):
            return identifier
        batch_id = yield from self.batches.batch_id_for_name(identifier)
        if batch_id is None:
            raise NotFound(f"no job, batch or batch name {identifier!r} (or it expired)")
        return batch_id

    def status(self, identifier: str) -> Op[JobResult | BatchStatus]:
        identifier = yield from self.resolve(identifier)
        if is_batch_id(identifier):
            batch = yield from self.batches.batch(identifier)
            return (yield from self.batch_status(batch))
        loaded = yield from self.batches.load(identifier)
        return loaded.record.result()

    def deliveries(self, identifier: str) -> Op[list[Delivery]]:
        identifier = yield from self.resolve(identifier)
        return (yield from outbox.deliveries(self.batches.keys, identifier))

    def batch_status(self, batch: BatchRecord) -> Op[BatchStatus]:
        size, counts = yield from self.batches.progress(batch.batch_id)
        return BatchStatus(batch.model_copy(update={"size": size}), counts)

    def recent(self, limit: int) -> Op[list[BatchStatus]]:
        statuses = []
        for batch in (yield from self.batches.recent_batches(limit)):
            statuses.append((yield from self.batch_status(batch)))
        return statuses

    def finished(self, identifier: str) -> Op[bool]:
        return is_finished((yield from self.status(identifier)))

    def wait(self, identifier: str, timeout: float | None) -> Op[JobResult | BatchStatus]:
        identifier = yield from self.resolve(identifier)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = yield from self.status(identifier)
            if is_finished(status):
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{identifier} is not finished after {timeout} s")
            yield Pause(WAIT_INTERVAL_S)

    def cancel(self, identifier: str) -> Op[CancelRequests]:
        identifier = yield from self.resolve(identifier)
        if is_batch_id(identifier):
            yield from self.batches.batch(identifier)
            job_ids = yield from self.batches.batch_job_ids(identifier)
        else:
            yield from self.batches.load(identifier)
            job_ids = [identifier]
        records = yield from self.batches.load_many(job_ids)
        requested = []
        for record in records:
            if record is None or record.status.terminal:
                continue
            if (yield from self.batches.request_cancel(record.job_id)):
                requested.append(record.job_id)
        return CancelRequests(requested, len(job_ids))

    # -- results --------------------------------------------------------------------------

    def batch_to_read(self, identifier: str) -> Op[str]:
        """The batch id whose results are asked for; raises before any record is read."""
        batch_id = yield from self.resolve(identifier)
        if not is_batch_id(batch_id):
            raise InputError(f"{batch_id!r} is not a batch id (they start with 'batch_')")
        yield from self.batches.batch(batch_id)
        return batch_id

    def follow(self, batch_id: str) -> Flow:
        """The batch's result records as its jobs end, in finishing order, until all have
        ended; each job once, as its record reads when its end is read.

        Ends come from the batch's stream (`Keys.batch_ended`), read from its start, so a late
        follower first gets what already ended and then blocks for the rest: the stream's ids
        leave no gap and no repeat. The counts say when the batch is done; they change in the
        same atomic step as the stream, so every end they count is in the stream by then; they
        are read at the start, once every job was seen and after a quiet wait, so a follower
        costs two round trips a wake (the read and the records). Ends the stream no longer
        holds (trimmed or expired) or never held (written by a worker older than the stream)
        come last, from the batch's records, by `finished_at`, at most one quiet wait after
        the batch is done."""
        seen: set[str] = set()
        after: str | None = None
        caught_up = False  # the last blocking read left nothing behind
        look = True  # read the counts: at the start, after a quiet wait, once all were seen
        size = 0
        while True:
            done = False
            if look:
                size, counts = yield from self.batches.progress(batch_id)
                done = ended_count(counts) >= size
            while done or not caught_up:
                ends = yield from self.batches.ended(batch_id, after, FOLLOW_CHUNK)
                if ends:
                    after = ends[-1][0]
                    yield from self._ended_results(ends, seen)
                if len(ends) < FOLLOW_CHUNK:
                    break
            if done:
                break
            ends = yield from self.batches.ended(
                batch_id, after, FOLLOW_CHUNK, block_ms=FOLLOW_BLOCK_MS
            )
            if ends:
                after = ends[-1][0]
                yield from self._ended_results(ends, seen)
            caught_up = len(ends) < FOLLOW_CHUNK
            look = not ends or len(seen) >= size
        if len(seen) < size:
            job_ids = yield from self.batches.batch_job_ids(batch_id)
            unseen = [job_id for job_id in job_ids if job_id not in seen]
            missed: list[JobRecord] = []
            for start in range(0, len(unseen), FOLLOW_CHUNK):
                records = yield from self.batches.load_many(unseen[start : start + FOLLOW_CHUNK])
                missed.extend(r for r in records if r is not None and r.status.terminal)
            missed.sort(key=lambda r: r.finished_at or r.created_at)
            for record in missed:
                yield record.result()

    def _ended_results(self, ends: list[tuple[str, str]], seen: set[str]) -> Flow:
        records = yield from self.batches.load_many([job_id for _, job_id in ends])
        for record in records:
            # not terminal: run again since (--retry-failed); its next end brings it
            if record is not None and record.status.terminal and record.job_id not in seen:
                seen.add(record.job_id)
                yield record.result()
