"""The four Celery tasks. Each takes a job id only and is a thin shell around `driver`.

A task first takes its job's ticket (set when the pump published this message): a duplicate
or redelivered message finds none and does nothing. Cancels use their own flag instead, so
they never wait for a ticket held by a poll.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from worker import driver
from worker.application import app
from worker.errors import StoreError
from worker.runtime import Runtime, runtime

log = logging.getLogger("askq")


def _run(step: Callable[[Runtime, str], object], job_id: str, *, ticket: str | None) -> None:
    try:
        rt = runtime()
        if ticket is not None and not rt.store.take_ticket(job_id, ticket):
            return
        step(rt, job_id)
    except StoreError as exc:
        # Redis is away: the job's lease in the due set brings it back once Redis is.
        log.warning("job %s: job store unavailable (%s); the sweep will retry", job_id, exc)
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
