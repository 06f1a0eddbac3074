"""A provider webhook against a poll in flight, on a real Redis: the poke must survive the
save of a poll whose look came before the change, and must not cost an extra look when the
poll that follows it already saw the change."""

from __future__ import annotations

import pytest

from tests.unit.test_store import Stores, make_stores, submit
from worker import lua
from worker.settings import Settings, load_settings
from worker.states import JobStatus
from worker.webhook_index import RunIndex, poke_args, poke_keys

LATER_S = 600.0


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return load_settings(redis_url=redis_url, assistant_id="a")


@pytest.fixture
def stores(settings: Settings) -> Stores:
    return make_stores(settings)


def running(stores: Stores, settings: Settings) -> str:
    """A job whose response resp_1 runs, its next look due in LATER_S, indexed for webhooks."""
    (job_id,) = submit(stores)
    assert stores.claimed() == [job_id]
    epoch = stores.jobs.take_ticket(job_id, "askq.start", "w1")
    loaded = stores.jobs.load(job_id)
    record = loaded.record.model_copy(update={"status": JobStatus.RUNNING, "run_id": "resp_1"})
    now = stores.now()
    assert stores.jobs.transition(
        loaded, record, next_task="askq.poll", due_at=now + LATER_S, now=now, fence=epoch
    )
    RunIndex(stores.redis, settings).record(job_id, ["resp_1"], now)
    return job_id


def take_poll(stores: Stores, job_id: str) -> int:
    stores.lapse(job_id)
    assert stores.claimed() == [job_id]
    epoch = stores.jobs.take_ticket(job_id, "askq.poll", "w1")
    assert epoch is not None
    return epoch


def webhook(stores: Stores, webhook_id: str) -> str:
    keys = stores.jobs.keys
    poke = stores.redis.register_script(lua.WEBHOOK_POKE)
    outcome = poke(keys=poke_keys(keys, webhook_id, "resp_1"), args=poke_args(keys))
    return outcome.decode() if isinstance(outcome, bytes) else str(outcome)


def save_still_running(stores: Stores, job_id: str, epoch: int) -> float:
    """The poll's look found the run still in progress: it asks to look again in LATER_S."""
    loaded = stores.jobs.load(job_id)
    now = stores.now()
    assert stores.jobs.transition(
        loaded, loaded.record, next_task="askq.poll", due_at=now + LATER_S, now=now, fence=epoch
    )
    due = stores.redis.zscore(stores.jobs.keys.due, job_id)
    assert due is not None
    return due - now


def test_a_webhook_during_a_poll_is_not_overwritten_by_that_polls_save(
    stores: Stores, settings: Settings
) -> None:
    job_id = running(stores, settings)
    epoch = take_poll(stores, job_id)  # the poll's GET goes out and sees in_progress...
    assert webhook(stores, "wh_1") == "matched"  # ...then the response completes
    assert save_still_running(stores, job_id, epoch) < 1  # looks again now, not in 600 s
    epoch = take_poll(stores, job_id)
    assert save_still_running(stores, job_id, epoch) > LATER_S - 5  # the poke was used up


def test_a_webhook_before_the_poll_is_taken_costs_no_extra_look(
    stores: Stores, settings: Settings
) -> None:
    job_id = running(stores, settings)
    assert webhook(stores, "wh_2") == "matched"
    epoch = take_poll(stores, job_id)  # this poll's look sees what the webhook announced
    assert save_still_running(stores, job_id, epoch) > LATER_S - 5
