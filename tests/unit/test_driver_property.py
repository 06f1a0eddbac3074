"""The driver's own saves, driven at random against a real Redis: whatever the API answers and
whatever order tasks (fresh, stale, duplicate, cancels) arrive in, the stored job keeps its
invariants. The API is scripted at the very edge (the adapter); everything else is real."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker import driver
from worker.driver import Held
from worker.errors import ClaimLost, FinalApiError, RetryableApiError, RunGone, ThreadBusy
from worker.heartbeat import RunningJobs
from worker.limits import LimitStore
from worker.machine import PollPolicy, Snapshot, Task
from worker.models import JobRecord, JobRequest, ToolCall
from worker.redis_store import ServerClock, connect
from worker.runtime import Runtime
from worker.settings import Settings, load_settings
from worker.states import TERMINAL, JobStatus
from worker.store import JobStore
from worker.tools import ToolRegistry

STATUSES = [
    "queued", "in_progress", "requires_action", "cancelling", "completed", "failed",
    "cancelled", "expired", "incomplete",
]  # fmt: skip
OUTCOMES = [*STATUSES, *["in_progress", "requires_action"] * 4, "retryable", "busy"]
OUTCOMES += ["final", "gone"]
ACTIONS = [*["due"] * 8, "stale", "duplicate", "cancel"]
NEXT = {
    JobStatus.PENDING: Task.START,
    JobStatus.RUNNING: Task.POLL,
    JobStatus.CANCELLING: Task.POLL,
    JobStatus.REQUIRES_ACTION: Task.ACT,
}


class ScriptedApi:
    """Each call takes the next outcome the test drew ("in_progress" once they run out)."""

    def __init__(self, outcomes: list[str]) -> None:
        self.outcomes: Iterator[str] = iter(outcomes)
        self.runs = 0

    def _next(self) -> str:
        outcome = next(self.outcomes, "in_progress")
        if outcome == "retryable":
            raise RetryableApiError("scripted 500", status=500)
        if outcome == "busy":
            raise ThreadBusy("scripted busy", status=400)
        if outcome == "final":
            raise FinalApiError("scripted 400", status=400)
        if outcome == "gone":
            raise RunGone("scripted 404", status=404)
        return outcome

    def _snapshot(self, status: str, run_id: str) -> Snapshot:
        calls = [ToolCall(id="call_1", name="nosuch", arguments="{}")]
        return Snapshot(
            status=status,
            run_id=run_id,
            thread_id="thread_1",
            tool_calls=calls if status == "requires_action" else [],
            answer="scripted answer" if status == "completed" else None,
        )

    def follow_up(self) -> AbstractContextManager[None]:
        return nullcontext()

    def create_thread(self, job: JobRecord) -> str:
        self._next()
        return "thread_1"

    def add_messages(self, job: JobRecord) -> str:
        return "msg_1"

    def find_run(self, job: JobRecord) -> Snapshot | None:
        outcome = self._next()
        return None if self.runs == 0 else self._snapshot(outcome, f"run_{self.runs}")

    def create_run(self, job: JobRecord) -> Snapshot:
        outcome = self._next()
        self.runs += 1
        return self._snapshot(outcome, f"run_{self.runs}")

    def poll(self, job: JobRecord) -> Snapshot:
        assert job.run_id is not None
        return self._snapshot(self._next(), job.run_id)

    def submit_tool_outputs(self, job: JobRecord, outputs: list[tuple[str, str]]) -> Snapshot:
        assert job.run_id is not None
        return self._snapshot(self._next(), job.run_id)

    def stray_runs(self, job: JobRecord) -> list[str]:
        return []

    def cancel(self, job: JobRecord, run_id: str | None = None) -> None:
        self._next()


@pytest.fixture
def base_settings(redis_url: str) -> Settings:
    return load_settings(redis_url=redis_url, assistant_id="a", tool_timeout_s=1.0)


def runtime(settings: Settings, api: ScriptedApi) -> Runtime:
    client = connect(settings)
    clock = ServerClock()
    store = JobStore(client, settings)
    clock.sync(store.server_time())
    return Runtime(
        settings=settings,
        redis=client,
        store=store,
        limits=LimitStore(client, settings),
        clock=clock,
        worker_id="w1",
        jobs=RunningJobs(),
        http=None,  # type: ignore[arg-type]
        adapter=api,  # type: ignore[arg-type]
        policy=PollPolicy(min_s=0.1, max_s=0.5),
        rng=random.Random(3),
        tools=ToolRegistry(),
        pid=os.getpid(),
    )


TASKS = {Task.START: driver.start, Task.POLL: driver.poll, Task.ACT: driver.act}


def run(rt: Runtime, task: str, held: Held) -> None:
    """What `worker.tasks._run` does once it holds a ticket (or none, for a cancel)."""
    try:
        if task == Task.CANCEL:
            driver.cancel(rt, Held(held.job_id))
        else:
            TASKS[Task(task)](rt, held)
    except ClaimLost:
        pass


def check(rt: Runtime, job_id: str, last_version: int) -> int:
    store, k = rt.store, rt.store.keys
    fields = store.redis.hmget(k.job(job_id), ["version", "status", "next"])
    version, status_raw, next_raw = (f.decode() if f else None for f in fields)
    assert version is not None and int(version) >= last_version
    record = store.load(job_id).record
    status = JobStatus(status_raw)
    assert record.status is status
    counts = store.counts()
    assert counts[status] == 1 and sum(counts.values()) == 1, counts
    in_due = store.redis.zscore(k.due, job_id) is not None
    if status in TERMINAL:
        assert not next_raw and not in_due
        assert store.redis.zscore(k.deadlines, job_id) is None
        assert store.redis.zscore(k.inflight, job_id) is None
        assert record.finished_at is not None
    else:
        # the task its status calls for (or a re-armed cancel), and a way to get there
        assert next_raw in (NEXT[status].value, Task.CANCEL.value), (status, next_raw)
        parked = store.redis.zscore(k.waiting, job_id) is not None
        assert in_due or parked, status
    return int(version)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    outcomes=st.lists(st.sampled_from(OUTCOMES), max_size=40),
    actions=st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=25),
)
def test_no_order_of_tasks_and_answers_breaks_a_stored_job(
    base_settings: Settings, outcomes: list[str], actions: list[str]
) -> None:
    api = ScriptedApi(outcomes)
    rt = runtime(base_settings, api)
    rt.redis.flushdb()
    from worker.batches import BatchStore

    batches = BatchStore(rt.redis, base_settings)
    (job_id,) = batches.submit([JobRequest(question="q")], batch=False).job_ids
    from worker.dispatch import DispatchStore

    dispatch = DispatchStore(rt.redis, base_settings)
    version = check(rt, job_id, 0)
    last: tuple[str, int] | None = None
    for action in actions:
        if action == "due":
            now = rt.store.server_time()
            rt.redis.zadd(rt.store.keys.due, {job_id: now - 1}, xx=True)  # its time has come
            for claim in dispatch.claim_due(10, "pump").claims:
                epoch = rt.store.take_ticket(claim.job_id, claim.task, rt.worker_id)
                if claim.task == Task.CANCEL:
                    run(rt, claim.task, Held(job_id))
                elif epoch is not None:
                    last = (claim.task, epoch)
                    run(rt, claim.task, Held(job_id, epoch))
        elif action == "stale" and last is not None:
            # a task whose claim was taken over since (its epoch is old) changes nothing,
            # whatever the API tells it (error paths included)
            before = rt.store.load(job_id).version
            run(rt, last[0], Held(job_id, last[1] - 1))
            assert rt.store.load(job_id).version == before
        elif action == "duplicate" and last is not None:
            # the same message delivered again: no ticket left to take
            assert rt.store.take_ticket(job_id, last[0], rt.worker_id) is None
        elif action == "cancel":
            rt.store.request_cancel(job_id)
            run(rt, Task.CANCEL, Held(job_id))
        version = check(rt, job_id, version)


class StrayApi(ScriptedApi):
    """A server that carried out an abandoned creation: the thread holds another live run
    of the job."""

    def __init__(self) -> None:
        super().__init__(["queued", "completed"])
        self.cancelled: list[str | None] = []

    def create_run(self, job: JobRecord) -> Snapshot:
        raise RetryableApiError("timed out", code="timeout")  # sent; its answer never came

    def find_run(self, job: JobRecord) -> Snapshot | None:
        return self._snapshot("in_progress", "run_mine")

    def stray_runs(self, job: JobRecord) -> list[str]:
        return ["run_late"] if job.stray_check else []

    def cancel(self, job: JobRecord, run_id: str | None = None) -> None:
        self.cancelled.append(run_id)


def test_a_job_that_lost_a_creation_cancels_its_stray_runs_before_it_ends(
    base_settings: Settings,
) -> None:
    api = StrayApi()
    rt = runtime(base_settings, api)
    from worker.batches import BatchStore
    from worker.dispatch import DispatchStore

    (job_id,) = (
        BatchStore(rt.redis, base_settings).submit([JobRequest(question="q")], batch=False).job_ids
    )
    dispatch = DispatchStore(rt.redis, base_settings)

    def due_task() -> None:
        rt.redis.zadd(rt.store.keys.due, {job_id: rt.store.server_time() - 1}, xx=True)
        (claim,) = dispatch.claim_due(10, "pump").claims
        epoch = rt.store.take_ticket(job_id, claim.task, rt.worker_id)
        assert epoch is not None
        TASKS[Task(claim.task)](rt, Held(job_id, epoch))

    due_task()  # the start: the creation is sent, its answer lost
    assert rt.store.load(job_id).record.stray_check
    due_task()  # the retry adopts its run (run_mine)
    assert rt.store.load(job_id).record.run_id == "run_mine"
    api.outcomes = iter(["completed"])
    due_task()  # the poll that ends the job
    assert rt.store.load(job_id).record.status is JobStatus.COMPLETED
    assert api.cancelled == ["run_late"]
    assert int(rt.redis.get(rt.store.keys.stray_runs) or 0) == 1
