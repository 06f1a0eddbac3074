"""What each task does to a job: load, ask the state machine, call the API, store (CAS).

Every function here takes the job id a task received and the process `Runtime`; it never
raises for an API outcome (the state machine turns those into retries or failures) and it
never sleeps: a wait is a due time written to Redis.
"""

from __future__ import annotations

import logging
import time

import redis

from worker import machine
from worker.errors import ApiError, FinalApiError, RateLimited, RetryableApiError
from worker.machine import Step, Task
from worker.models import JobRecord
from worker.runtime import Runtime
from worker.states import RUN_STATUS, JobStatus
from worker.store import Loaded
from worker.tools import run_tool_calls

log = logging.getLogger("askq")


def _save(rt: Runtime, loaded: Loaded, step: Step, now: float) -> Loaded | None:
    stored = rt.store.transition(loaded, step.record, next_task=step.task, due_at=step.at, now=now)
    if stored is not None and rt.runs is not None:
        old, new = loaded.record, step.record
        recorded = {new.run_id, new.thread_id} - {old.run_id, old.thread_id, None}
        if recorded and not new.status.terminal:
            try:
                rt.runs.record(new.job_id, sorted(r for r in recorded if r), now)
            except redis.RedisError as exc:  # webhooks missed: the safety-net polls remain
                log.warning("job %s: webhook index not written (%s)", new.job_id, exc)
    job = step.record
    if stored is not None and step.terminal and job.status is not JobStatus.COMPLETED:
        # one line per job that ends not completed, whatever the path that ended it (a cancel
        # was asked for: not a warning)
        level = logging.INFO if job.status is JobStatus.CANCELLED else logging.WARNING
        code = job.error.code if job.error else "-"
        log.log(level, "job %s ended %s: %s", job.job_id, job.status.value, code)
    return stored


def _fail_api(rt: Runtime, loaded: Loaded, error: ApiError, task: Task, now: float) -> None:
    step = machine.on_api_error(
        loaded.record, error, task, now, rt.policy, rt.rng, rt.settings.max_api_retries
    )
    _save(rt, loaded, step, now)


def _cancel_remote(rt: Runtime, loaded: Loaded) -> None:
    """Best effort: the run is being abandoned (timeout, or a cancel won the race). Such a
    cancel overdraws the request budget rather than leave a run billing."""
    job = loaded.record
    try:
        with rt.adapter.follow_up():
            if job.run_id is None and job.maybe_started and job.thread_id is not None:
                # a start was cut short: a run may exist that was never recorded
                found = rt.adapter.find_run(job)
                if found is None:
                    return
                job = job.model_copy(update={"run_id": found.run_id})
            if job.run_id is not None:
                rt.adapter.cancel(job)
    except ApiError as exc:
        log.info("job %s: remote cancel not done (%s)", job.job_id, exc.code)


def _expire(rt: Runtime, loaded: Loaded, now: float) -> None:
    _cancel_remote(rt, loaded)
    _save(rt, loaded, machine.on_timeout(loaded.record, now), now)


