"""What each task does to a job: load, ask the state machine, call the API, store (CAS).

Every function here takes the process `Runtime` and the `Held` job a task received (its id
and the epoch of its claim); it never raises for an API outcome (the state machine turns
those into retries or failures) and it never sleeps: a wait is a due time written to Redis.
Every save is fenced by the epoch: a task whose claim was taken over gets `ClaimLost` from
the store and stops, so no path (not even an error path) overwrites a newer owner's record.
Times come from the Redis server's clock (`rt.clock`), never this host's.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import redis

from worker import machine
from worker.durations import LOOK_JITTER
from worker.errors import (
    ApiError,
    ClaimLost,
    FinalApiError,
    OverLimit,
    RateLimited,
    RetryableApiError,
)
from worker.machine import Snapshot, Step, Task
from worker.models import ErrorInfo, JobRecord
from worker.runtime import Runtime
from worker.states import RUN_STATUS, JobStatus
from worker.store import Loaded
from worker.tools import run_tool_calls

log = logging.getLogger("askq")


@dataclass
class Held:
    """A job as a task holds it: its id and the fencing epoch of the task's claim (None for
    the cancel task, which acts on a flag and wins by compare-and-set alone); the record the
    task read with its ticket, if it did; and what the task did to the job (`outcome`, shown
    in Flower: status, next task and when, error code; never question, answer or secret)."""

    job_id: str
    fence: int | None = None
    preloaded: Loaded | None = None
    outcome: str = "unchanged"

    def load(self, rt: Runtime) -> Loaded | None:
        """The job's record: the one read with the ticket (once), else a fresh read."""
        if self.preloaded is not None:
            loaded, self.preloaded = self.preloaded, None
            return loaded
        return rt.store.find(self.job_id)


def outcome(step: Step, now: float) -> str:
    """One job's outcome as a task's result shows it, e.g. `running, poll in 2.4 s` or
    `failed, error rate_limit_exceeded`."""
    job = step.record
    said = job.status.value
    if step.task is not None and step.at is not None and not step.terminal:
        said += f", {step.task.value.removeprefix('askq.')} in {max(0.0, step.at - now):.1f} s"
    if job.error is not None:
        said += f", error {job.error.code}"
    return said


def _save(
    rt: Runtime, held: Held, loaded: Loaded, step: Step, *, release: bool = True
) -> Loaded | None:
    now = rt.clock.now()
    stored = rt.store.transition(
        loaded,
        step.record,
        next_task=step.task,
        due_at=step.at,
        now=now,
        fence=held.fence,
        release=release,
    )
    if stored is not None and rt.runs is not None:
        old, new = loaded.record, step.record
        recorded = {new.run_id, new.thread_id} - {old.run_id, old.thread_id, None}
        if recorded and not new.status.terminal:
            try:
                rt.runs.record(new.job_id, sorted(r for r in recorded if r), now)
            except redis.RedisError as exc:  # webhooks missed: the safety-net polls remain
                log.warning("job %s: webhook index not written (%s)", new.job_id, exc)
    job = step.record
    if stored is not None:
        held.outcome = outcome(step, now)
    if stored is not None and step.terminal and job.status is not JobStatus.COMPLETED:
        # one line per job that ends not completed, whatever the path that ended it (a cancel
        # was asked for: not a warning)
        level = logging.INFO if job.status is JobStatus.CANCELLED else logging.WARNING
        code = job.error.code if job.error else "-"
        log.log(level, "job %s ended %s: %s", job.job_id, job.status.value, code)
    return stored


def _hold(rt: Runtime, held: Held, loaded: Loaded, record: JobRecord) -> Loaded | None:
    """An intermediate save of a start that goes on at once: the task keeps the job, and the
    due entry stays a lease (alive while this worker's heartbeat is)."""
    step = Step(record, Task.START, rt.clock.now() + rt.settings.held_lease_s)
    return _save(rt, held, loaded, step, release=False)


