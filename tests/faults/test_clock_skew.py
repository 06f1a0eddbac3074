"""One clock: leases, due times, deadlines and the rate budget follow Redis's clock, so hosts
whose clocks are minutes apart still agree. Two workers run 2 minutes ahead and 2 minutes
behind, and the batch is submitted by a producer 2 minutes behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from producer.local_redis import free_port
from tests.conftest import ASSISTANTS_ONLY, Askq, wait_until
from tests.faults.test_api_faults import most_in_window
from tests.integration.test_metrics import scrape, value
from tests.integration.test_webhooks import SECRET, event, sign, waiting_job
from worker.keys import Keys
from worker.states import JobStatus

pytestmark = pytest.mark.slow

SHIM = Path(__file__).resolve().parent / "skewed_clock"
SKEW_S = 120.0


def skewed(deployment: Askq, skew: float) -> dict[str, str]:
    env = deployment.env(ASKQ_TEST_CLOCK_SKEW_S=repr(skew))
    env["PYTHONPATH"] = os.pathsep.join([str(SHIM), env["PYTHONPATH"]])
    return env


def test_the_shim_skews_a_process_clock(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SHIM), "ASKQ_TEST_CLOCK_SKEW_S": "-120"}
    code = "import time; print(time.time())"
    seen = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, check=True).stdout)  # fmt: skip
    assert abs(seen - (time.time() - 120)) < 5


@ASSISTANTS_ONLY
def test_workers_and_producer_minutes_apart_agree(make_askq: Callable[..., Askq]) -> None:
    rpm = 600
    deployment = make_askq(job_timeout_s=60.0, rate_limit_rpm=rpm, poll_min_s=0.2)
    deployment.emulator.configure(
        run_time_s=0.5, slow=0.5, slow_s=1.0, seed=2, fault_paths=[deployment.routes.poll]
    )
    ahead = skewed(deployment, +SKEW_S)
    behind = skewed(deployment, -SKEW_S)
    deployment.start_worker(
        concurrency=4, **{k: ahead[k] for k in ("PYTHONPATH", "ASKQ_TEST_CLOCK_SKEW_S")}
    )
    deployment.start_worker(
        concurrency=4, **{k: behind[k] for k in ("PYTHONPATH", "ASKQ_TEST_CLOCK_SKEW_S")}
    )
    questions = deployment.tmp / "questions.txt"
    questions.write_text("".join(f"What is {i} * 9?\n" for i in range(60)))
    submitted = subprocess.run(
        [sys.executable, "-m", "producer", "batch", str(questions)],
        env=behind, capture_output=True, text=True, timeout=60, cwd=deployment.tmp,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip().splitlines()[-1]
    final = deployment.client.wait(batch_id, timeout=180)
    # no early expiry: a producer clock 2 minutes behind would set deadlines in the past
    assert final.counts == {JobStatus.COMPLETED: 60}  # type: ignore[union-attr]
    stats = deployment.emulator.stats()
    assert set(stats["runs_by_job"].values()) == {1} and len(stats["runs_by_job"]) == 60
    # no duplicate dispatch: a task published again while it runs (a lease judged over by a
    # clock ahead) is fenced out when it saves, and says so; half the polls take a second
    # here, so such overlaps would happen
    for worker in deployment.workers:
        assert "another task owns it" not in worker.output()
    # the rate budget held: one second's burst, then rpm/60 a second
    burst = max(1, rpm // 60) + 8  # plus one overdraft per running task
    for window in (1.0, 5.0):
        assert most_in_window(stats["request_times"], window) <= burst + window * rpm / 60 + 1


def serving(deployment: Askq, command: str, skew: float) -> Iterator[str]:
    """`askq COMMAND` (metrics or webhooks) on a host whose clock is `skew` s off."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "producer", command, "--port", str(port)],
        env=skewed(deployment, skew),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/{command if command == 'metrics' else 'healthz'}").is_success
        except httpx.TransportError:
            return False

    try:
        wait_until(up, 30, what=f"askq {command}")
        yield url
    finally:
        process.terminate()
        process.wait(20)


@pytest.mark.parametrize("style", ["responses"], indirect=True)
def test_exporter_and_webhook_receiver_minutes_ahead_use_redis_time(
    make_askq: Callable[..., Askq],
) -> None:
    deployment = make_askq(webhook_secret=SECRET)
    deployment.client.submit_batch([f"What is {i} + 1?" for i in range(3)])  # due now
    with contextmanager(serving)(deployment, "metrics", +SKEW_S) as url:
        samples = scrape(f"{url}/metrics")
    assert value(samples, "askq_due_jobs") == 3
    assert value(samples, "askq_overdue_jobs") == 0  # not "overdue" by a clock 2 min ahead

    later = time.time() + 3600
    client = waiting_job(deployment.settings, "job_skew", "resp_skew", later)
    with contextmanager(serving)(deployment, "webhooks", +SKEW_S) as url:
        body = event("response.completed", "resp_skew")
        headers = sign(body, "wh_skew", int(time.time()))
        assert httpx.post(f"{url}/webhooks", content=body, headers=headers).is_success
    due = client.zscore(Keys(deployment.settings.key_prefix).due, "job_skew")
    assert due is not None and due <= time.time()  # due now, not 2 minutes from now
