"""The job store against a real Redis: compare-and-set, tickets, due set, slots, limits."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import redis

from worker.batches import BatchStore
from worker.dispatch import QUEUE_HIGH_WATER, DispatchStore
from worker.durations import Durations
from worker.limits import COLD_SCOUTS, LimitStore
from worker.machine import Task
from worker.models import JobRequest
from worker.redis_store import connect
from worker.settings import Settings, load_settings
from worker.states import JobStatus
from worker.store import JobStore


@dataclass
class Stores:
    jobs: JobStore
    batches: BatchStore
    dispatch: DispatchStore
    limits: LimitStore

    @property
    def redis(self) -> redis.Redis:
        return self.jobs.redis

    def now(self) -> float:
        return self.jobs.server_time()

    def claimed(self, limit: int = 10) -> list[str]:
        return [c.job_id for c in self.dispatch.claim_due(limit, "pump").claims]

    def end(self, job_id: str, status: JobStatus = JobStatus.COMPLETED) -> None:
        loaded = self.jobs.load(job_id)
        record = loaded.record.model_copy(update={"status": status})
        self.jobs.transition(loaded, record, next_task=None, due_at=None, now=self.now())

    def lapse(self, job_id: str) -> None:
        """Make the job's due entry (its lease) run out now, as time passing would."""
        self.redis.zadd(self.jobs.keys.due, {job_id: self.now() - 1})


def make_stores(settings: Settings) -> Stores:
    client = connect(settings)
    return Stores(
        JobStore(client, settings),
        BatchStore(client, settings),
        DispatchStore(client, settings),
        LimitStore(client, settings),
    )


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return load_settings(redis_url=redis_url, max_inflight=2, assistant_id="a")


@pytest.fixture
def stores(settings: Settings) -> Stores:
    return make_stores(settings)


def submit(stores: Stores, n: int = 1, **fields: object) -> list[str]:
    requests = [JobRequest(question=f"q{i}", **fields) for i in range(n)]  # type: ignore[arg-type]
    return stores.batches.submit(requests, batch=n > 1).job_ids


def test_submit_makes_jobs_due_and_counted(stores: Stores) -> None:
    ids = submit(stores, 3)
    claims = stores.dispatch.claim_due(10, "pump").claims
    # starts are admitted only with a free slot (2 here); the third waits, unpublished
    assert sorted(c.job_id for c in claims) == sorted(ids[:2])
    assert {c.task for c in claims} == {"askq.start"}
    assert stores.redis.zscore(stores.jobs.keys.waiting, ids[2]) is not None
    assert stores.jobs.counts()[JobStatus.PENDING] == 3


def test_transition_is_compare_and_set(stores: Stores) -> None:
    store = stores.jobs
    (job_id,) = submit(stores)
    loaded = store.load(job_id)
    now = stores.now()
    first = loaded.record.model_copy(update={"status": JobStatus.RUNNING, "run_id": "r1"})
    assert store.transition(loaded, first, next_task="askq.poll", due_at=now, now=now)
    stale = loaded.record.model_copy(update={"status": JobStatus.RUNNING, "run_id": "r2"})
    assert store.transition(loaded, stale, next_task="askq.poll", due_at=now, now=now) is None
    assert store.load(job_id).record.run_id == "r1"
    assert store.load(job_id).version == loaded.version + 1


def test_ticket_is_taken_once_per_claim(stores: Stores) -> None:
    store = stores.jobs
    (job_id,) = submit(stores)
    assert store.take_ticket(job_id, "askq.start", "w1") is None  # not yet published
    stores.claimed()
    assert store.take_ticket(job_id, "askq.poll", "w1") is None  # a stale message of another task
    assert store.take_ticket(job_id, "askq.start", "w1") == 1
    assert store.take_ticket(job_id, "askq.start", "w1") is None  # a duplicate message


def test_claimed_entry_stays_as_a_lease(stores: Stores, settings: Settings) -> None:
    (job_id,) = submit(stores)
    before = stores.now()
    stores.claimed()
    lease = stores.redis.zscore(stores.jobs.keys.due, job_id)
    assert lease is not None and lease >= before + settings.lease_s
    assert stores.claimed() == []
    stores.lapse(job_id)
    assert stores.claimed() == [job_id]  # a lost message is re-dispatched