def _fail_api(rt: Runtime, held: Held, loaded: Loaded, error: ApiError, task: Task) -> None:
    now = rt.clock.now()
    step = machine.on_api_error(
        loaded.record, error, task, now, rt.policy, rt.rng, rt.settings.max_api_retries
    )
    if step.terminal:
        if isinstance(error, OverLimit) and error.run_waits:
            _cancel_remote(rt, loaded)  # a run waiting for tool outputs askq will not send
        _end_strays(rt, loaded.record)
    _save(rt, held, loaded, step)


def _end_strays(rt: Runtime, job: JobRecord) -> None:
    """Before a job ends: cancel runs of it that the server created after askq gave up on
    their creation (only looked for when such a creation happened)."""
    if not job.stray_check or job.thread_id is None:
        return
    try:
        with rt.adapter.follow_up():
            for run_id in rt.adapter.stray_runs(job):
                rt.adapter.cancel(job, run_id)
                rt.count_stray(run_id)
                log.warning("job %s: cancelled stray run %s", job.job_id, run_id)
    except ApiError as exc:
        log.info("job %s: stray runs not checked (%s)", job.job_id, exc.code)


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


def _expire(rt: Runtime, held: Held, loaded: Loaded) -> None:
    _cancel_remote(rt, loaded)
    _end_strays(rt, loaded.record)
    _save(rt, held, loaded, machine.on_timeout(loaded.record, rt.clock.now()))


def start(rt: Runtime, held: Held) -> None:
    job_id = held.job_id
    loaded = held.load(rt)
    if loaded is None or loaded.record.status is not JobStatus.PENDING:
        return
    if _cancel_pending(rt, held, loaded):
        return
    if machine.timed_out(loaded.record, rt.clock.now()):
        _expire(rt, held, loaded)
        return
    if unknown := rt.tools.unknown(loaded.record.request.tools):
        # a job would otherwise run without the tools it was written for, and never say so
        error = ErrorInfo(
            code="unknown_tools",
            message=f"no such tool on the workers: {', '.join(unknown)} "
            "(the workers load tools from ASKQ_TOOL_MODULES)",
        )
        finish = machine.finish(loaded.record, JobStatus.FAILED, rt.clock.now(), error)
        _save(rt, held, loaded, finish)
        return
    if not rt.limits.acquire_slot(job_id):
        return
    adapter = rt.adapter
    creating = False
    try:
        fresh = False
        job = loaded.record
        # (a Responses job without a conversation has none: `thread_created` says it started)
        if job.thread_id is None and not job.thread_created:
            if job.request.thread_id is None:
                thread_id = adapter.create_thread(job)
                record = machine.on_thread_created(job, thread_id)
                fresh = True
            else:
                record = job.model_copy(update={"thread_id": job.request.thread_id})
            if (stored := _hold(rt, held, loaded, record)) is None:
                return
            loaded = stored
        if loaded.record.request.thread_id is not None and loaded.record.message_id is None:
            message_id = adapter.add_messages(loaded.record)
            record = machine.on_message_added(loaded.record, message_id)
            if (stored := _hold(rt, held, loaded, record)) is None:
                return
            loaded = stored
            fresh = True
        # A start cut short after its thread was recorded may have created a run (a crash
        # or a lost answer between the POST and the write): adopt that run, never a second.
        # After a creation refused unsent (429, askq's budget) it need not look: in a 429
        # storm that look would double the requests of every retry.
        look = not fresh and loaded.record.maybe_started
        snap = adapter.find_run(loaded.record) if look else None
        if snap is None:
            if not loaded.record.maybe_started:
                # from the moment the creation is sent, a run may exist
                marked = loaded.record.model_copy(update={"maybe_started": True})
                if (stored := _hold(rt, held, loaded, marked)) is None:
                    return
                loaded = stored
            creating = True
            if fresh:
                with adapter.follow_up():
                    snap = adapter.create_run(loaded.record)
            else:
                snap = adapter.create_run(loaded.record)
        _started(rt, held, loaded, snap, created=creating)
    except ApiError as exc:
        latest = rt.store.find(job_id)
        if latest is not None and latest.record.status is JobStatus.PENDING:
            if creating:
                refused = isinstance(exc, RateLimited) or exc.status == 429
                # refused unsent or unprocessed: no run exists; any other failure may have
                # left one behind (a late creation): look for strays before the job ends
                update = {"maybe_started": False} if refused else {"stray_check": True}
                latest = Loaded(latest.record.model_copy(update=update), latest.version)
            _fail_api(rt, held, latest, exc, Task.START)


