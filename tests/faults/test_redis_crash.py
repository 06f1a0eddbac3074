"""Durability measured: Redis killed with SIGKILL (no clean shutdown) mid-batch, with AOF
`appendfsync always` and `everysec`. What each loses is in docs/reliability.md."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.client import EmulatorControl
from emulator.server import RunningEmulator
from producer.local_redis import LocalRedis
from tests.conftest import wait_until
from tests.faults.test_crashes import deployment_on
from worker.states import JobStatus

pytestmark = pytest.mark.slow

JOBS = 300


@pytest.fixture(params=["always", "everysec"])
def aof(request: pytest.FixtureRequest) -> Iterator[LocalRedis]:
    server = LocalRedis(appendonly=True, extra_args=("--appendfsync", str(request.param)))
    server.start()
    yield server
    server.cleanup()


def crash(server: LocalRedis) -> None:
    assert server.process is not None
    server.process.kill()  # SIGKILL: no clean shutdown, no final fsync
    server.process.wait()
    server.process = None


def test_kill_9_redis_mid_batch(
    aof: LocalRedis, emulator: EmulatorControl, emulator_server: RunningEmulator, tmp_path: Path
) -> None:
    fsync = aof.extra_args[-1]
    deployment = deployment_on(
        aof, emulator, emulator_server, tmp_path, http_timeout_s=2.0, lease_margin_s=2.0
    )
    emulator.configure(run_time_s=1.0)
    try:
        worker = deployment.start_worker(concurrency=8)
        batch_id = deployment.client.submit_batch([f"What is {i} * 4?" for i in range(JOBS)])
        wait_until(
            lambda: deployment.client.status(batch_id).finished >= JOBS // 5,  # type: ignore[union-attr]
            timeout=60,
            what="some jobs done",
        )
        crash(aof)
        aof.start()  # replays the AOF
        back = time.time()
        final = deployment.client.wait(batch_id, timeout=180)
        took = time.time() - back
        runs = deployment.emulator.stats()["runs_by_job"]
        extra = sum(n - 1 for n in runs.values())
        print(
            f"\nkill -9 Redis, appendfsync {fsync}: batch done {took:.1f} s after restart; "
            f"{len(runs)} jobs ran, {extra} extra runs"
        )
        assert final.counts == {JobStatus.COMPLETED: JOBS}  # type: ignore[union-attr]
        assert worker.alive()
        if fsync == "always":
            # every acknowledged write survived: nothing to redo, no job ran twice
            assert len(runs) == JOBS and extra == 0
        else:
            # up to a second of writes is lost; a start whose records went with it may run
            # again on a new thread (its first run cannot be found): counted, never lost
            assert len(runs) == JOBS and extra <= 20
    finally:
        deployment.close()