def test_a_queued_message_is_not_published_again_at_lease_end(
    stores: Stores, settings: Settings
) -> None:
    """Under a backlog a message can outwait its lease: its job is not published a second
    time while the message is still queued (no duplicate pile-up), but it is when the queue
    no longer holds it (lost), and past the bound even while the queue stays busy."""
    (job_id,) = submit(stores)
    queue = stores.jobs.keys.broker_queue("askq.start")
    assert stores.claimed() == [job_id]
    stores.redis.lpush(queue, "the start message, still waiting")
    stores.redis.lpush(queue, "a message behind it")
    stores.lapse(job_id)
    before = stores.now()
    assert stores.claimed() == []
    lease = stores.redis.zscore(stores.jobs.keys.due, job_id)
    assert lease is not None and lease >= before + settings.lease_s  # renewed, still leased
    stores.redis.delete(queue)  # the queue lost it
    stores.lapse(job_id)
    assert stores.claimed() == [job_id]
    stores.redis.lpush(queue, "a busy queue")
    stores.lapse(job_id)
    assert stores.claimed() == []
    long_ago = stores.now() - settings.queued_bound_s - 1
    stores.redis.hset(stores.jobs.keys.job(job_id), "published_at", repr(long_ago))
    stores.lapse(job_id)
    assert stores.claimed() == [job_id]  # later, never lost


def test_terminal_transition_cleans_every_index(stores: Stores, settings: Settings) -> None:
    store = stores.jobs
    (job_id,) = submit(stores)
    loaded = store.load(job_id)
    assert stores.limits.acquire_slot(job_id)
    done = loaded.record.model_copy(update={"status": JobStatus.COMPLETED, "answer": "a"})
    store.transition(loaded, done, next_task=None, due_at=None, now=stores.now())
    r = store.redis
    k = store.keys
    assert r.zscore(k.due, job_id) is None
    assert r.zscore(k.deadlines, job_id) is None
    assert r.zscore(k.inflight, job_id) is None
    assert r.hget(k.job(job_id), "next") is None
    assert 0 < r.ttl(k.job(job_id)) <= settings.result_ttl_s
    assert store.counts()[JobStatus.COMPLETED] == 1
    assert store.counts()[JobStatus.PENDING] == 0


def test_each_end_of_a_batch_job_is_one_stream_entry_in_finishing_order(
    stores: Stores, settings: Settings
) -> None:
    ids = submit(stores, 3)
    (single,) = submit(stores)
    for job_id in (ids[2], ids[0], single):
        stores.end(job_id)
    loaded = stores.jobs.load(ids[2])  # a terminal record saved again does not end again
    stores.jobs.transition(loaded, loaded.record, next_task=None, due_at=None, now=stores.now())
    r, k = stores.redis, stores.jobs.keys
    batch_id = stores.jobs.load(ids[0]).record.batch_id
    assert batch_id is not None
    entries = r.xrange(k.batch_ended(batch_id))
    assert [fields[b"job"].decode() for _, fields in entries] == [ids[2], ids[0]]
    assert 0 < r.ttl(k.batch_ended(batch_id)) <= settings.result_ttl_s
    assert r.type(k.counts) == b"hash"  # a job outside a batch appends nowhere


def test_slots_are_handed_to_waiters_in_order(stores: Stores) -> None:
    store, limits = stores.jobs, stores.limits
    ids = submit(stores, 4)
    assert stores.claimed() == ids[:2]
    assert [limits.acquire_slot(i) for i in ids[:2]] == [True, True]
    assert limits.acquire_slot(ids[3]) is False  # a start arriving anyway waits its turn
    assert limits.inflight_count() == 2
    first = store.load(ids[0])
    done = first.record.model_copy(update={"status": JobStatus.FAILED})
    store.transition(first, done, next_task=None, due_at=None, now=stores.now())
    # the freed slot went to the first waiter, which is due again
    assert store.redis.zscore(store.keys.inflight, ids[2]) is not None
    assert store.redis.zscore(store.keys.inflight, ids[3]) is None
    assert stores.claimed() == [ids[2]]


def test_overdue_waiting_job_is_published_to_expire(stores: Stores) -> None:
    ids = submit(stores, 3)
    stores.claimed()
    stores.redis.zadd(stores.jobs.keys.deadlines, {ids[2]: stores.now() - 1})
    assert stores.dispatch.expire_overdue().due == 1
    assert ids[2] in stores.claimed()


def test_deadline_entries_of_ended_or_vanished_jobs_are_pruned(stores: Stores) -> None:
    """Enough stale entries would fill every sweep's window and starve real timeouts."""
    store = stores.jobs
    ids = submit(stores, 3)
    past = stores.now() - 1
    stores.redis.zadd(store.keys.deadlines, dict.fromkeys(ids, past))
    stores.redis.delete(store.keys.job(ids[0]))  # its results expired
    stores.end(ids[1])  # ended, while its deadline entry stayed (written by an older version)
    stores.redis.zadd(store.keys.deadlines, {ids[1]: past})
    expired = stores.dispatch.expire_overdue()
    assert (expired.due, expired.pruned) == (1, 2)
    assert stores.redis.zrange(store.keys.deadlines, 0, -1) == [ids[2].encode()]