def _started(rt: Runtime, held: Held, loaded: Loaded, snap: Snapshot, *, created: bool) -> None:
    predicts = rt.settings.predicts_polls
    key = duration_key(rt, loaded.record)
    learned = rt.limits.durations(key) if predicts else None
    expected = learned.first_look() if learned is not None else None
    step = machine.on_started(loaded.record, snap, rt.clock.now(), rt.policy, rt.rng, expected)
    if predicts and learned is None and step.task is Task.POLL:
        step = _cold_first_look(rt, key, step)
    if step.terminal:
        _end_strays(rt, step.record)
    try:
        stored = _save(rt, held, loaded, step)
    except ClaimLost:
        stored = None
    if stored is None and created:
        _abandon(rt, held.job_id, snap)
    if stored is None:
        raise ClaimLost(f"job {held.job_id}: the start's run could not be recorded")


def _cold_first_look(rt: Runtime, key: str, step: Step) -> Step:
    """Nothing is learned yet about runs of this key: past the first few (the scouts), a
    run's first look is deferred to ASKQ_POLL_MAX_S, to be re-targeted to the duration the
    scouts learn (a cold batch would otherwise spend its first looks finding nothing)."""
    job, at = step.record, step.at
    if at is None or job.started_at is None:
        return step
    started = job.started_at.timestamp()
    deferred = max(at, started + rt.settings.poll_max_s)
    if not rt.limits.defer_cold_look(
        key, job.job_id, started=started, deferred=deferred, earliest=at
    ):
        return step
    return dataclasses.replace(step, at=deferred)


def _abandon(rt: Runtime, job_id: str, snap: Snapshot) -> None:
    """This task created a run it cannot record (the job moved on, or another task owns it):
    cancel it, unless the job's record has it (another task adopted it)."""
    latest = rt.store.find(job_id)
    if latest is None:
        return
    job = latest.record
    if snap.run_id in job.run_ids:
        return
    ref = job.model_copy(
        update={"run_id": snap.run_id, "thread_id": snap.thread_id or job.thread_id}
    )
    try:
        with rt.adapter.follow_up():
            rt.adapter.cancel(ref)
        rt.count_stray(snap.run_id)
        log.warning("job %s: cancelled run %s that could not be recorded", job_id, snap.run_id)
    except ApiError as exc:
        log.info("job %s: abandoned run not cancelled (%s)", job_id, exc.code)


def poll(rt: Runtime, held: Held) -> None:
    loaded = held.load(rt)
    if loaded is None or loaded.record.status not in (JobStatus.RUNNING, JobStatus.CANCELLING):
        return
    if loaded.record.status is JobStatus.RUNNING and _cancel_pending(rt, held, loaded):
        return
    job = loaded.record
    if machine.timed_out(job, rt.clock.now()):
        _expire(rt, held, loaded)
        return
    try:
        snap = rt.adapter.poll(job)
    except ApiError as exc:
        _fail_api(rt, held, loaded, exc, Task.POLL)
        return
    now = rt.clock.now()
    finished = RUN_STATUS.get(snap.status) not in (JobStatus.RUNNING, JobStatus.CANCELLING)
    if rt.settings.predicts_polls and finished and job.started_at is not None:
        key, done_at = duration_key(rt, job), now - job.started_at.timestamp()
        first = rt.limits.learn_duration(key, running_at=job.running_at_s, done_at=done_at)
        if first is not None:
            # The waiting runs are aimed at when this one was seen done, not at the middle of
            # its last two looks: a like run started with it is done by then too, so each
            # waiting run is answered by one look.
            moved = rt.limits.retarget_cold(key, done_at * (1 + LOOK_JITTER / 2))
            if moved:
                log.info("%s: first run duration learned; %d first looks re-targeted", key, moved)
    step = machine.on_snapshot(job, snap, now, rt.policy, rt.rng)
    if step.terminal:
        _end_strays(rt, job)
    _save(rt, held, loaded, step)


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


