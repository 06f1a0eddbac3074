"""Packed task messages (several jobs in one message, issue 15): every job of a message is
handled on its own, and a task's result says what it did to each job. Old messages (one job
id) keep working.

The test claims the jobs itself (as the pump would: tickets set, due entries leased) before
any worker runs, then publishes one message holding them all, so what the message holds does
not depend on the pump's packing.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

import pytest

from tests.conftest import ASSISTANTS_ONLY, Askq, wait_until
from worker.celery_app import create_publisher
from worker.dispatch import DispatchStore
from worker.redis_store import connect
from worker.states import JobStatus

pytestmark = ASSISTANTS_ONLY  # the tasks' shell is the same for every protocol

SUCCEEDED = re.compile(r"Task (askq\.\w+)\[[^\]]+\] succeeded in [0-9.e-]+s: (\{.*\})")


def results(log: str, task: str) -> list[dict[str, str]]:
    """The return values of `task` that the worker logged (Celery logs each at INFO)."""
    return [ast.literal_eval(m.group(2)) for m in SUCCEEDED.finditer(log) if m.group(1) == task]


def claim(deployment: Askq, job_ids: list[str]) -> None:
    settings = deployment.settings
    dispatch = DispatchStore(connect(settings), settings)
    claimed = {c.job_id for c in dispatch.claim_due(100, "test-pump").claims}
    assert claimed == set(job_ids)


@pytest.fixture
def deployment(make_askq: Callable[..., Askq]) -> Askq:
    return make_askq(poll_min_s=0.2, poll_max_s=0.5)


def test_jobs_of_one_message_are_independent(deployment: Askq) -> None:
    client = deployment.client
    fine = [client.ask(f"What is {i} + 1?") for i in range(3)]
    failing = client.ask("[fail] this run fails")
    broken = client.ask("What is 9 + 9?")
    every = [*fine, failing, broken]
    claim(deployment, every)
    store = connect(deployment.settings)
    keys = DispatchStore(store, deployment.settings).keys
    store.hset(keys.job(broken), "record", "{not a record")  # its task step raises
    worker = deployment.start_worker()
    publisher = create_publisher(deployment.settings)
    stale = "job_that_holds_no_ticket"
    publisher.send_task(
        "askq.start", args=[[*every, stale]], queue="askq.start", routing_key="askq.start"
    )

    for job_id in fine:
        assert client.wait(job_id, timeout=60).status is JobStatus.COMPLETED  # type: ignore[union-attr]
    assert client.wait(failing, timeout=60).status is JobStatus.FAILED  # type: ignore[union-attr]

    def start_result() -> dict[str, str] | None:
        starts = [r for r in results(worker.output(), "askq.start") if broken in r]
        return starts[0] if starts else None

    outcome = wait_until(start_result, 30, what="the packed start's result in the log")
    assert set(outcome) == {*every, stale}
    for job_id in [*fine, failing]:
        assert outcome[job_id].startswith("running, poll in "), outcome
    assert outcome[broken] == "store error RecordError"
    assert outcome[stale].startswith("no ticket")

    def failed_poll() -> list[str]:
        polls = results(worker.output(), "askq.poll")
        return [r[failing] for r in polls if failing in r and r[failing].startswith("failed")]

    (said,) = wait_until(failed_poll, 30, what="the failing job's poll result")
    assert said == "failed, error server_error"
    log = worker.output()
    for job_id in fine:  # the question and the answer stay out of results
        assert "What is" not in str([r for r in results(log, "askq.poll") if job_id in r])


def test_a_message_with_one_job_id_still_works(deployment: Askq) -> None:
    """Messages published before packing existed carry one job id, not a list."""
    job_id = deployment.client.ask("What is 5 + 5?")
    claim(deployment, [job_id])
    worker = deployment.start_worker()
    create_publisher(deployment.settings).send_task(
        "askq.start", args=[job_id], queue="askq.start", routing_key="askq.start"
    )
    result = deployment.client.wait(job_id, timeout=60)
    assert result.status is JobStatus.COMPLETED  # type: ignore[union-attr]
    starts = results(worker.output(), "askq.start")
    assert any(r.get(job_id, "").startswith("running, poll in ") for r in starts), starts
