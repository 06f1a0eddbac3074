"""A worker SIGKILLed mid-batch: the user's callback task still gets every job's record
exactly once (repeats, if any, dropped by callback id and counted), and the batch summary
once."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable

import pytest
import redis

from tests.conftest import ASSISTANTS_ONLY, Askq, wait_until
from tests.integration.test_callbacks import (
    ON_BATCH_DONE,
    ON_DONE,
    duplicates,
    received,
    start_user_worker,
)
from worker.outbox import PUBLISH_LEASE_S

pytestmark = [pytest.mark.slow, ASSISTANTS_ONLY]  # the outbox: one transition script for all


def test_sigkill_mid_batch_loses_and_doubles_no_callback(make_askq: Callable[..., Askq]) -> None:
    size = 300
    deployment = make_askq(poll_min_s=0.2, poll_max_s=1.0, sweep_interval_s=2.0)
    deployment.emulator.configure(run_time_s=1.0)
    store = redis.Redis.from_url(deployment.settings.redis_url)
    start_user_worker(deployment)
    doomed = deployment.start_worker(concurrency=8)
    deployment.start_worker(concurrency=8)
    api = deployment.client
    batch_id = api.submit_batch(
        [f"What is {i} + 5?" for i in range(size)], on_done=ON_DONE, on_batch_done=ON_BATCH_DONE
    )
    wait_until(lambda: len(received(store)) >= size // 3, 120, what="a third of the callbacks")
    os.killpg(doomed.process.pid, signal.SIGKILL)
    doomed.process.wait(timeout=10)
    api.wait(batch_id, timeout=240)
    # claims the dead pump made but never sent come back after their lease
    wait_until(
        lambda: len(received(store)) >= size and received(store, "usercb:batches"),
        PUBLISH_LEASE_S + 60,
        what="every record and the summary",
    )
    job_ids = api.batch_store.batch_job_ids(batch_id)
    by_job = Counter(r["payload"]["job_id"] for r in received(store))
    assert by_job == Counter(job_ids)  # each exactly once, after the user's dedupe
    (summary,) = received(store, "usercb:batches")
    assert summary["payload"]["total"] == size
    states = Counter(d.state for job_id in job_ids for d in api.deliveries(job_id))
    assert states == {"sent": size}
    print(
        f"\ncallbacks across a SIGKILL mid-batch: {size} records received once each; "
        f"{duplicates(store)} redeliveries dropped by callback id"
    )
