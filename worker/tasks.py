"""askq's Celery tasks. Each takes one id only and is a thin shell: the four job tasks take a
job id and call `driver`; `askq.deliver` takes a callback id and makes one webhook attempt.

A task first takes its job's ticket (set when the pump published this message): a duplicate
or redelivered message finds none and does nothing; the ticket gives the task the epoch that
fences its saves. While it runs, the job is listed in this process's heartbeat, which keeps
its lease alive. Cancels use their own flag instead, so they never wait for a ticket held by
a poll.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from worker import driver
from worker.application import app
from worker.callbacks import process_deliverer
from worker.driver import Held
from worker.errors import ClaimLost, StoreError
from worker.runtime import Runtime, runtime

log = logging.getLogger("askq")

QUIET_S = 30.0
_last_store_warning = 0.0


def _store_unavailable(job_id: str, exc: StoreError) -> None:
    """While Redis is away (or full) every task fails the same way: say so now and then."""
    global _last_store_warning
    now = time.monotonic()
    if now - _last_store_warning >= QUIET_S:
        _last_store_warning = now
        log.warning("job %s: job store unavailable (%s); its lease brings it back", job_id, exc)


def _run(step: Callable[[Runtime, Held], object], job_id: str, *, ticket: str | None) -> None:
    try:
        rt = runtime()
        with rt.jobs.running(job_id):
            fence = None
            if ticket is not None:
                fence = rt.store.take_ticket(job_id, ticket, rt.worker_id)
                if fence is None:
                    return
            step(rt, Held(job_id, fence))
    except ClaimLost as exc:
        log.info("%s; this task stops", exc)
    except StoreError as exc:
        _store_unavailable(job_id, exc)
    except Exception:
        log.exception("job %s: unexpected error; the sweep will retry after its lease", job_id)


@app.task(name="askq.start")
def start(job_id: str) -> None:
    _run(driver.start, job_id, ticket="askq.start")


@app.task(name="askq.poll")
def poll(job_id: str) -> None:
    _run(driver.poll, job_id, ticket="askq.poll")


@app.task(name="askq.act")
def act(job_id: str) -> None:
    _run(driver.act, job_id, ticket="askq.act")


@app.task(name="askq.cancel")
def cancel(job_id: str) -> None:
    _run(driver.cancel, job_id, ticket=None)


@app.task(name="askq.deliver")
def deliver(callback_id: str) -> None:
    try:
        rt = runtime()
        process_deliverer(rt.redis, rt.settings, rt.clock).deliver(callback_id)
    except StoreError as exc:
        _store_unavailable(callback_id, exc)
    except Exception:
        log.exception("callback %s: unexpected error; retried after its lease", callback_id)