def test_jobs_on_one_thread_are_due_one_at_a_time(stores: Stores) -> None:
    ids = stores.batches.submit(
        [JobRequest(question=f"q{i}", thread_id="thread_x") for i in range(3)], batch=True
    ).job_ids
    assert stores.claimed() == [ids[0]]
    stores.end(ids[0])
    assert stores.claimed() == [ids[1]]


def test_reclaim_frees_slots_of_vanished_jobs(stores: Stores, settings: Settings) -> None:
    ids = submit(stores, 3)
    for job_id in ids:
        stores.limits.acquire_slot(job_id)
    stores.redis.delete(stores.jobs.keys.job(ids[0]))
    inflight = stores.jobs.keys.inflight
    assert stores.limits.reclaim_slots() == 0  # slots taken within a lease are not read
    a_lease_ago = stores.now() - settings.lease_s - 1
    stores.redis.zadd(inflight, dict.fromkeys(ids[:2], a_lease_ago))
    assert stores.limits.reclaim_slots() == 1
    assert stores.redis.zscore(inflight, ids[2]) is not None
    # the live slot was looked at: the next sweeps leave it alone for another lease
    assert stores.redis.zscore(inflight, ids[1]) > a_lease_ago  # type: ignore[operator]


def test_rate_limit_spends_a_shared_budget(redis_url: str) -> None:
    settings = load_settings(redis_url=redis_url, rate_limit_rpm=120)
    one, two = (LimitStore(connect(settings), settings) for _ in range(2))
    # burst of 2 (one second's worth), then one request every 0.5 s, across both stores
    assert one.spend_requests(1) == 0.0
    assert two.spend_requests(1) == 0.0
    wait = one.spend_requests(1)
    assert 0.3 < wait <= 0.5
    assert two.spend_requests(1, force=True) == 0.0
    assert one.spend_requests(1) > wait


def test_cancel_request_is_taken_once(stores: Stores) -> None:
    store = stores.jobs
    (job_id,) = submit(stores)
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


def test_next_task_is_recorded_for_the_pump(stores: Stores) -> None:
    store = stores.jobs
    (job_id,) = submit(stores)
    loaded = store.load(job_id)
    running = loaded.record.model_copy(update={"status": JobStatus.RUNNING})
    now = stores.now()
    store.transition(loaded, running, next_task=Task.POLL, due_at=now - 1, now=now)
    claims = stores.dispatch.claim_due(10, "pump").claims
    assert [(c.job_id, c.task) for c in claims] == [(job_id, "askq.poll")]


def test_resubmitting_a_named_batch_skips_what_it_holds(stores: Stores) -> None:
    batches = stores.batches
    first = [JobRequest(question="q1", custom_id="a"), JobRequest(question="q2")]
    one = batches.submit(first, batch=True, name="nightly")
    again = [*first, JobRequest(question="q3", custom_id="c"), JobRequest(question="q2")]
    two = batches.submit(again, batch=True, name="nightly")
    assert two.batch_id == one.batch_id
    assert two.skipped == 2 and len(two.job_ids) == 2  # "q2" twice is two items
    assert one.batch_id is not None and batches.batch_size(one.batch_id) == 4
    other = batches.submit(first, batch=True, name="other")
    assert other.batch_id != one.batch_id and other.skipped == 0


def test_submitting_into_a_batch_adds_only_what_is_missing(stores: Stores) -> None:
    """Every batch dedupes its items, named or not: `--into` finishes a partial submit."""
    batches = stores.batches
    items = [JobRequest(question=f"q{i}") for i in range(5)]
    one = batches.submit(items[:3], batch=True)
    assert one.batch_id is not None
    two = batches.submit(items, batch=True, into=one.batch_id)
    assert two.batch_id == one.batch_id and (len(two.job_ids), two.skipped) == (2, 3)
    assert batches.batch_size(one.batch_id) == 5


def test_learned_durations_are_kept_per_key(stores: Stores) -> None:
    limits = stores.limits
    assert limits.durations("assistants:a") is None
    limits.learn_duration("assistants:a", running_at=0.0, done_at=4.0)
    assert limits.durations("assistants:a") == Durations(4.0, 4.0)
    limits.learn_duration("assistants:a", running_at=3.0, done_at=4.0)
    learned = limits.durations("assistants:a")
    assert learned is not None and learned != Durations(4.0, 4.0)
    assert limits.durations("assistants:b") is None


