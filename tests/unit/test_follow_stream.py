"""Following a batch (`iter_results(follow=True)`) against a real Redis, with jobs ended by
hand in a chosen order, for `Client` and `AsyncClient` alike: every record once, in the order
the jobs ended, from the start or from the middle, across a lost stream, and then it stops."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import pytest

from producer.async_client import AsyncClient
from producer.client import Client
from tests.conftest import CLIENT_KINDS, wait_until
from tests.unit.test_store import Stores, make_stores
from worker.errors import NotFound
from worker.models import JobRequest, JobResult
from worker.settings import Settings, load_settings
from worker.states import JobStatus


@dataclass
class Follower:
    """A follower running in a thread of its own (its client made there), as a user's
    process would run it."""

    settings: Settings
    batch_id: str
    kind: str
    seen: list[JobResult] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            if self.kind == "sync":
                with Client(self.settings) as client:
                    self.seen.extend(client.iter_results(self.batch_id, follow=True))
            else:
                asyncio.run(self._follow_async())
        except BaseException as exc:
            self.error = exc

    async def _follow_async(self) -> None:
        async with AsyncClient(self.settings) as client:
            async for result in client.iter_results(self.batch_id, follow=True):
                self.seen.append(result)

    def ids(self) -> list[str]:
        return [r.job_id for r in self.seen]

    def finish(self) -> list[str]:
        """The job ids it yielded, once it stopped by itself (the batch is done)."""
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the follower did not stop when the batch was done"
        assert self.error is None, repr(self.error)
        return self.ids()


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return load_settings(redis_url=redis_url, assistant_id="a")


@pytest.fixture
def stores(settings: Settings) -> Stores:
    return make_stores(settings)


def batch(stores: Stores, n: int) -> tuple[str, list[str]]:
    requests = [JobRequest(question=f"q{i}", custom_id=f"c{i}") for i in range(n)]
    submitted = stores.batches.submit(requests, batch=True)
    assert submitted.batch_id is not None
    return submitted.batch_id, submitted.job_ids


@pytest.mark.parametrize("kind", CLIENT_KINDS)
def test_a_follower_yields_each_end_as_it_happens_in_that_order(
    stores: Stores, settings: Settings, kind: str
) -> None:
    batch_id, ids = batch(stores, 5)
    order = [ids[3], ids[1], ids[4], ids[0], ids[2]]
    follower = Follower(settings, batch_id, kind)
    for done, job_id in enumerate(order, 1):
        stores.end(job_id, JobStatus.FAILED if done == 2 else JobStatus.COMPLETED)
        if done < len(order):  # each record comes while the batch is still running
            wait_until(lambda n=done: len(follower.seen) >= n, 30, what=f"{done} records")
            assert follower.thread.is_alive()
    assert follower.finish() == order
    assert [r.status for r in follower.seen][:2] == [JobStatus.COMPLETED, JobStatus.FAILED]


@pytest.mark.parametrize("kind", CLIENT_KINDS)
def test_a_late_follower_gets_what_ended_then_the_rest_without_gap_or_repeat(
    stores: Stores, settings: Settings, kind: str
) -> None:
    batch_id, ids = batch(stores, 6)
    order = [ids[5], ids[0], ids[2], ids[1], ids[4], ids[3]]
    for job_id in order[:3]:
        stores.end(job_id)
    follower = Follower(settings, batch_id, kind)
    wait_until(lambda: len(follower.seen) >= 3, 30, what="what had ended")
    for job_id in order[3:]:
        stores.end(job_id)
    assert follower.finish() == order


@pytest.mark.parametrize("kind", CLIENT_KINDS)
def test_ends_the_stream_lost_come_from_the_records_once(
    stores: Stores, settings: Settings, kind: str
) -> None:
    batch_id, ids = batch(stores, 4)
    stores.end(ids[2])
    stores.end(ids[0])
    # the stream trimmed or expired (or those jobs ended on a worker older than the stream)
    stores.redis.delete(stores.jobs.keys.batch_ended(batch_id))
    follower = Follower(settings, batch_id, kind)
    stores.end(ids[3])
    wait_until(lambda: len(follower.seen) >= 1, 30, what="the end after the loss")
    stores.end(ids[1])
    got = follower.finish()
    assert got[:2] == [ids[3], ids[1]]  # as they ended
    assert sorted(got[2:]) == sorted([ids[0], ids[2]])  # then the lost ones, each once


@pytest.mark.parametrize("kind", CLIENT_KINDS)
def test_following_a_finished_batch_prints_it_in_finishing_order_and_stops(
    stores: Stores, settings: Settings, kind: str
) -> None:
    batch_id, ids = batch(stores, 3)
    for job_id in reversed(ids):
        stores.end(job_id)
    assert Follower(settings, batch_id, kind).finish() == list(reversed(ids))


def test_an_unknown_batch_is_refused_before_any_record(settings: Settings) -> None:
    with Client(settings) as client, pytest.raises(NotFound):
        client.iter_results("batch_" + "0" * 32, follow=True)

    async def follow_unknown() -> None:
        async with AsyncClient(settings) as client:
            async for _ in client.iter_results("batch_" + "0" * 32, follow=True):
                pass

    with pytest.raises(NotFound):
        asyncio.run(follow_unknown())
