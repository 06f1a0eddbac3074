"""The Python API for asyncio programs (a FastAPI endpoint, an aiohttp service).

`AsyncClient` has `Client`'s methods as coroutines, on `redis.asyncio`: the same operations
(producer/operations.py), so the same checks, Lua scripts and records; a submission is
exactly as durable. Only a cancel touches the broker: kombu has no asyncio API, so its
`askq.cancel` tasks are published from a worker thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

from celery import Celery

from producer.client import close_publisher, publish_cancels
from producer.operations import (
    BatchStatus,
    Callbacks,
    CancelOutcome,
    ClientOps,
    SubmittedBatch,
)
from worker.celery_app import create_publisher
from worker.models import Delivery, JobRequest, JobResult
from worker.redis_ops import AsyncRunner, Op
from worker.redis_store import connect_async
from worker.settings import Settings, get_settings

T = TypeVar("T")


class AsyncClient:
    """`AsyncClient(settings=None)`: `Client` for asyncio; settings default to the environment.

    `async with AsyncClient() as client: ...` closes its connections on exit. Create it in
    the event loop that uses it (its Redis connections belong to that loop)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.redis = connect_async(self.settings)
        self.ops = ClientOps(self.settings)
        self._runner = AsyncRunner(self.redis)
        self._celery: Celery | None = None

    async def _run(self, operation: Op[T]) -> T:
        return await self._runner.run(operation)

    def too_long(self, request: JobRequest) -> str | None:
        """Why `request` is refused for its size (ASKQ_MAX_QUESTION_CHARS), or None."""
        return self.ops.too_long(request)

    async def ask(self, question: str | JobRequest, **fields: Any) -> str:
        """Submit one job; returns its id at once (use `wait` for the answer)."""
        return await self._run(self.ops.ask(question, fields))

    async def submit_batch(
        self,
        items: Iterable[JobRequest | str | dict[str, Any]],
        name: str | None = None,
        *,
        on_done: str | None = None,
        on_batch_done: str | None = None,
        webhook_url: str | None = None,
    ) -> str:
        """Submit many jobs as one batch; returns the batch id (see `Client.submit_batch`)."""
        callbacks = Callbacks(on_done, on_batch_done, webhook_url)
        return (await self._run(self.ops.submit(items, name, None, False, callbacks))).batch_id

    async def submit(
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
        """`submit_batch` with what was skipped or retried (see `Client.submit`)."""
        callbacks = Callbacks(on_done, on_batch_done, webhook_url)
        return await self._run(self.ops.submit(items, name, into, retry_failed, callbacks))

    async def resolve(self, identifier: str) -> str:
        """The id a job id, batch id or batch name stands for. Raises `NotFound`."""
        return await self._run(self.ops.resolve(identifier))

    async def status(self, identifier: str) -> JobResult | BatchStatus:
        """A job's result record, or a batch's counts (by id or name). Raises `NotFound`."""
        return await self._run(self.ops.status(identifier))

    async def deliveries(self, identifier: str) -> list[Delivery]:
        """Where the callbacks of a job's end, or of a batch's, stand (none yet: empty)."""
        return await self._run(self.ops.deliveries(identifier))

    async def batches(self, limit: int = 20) -> list[BatchStatus]:
        """The newest batches first, with their counts."""
        return await self._run(self.ops.recent(limit))

    async def finished(self, identifier: str) -> bool:
        return await self._run(self.ops.finished(identifier))

    async def wait(self, identifier: str, timeout: float | None = None) -> JobResult | BatchStatus:
        """Until the job or batch is terminal (other tasks run meanwhile); raises
        `TimeoutError` after `timeout`."""
        return await self._run(self.ops.wait(identifier, timeout))

    async def cancel(self, identifier: str) -> CancelOutcome:
        """Ask for a cancel; a job already finished keeps its status. Raises `NotFound`. The
        requests are recorded in Redis here; their `askq.cancel` tasks are published by kombu
        in a worker thread, since kombu blocks."""
        requests = await self._run(self.ops.cancel(identifier))
        if requests.job_ids:
            await asyncio.to_thread(publish_cancels, self._app(), requests.job_ids)
        return requests.outcome

    def results(self, batch_id: str) -> AsyncIterator[JobResult]:
        """`async for record in client.results(batch_id)`: the records in input order.
        Raises `NotFound` on the first step, before any record."""
        return self.iter_results(batch_id)

    async def iter_results(self, batch_id: str, follow: bool = False) -> AsyncIterator[JobResult]:
        """`results`; with `follow`, each record as its job ends, in finishing order, until
        every job of the batch has ended. It awaits the batch's stream of ends (XREAD
        BLOCK on its own connection), so other tasks run meanwhile; no polling."""
        batch_id = await self._run(self.ops.batch_to_read(batch_id))
        if follow:
            async for result in self._runner.iterate(self.ops.follow(batch_id)):
                yield result
            return
        async for record in self._runner.iterate(self.ops.batches.batch_records(batch_id)):
            yield record.result()

    def _app(self) -> Celery:
        if self._celery is None:
            self._celery = create_publisher(self.settings)
        return self._celery

    async def close(self) -> None:
        """Close the Redis connections and, if `cancel` opened them, the broker's."""
        await self.redis.aclose()
        if self._celery is not None:
            celery, self._celery = self._celery, None
            await asyncio.to_thread(close_publisher, celery)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
