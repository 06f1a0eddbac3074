"""The job store against a real Redis: compare-and-set, tickets, due set, slots, limits."""

from __future__ import annotations

import time

import pytest
import redis

from worker.durations import Durations
from worker.machine import Task
from worker.models import JobRequest
from worker.settings import Settings, load_settings
from worker.states import JobStatus
from worker.store import JobStore, connect


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return load_settings(redis_url=redis_url, max_inflight=2, assistant_id="a")


@pytest.fixture
def store(settings: Settings) -> JobStore:
    return JobStore(connect(settings), settings)


def submit(store: JobStore, n: int = 1, **fields: object) -> list[str]:
    requests = [JobRequest(question=f"q{i}", **fields) for i in range(n)]  # type: ignore[arg-type]
    return store.submit(requests, batch=n > 1).job_ids


def test_submit_makes_jobs_due_and_counted(store: JobStore) -> None:
    ids = submit(store, 3)
    claims = store.claim_due(time.time(), 10)
    # starts are admitted only with a free slot (2 here); the third waits, unpublished
    assert sorted(c.job_id for c in claims) == sorted(ids[:2])
    assert {c.task for c in claims} == {"askq.start"}
    assert store.redis.zscore(store.keys.waiting, ids[2]) is not None
    assert store.counts()[JobStatus.PENDING] == 3


def test_transition_is_compare_and_set(store: JobStore) -> None:
    (job_id,) = submit(store)
    loaded = store.load(job_id)
    first = loaded.record.model_copy(update={"status": JobStatus.RUNNING, "run_id": "r1"})
    assert store.transition(loaded, first, next_task="askq.poll", due_at=time.time()) is not None
    stale = loaded.record.model_copy(update={"status": JobStatus.RUNNING, "run_id": "r2"})
    assert store.transition(loaded, stale, next_task="askq.poll", due_at=time.time()) is None
    assert store.load(job_id).record.run_id == "r1"
    assert store.load(job_id).version == loaded.version + 1


def test_ticket_is_taken_once_per_claim(store: JobStore) -> None:
    (job_id,) = submit(store)
    assert not store.take_ticket(job_id, "askq.start")  # not yet published
    store.claim_due(time.time(), 10)
    assert not store.take_ticket(job_id, "askq.poll")  # a stale message of another task
    assert store.take_ticket(job_id, "askq.start")
    assert not store.take_ticket(job_id, "askq.start")  # a duplicate message


def test_claimed_entry_stays_as_a_lease(store: JobStore, settings: Settings) -> None:
    (job_id,) = submit(store)
    now = time.time()
    store.claim_due(now, 10)
    assert store.claim_due(now + 1, 10) == []
    again = store.claim_due(now + settings.lease_s + 1, 10)
    assert [c.job_id for c in again] == [job_id]  # a lost message is re-dispatched


def test_terminal_transition_cleans_every_index(store: JobStore, settings: Settings) -> None:
    (job_id,) = submit(store)
    loaded = store.load(job_id)
    assert store.acquire_slot(job_id, time.time())
    done = loaded.record.model_copy(update={"status": JobStatus.COMPLETED, "answer": "a"})
    store.transition(loaded, done, next_task=None, due_at=None)
    r = store.redis
    k = store.keys
    assert r.zscore(k.due, job_id) is None
    assert r.zscore(k.deadlines, job_id) is None
    assert r.zscore(k.inflight, job_id) is None
    assert r.hget(k.job(job_id), "next") is None
    assert 0 < r.ttl(k.job(job_id)) <= settings.result_ttl_s
    assert store.counts()[JobStatus.COMPLETED] == 1
    assert store.counts()[JobStatus.PENDING] == 0


def test_slots_are_handed_to_waiters_in_order(store: JobStore) -> None:
    ids = submit(store, 4)
    now = time.time()
    assert [c.job_id for c in store.claim_due(now, 10)] == ids[:2]
    assert [store.acquire_slot(i, now) for i in ids[:2]] == [True, True]
    assert store.acquire_slot(ids[3], now) is False  # a start arriving anyway waits its turn
    assert store.inflight_count() == 2
    first = store.load(ids[0])
    done = first.record.model_copy(update={"status": JobStatus.FAILED})
    store.transition(first, done, next_task=None, due_at=None)
    # the freed slot went to the first waiter, which is due again
    assert store.redis.zscore(store.keys.inflight, ids[2]) is not None
    assert store.redis.zscore(store.keys.inflight, ids[3]) is None
    assert [c.job_id for c in store.claim_due(time.time(), 10)] == [ids[2]]


