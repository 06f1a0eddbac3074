"""Graceful shutdown: a worker stopped with SIGTERM mid-batch (what Kubernetes, docker compose
and KEDA's scale-down send) leaves on its own, and the other worker finishes every job with
exactly one remote run each."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.conftest import ASSISTANTS_ONLY, Askq, wait_until
from worker.celery_app import create_app
from worker.states import JobStatus

JOBS = 300


def stacks(pid: int) -> str:
    """Where a worker that does not exit is stuck (py-spy, when installed), for the report."""
    spy = shutil.which("py-spy")
    if spy is None:
        return "(install py-spy to see where the worker hangs)"
    done = subprocess.run(
        [spy, "dump", "--subprocesses", "--pid", str(pid)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.stdout[-6000:] + done.stderr[-1000:]


@ASSISTANTS_ONLY
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_sigterm_mid_batch_exits_cleanly_and_the_other_worker_finishes(
    make_askq: Callable[..., Askq], pool: str
) -> None:
    # short leases, so jobs held by a worker killed after its grace period come back soon
    deployment = make_askq(poll_min_s=0.2, poll_max_s=0.5, http_timeout_s=5.0)
    deployment.emulator.configure(run_time_s=1.0)
    window = float(create_app(deployment.settings).conf.worker_soft_shutdown_timeout)
    leaving = deployment.start_worker(pool=pool, concurrency=4)
    staying = deployment.start_worker(concurrency=8)

    started = time.monotonic()
    batch_id = deployment.client.submit_batch([f"What is {i} + 9?" for i in range(JOBS)])

    def mid_batch() -> int:
        done = deployment.client.batch_store.batch_counts(batch_id).get(JobStatus.COMPLETED, 0)
        busy = leaving.output().count("succeeded in") >= 20
        return done if busy and done >= JOBS // 5 else 0

    done_at_signal = wait_until(mid_batch, 60, what="a fifth of the batch done")
    assert done_at_signal < JOBS * 0.8, "the batch finished before it could be interrupted"
    signalled = time.monotonic()
    leaving.process.send_signal(signal.SIGTERM)
    try:
        code: int | None = leaving.process.wait(timeout=window)
    except subprocess.TimeoutExpired:
        if pool != "prefork":
            pytest.fail(
                f"worker still running {window:g} s after SIGTERM:\n{leaving.output()[-2000:]}"
                f"\n{stacks(leaving.process.pid)}"
            )
        # billiard's Pool.join sometimes hangs after a warm shutdown (about 1 run in 12
        # here; DESIGN.md's pitfalls): a supervisor kills the process group after its grace
        # period, as this does, and the jobs must still all finish, once each
        print(f"\nprefork worker hung after SIGTERM; killed:\n{stacks(leaving.process.pid)}")
        os.killpg(leaving.process.pid, signal.SIGKILL)
        leaving.process.wait(timeout=30)
        code = None
    exit_s = time.monotonic() - signalled
    assert code in (0, None), leaving.output()[-3000:]
    log = leaving.output()
    assert "Warm shutdown" in log, log[-3000:]

    final = deployment.client.wait(batch_id, timeout=90)
    batch_s = time.monotonic() - started
    assert final.completed == JOBS, final  # type: ignore[union-attr]
    assert staying.alive()

    results = list(deployment.client.results(batch_id))
    assert all(r.status is JobStatus.COMPLETED and r.answer for r in results)
    runs = deployment.emulator.stats()["runs_by_job"]
    assert sorted(runs) == sorted(r.job_id for r in results)
    extra = {job: n for job, n in runs.items() if n != 1}
    assert not extra, f"jobs with more than one remote run: {extra}"

    handled = len(re.findall(r"succeeded in", log))
    restored = re.findall(r"Restoring (\d+) unacknowledged message", log)
    print(
        f"\n{pool}: SIGTERM after {signalled - started:.1f} s ({done_at_signal}/{JOBS} done); "
        f"exited with 0 in {exit_s:.2f} s (window {window:g} s) after {handled} tasks, "
        f"restored {sum(map(int, restored))} unacked messages; "
        f"batch done in {batch_s:.1f} s, one run per job"
    )
