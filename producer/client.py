"""The producer's Python API: submit jobs, watch them, cancel them, read their results.

Submitting only writes to Redis (the job records and their due entries); the workers'
pumps publish the tasks. So a producer needs no broker connection to submit, and a job
accepted here survives any crash after `ask`/`submit_batch` returns. What each method does
is written once in producer/operations.py; this blocking client and `AsyncClient` only carry
it out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

from celery import Celery

from producer.operations import (
    ID_PREFIXES,
    BatchStatus,
    Callbacks,
    CancelOutcome,
    ClientOps,
    SubmittedBatch,
    is_batch_id,
)
from worker.batches import BatchStore
from worker.celery_app import create_publisher
from worker.errors import StoreError
from worker.models import Delivery, JobRequest, JobResult
from worker.redis_ops import Op
from worker.redis_store import connect
from worker.settings import Settings, get_settings
from worker.store import JobStore

__all__ = [
    "ID_PREFIXES",
    "BatchStatus",
    "CancelOutcome",
    "Client",
    "SubmittedBatch",
    "close_publisher",
    "is_batch_id",
    "publish_cancels",
]

T = TypeVar("T")


def publish_cancels(app: Celery, job_ids: list[str]) -> None:
    """Send the `askq.cancel` task of each job whose cancel was recorded. Blocking (kombu).
    A broker failure leaves the requests recorded: each job's own next task carries its
    cancel out, and the error says so."""
    if not job_ids:
        return
    broker_errors = app.connection_for_write().connection_errors
    try:
        with app.producer_or_acquire() as producer:
            for job_id in job_ids:
                app.send_task(
                    "askq.cancel",
                    args=[job_id],
                    queue="askq.cancel",
                    routing_key="askq.cancel",
                    producer=producer,
                )
    except broker_errors as exc:
        raise StoreError(f"cancel recorded but not sent ({exc})") from exc


def close_publisher(app: Celery) -> None:
    """Close the broker connections a cancel opened (blocking)."""
    # Celery's own close() forgets its connection pool without closing it
    app.pool.force_close_all()
    app.close()


class Client:
    """`Client(settings=None)`: settings default to the environment (`ASKQ_*`, `.env`).

    `with Client() as client: ...` closes its Redis and broker connections on exit. Using it
    changes nothing else in the caller's process (no logging level, registry or signal)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        redis = connect(self.settings)
        self.store = JobStore(redis, self.settings)
        self.batch_store = BatchStore(redis, self.settings)
        self.ops = ClientOps(self.settings)
        self._celery: Celery | None = None

    def _run(self, operation: Op[T]) -> T:
        return self.batch_store.runner.run(operation)

    def too_long(self, request: JobRequest) -> str | None:
        """Why `request` is refused for its size (ASKQ_MAX_QUESTION_CHARS), or None."""
        return self.ops.too_long(request)

    def ask(self, question: str | JobRequest, **fields: Any) -> str:
        """Submit one job; returns its id at once (use `wait` for the answer)."""
        return self._run(self.ops.ask(question, fields))

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
        callbacks = Callbacks(on_done, on_batch_done, webhook_url)
        return self._run(self.ops.submit(items, name, None, False, callbacks)).batch_id

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
        callbacks = Callbacks(on_done, on_batch_done, webhook_url)
        return self._run(self.ops.submit(items, name, into, retry_failed, callbacks))

    def resolve(self, identifier: str) -> str:
        """The id a job id, batch id or batch name stands for. Raises `NotFound`."""
        return self._run(self.ops.resolve(identifier))

    def status(self, identifier: str) -> JobResult | BatchStatus:
        """A job's result record, or a batch's counts (by id or name). Raises `NotFound`."""
        return self._run(self.ops.status(identifier))

    def deliveries(self, identifier: str) -> list[Delivery]:
        """Where the callbacks of a job's end, or of a batch's, stand (none yet: empty)."""
        return self._run(self.ops.deliveries(identifier))

    def batches(self, limit: int = 20) -> list[BatchStatus]:
        """The newest batches first, with their counts."""
        return self._run(self.ops.recent(limit))

    def finished(self, identifier: str) -> bool:
        return self._run(self.ops.finished(identifier))

    def wait(self, identifier: str, timeout: float | None = None) -> JobResult | BatchStatus:
        """Block until the job or batch is terminal; raises `TimeoutError` after `timeout`."""
        return self._run(self.ops.wait(identifier, timeout))

    def cancel(self, identifier: str) -> CancelOutcome:
        """Ask for a cancel; a job already finished keeps its status. Raises `NotFound`."""
        requests = self._run(self.ops.cancel(identifier))
        publish_cancels(self._app(), requests.job_ids)
        return requests.outcome

    def results(self, batch_id: str) -> Iterator[JobResult]:
        """The batch's result records in input order. Raises `NotFound` at once (not on the
        first record), so nothing is written for an unknown id."""
        return self.iter_results(batch_id)

    def iter_results(self, batch_id: str, follow: bool = False) -> Iterator[JobResult]:
        """`results`; with `follow`, each record as its job ends, in finishing order, until
        every job of the batch has ended (those already ended come first). It blocks on the
        batch's stream of ends: no polling. Raises `NotFound` at once."""
        batch_id = self._run(self.ops.batch_to_read(batch_id))
        runner = self.batch_store.runner
        if follow:
            return runner.iterate(self.ops.follow(batch_id))
        return (
            record.result() for record in runner.iterate(self.ops.batches.batch_records(batch_id))
        )

    def _app(self) -> Celery:
        if self._celery is None:
            self._celery = create_publisher(self.settings)
        return self._celery

    def close(self) -> None:
        """Close the Redis connections and, if `cancel` opened them, the broker's."""
        self.store.redis.close()
        if self._celery is not None:
            close_publisher(self._celery)
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