def act(rt: Runtime, held: Held) -> None:
    loaded = held.load(rt)
    if loaded is None or loaded.record.status is not JobStatus.REQUIRES_ACTION:
        return
    job = loaded.record
    if machine.timed_out(job, rt.clock.now()):
        _expire(rt, held, loaded)
        return
    settings = rt.settings
    done = {record.id for record in job.tool_calls}
    todo = [call for call in job.required_calls if call.id not in done]
    if todo:
        records = run_tool_calls(
            todo, rt.tools, timeout_s=settings.tool_timeout_s, allowed=job.request.tools
        )
        # Keep the outputs before submitting them: a retry after a crash or a 5xx resubmits
        # these instead of running the tools again.
        kept = job.model_copy(update={"tool_calls": [*job.tool_calls, *records]})
        step = Step(kept, Task.ACT, rt.clock.now() + settings.held_lease_s)
        stored = _save(rt, held, loaded, step, release=False)
        if stored is None:
            return
        loaded = stored
    job = loaded.record
    by_id = {record.id: record.output for record in job.tool_calls}
    outputs = [(call.id, by_id[call.id]) for call in job.required_calls]
    try:
        snap = rt.adapter.submit_tool_outputs(job, outputs)
    except RetryableApiError as exc:
        _fail_api(rt, held, loaded, exc, Task.ACT)
        return
    except FinalApiError as exc:
        log.info("job %s: tool outputs refused (%s)", held.job_id, exc.code)
        _after_refusal(rt, held, loaded, exc)
        return
    step = machine.on_tools_done(job, snap, rt.clock.now(), rt.policy, rt.rng)
    if step.terminal:
        _end_strays(rt, step.record)
    _save(rt, held, loaded, step)


def _after_refusal(rt: Runtime, held: Held, loaded: Loaded, refusal: FinalApiError) -> None:
    """Tool outputs were refused. If the run left `requires_action` meanwhile (it expired,
    was cancelled, or an earlier attempt's outputs got there first), its real status is what
    counts; if it still waits for outputs, ours were wrong and the job fails with the API's
    message rather than submitting them forever."""
    job = loaded.record
    if isinstance(refusal, OverLimit):
        _fail_api(rt, held, loaded, refusal, Task.ACT)
        return
    try:
        snap = rt.adapter.poll(job)
    except ApiError as exc:
        _fail_api(rt, held, loaded, exc, Task.ACT)
        return
    if RUN_STATUS.get(snap.status) is JobStatus.REQUIRES_ACTION:
        _fail_api(rt, held, loaded, refusal, Task.ACT)
        return
    _save(rt, held, loaded, machine.on_snapshot(job, snap, rt.clock.now(), rt.policy, rt.rng))


CANCEL_CAS_ATTEMPTS = 5


def _cancel_pending(rt: Runtime, held: Held, loaded: Loaded) -> bool:
    """A cancel asked for but not carried out (its message lost, or the worker taking it
    died): the job's own next task carries it out instead. True when it did."""
    asked = loaded.cancel_asked
    if asked is None:
        asked = rt.store.cancel_unfinished(held.job_id)
    if not asked:
        return False
    return cancel(rt, held)


def cancel(rt: Runtime, held: Held | str) -> bool:
    """Carry out a cancel request; False when no request was there to take. The cancel task
    holds no claim (it wins by compare-and-set); a task carrying out a cancel it found keeps
    its own fence."""
    held = held if isinstance(held, Held) else Held(held)
    job_id = held.job_id
    if not rt.store.take_cancel(job_id):
        return False
    cancelled_run: str | None = None
    for _ in range(CANCEL_CAS_ATTEMPTS):
        loaded = rt.store.find(job_id)
        if loaded is None:
            return True
        step = machine.on_cancel_requested(loaded.record, rt.clock.now())
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
                _fail_api(rt, held, loaded, exc, Task.CANCEL)
                return True
            # one remote cancel per run, even when the store below must be retried
            cancelled_run = run_id
        if step.terminal:
            _end_strays(rt, loaded.record)
        if _save(rt, held, loaded, step) is not None:
            rt.store.cancel_done(job_id)
            return True
    return True