def start(rt: Runtime, job_id: str) -> None:
    loaded = rt.store.find(job_id)
    if loaded is None or loaded.record.status is not JobStatus.PENDING:
        return
    if _cancel_pending(rt, job_id):
        return
    now = time.time()
    if machine.timed_out(loaded.record, now):
        _expire(rt, loaded, now)
        return
    if not rt.store.acquire_slot(job_id, now):
        return
    adapter = rt.adapter
    creating = False
    # a start makes up to three calls (thread, list runs, run): hold the job that long
    lease_until = now + rt.settings.lease_s + rt.settings.http_timeout_s
    rt.store.extend_lease(job_id, lease_until)
    try:
        fresh = False
        job = loaded.record
        # (a Responses job without a conversation has none: `thread_created` says it started)
        if job.thread_id is None and not job.thread_created:
            if job.request.thread_id is None:
                step = machine.on_thread_created(job, adapter.create_thread(job), lease_until)
                fresh = True
            else:
                step = Step(
                    job.model_copy(update={"thread_id": job.request.thread_id}),
                    Task.START,
                    lease_until,
                )
            if (stored := _save(rt, loaded, step, now)) is None:
                return
            loaded = stored
        if loaded.record.request.thread_id is not None and loaded.record.message_id is None:
            message_id = adapter.add_messages(loaded.record)
            step = machine.on_message_added(loaded.record, message_id, lease_until)
            if (stored := _save(rt, loaded, step, now)) is None:
                return
            loaded = stored
            fresh = True
        # A start cut short after its thread was recorded may have created a run (a crash
        # or a lost answer between the POST and the write): adopt that run, never a second.
        look = not fresh and loaded.record.maybe_started
        snap = adapter.find_run(loaded.record) if look else None
        if snap is None:
            if not loaded.record.maybe_started:
                # from the moment the creation is sent, a run may exist
                marked = loaded.record.model_copy(update={"maybe_started": True})
                if (
                    stored := _save(rt, loaded, Step(marked, Task.START, lease_until), now)
                ) is None:
                    return
                loaded = stored
            creating = True
            if fresh:
                with adapter.follow_up():
                    snap = adapter.create_run(loaded.record)
            else:
                snap = adapter.create_run(loaded.record)
        learned = (
            rt.store.durations(duration_key(rt, loaded.record))
            if rt.settings.predicts_polls
            else None
        )
        expected = learned.first_look() if learned is not None else None
        now = time.time()
        step = machine.on_started(loaded.record, snap, now, rt.policy, rt.rng, expected)
        if _save(rt, loaded, step, now) is None:
            moved = rt.store.find(job_id)
            if moved is not None and moved.record.status.terminal:
                ref = moved.record.model_copy(
                    update={"run_id": snap.run_id, "thread_id": snap.thread_id}
                )
                _cancel_remote(rt, Loaded(ref, moved.version))
    except ApiError as exc:
        latest = rt.store.find(job_id)
        if latest is not None and latest.record.status is JobStatus.PENDING:
            if creating and (isinstance(exc, RateLimited) or exc.status == 429):
                # refused unsent or unprocessed: no run exists, the retry need not look
                cleared = latest.record.model_copy(update={"maybe_started": False})
                latest = Loaded(cleared, latest.version)
            _fail_api(rt, latest, exc, Task.START, time.time())


def poll(rt: Runtime, job_id: str) -> None:
    loaded = rt.store.find(job_id)
    if loaded is None or loaded.record.status not in (JobStatus.RUNNING, JobStatus.CANCELLING):
        return
    if loaded.record.status is JobStatus.RUNNING and _cancel_pending(rt, job_id):
        return
    now = time.time()
    job = loaded.record
    if machine.timed_out(job, now):
        _expire(rt, loaded, now)
        return
    try:
        snap = rt.adapter.poll(job)
    except ApiError as exc:
        _fail_api(rt, loaded, exc, Task.POLL, now)
        return
    now = time.time()
    finished = RUN_STATUS.get(snap.status) not in (JobStatus.RUNNING, JobStatus.CANCELLING)
    if rt.settings.predicts_polls and finished and job.started_at is not None:
        rt.store.learn_duration(
            duration_key(rt, job),
            running_at=job.running_at_s,
            done_at=now - job.started_at.timestamp(),
        )
    _save(rt, loaded, machine.on_snapshot(job, snap, now, rt.policy, rt.rng), now)


def duration_key(rt: Runtime, job: JobRecord) -> str:
    """Runs of one assistant, agent or model take alike: their durations are learned together."""
    request, settings = job.request, rt.settings
    who = (
        request.agent_id
        or request.assistant_id
        or request.model
        or settings.agent_id
        or settings.assistant_id
        or settings.model
    )
    return f"{settings.api_style}:{who}"


