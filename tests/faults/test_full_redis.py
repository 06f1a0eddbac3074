"""A full Redis: workers survive OutOfMemoryError on every path (broker ack and publish, job
store, pump, heartbeat), never exit, and finish the jobs in flight once memory frees; producers
are refused above the high-water mark with a one-line error (exit 2; RedisFull from Client)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from emulator.client import EmulatorControl
from emulator.server import RunningEmulator
from producer.local_redis import LocalRedis
from tests.conftest import wait_until
from tests.faults.test_crashes import deployment_on
from worker.errors import RedisFull
from worker.states import JobStatus

pytestmark = pytest.mark.slow

MAXMEMORY_MB = 48


@pytest.fixture
def small_redis() -> Iterator[LocalRedis]:
    server = LocalRedis(extra_args=("--maxmemory", f"{MAXMEMORY_MB}mb"))
    server.start()
    yield server
    server.cleanup()


def fill(client: redis.Redis, n: int = 0) -> int:
    """Write junk until Redis refuses (noeviction): returns how many junk keys it holds."""
    chunk = b"x" * (16 * 1024)
    while True:
        try:
            client.set(f"junk:{n}", chunk)
        except redis.exceptions.OutOfMemoryError:
            return n
        n += 1


def test_workers_survive_a_full_redis_and_finish_when_it_frees(
    small_redis: LocalRedis,
    emulator: EmulatorControl,
    emulator_server: RunningEmulator,
    tmp_path: Path,
) -> None:
    deployment = deployment_on(small_redis, emulator, emulator_server, tmp_path)
    emulator.configure(run_time_s=4.0)
    try:
        worker = deployment.start_worker(concurrency=8)
        batch_id = deployment.client.submit_batch([f"What is {i} + 2?" for i in range(200)])
        wait_until(
            lambda: deployment.client.status(batch_id).in_flight >= 100,  # type: ignore[union-attr]
            timeout=60,
            what="runs in flight",
        )
        junk = redis.Redis.from_url(small_redis.url)
        keys = fill(junk)
        full_at = time.time()
        # producers are refused at once, with a clear line
        with pytest.raises(RedisFull):
            deployment.client.submit_batch(["one more"])
        refused = deployment.cli("ask", "one more")
        assert refused.returncode == 2, refused.stderr
        assert "full" in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
        # the worker rides it out (it would exit 1 with "Unrecoverable error" before); what
        # its reads free is taken at once, so Redis stays full
        while time.time() - full_at < 10:
            assert worker.alive(), worker.output()[-3000:]
            keys = fill(junk, keys)
            time.sleep(0.1)
        stuck = deployment.client.status(batch_id).finished  # type: ignore[union-attr]
        junk.delete(*[f"junk:{n}" for n in range(keys)])
        freed_at = time.time()
        final = deployment.client.wait(batch_id, timeout=180)
        recovery = time.time() - freed_at
        print(
            f"\nRedis full ({MAXMEMORY_MB} MB) for {freed_at - full_at:.0f} s with "
            f"{200 - stuck} jobs unfinished: worker alive, batch done {recovery:.1f} s after "
            "memory freed"
        )
        assert final.counts == {JobStatus.COMPLETED: 200}  # type: ignore[union-attr]
        assert set(emulator.stats()["runs_by_job"].values()) == {1}
        assert worker.alive()
        log = worker.output()
        assert "Unrecoverable" not in log
        # logged now and then, not once per task or round
        assert log.count("out of memory") < 40, log[-3000:]
    finally:
        deployment.close()