def test_a_cold_batch_defers_first_looks_past_the_scouts_and_retargets_them(
    stores: Stores,
) -> None:
    """While nothing is learned about a key, the first COLD_SCOUTS runs are polled as usual
    and the later ones' first looks wait; the first learned duration re-targets each waiting
    look to started + that duration, never before its earliest look (the server's hint)
    nor before now, and leaves alone a job that moved on."""
    limits, r, k = stores.limits, stores.redis, stores.jobs.keys
    key = "assistants:asst_cold"
    now = stores.now()
    scouts = [
        limits.defer_cold_look(key, f"scout{i}", started=now, deferred=now + 8, earliest=now)
        for i in range(COLD_SCOUTS)
    ]
    assert scouts == [False] * COLD_SCOUTS
    cases = {  # job id: (started, earliest look, deferred look)
        "pulled_in": (now - 1, now - 0.5, now + 7),
        "hinted": (now - 1, now + 20, now + 20),
        "overdue": (now - 9, now - 8.5, now - 1),
        "moved_on": (now - 1, now - 0.5, now + 7),
        "ticketed": (now - 1, now - 0.5, now + 7),
    }
    for job_id, (started, earliest, deferred) in cases.items():
        assert limits.defer_cold_look(
            key, job_id, started=started, deferred=deferred, earliest=earliest
        )
        r.hset(k.job(job_id), "next", "askq.poll")
        r.zadd(k.due, {job_id: deferred})
    r.zadd(k.due, {"moved_on": now + 3})  # its first look already happened; this is its next
    r.hset(k.job("ticketed"), "ticket", "askq.poll")  # its message is out: not moved
    assert limits.retarget_cold(key, 5.0) == 3
    after = stores.now()
    assert r.zscore(k.due, "pulled_in") == pytest.approx(now - 1 + 5.0)
    assert r.zscore(k.due, "hinted") == pytest.approx(now + 20)  # never before the hint
    assert now <= r.zscore(k.due, "overdue") <= after  # type: ignore[operator]
    assert r.zscore(k.due, "moved_on") == pytest.approx(now + 3)
    assert r.zscore(k.due, "ticketed") == pytest.approx(now + 7)
    assert not r.exists(k.cold_looks(key)) and not r.exists(k.cold_scouts(key))


def test_a_polls_lateness_after_its_due_time_is_counted(stores: Stores) -> None:
    (job_id,) = submit(stores)
    store = stores.jobs
    loaded = store.load(job_id)
    running = loaded.record.model_copy(update={"status": JobStatus.RUNNING})
    now = stores.now()
    store.transition(loaded, running, next_task="askq.poll", due_at=now - 2, now=now)
    assert stores.claimed() == [job_id]
    assert store.take_ticket(job_id, "askq.poll", "w1") is not None
    assert store.redis.hgetall(store.keys.poll_lateness) == {b"2.5": b"1"}  # 2 s late


def test_due_jobs_wait_in_the_due_set_while_their_queue_is_backed_up(stores: Stores) -> None:
    """Past QUEUE_HIGH_WATER messages waiting in a task's queue, its due entries stay due
    (held, not claimed, not leased): they go out later, packed, when the queue drains."""
    (job_id,) = submit(stores)
    queue = stores.jobs.keys.broker_queue("askq.start")
    stores.redis.lpush(queue, *[f"a waiting message {i}" for i in range(QUEUE_HIGH_WATER)])
    claimed = stores.dispatch.claim_due(10, "pump")
    assert (claimed.claims, claimed.held) == ([], 1)
    due = stores.redis.zscore(stores.jobs.keys.due, job_id)
    assert due is not None and due <= stores.now()  # still due, no lease taken
    stores.redis.rpop(queue)  # a worker took one
    assert stores.claimed() == [job_id]


def test_held_entries_do_not_starve_the_tasks_behind_them(stores: Stores) -> None:
    """A backlog of starts held in the due set must not keep a poll due after them waiting."""
    starts = submit(stores, 30)
    (polled,) = submit(stores)
    store = stores.jobs
    loaded = store.load(polled)
    running = loaded.record.model_copy(update={"status": JobStatus.RUNNING})
    store.transition(loaded, running, next_task="askq.poll", due_at=stores.now(), now=stores.now())
    start_queue = store.keys.broker_queue("askq.start")
    stores.redis.lpush(start_queue, *[f"a waiting start {i}" for i in range(QUEUE_HIGH_WATER)])
    claimed = stores.dispatch.claim_due(10, "pump")  # a window of 10: all held starts
    assert [c.job_id for c in claimed.claims] == [polled]
    assert claimed.held == len(starts)
