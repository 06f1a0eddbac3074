"""askq's Celery tasks, thin shells. The four job tasks call `driver` and take one job id, or
a list of job ids the pump packed into one message under load (a message's Celery cost —
publish, consume, ack, events — is more CPU than the API request a job needs:
docs/benchmarks.md); `askq.deliver` takes a callback id and makes one webhook attempt.

Every job of a message is handled on its own: it takes its own ticket (set when the pump
published the message; a duplicate or redelivered message finds none and does nothing), and
the ticket gives it the epoch that fences its saves; one job's error never touches the
others. The tickets and records of a message's jobs are read in one pipelined round trip,
then the jobs run side by side on the process's job threads (their API calls overlap on the
shared HTTP client). While a task runs, its jobs are listed in this process's heartbeat,
which keeps their leases alive. Cancels use their own flag instead, so they never wait for a
ticket held by a poll.

A task returns what it did to each job (job id → outcome, `driver.outcome`): Flower shows
it on the task's page and its search finds it (`result:failed`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack

from worker import driver
from worker.application import app
from worker.callbacks import process_deliverer
from worker.driver import Held
from worker.errors import ClaimLost, StoreError
from worker.runtime import Runtime, runtime

log = logging.getLogger("askq")

QUIET_S = 30.0
RESULT_REPR_CHARS = 8192
"""Celery cuts a result's repr in events at 1,024 characters; a packed message's outcomes
need more (about 70 characters a job)."""
_last_store_warning = 0.0

Step = Callable[[Runtime, Held], object]


def _store_unavailable(job_id: str, exc: StoreError) -> None:
    """While Redis is away (or full) every task fails the same way: say so now and then."""
    global _last_store_warning
    now = time.monotonic()
    if now - _last_store_warning >= QUIET_S:
        _last_store_warning = now
        log.warning("job %s: job store unavailable (%s); its lease brings it back", job_id, exc)


def _guarded(step: Step, rt: Runtime, held: Held) -> str:
    """One job's step; whatever happens to it stays with it."""
    try:
        step(rt, held)
    except ClaimLost as exc:
        log.info("%s; this task stops", exc)
        return "claim lost"
    except StoreError as exc:
        _store_unavailable(held.job_id, exc)
        return f"store error {type(exc).__name__}"
    except Exception as exc:
        log.exception("job %s: unexpected error; the sweep will retry after its lease", held.job_id)
        return f"error {type(exc).__name__}"
    return held.outcome


def _run(step: Step, job_ids: str | list[str], *, ticket: str | None) -> dict[str, str]:
    ids = [job_ids] if isinstance(job_ids, str) else list(dict.fromkeys(job_ids))
    outcomes = dict.fromkeys(ids, "not run")
    rt = runtime()
    try:
        with ExitStack() as running:
            for job_id in ids:
                running.enter_context(rt.jobs.running(job_id))
            if ticket is None:
                held = [Held(job_id) for job_id in ids]
            else:
                taken = rt.store.take_and_load(ids, ticket, rt.worker_id)
                for t in taken:
                    if t.fence is None:
                        outcomes[t.job_id] = "no ticket (a duplicate or stale message)"
                held = [Held(t.job_id, t.fence, t.loaded) for t in taken if t.fence is not None]
            if len(held) == 1:
                outcomes[held[0].job_id] = _guarded(step, rt, held[0])
            elif held:
                done = rt.job_threads.map(lambda h: _guarded(step, rt, h), held)
                outcomes.update(zip((h.job_id for h in held), done, strict=True))
    except StoreError as exc:
        _store_unavailable(ids[0], exc)
    finally:
        rt.flush_request_counts()
    return outcomes


@app.task(name="askq.start", resultrepr_maxsize=RESULT_REPR_CHARS)
def start(job_ids: str | list[str]) -> dict[str, str]:
    return _run(driver.start, job_ids, ticket="askq.start")


@app.task(name="askq.poll", resultrepr_maxsize=RESULT_REPR_CHARS)
def poll(job_ids: str | list[str]) -> dict[str, str]:
    return _run(driver.poll, job_ids, ticket="askq.poll")


@app.task(name="askq.act", resultrepr_maxsize=RESULT_REPR_CHARS)
def act(job_ids: str | list[str]) -> dict[str, str]:
    return _run(driver.act, job_ids, ticket="askq.act")


@app.task(name="askq.cancel", resultrepr_maxsize=RESULT_REPR_CHARS)
def cancel(job_ids: str | list[str]) -> dict[str, str]:
    return _run(driver.cancel, job_ids, ticket=None)


@app.task(name="askq.deliver")
def deliver(callback_id: str) -> None:
    try:
        rt = runtime()
        process_deliverer(rt.redis, rt.settings, rt.clock).deliver(callback_id)
    except StoreError as exc:
        _store_unavailable(callback_id, exc)
    except Exception:
        log.exception("callback %s: unexpected error; retried after its lease", callback_id)
