"""The producer's Python API: submit jobs, watch them, cancel them, read their results.

Submitting only writes to Redis (the job records and their due entries); the workers'
pumps publish the tasks. So a producer needs no broker connection to submit, and a job
accepted here survives any crash after `ask`/`submit_batch` returns.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from celery import Celery

from worker.batches import BatchStore
from worker.celery_app import create_publisher
from worker.errors import InputError, NotFound, StoreError
from worker.models import (
    TASK_NAME_PATTERN,
    BatchRecord,
    Delivery,
    JobRequest,
    JobResult,
    check_task_name,
    check_webhook_url,
)
from worker.redis_store import connect
from worker.settings import Settings, get_settings
from worker.states import TERMINAL, JobStatus
from worker.store import JobStore

WAIT_INTERVAL_S = 0.2


ID_PREFIXES = ("job_", "batch_")
"""How job and batch ids start (worker/store.py makes them); a batch name may not."""


def is_batch_id(identifier: str) -> bool:
    return identifier.startswith("batch_")


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
        return sum(n for status, n in self.counts.items() if status in TERMINAL)

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


@dataclass(frozen=True)
class SubmittedBatch:
    batch_id: str
    accepted: int
    skipped: int
    retried: int = 0


@dataclass(frozen=True)
class CancelOutcome:
    requested: int
    already_finished: int


class Client:
    """`Client(settings=None)`: settings default to the environment (`ASKQ_*`, `.env`).

    `with Client() as client: ...` closes its Redis and broker connections on exit. Using it
    changes nothing else in the caller's process (no logging level, registry or signal)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        redis = connect(self.settings)
        self.store = JobStore(redis, self.settings)
        self.batch_store = BatchStore(redis, self.settings)
        self._celery: Celery | None = None

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

    def _check(self, request: JobRequest) -> JobRequest:
        problem = self.too_long(request)
        if problem is not None:
            raise InputError(problem)
        if (
            self.settings.api_style == "assistants"
            and not request.assistant_id
            and not self.settings.assistant_id
        ):
            raise InputError("no assistant: set ASKQ_ASSISTANT_ID or pass an assistant id")
        if self.settings.api_style == "responses" and not (request.model or self.settings.model):
            raise InputError("no model: set ASKQ_MODEL or pass a model")
        if self.settings.api_style == "agents" and not (
            request.agent_id or request.model or self.settings.agent_id or self.settings.model
        ):
            raise InputError("no agent: set ASKQ_AGENT_ID (or ASKQ_MODEL) or pass an agent id")
        return request

    def ask(self, question: str | JobRequest, **fields: Any) -> str:
        """Submit one job; returns its id at once (use `wait` for the answer)."""
        request = (
            question
            if isinstance(question, JobRequest)
            else JobRequest(question=question, **fields)
        )
        return self.batch_store.submit([self._check(request)], batch=False).job_ids[0]

    def submit_batch(
        self,
        items: Iterable[JobRequest | str | dict[str, Any]],
        name: str | None = None,
        *,
        on_done: str | None = None,
        on_batch_done: str | None = None,
        webhook_url: str | None = None,
    ) -> str:
        """Submit many jobs as one batch; returns the batch id. Results keep this order.
        With a `name` used before, adds to that batch, skipping the items it already has
        (same `custom_id`, or the same request): re-submitting a file is safe.
        Callbacks: `on_done` (a Celery task name) gets each job's result record as it ends,
        `on_batch_done` the batch summary once its last job ends; `webhook_url` is POSTed
        both (signed). Items naming their own `on_done` / `webhook_url` keep them."""
        return self.submit(
            items,
            name=name,
            on_done=on_done,
            on_batch_done=on_batch_done,
            webhook_url=webhook_url,
        ).batch_id

    def submit(
        self,
        items: Iterable[JobRequest | str | dict[str, Any]],
        name: str | None = None,
        into: str | None = None,
        *,
        retry_failed: bool = False,
        on_done: str | None = None,
        on_batch_done: str | None = None,
        webhook_url: str | None = None,
    ) -> SubmittedBatch:
        """`submit_batch`, also telling how many items were skipped as already submitted.
        `into` adds to that batch id (created if it is not there yet), skipping the items
        it holds: how a submission that failed part-way (`PartialSubmit`) is finished.
        With `retry_failed`, items already in the batch whose job failed or expired run
        again (same job id). Callbacks as in `submit_batch`."""
        if name is not None and name.startswith(ID_PREFIXES):
            raise InputError(f"a batch name may not start with {' or '.join(ID_PREFIXES)}")
        check_callbacks(on_done, on_batch_done, webhook_url)
        requests = [self._check(_as_request(item)) for item in items]
        if not requests:
            raise InputError("the batch is empty")
        defaults = {"on_done": on_done, "webhook_url": webhook_url}
        requests = [
            request.model_copy(
                update={k: v for k, v in defaults.items() if v and getattr(request, k) is None}
            )
            for request in requests
        ]
        submitted = self.batch_store.submit(
            requests,
            batch=True,
            name=name,
            into=into,
            on_batch_done=on_batch_done,
            webhook_url=webhook_url,
        )
        assert submitted.batch_id is not None
        retried = self.batch_store.retry_failed(submitted.batch_id, requests) if retry_failed else 0
        return SubmittedBatch(
            submitted.batch_id, len(submitted.job_ids), submitted.skipped - retried, retried
        )

    def resolve(self, identifier: str) -> str:
        """The id a job id, batch id or batch name stands for. Raises `NotFound`."""
        if identifier.startswith(ID_PREFIXES):
            return identifier
        batch_id = self.batch_store.batch_id_for_name(identifier)
        if batch_id is None:
            raise NotFound(f"no job, batch or batch name {identifier!r} (or it expired)")
        return batch_id

    def status(self, identifier: str) -> JobResult | BatchStatus:
        """A job's result record, or a batch's counts (by id or name). Raises `NotFound`."""
        identifier = self.resolve(identifier)
        if is_batch_id(identifier):
            return self._batch_status(self.batch_store.batch(identifier))
        return self.store.load(identifier).record.result()

    def deliveries(self, identifier: str) -> list[Delivery]:
        """Where the callbacks of a job's end, or of a batch's, stand (none yet: empty)."""
        return self.batch_store.outbox.deliveries(self.resolve(identifier))

    def batches(self, limit: int = 20) -> list[BatchStatus]:
        """The newest batches first, with their counts."""
        return [self._batch_status(batch) for batch in self.batch_store.recent_batches(limit)]

    def _batch_status(self, batch: BatchRecord) -> BatchStatus:
        batch_id = batch.batch_id
        batch = batch.model_copy(update={"size": self.batch_store.batch_size(batch_id)})
        return BatchStatus(batch, self.batch_store.batch_counts(batch_id))

    def finished(self, identifier: str) -> bool:
        status = self.status(identifier)
        if isinstance(status, BatchStatus):
            return status.done
        return status.status.terminal

    def wait(self, identifier: str, timeout: float | None = None) -> JobResult | BatchStatus:
        """Block until the job or batch is terminal; raises `TimeoutError` after `timeout`."""
        identifier = self.resolve(identifier)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(identifier)
            done = status.done if isinstance(status, BatchStatus) else status.status.terminal
            if done:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{identifier} is not finished after {timeout} s")
            time.sleep(WAIT_INTERVAL_S)

    def cancel(self, identifier: str) -> CancelOutcome:
        """Ask for a cancel; a job already finished keeps its status. Raises `NotFound`."""
        identifier = self.resolve(identifier)
        if is_batch_id(identifier):
            self.batch_store.batch(identifier)
            job_ids = self.batch_store.batch_job_ids(identifier)
        else:
            self.store.load(identifier)
            job_ids = [identifier]
        records = self.store.load_many(job_ids)
        live = [r.job_id for r in records if r is not None and not r.status.terminal]
        app = self._app()
        broker_errors = app.connection_for_write().connection_errors
        requested = 0
        try:
            with app.producer_or_acquire() as producer:
                for job_id in live:
                    if self.store.request_cancel(job_id):
                        requested += 1
                        app.send_task(
                            "askq.cancel",
                            args=[job_id],
                            queue="askq.cancel",
                            routing_key="askq.cancel",
                            producer=producer,
                        )
        except broker_errors as exc:
            # the requests are recorded: each job's own next task carries its cancel out
            raise StoreError(f"cancel recorded but not sent ({exc})") from exc
        return CancelOutcome(requested=requested, already_finished=len(job_ids) - requested)

    def results(self, batch_id: str) -> Iterator[JobResult]:
        """The batch's result records in input order. Raises `NotFound` at once (not on the
        first record), so nothing is written for an unknown id."""
        batch_id = self.resolve(batch_id)
        if not is_batch_id(batch_id):
            raise InputError(f"{batch_id!r} is not a batch id (they start with 'batch_')")
        self.batch_store.batch(batch_id)
        return (record.result() for record in self.batch_store.batch_records(batch_id))

    def _app(self) -> Celery:
        if self._celery is None:
            self._celery = create_publisher(self.settings)
        return self._celery

    def close(self) -> None:
        """Close the Redis connections and, if `cancel` opened them, the broker's."""
        self.store.redis.close()
        if self._celery is not None:
            # Celery's own close() forgets its connection pool without closing it
            self._celery.pool.force_close_all()
            self._celery.close()
            self._celery = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _as_request(item: JobRequest | str | dict[str, Any]) -> JobRequest:
    if isinstance(item, JobRequest):
        return item
    if isinstance(item, str):
        return JobRequest(question=item)
    try:
        return JobRequest.model_validate(item)
    except ValueError as exc:
        raise InputError(f"bad job: {exc}") from exc


def check_callbacks(
    on_done: str | None, on_batch_done: str | None, webhook_url: str | None
) -> None:
    """Batch-wide callbacks, checked as a job's own are (`JobRequest`)."""
    try:
        for task in (on_done, on_batch_done):
            if task is not None and not re.fullmatch(TASK_NAME_PATTERN, task):
                raise ValueError(f"{task!r} is not a Celery task name")
            check_task_name(task)
        check_webhook_url(webhook_url)
    except ValueError as exc:
        raise InputError(str(exc)) from None
