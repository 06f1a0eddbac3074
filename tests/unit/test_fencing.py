"""Claims, heartbeats and fencing against a real Redis: a slow task on a live worker keeps its
job, a dead worker's jobs move on at once, and a task that lost its claim can save nothing."""

from __future__ import annotations

import pytest

from tests.unit.test_store import Stores, make_stores, submit
from worker.errors import ClaimLost
from worker.settings import Settings, load_settings
from worker.states import JobStatus


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return load_settings(redis_url=redis_url, assistant_id="a", worker_dead_after_s=5)


@pytest.fixture
def stores(settings: Settings) -> Stores:
    return make_stores(settings)


def taken(stores: Stores, worker: str = "w1") -> tuple[str, int]:
    """A job whose start was published and taken by `worker`, which lists it as running."""
    (job_id,) = submit(stores)
    assert stores.claimed() == [job_id]
    epoch = stores.jobs.take_ticket(job_id, "askq.start", worker)
    assert epoch is not None
    stores.dispatch.heartbeat(worker, [job_id])
    return job_id, epoch


def save(stores: Stores, job_id: str, fence: int | None, *, release: bool = True) -> object:
    loaded = stores.jobs.load(job_id)
    record = loaded.record.model_copy(update={"thread_id": "thread_1"})
    now = stores.now()
    return stores.jobs.transition(
        loaded, record, next_task="askq.start", due_at=now + 60, now=now, fence=fence,
        release=release,
    )  # fmt: skip


def kill(stores: Stores, worker: str) -> None:
    """The worker's heartbeat lapsed (what SIGKILL leads to after ASKQ_WORKER_DEAD_AFTER_S)."""
    stores.redis.zadd(stores.jobs.keys.workers, {worker: stores.now() - 60})


def test_a_live_worker_keeps_the_lease_of_the_task_it_runs(stores: Stores) -> None:
    job_id, _ = taken(stores)
    stores.lapse(job_id)  # the call outlived the lease, but the worker is alive
    assert stores.claimed() == []
    lease = stores.redis.zscore(stores.jobs.keys.due, job_id)
    assert lease is not None and lease > stores.now()  # renewed, not published again


def test_a_dead_workers_lease_is_published_again(stores: Stores) -> None:
    job_id, _ = taken(stores)
    kill(stores, "w1")
    stores.lapse(job_id)
    assert stores.claimed() == [job_id]


def test_a_task_past_its_bound_is_stuck_and_loses_its_job(
    stores: Stores, settings: Settings
) -> None:
    job_id, epoch = taken(stores)
    stuck_since = stores.now() - settings.task_bound_s - 1
    stores.redis.hset(stores.jobs.keys.job(job_id), "taken_at", repr(stuck_since))
    stores.lapse(job_id)
    assert stores.claimed() == [job_id]
    with pytest.raises(ClaimLost):
        save(stores, job_id, epoch)


def test_the_sweep_moves_a_dead_workers_jobs_on_at_once(stores: Stores) -> None:
    job_id, epoch = taken(stores)
    other, _ = taken(stores, "w2")
    kill(stores, "w1")
    lease = stores.redis.zscore(stores.jobs.keys.due, job_id)
    assert lease is not None and lease > stores.now()  # the lease alone would wait
    assert stores.dispatch.heartbeat("w9", []).moved == 1
    assert stores.claimed() == [job_id]  # due now, not at the lease's end
    assert stores.redis.zscore(stores.jobs.keys.workers, "w1") is None
    # a worker only cut off from Redis, not dead, can no longer save the job
    with pytest.raises(ClaimLost):
        save(stores, job_id, epoch)
    new_epoch = stores.jobs.take_ticket(job_id, "askq.start", "w3")
    assert new_epoch is not None and new_epoch > epoch
    assert save(stores, job_id, new_epoch) is not None
    lease = stores.redis.zscore(stores.jobs.keys.due, other)
    assert lease is not None and lease > stores.now()  # the live worker's job stays


def test_a_task_that_finished_leaves_nothing_for_the_sweep(stores: Stores) -> None:
    job_id, epoch = taken(stores)
    assert save(stores, job_id, epoch) is not None  # the task's last save releases the job
    kill(stores, "w1")
    assert stores.dispatch.heartbeat("w9", []).moved == 0
    lease = stores.redis.zscore(stores.jobs.keys.due, job_id)
    assert lease is not None and lease > stores.now() + 30  # its own due time, untouched


def test_an_intermediate_save_keeps_the_job_owned(stores: Stores) -> None:
    job_id, epoch = taken(stores)
    assert save(stores, job_id, epoch, release=False) is not None
    kill(stores, "w1")
    assert stores.dispatch.heartbeat("w9", []).moved == 1


def test_a_scheduled_task_is_published_even_while_its_last_worker_lives(stores: Stores) -> None:
    """Keeping a lease alive must not hold back the job's next task once the last released."""
    job_id, epoch = taken(stores)
    loaded = stores.jobs.load(job_id)
    running = loaded.record.model_copy(update={"status": JobStatus.RUNNING, "run_id": "r"})
    now = stores.now()
    stores.jobs.transition(loaded, running, next_task="askq.poll", due_at=now - 1, now=now,
                           fence=epoch)  # fmt: skip
    stores.dispatch.heartbeat("w1", [job_id])  # its heartbeat has not caught up yet
    assert stores.claimed() == [job_id]


def test_an_unfenced_save_still_compares_versions(stores: Stores) -> None:
    job_id, _ = taken(stores)
    assert save(stores, job_id, None) is not None
    assert stores.jobs.load(job_id).version == 2


def test_a_duplicate_arriving_after_the_lease_runs_once(stores: Stores) -> None:
    """A message held up past its lease (a slow broker, a redelivery) arrives after the job
    was published again: of the two messages one runs, with the newer epoch; the other finds
    no ticket, and a task that had taken the older claim can no longer save."""
    (job_id,) = submit(stores)
    assert stores.claimed() == [job_id]  # message 1, epoch 1: lost for now
    stores.lapse(job_id)
    assert stores.claimed() == [job_id]  # message 2, epoch 2
    late = stores.jobs.take_ticket(job_id, "askq.start", "w1")  # message 1 arrives late
    assert late == 2
    assert stores.jobs.take_ticket(job_id, "askq.start", "w2") is None  # message 2: no-op
    with pytest.raises(ClaimLost):
        save(stores, job_id, 1)
    assert save(stores, job_id, late) is not None
