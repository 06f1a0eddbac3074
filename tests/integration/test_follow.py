"""`askq results BATCH --follow`: each record as its job ends, in finishing order, exactly once,
then exit 0 — from a follower started before the first end and from one started mid-batch."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable

from tests.conftest import ASSISTANTS_ONLY, BOTH_CLIENTS, Askq, wait_until
from worker.keys import Keys


def finishing_order(deployment: Askq, batch_id: str) -> list[str]:
    """The order the jobs ended in, as the transition script recorded it."""
    entries = deployment.client.store.redis.xrange(
        Keys(deployment.settings.key_prefix).batch_ended(batch_id)
    )
    return [fields[b"job"].decode() for _, fields in entries]


@ASSISTANTS_ONLY
@BOTH_CLIENTS
def test_follow_yields_every_record_of_1000_jobs_once_as_they_end(
    make_askq: Callable[..., Askq],
) -> None:
    deployment = make_askq(max_inflight=100)
    deployment.emulator.configure(run_time_s=0.5)
    deployment.start_worker()
    client = deployment.client
    batch_id = client.submit_batch([f"What is {i} + 1?" for i in range(1000)])
    follower = subprocess.Popen(
        [sys.executable, "-m", "producer", "results", batch_id, "--follow"],
        env=deployment.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=deployment.tmp,
    )
    assert follower.stdout is not None
    first = json.loads(follower.stdout.readline())
    # the first record came while most of the batch was still running: not at the end
    assert client.status(batch_id).finished < 1000  # type: ignore[union-attr]

    wait_until(lambda: client.status(batch_id).finished >= 300, 120, what="300 ends")  # type: ignore[union-attr]
    late = [r.job_id for r in client.iter_results(batch_id, follow=True)]

    # read on through the same buffered pipe: communicate() would skip what readline buffered
    rest = follower.stdout.read()
    assert follower.wait(timeout=60) == 0, follower.stderr.read() if follower.stderr else ""
    streamed = [first["job_id"]] + [json.loads(line)["job_id"] for line in rest.splitlines()]
    job_ids = client.batch_store.batch_job_ids(batch_id)
    order = finishing_order(deployment, batch_id)
    assert sorted(order) == sorted(job_ids)  # every job ended once
    assert streamed == order
    assert late == order  # started mid-batch: what had ended, then the rest, no gap, no repeat


@ASSISTANTS_ONLY
def test_follow_prints_in_finishing_order_not_input_order(askq: Askq) -> None:
    questions = [
        {"question": "[run_time=3] What is 1 + 1?", "custom_id": "slow"},
        {"question": "[run_time=0.1] What is 2 + 2?", "custom_id": "fast"},
        {"question": "[run_time=1.5] What is 3 + 3?", "custom_id": "middle"},
    ]
    batch_id = askq.client.submit_batch(questions)
    done = askq.cli("results", batch_id, "--follow", "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["custom_id"] for r in rows] == ["fast", "middle", "slow"]
    assert [r["answer"] for r in rows] == ["2 + 2 = 4", "3 + 3 = 6", "1 + 1 = 2"]
    # the same records `askq results` prints, in input order there
    plain = askq.cli("results", batch_id, "--format", "csv")
    assert sorted(plain.stdout.splitlines()[1:]) == sorted(done.stdout.splitlines()[1:])
    assert plain.stdout.splitlines()[0] == done.stdout.splitlines()[0]
