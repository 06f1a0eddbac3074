"""One clock: leases, due times, deadlines and the rate budget follow Redis's clock, so hosts
whose clocks are minutes apart still agree. Two workers run 2 minutes ahead and 2 minutes
behind, and the batch is submitted by a producer 2 minutes behind."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ASSISTANTS_ONLY, Askq
from tests.faults.test_api_faults import most_in_window
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
    import time

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
