"""`ASKQ_REDIS_URL=unix:///path/redis.sock?db=N`: store, broker, worker, CLI and cancel over a
real Redis unix socket (kombu spells it `redis+socket://`; Settings.broker_url translates)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from producer.local_redis import LocalRedis
from tests.conftest import ASSISTANTS_ONLY, Askq
from worker.models import JobResult
from worker.states import JobStatus


@pytest.fixture
def socket_redis() -> Iterator[LocalRedis]:
    with LocalRedis(unix_socket=True) as server:
        yield server


@ASSISTANTS_ONLY
def test_a_unix_socket_url_serves_jobs_cli_and_cancel(
    make_askq: Callable[..., Askq], socket_redis: LocalRedis
) -> None:
    askq = make_askq(redis_url=socket_redis.socket_url_for(3))
    askq.start_worker()

    done = askq.cli("ask", "What is 17 * 23?", "--wait")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "17 * 23 = 391"

    askq.emulator.configure(run_time_s=30.0)
    job_id = askq.client.ask("a slow one")
    assert askq.client.cancel(job_id).requested == 1  # published over the socket
    result = askq.client.wait(job_id, timeout=60)
    assert isinstance(result, JobResult)
    assert result.status is JobStatus.CANCELLED

    # everything lives in the socket's database 3, nothing in the server's TCP default
    over_socket = redis.Redis.from_url(socket_redis.socket_url_for(3))
    assert over_socket.dbsize() > 0
    assert redis.Redis.from_url(socket_redis.url_for(0)).dbsize() == 0
