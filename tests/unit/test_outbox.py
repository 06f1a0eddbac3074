"""The callback outbox against a real Redis: written by the script that ends a job, once per
end; a batch's summary once its last job ends and its submission finished; claims that lapse
come back (at least once); webhook attempts retried, then given up after the window."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from tests.unit.test_store import Stores, make_stores
from worker.callbacks import retry_delay
from worker.models import JobRequest
from worker.outbox import OutboxStore
from worker.settings import Settings, load_settings
from worker.states import JobStatus


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return load_settings(redis_url=redis_url, callback_retry_s=60)


@pytest.fixture
def stores(settings: Settings) -> Stores:
    return make_stores(settings)


@pytest.fixture
def outbox(settings: Settings, stores: Stores) -> OutboxStore:
    return OutboxStore(stores.redis, settings)


def due_ids(outbox: OutboxStore) -> list[str]:
    return [c.callback_id for c in outbox.claim(100).callbacks]


def test_a_job_end_writes_its_callbacks_once(stores: Stores, outbox: OutboxStore) -> None:
    request = JobRequest(question="q", on_done="app.on_done", webhook_url="https://h.test/x?k=1")
    (job_id,) = stores.batches.submit([request], batch=False).job_ids
    plain = stores.batches.submit([JobRequest(question="p")], batch=False).job_ids[0]
    stores.end(plain)
    assert due_ids(outbox) == []
    loaded = stores.jobs.load(job_id)
    ended = loaded.record.model_copy(update={"status": JobStatus.FAILED})
    now = stores.now()
    assert stores.jobs.transition(loaded, ended, next_task=None, due_at=None, now=now)
    # a second save of the ended job (terminal to terminal) writes nothing more
    again = stores.jobs.load(job_id)
    assert stores.jobs.transition(again, again.record, next_task=None, due_at=None, now=now)
    claimed = outbox.claim(100).callbacks
    version = stores.jobs.load(job_id).version - 1
    assert sorted(c.callback_id for c in claimed) == [
        f"{job_id}.{version}.task",
        f"{job_id}.{version}.webhook",
    ]
    for callback in claimed:
        assert callback.payload()["job_id"] == job_id
        assert callback.payload()["status"] == "failed"
    states = {d.kind: (d.state, d.target) for d in outbox.deliveries(job_id)}
    assert states == {
        "task": ("pending", "app.on_done"),
        "webhook": ("pending", "https://h.test/x"),
    }


def test_a_lapsed_claim_is_claimed_again_until_sent(stores: Stores, outbox: OutboxStore) -> None:
    """The pump dies between claiming and marking sent: the callback comes back (a repeat the
    receiver drops by its id), never lost; once marked sent, it is gone from the outbox."""
    (job_id,) = stores.batches.submit(
        [JobRequest(question="q", on_done="app.on_done")], batch=False
    ).job_ids
    stores.end(job_id)
    (first,) = due_ids(outbox)
    assert due_ids(outbox) == []  # leased
    stores.redis.zadd(outbox.keys.outbox, {first: stores.now() - 1})  # the lease runs out
    assert due_ids(outbox) == [first]
    outbox.sent(first)
    stores.redis.zadd(outbox.keys.outbox, {first: stores.now() - 1}, xx=True)
    assert due_ids(outbox) == []
    (delivery,) = outbox.deliveries(job_id)
    assert delivery.state == "sent" and delivery.sent_at is not None


def batch_summaries(outbox: OutboxStore) -> list[dict[str, object]]:
    return [c.payload() for c in outbox.claim(100).callbacks if c.event == "batch.done"]


def test_batch_summary_once_when_its_last_job_ends(stores: Stores, outbox: OutboxStore) -> None:
    requests = [JobRequest(question=f"q{i}") for i in range(3)]
    submitted = stores.batches.submit(
        requests, batch=True, name="nightly", on_batch_done="app.batch_done"
    )
    batch_id = submitted.batch_id
    first, second, third = submitted.job_ids
    stores.end(first)
    stores.end(second, JobStatus.FAILED)
    assert batch_summaries(outbox) == []
    stores.end(third)
    (summary,) = batch_summaries(outbox)
    assert summary["batch_id"] == batch_id and summary["name"] == "nightly"
    assert summary["counts"] == {"completed": 2, "failed": 1} and summary["total"] == 3
    assert summary["first_finished_at"] <= summary["last_finished_at"]  # type: ignore[operator]
    # the same file again: nothing new runs, so the batch does not end again
    stores.batches.submit(requests, batch=True, name="nightly")
    assert batch_summaries(outbox) == []
    (delivery,) = outbox.deliveries(batch_id)
    assert delivery.callback_id == f"{batch_id}.1.task"


def test_batch_ending_during_its_submission_ends_at_its_seal(
    stores: Stores, outbox: OutboxStore
) -> None:
    """Every job of the first part ended before the submission finished: the batch is not
    done then (more jobs were coming), but as soon as the submission finishes."""
    batch_id = "batch_" + "a" * 32
    (first,) = stores.batches.submit(
        [JobRequest(question="q0")], batch=True, into=batch_id, on_batch_done="app.batch_done"
    ).job_ids
    stores.batches.outbox.open_batch(
        batch_id, task=None, webhook=None, name=None, created=stores.now(), ttl=600
    )  # a second submission begins
    stores.end(first)
    assert batch_summaries(outbox) == []
    stores.batches.outbox.seal_batch(batch_id)
    stores.batches.outbox.seal_batch(batch_id)  # a re-sent seal does nothing more
    (summary,) = batch_summaries(outbox)
    assert summary["counts"] == {"completed": 1}


def test_a_retried_batch_ends_again_under_a_new_id(stores: Stores, outbox: OutboxStore) -> None:
    requests = [JobRequest(question="q", custom_id="a")]
    submitted = stores.batches.submit(
        requests, batch=True, name="again", on_batch_done="app.batch_done"
    )
    assert submitted.batch_id is not None
    stores.end(submitted.job_ids[0], JobStatus.FAILED)
    assert [s["counts"] for s in batch_summaries(outbox)] == [{"failed": 1}]
    assert stores.batches.retry_failed(submitted.batch_id, requests) == 1
    stores.end(submitted.job_ids[0])
    assert [s["counts"] for s in batch_summaries(outbox)] == [{"completed": 1}]
    (delivery,) = outbox.deliveries(submitted.batch_id)
    assert delivery.callback_id.endswith(".2.task")


def test_webhook_attempts_retry_then_give_up(stores: Stores, outbox: OutboxStore) -> None:
    (job_id,) = stores.batches.submit(
        [JobRequest(question="q", webhook_url="http://127.0.0.1:9/hook")], batch=False
    ).job_ids
    stores.end(job_id)
    (callback_id,) = due_ids(outbox)
    taken = outbox.take(callback_id, 20)
    assert taken is not None and outbox.take(callback_id, 20) is None  # one taker a claim
    state = outbox.attempted(callback_id, ok=False, status=503, error="HTTP 503", delay_s=1)
    assert state == "retrying"
    stores.redis.zadd(outbox.keys.outbox, {callback_id: stores.now() - 1})
    assert due_ids(outbox) == [callback_id]
    # past the retry window (60 s here), the next failure gives up
    state = outbox.attempted(callback_id, ok=False, status=None, error="ConnectError", delay_s=61)
    assert state == "given_up"
    assert due_ids(outbox) == []
    (delivery,) = outbox.deliveries(job_id)
    assert (delivery.state, delivery.attempts, delivery.last_error) == (
        "given_up",
        2,
        "ConnectError",
    )
    assert (
        json.loads(stores.redis.hget(outbox.keys.callback(callback_id), "payload"))["job_id"]
        == job_id
    )


def test_webhook_back_off_doubles_to_an_hour_with_jitter() -> None:
    rng = random.Random(1)
    delays = [retry_delay(attempts, rng) for attempts in range(1, 16)]
    assert 0.8 <= delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4
    assert all(later > earlier for earlier, later in itertools.pairwise(delays[:12]))
    assert max(delays) <= 3600 * 1.2 and delays[-1] >= 3600 * 0.8