def test_overdue_waiting_job_is_published_to_expire(store: JobStore, settings: Settings) -> None:
    ids = submit(store, 3)
    store.claim_due(time.time(), 10)
    later = time.time() + settings.job_timeout_s + 1
    store.make_due_now([ids[2]], later)
    assert ids[2] in [c.job_id for c in store.claim_due(later, 10)]


def test_jobs_on_one_thread_are_due_one_at_a_time(store: JobStore) -> None:
    ids = store.submit(
        [JobRequest(question=f"q{i}", thread_id="thread_x") for i in range(3)], batch=True
    ).job_ids
    assert [c.job_id for c in store.claim_due(time.time(), 10)] == [ids[0]]
    head = store.load(ids[0])
    store.transition(
        head,
        head.record.model_copy(update={"status": JobStatus.COMPLETED}),
        next_task=None,
        due_at=None,
    )
    assert [c.job_id for c in store.claim_due(time.time(), 10)] == [ids[1]]


def test_reclaim_frees_slots_of_vanished_jobs(store: JobStore) -> None:
    ids = submit(store, 3)
    now = time.time()
    for job_id in ids:
        store.acquire_slot(job_id, now)
    store.redis.delete(store.keys.job(ids[0]))
    assert store.reclaim_slots(now) == 1
    assert store.redis.zscore(store.keys.inflight, ids[2]) is not None


def test_rate_limit_spends_a_shared_budget(redis_url: str) -> None:
    settings = load_settings(redis_url=redis_url, rate_limit_rpm=120)
    one, two = (JobStore(connect(settings), settings) for _ in range(2))
    # burst of 2 (one second's worth), then one request every 0.5 s, across both stores
    assert one.spend_requests(1) == 0.0
    assert two.spend_requests(1) == 0.0
    wait = one.spend_requests(1)
    assert 0.3 < wait <= 0.5
    assert two.spend_requests(1, force=True) == 0.0
    assert one.spend_requests(1) > wait


def test_cancel_request_is_taken_once(store: JobStore) -> None:
    (job_id,) = submit(store)
    assert store.request_cancel(job_id)
    assert store.take_cancel(job_id)
    assert not store.take_cancel(job_id)
    assert not store.request_cancel("job_unknown")
    assert not store.redis.exists(store.keys.job("job_unknown"))


def test_unreachable_redis_is_a_store_error() -> None:
    from worker.errors import StoreError

    settings = load_settings(redis_url="redis://127.0.0.1:1/0")
    store = JobStore(redis.Redis.from_url(settings.redis_url, socket_connect_timeout=0.5), settings)
    with pytest.raises(StoreError):
        store.load("job_x")


def test_next_task_is_recorded_for_the_pump(store: JobStore) -> None:
    (job_id,) = submit(store)
    loaded = store.load(job_id)
    running = loaded.record.model_copy(update={"status": JobStatus.RUNNING})
    store.transition(loaded, running, next_task=Task.POLL, due_at=time.time() - 1)
    assert [(c.job_id, c.task) for c in store.claim_due(time.time(), 10)] == [(job_id, "askq.poll")]


def test_resubmitting_a_named_batch_skips_what_it_holds(store: JobStore) -> None:
    first = [JobRequest(question="q1", custom_id="a"), JobRequest(question="q2")]
    one = store.submit(first, batch=True, name="nightly")
    again = [*first, JobRequest(question="q3", custom_id="c"), JobRequest(question="q2")]
    two = store.submit(again, batch=True, name="nightly")
    assert two.batch_id == one.batch_id
    assert two.skipped == 2 and len(two.job_ids) == 2  # "q2" twice is two items
    assert store.batch_size(one.batch_id) == 4
    other = store.submit(first, batch=True, name="other")
    assert other.batch_id != one.batch_id and other.skipped == 0


def test_learned_durations_are_kept_per_key(store: JobStore) -> None:
    assert store.durations("assistants:a") is None
    store.learn_duration("assistants:a", running_at=0.0, done_at=4.0)
    assert store.durations("assistants:a") == Durations(4.0, 4.0)
    store.learn_duration("assistants:a", running_at=3.0, done_at=4.0)
    learned = store.durations("assistants:a")
    assert learned is not None and learned != Durations(4.0, 4.0)
    assert store.durations("assistants:b") is None
