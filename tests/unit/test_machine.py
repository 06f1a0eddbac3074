"""The job state machine, without Redis or HTTP."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker import machine
from worker.errors import FinalApiError, RetryableApiError, ThreadBusy
from worker.machine import PollPolicy, Snapshot, Step, Task
from worker.models import ErrorInfo, JobRecord, JobRequest, ToolCall, Usage
from worker.states import RUN_STATUS, TERMINAL, JobStatus

NOW = 1_800_000_000.0
POLICY = PollPolicy(min_s=0.5, max_s=8.0)


def job(**fields: object) -> JobRecord:
    base: dict[str, object] = {
        "job_id": "job_1",
        "request": JobRequest(question="What is 1 + 1?"),
        "created_at": datetime.fromtimestamp(NOW, UTC),
        "deadline_at": datetime.fromtimestamp(NOW + 3600, UTC),
    }
    base.update(fields)
    return JobRecord.model_validate(base)


def running() -> JobRecord:
    return job(
        status=JobStatus.RUNNING,
        thread_id="t",
        run_id="r",
        run_ids=["r"],
        started_at=datetime.fromtimestamp(NOW, UTC),
    )


def snap(status: str, **fields: object) -> Snapshot:
    return Snapshot(status=status, run_id="r", thread_id="t", **fields)  # type: ignore[arg-type]


def rng() -> random.Random:
    return random.Random(7)


def test_every_remote_status_has_a_job_status() -> None:
    for remote in (
        "queued",
        "in_progress",
        "requires_action",
        "cancelling",
        "cancelled",
        "failed",
        "completed",
        "incomplete",
        "expired",
    ):
        assert remote in RUN_STATUS


def test_completed_stores_answer_and_usage_and_ends() -> None:
    usage = Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7)
    step = machine.on_snapshot(
        running(), snap("completed", answer="2", usage=usage), NOW, POLICY, rng()
    )
    assert step.record.status is JobStatus.COMPLETED
    assert step.record.answer == "2" and step.record.usage == usage
    assert step.task is None and step.at is None
    assert step.record.finished_at is not None


@pytest.mark.parametrize("remote", ["failed", "incomplete", "expired", "cancelled"])
def test_terminal_statuses_keep_the_server_error(remote: str) -> None:
    error = ErrorInfo(code="x", message="because")
    step = machine.on_snapshot(running(), snap(remote, error=error), NOW, POLICY, rng())
    assert step.record.status is RUN_STATUS[remote]
    assert step.record.error == error
    assert step.task is None


def test_unknown_remote_status_fails_instead_of_polling_forever() -> None:
    step = machine.on_snapshot(running(), snap("weird"), NOW, POLICY, rng())
    assert step.record.status is JobStatus.FAILED
    assert step.record.error is not None and "weird" in step.record.error.message


def test_in_progress_schedules_a_poll_no_sooner_than_the_hint() -> None:
    for seed in range(50):
        step = machine.on_snapshot(
            running(), snap("in_progress", poll_after_s=2.0), NOW, POLICY, random.Random(seed)
        )
        assert step.task is Task.POLL
        assert step.at is not None and 2.0 <= step.at - NOW <= 2.2


def test_backoff_grows_from_min_to_max_with_jitter() -> None:
    delays = [POLICY.delay(polls, None, random.Random(polls)) for polls in range(20)]
    assert 0.45 <= delays[0] <= 0.55
    assert all(d <= 8.0 * 1.1 for d in delays)
    assert delays[-1] >= 8.0 * 0.9
    assert delays[3] > delays[0]


def test_predicted_duration_moves_the_first_poll_to_the_expected_end() -> None:
    delay = POLICY.delay(0, None, rng(), expected_s=5.0, elapsed_s=0.0)
    assert 4.5 <= delay <= 5.5


def test_requires_action_hands_the_job_to_act() -> None:
    calls = [ToolCall(id="c1", name="f", arguments="{}")]
    step = machine.on_snapshot(
        running(), snap("requires_action", tool_calls=calls), NOW, POLICY, rng()
    )
    assert step.record.status is JobStatus.REQUIRES_ACTION
    assert step.record.required_calls == calls
    assert step.task is Task.ACT and step.at == NOW


def test_retryable_error_reschedules_the_same_task_after_retry_after() -> None:
    error = RetryableApiError("busy", status=429, retry_after=3.0)
    step = machine.on_api_error(running(), error, Task.POLL, NOW, POLICY, rng(), 5)
    assert step.task is Task.POLL and step.at is not None and step.at - NOW >= 3.0
    assert step.record.api_retries == 1 and step.record.status is JobStatus.RUNNING


def test_retries_are_bounded() -> None:
    error = RetryableApiError("boom", status=500, code="server_error")
    record = job().model_copy(update={"api_retries": 5})
    step = machine.on_api_error(record, error, Task.START, NOW, POLICY, rng(), 5)
    assert step.record.status is JobStatus.FAILED
    assert step.record.error == ErrorInfo(code="server_error", message="boom")


def test_polls_of_a_paid_run_never_give_up_on_an_outage() -> None:
    error = RetryableApiError("boom", status=503, code="server_error")
    record = running().model_copy(update={"api_retries": 50})
    step = machine.on_api_error(record, error, Task.POLL, NOW, POLICY, rng(), 5)
    assert step.record.status is JobStatus.RUNNING and step.task is Task.POLL
    assert step.at is not None and step.at - NOW <= 30.0


def test_thread_busy_does_not_use_up_retries() -> None:
    record = job().model_copy(update={"api_retries": 5})
    step = machine.on_api_error(record, ThreadBusy("busy"), Task.START, NOW, POLICY, rng(), 5)
    assert step.record.status is JobStatus.PENDING and step.task is Task.START


def test_final_error_fails_with_the_api_message() -> None:
    step = machine.on_api_error(
        job(),
        FinalApiError("No assistant found", status=404, code="not_found"),
        Task.START,
        NOW,
        POLICY,
        rng(),
        5,
    )
    assert step.record.status is JobStatus.FAILED
    assert step.record.error == ErrorInfo(code="not_found", message="No assistant found")


def test_cancel_of_pending_job_ends_it_without_remote_call() -> None:
    step = machine.on_cancel_requested(job(), NOW)
    assert step is not None and step.record.status is JobStatus.CANCELLED and step.task is None


def test_cancel_of_running_job_goes_cancelling_and_polls() -> None:
    step = machine.on_cancel_requested(running(), NOW)
    assert step is not None and step.record.status is JobStatus.CANCELLING
    assert step.task is Task.POLL


def test_cancel_of_finished_job_changes_nothing() -> None:
    done = machine.on_snapshot(running(), snap("completed", answer="2"), NOW, POLICY, rng())
    assert machine.on_cancel_requested(done.record, NOW) is None


def test_cancelling_job_whose_run_completed_first_keeps_completed() -> None:
    cancelling = running().model_copy(update={"status": JobStatus.CANCELLING})
    step = machine.on_snapshot(cancelling, snap("completed", answer="2"), NOW, POLICY, rng())
    assert step.record.status is JobStatus.COMPLETED and step.record.answer == "2"


def test_cancelling_job_still_in_progress_stays_cancelling() -> None:
    cancelling = running().model_copy(update={"status": JobStatus.CANCELLING})
    for remote in ("in_progress", "cancelling"):
        step = machine.on_snapshot(cancelling, snap(remote), NOW, POLICY, rng())
        assert step.record.status is JobStatus.CANCELLING and step.task is Task.POLL


def test_cancelling_job_waiting_for_tool_outputs_is_cancelled() -> None:
    cancelling = running().model_copy(update={"status": JobStatus.CANCELLING})
    step = machine.on_snapshot(cancelling, snap("requires_action"), NOW, POLICY, rng())
    assert step.record.status is JobStatus.CANCELLED and step.task is None


def test_timeout_expires_the_job() -> None:
    record = running()
    assert not machine.timed_out(record, NOW)
    assert machine.timed_out(record, NOW + 3600)
    step = machine.on_timeout(record, NOW + 3600)
    assert step.record.status is JobStatus.EXPIRED and step.record.error is not None


def next_for(job: JobRecord) -> Task | None:
    """The task that should drive a live job on, by its status (the property's oracle)."""
    return {
        JobStatus.PENDING: Task.START,
        JobStatus.RUNNING: Task.POLL,
        JobStatus.CANCELLING: Task.POLL,
        JobStatus.REQUIRES_ACTION: Task.ACT,
    }.get(job.status)


EVENTS = st.sampled_from(
    ["started", "thread", "cancel", "timeout", "retryable", "busy", "final", "tools"]
    + ["cancel_retryable"]
    + [f"snap:{s}" for s in RUN_STATUS]
    + ["snap:unknown"]
)


def apply(record: JobRecord, event: str, now: float) -> Step | None:
    r = random.Random(1)
    if event == "started" and record.status is JobStatus.PENDING:
        return machine.on_started(record, snap("queued"), now, POLICY, r)
    if event == "thread" and record.status is JobStatus.PENDING:
        return Step(machine.on_thread_created(record, "t"), Task.START, now + 60)
    if event == "cancel":
        return machine.on_cancel_requested(record, now)
    if event == "timeout":
        return machine.on_timeout(record, now)
    if event in ("retryable", "busy", "final", "cancel_retryable"):
        error = {
            "retryable": RetryableApiError("x"),
            "busy": ThreadBusy("x"),
            "final": FinalApiError("x"),
            "cancel_retryable": RetryableApiError("x"),
        }[event]
        return machine.on_api_error(record, error, failed_task(record, event), now, POLICY, r, 3)
    if event == "tools" and record.status is JobStatus.REQUIRES_ACTION:
        return machine.on_tools_done(record, snap("in_progress"), now, POLICY, r)
    if event.startswith("snap:") and record.status in (
        JobStatus.RUNNING,
        JobStatus.CANCELLING,
        JobStatus.REQUIRES_ACTION,
    ):
        return machine.on_snapshot(record, snap(event[5:], answer="a"), now, POLICY, r)
    return None


def failed_task(record: JobRecord, event: str) -> Task:
    """The task whose API call failed: the cancel task's remote cancel, or the job's own."""
    if event == "cancel_retryable":
        return Task.CANCEL
    return next_for(record) or Task.POLL


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, max_size=30))
def test_no_event_sequence_leaves_a_live_job_without_a_next_task(events: list[str]) -> None:
    record = job()
    now = NOW
    for event in events:
        if record.status in TERMINAL:
            # a finished job stays finished whatever arrives late
            assert machine.on_cancel_requested(record, now) is None
            break
        step = apply(record, event, now)
        if step is None:
            continue
        if step.record.status in TERMINAL:
            assert step.task is None and step.at is None
            assert step.record.finished_at is not None
        else:
            assert step.task is not None and step.at is not None and step.at >= now
            # the task the status calls for; after a failed call, that same task again
            failed = event in ("retryable", "busy", "final", "cancel_retryable")
            expected = failed_task(record, event) if failed else next_for(step.record)
            assert step.task is expected, (event, record.status, step.record.status)
        record = step.record
        now += 1.0
