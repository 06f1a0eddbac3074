"""The job state machine: pure functions of (job record, event) → (new record, next step).

No Redis, no HTTP, no clock: the tasks load a record, ask this module what to do, store the
answer with a compare-and-set and dispatch the next task. Every function returns a `Step`
whose `task` is the one task that drives the job on, and `at` when; a terminal record has
neither, a live record always has both (so no job is ever left live with no lease).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from worker.errors import ApiError, FinalApiError, RateLimited, RetryableApiError, ThreadBusy
from worker.models import ErrorInfo, JobRecord, ToolCall, Usage
from worker.states import RUN_STATUS, JobStatus


class Task(StrEnum):
    START = "askq.start"
    """Create the remote run (thread first, for exactly-once)."""
    POLL = "askq.poll"
    """Read the run's status; fetch the answer when it is done."""
    ACT = "askq.act"
    """Run the tools a `requires_action` run asked for and submit their outputs."""
    CANCEL = "askq.cancel"
    """Act on a cancel request."""


@dataclass(frozen=True)
class Snapshot:
    """What one look at a remote run told askq, in protocol-neutral words."""

    status: str
    run_id: str
    thread_id: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    answer: str | None = None
    usage: Usage | None = None
    error: ErrorInfo | None = None
    poll_after_s: float | None = None


@dataclass(frozen=True)
class Step:
    record: JobRecord
    task: Task | None
    at: float | None

    @property
    def terminal(self) -> bool:
        return self.record.status.terminal


RETRY_CEILING_S = 30.0
RETRY_DOUBLINGS = 8