def act(rt: Runtime, job_id: str) -> None:
    loaded = rt.store.find(job_id)
    if loaded is None or loaded.record.status is not JobStatus.REQUIRES_ACTION:
        return
    now = time.time()
    job = loaded.record
    if machine.timed_out(job, now):
        _expire(rt, loaded, now)
        return
    settings = rt.settings
    rt.store.extend_lease(job_id, now + settings.tool_timeout_s + settings.lease_s)
    done = {record.id for record in job.tool_calls}
    todo = [call for call in job.required_calls if call.id not in done]
    if todo:
        records = run_tool_calls(
            todo, rt.tools, timeout_s=settings.tool_timeout_s, allowed=job.request.tools
        )
        # Keep the outputs before submitting them: a retry after a crash or a 5xx resubmits
        # these instead of running the tools again.
        kept = job.model_copy(update={"tool_calls": [*job.tool_calls, *records]})
        now = time.time()
        stored = _save(rt, loaded, Step(kept, Task.ACT, now + settings.lease_s), now)
        if stored is None:
            return
        loaded = stored
    job = loaded.record
    by_id = {record.id: record.output for record in job.tool_calls}
    outputs = [(call.id, by_id[call.id]) for call in job.required_calls]
    try:
        snap = rt.adapter.submit_tool_outputs(job, outputs)
    except RetryableApiError as exc:
        _fail_api(rt, loaded, exc, Task.ACT, time.time())
        return
    except FinalApiError as exc:
        log.info("job %s: tool outputs refused (%s)", job_id, exc.code)
        _after_refusal(rt, loaded, exc)
        return
    now = time.time()
    _save(rt, loaded, machine.on_tools_done(job, snap, now, rt.policy, rt.rng), now)


def _after_refusal(rt: Runtime, loaded: Loaded, refusal: FinalApiError) -> None:
    """Tool outputs were refused. If the run left `requires_action` meanwhile (it expired,
    was cancelled, or an earlier attempt's outputs got there first), its real status is what
    counts; if it still waits for outputs, ours were wrong and the job fails with the API's
    message rather than submitting them forever."""
    job = loaded.record
    now = time.time()
    try:
        snap = rt.adapter.poll(job)
    except ApiError as exc:
        _fail_api(rt, loaded, exc, Task.ACT, now)
        return
    if RUN_STATUS.get(snap.status) is JobStatus.REQUIRES_ACTION:
        _fail_api(rt, loaded, refusal, Task.ACT, now)
        return
    _save(rt, loaded, machine.on_snapshot(job, snap, now, rt.policy, rt.rng), now)


CANCEL_CAS_ATTEMPTS = 5


def _cancel_pending(rt: Runtime, job_id: str) -> bool:
    """A cancel asked for but not carried out (its message lost, or the worker taking it
    died): the job's own next task carries it out instead. True when it did."""
    if not rt.store.cancel_unfinished(job_id):
        return False
    return cancel(rt, job_id)


def cancel(rt: Runtime, job_id: str) -> bool:
    """Carry out a cancel request; False when no request was there to take."""
    if not rt.store.take_cancel(job_id):
        return False
    cancelled_run: str | None = None
    for _ in range(CANCEL_CAS_ATTEMPTS):
        loaded = rt.store.find(job_id)
        if loaded is None:
            return True
        now = time.time()
        step = machine.on_cancel_requested(loaded.record, now)
        if step is None:
            rt.store.cancel_done(job_id)
            return True
        run_id = loaded.record.run_id
        if step.terminal and loaded.record.maybe_started:
            _cancel_remote(rt, loaded)  # a start cut short may have left a run behind
        if step.record.status is JobStatus.CANCELLING and cancelled_run != run_id:
            try:
                rt.adapter.cancel(loaded.record)
            except FinalApiError as exc:
                # Already terminal remotely: the next poll stores its real status.
                log.info("job %s: remote cancel refused (%s)", job_id, exc.code)
            except RetryableApiError as exc:
                rt.store.request_cancel(job_id)
                _fail_api(rt, loaded, exc, Task.CANCEL, now)
                return True
            # one remote cancel per run, even when the store below must be retried
            cancelled_run = run_id
        if _save(rt, loaded, step, now) is not None:
            rt.store.cancel_done(job_id)
            return True
    return True