@dataclass(frozen=True)
class PollPolicy:
    """When to look at a run again: never sooner than the server's hint; without one a
    back-off from `min_s` to `max_s`; with jitter either way, because hints and equal
    back-offs otherwise re-synchronise thousands of polls into bursts."""

    min_s: float = 0.5
    max_s: float = 8.0
    factor: float = 1.5
    jitter: float = 0.1
    floor_s: float = 0.0
    """No look sooner than this, even when the server hints sooner (webhooks: the safety net)."""

    def delay(
        self,
        polls: int,
        hint_s: float | None,
        rng: random.Random,
        expected_s: float | None = None,
        elapsed_s: float = 0.0,
    ) -> float:
        if hint_s is not None:
            return max(hint_s, self.floor_s) * (1 + rng.uniform(0, self.jitter))
        backoff = min(self.max_s, self.min_s * self.factor**polls)
        if expected_s is not None and elapsed_s < expected_s:
            # a learned run duration: wait for it, even past max_s (that is the point), and
            # jitter only later, never before the moment learned
            wait = max(self.min_s, expected_s - elapsed_s)
            return wait * (1 + rng.uniform(0, self.jitter / 2))
        return backoff * (1 + rng.uniform(-self.jitter, self.jitter))

    def retry_delay(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Back-off for a failed API call (429, 5xx, timeout): exponential from `min_s`
        with equal jitter (half fixed, half random), never sooner than `Retry-After`."""
        ceiling = min(RETRY_CEILING_S, self.min_s * 2**attempt)
        delay = rng.uniform(ceiling / 2, ceiling)
        return max(delay, retry_after_s or 0.0)


def _dt(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


def _with_run(run_ids: list[str], run_id: str) -> list[str]:
    """The chain of a job's runs (responses, for Responses), each once, oldest first."""
    return run_ids if run_id in run_ids else [*run_ids, run_id]


def finish(job: JobRecord, status: JobStatus, now: float, error: ErrorInfo | None = None) -> Step:
    """Every terminal record has a usage: what the API reported, else what earlier responses
    of the chain used, else zeros (nothing was billed that askq knows of)."""
    record = job.model_copy(
        update={
            "status": status,
            "finished_at": _dt(now),
            "error": error if error is not None else job.error,
            "required_calls": [],
            "usage": job.usage or job.settled_usage or Usage(),
        }
    )
    return Step(record, None, None)


def timed_out(job: JobRecord, now: float) -> bool:
    return now >= job.deadline_at.timestamp() and not job.status.terminal


def on_timeout(job: JobRecord, now: float) -> Step:
    """ASKQ_JOB_TIMEOUT_S passed; the task cancels any remote run before storing this."""
    return finish(
        job,
        JobStatus.EXPIRED,
        now,
        ErrorInfo(code="job_timeout", message="the job was not finished within its timeout"),
    )


def on_thread_created(job: JobRecord, thread_id: str | None) -> JobRecord:
    """Half-way through a start: the thread exists (None: the protocol needs none, e.g.
    Responses without conversations). The same start goes on at once (the job stays
    `pending` with its start's lease); only if it dies does the job come back."""
    return job.model_copy(
        update={
            "thread_id": thread_id,
            "thread_created": True,
            "api_retries": 0,
            "maybe_started": True,
        }
    )


def on_message_added(job: JobRecord, message_id: str) -> JobRecord:
    return job.model_copy(update={"message_id": message_id, "maybe_started": True})


def on_started(
    job: JobRecord,
    snap: Snapshot,
    now: float,
    policy: PollPolicy,
    rng: random.Random,
    expected_s: float | None = None,
) -> Step:
    """The run exists (created now, or adopted after a crash)."""
    record = job.model_copy(
        update={
            "status": JobStatus.RUNNING,
            "run_id": snap.run_id,
            "thread_id": snap.thread_id or job.thread_id,
            "run_ids": _with_run(job.run_ids, snap.run_id),
            "started_at": job.started_at or _dt(now),
            "api_retries": 0,
            "maybe_started": False,
        }
    )
    return on_snapshot(record, snap, now, policy, rng, expected_s, first=True)


def on_snapshot(
    job: JobRecord,
    snap: Snapshot,
    now: float,
    policy: PollPolicy,
    rng: random.Random,
    expected_s: float | None = None,
    *,
    first: bool = False,
) -> Step:
    """Fold one observation of the remote run into the job."""
    status = RUN_STATUS.get(snap.status)
    polls = job.polls if first else job.polls + 1
    usage = job.usage
    if snap.usage is not None:
        usage = snap.usage if job.settled_usage is None else job.settled_usage + snap.usage
    base = job.model_copy(update={"polls": polls, "usage": usage, "api_retries": 0})
    if status is None:
        return finish(
            base,
            JobStatus.FAILED,
            now,
            ErrorInfo(code="unknown_status", message=f"the API reported status {snap.status!r}"),
        )
    if status in (JobStatus.COMPLETED, JobStatus.INCOMPLETE):
        # an incomplete run's text is kept too: results show it as `partial_answer`
        record = base.model_copy(update={"answer": snap.answer})
        return finish(record, status, now, snap.error)
    if status.terminal:
        return finish(base, status, now, snap.error)
    if status is JobStatus.REQUIRES_ACTION and job.status is JobStatus.CANCELLING:
        # A run waiting for tool outputs askq will never send cannot go on or bill more
        # (and a Responses function call is already a finished response): it is over.
        return finish(base, JobStatus.CANCELLED, now)
    if status is JobStatus.REQUIRES_ACTION:
        record = base.model_copy(
            update={"status": JobStatus.REQUIRES_ACTION, "required_calls": snap.tool_calls}
        )
        return Step(record, Task.ACT, now)
    keep = JobStatus.CANCELLING if job.status is JobStatus.CANCELLING else JobStatus.RUNNING
    if status is JobStatus.CANCELLING:
        keep = JobStatus.CANCELLING
    elapsed = now - job.started_at.timestamp() if job.started_at else 0.0
    delay = policy.delay(polls, snap.poll_after_s, rng, expected_s, elapsed)
    record = base.model_copy(update={"status": keep, "running_at_s": elapsed})
    return Step(record, Task.POLL, now + delay)


def on_api_error(
    job: JobRecord,
    error: ApiError,
    task: Task,
    now: float,
    policy: PollPolicy,
    rng: random.Random,
    max_retries: int,
) -> Step:
    """Retry what may succeed later (re-enqueued with back-off, never slept); fail the job
    with the API's own message when retrying cannot help."""
    info = ErrorInfo(code=error.code, message=error.message)
    if isinstance(error, RateLimited):
        # askq's own budget: wait exactly as long as it says (with jitter), costs no retry
        delay = (error.retry_after or policy.min_s) * (1 + rng.uniform(0, policy.jitter))
        return Step(job, task, now + delay)
    if isinstance(error, ThreadBusy):
        # someone else's run on the thread: wait longer each time, bounded by the timeout
        waits = job.busy_waits + 1
        record = job.model_copy(update={"busy_waits": waits})
        return Step(record, task, now + policy.retry_delay(min(waits, 6), error.retry_after, rng))
    if isinstance(error, RetryableApiError):
        retries = job.api_retries + 1
        if retries > max_retries and task is not Task.POLL:
            return finish(job, JobStatus.FAILED, now, info)
        # A run that exists is paid for: looking at it again costs nothing, so polls keep
        # trying through an outage (bounded by the job's timeout), never fail the job.
        record = job.model_copy(update={"api_retries": retries})
        delay = policy.retry_delay(min(retries, RETRY_DOUBLINGS), error.retry_after, rng)
        return Step(record, task, now + delay)
    assert isinstance(error, FinalApiError)
    return finish(job, JobStatus.FAILED, now, info)


def on_tools_done(
    job: JobRecord,
    snap: Snapshot,
    now: float,
    policy: PollPolicy,
    rng: random.Random,
) -> Step:
    """Outputs were submitted (their records were stored before); the run, or a new
    response for Responses, goes on."""
    settled = job.settled_usage
    if snap.run_id != job.run_id and job.usage is not None:
        # a new response of the chain: what the previous one used is settled
        settled = job.usage
    record = job.model_copy(
        update={
            "settled_usage": settled,
            "status": JobStatus.RUNNING,
            "required_calls": [],
            "run_id": snap.run_id,
            "run_ids": _with_run(job.run_ids, snap.run_id),
        }
    )
    return on_snapshot(record, snap, now, policy, rng, first=True)


def on_cancel_requested(job: JobRecord, now: float) -> Step | None:
    """None: nothing to change (already terminal or already cancelling). A job with no
    remote run ends at once; one with a run goes `cancelling` and is polled to its end."""
    if job.status.terminal or job.status is JobStatus.CANCELLING:
        return None
    if job.status is JobStatus.PENDING and job.run_id is None:
        return finish(job, JobStatus.CANCELLED, now)
    record = job.model_copy(update={"status": JobStatus.CANCELLING})
    return Step(record, Task.POLL, now)
