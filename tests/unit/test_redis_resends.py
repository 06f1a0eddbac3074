"""No unsafe retries: redis-py re-sends a command after a timeout (the first one still ran,
late). `DEBUG SLEEP` longer than the client's socket timeout makes exactly that happen to
each state-changing script; each must answer the re-send with the first attempt's outcome."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import redis

from producer.local_redis import LocalRedis, find_redis_server
from tests.unit.test_store import Stores, make_stores
from worker import lua
from worker.models import JobRequest
from worker.outbox import OutboxStore
from worker.settings import load_settings
from worker.states import JobStatus

T = TypeVar("T")
SOCKET_TIMEOUT_S = 0.4
SLEEP_S = 0.6


def debug_enabled() -> tuple[str, ...]:
    """DEBUG is off by default from Redis 7 on (and the option unknown before it)."""
    binary = find_redis_server()
    assert binary is not None
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    major = int(version.split("v=")[1].split(".")[0])
    return ("--enable-debug-command", "yes") if major >= 7 else ()


@pytest.fixture(scope="module")
def debug_redis() -> Iterator[LocalRedis]:
    with LocalRedis(extra_args=debug_enabled()) as server:
        yield server


@pytest.fixture
def stores(debug_redis: LocalRedis, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stores]:
    plain = redis.Redis.from_url(debug_redis.url)
    plain.flushdb()
    settings = load_settings(redis_url=debug_redis.url, assistant_id="a", rate_limit_rpm=60)
    monkeypatch.setattr(redis.Redis, "from_url", _with_short_timeout(redis.Redis.from_url))
    yield make_stores(settings)
    plain.close()


def _with_short_timeout(from_url: Callable[..., redis.Redis]) -> Callable[..., redis.Redis]:
    def build(url: str, **kwargs: object) -> redis.Redis:
        kwargs["socket_timeout"] = SOCKET_TIMEOUT_S
        return from_url(url, **kwargs)

    return build


def resent(stores: Stores, call: Callable[[], T]) -> T:
    """Run `call` while Redis sleeps past the socket timeout: the first attempt times out on
    the client but runs on the server when it wakes; redis-py then sends it again."""
    sleeper = redis.Redis(
        host="127.0.0.1", port=stores.redis.connection_pool.connection_kwargs["port"]
    )
    thread = threading.Thread(target=lambda: sleeper.execute_command("DEBUG", "SLEEP", SLEEP_S))
    thread.start()
    time.sleep(0.05)  # the sleep has begun
    started = time.monotonic()
    try:
        result = call()
    finally:
        thread.join()
        sleeper.close()
    assert time.monotonic() - started > SOCKET_TIMEOUT_S, (
        "the call was not delayed past the timeout"
    )
    return result


def one_job(stores: Stores) -> str:
    (job_id,) = stores.batches.submit([JobRequest(question="q")], batch=False).job_ids
    return job_id


def test_a_resent_take_ticket_still_takes_it(stores: Stores) -> None:
    job_id = one_job(stores)
    stores.claimed()
    stores.jobs.take_ticket("job_warm", "askq.start", "w")  # scripts loaded: pure re-sends
    assert resent(stores, lambda: stores.jobs.take_ticket(job_id, "askq.start", "w")) == 1


def test_a_resent_transition_is_not_reported_lost(stores: Stores) -> None:
    job_id = one_job(stores)
    loaded = stores.jobs.load(job_id)
    record = loaded.record.model_copy(update={"status": JobStatus.RUNNING, "run_id": "r"})
    now = stores.now()
    stale = type(loaded)(loaded.record, 99)
    assert stores.jobs.transition(stale, record, next_task=None, due_at=None, now=now) is None
    stored = resent(
        stores,
        lambda: stores.jobs.transition(loaded, record, next_task="askq.poll", due_at=now, now=now),
    )
    assert stored is not None and stored.version == 2
    assert stores.jobs.counts()[JobStatus.RUNNING] == 1  # counted once


def test_a_resent_claim_returns_what_it_claimed(stores: Stores) -> None:
    job_id = one_job(stores)
    stores.dispatch.claim_due(1, "pump")  # the script is loaded: what follows are pure re-sends
    stores.lapse(job_id)
    claimed = resent(stores, lambda: stores.dispatch.claim_due(10, "pump"))
    assert [c.job_id for c in claimed.claims] == [job_id]


def test_a_resent_spend_is_spent_once(stores: Stores) -> None:
    # 60 rpm: a burst of 1, then one a second
    stores.limits.spend_requests(1, force=True)  # the script is loaded
    stores.redis.delete(stores.limits.keys.rate_limit)
    assert resent(stores, lambda: stores.limits.spend_requests(1)) == 0.0
    wait = stores.limits.spend_requests(1)
    assert 0.0 < wait <= 1.0  # one spent, not two (two would mean a wait near 2 s)


def test_a_resent_cancel_take_is_still_taken(stores: Stores) -> None:
    job_id = one_job(stores)
    stores.jobs.request_cancel(job_id)
    stores.jobs.take_cancel("job_warm")
    assert resent(stores, lambda: stores.jobs.take_cancel(job_id)) is True


def test_a_resent_submit_accepts_its_job_once(stores: Stores) -> None:
    """redis-py sends a pipeline once (measured: no re-send after a timeout), but re-sends it
    after a dropped connection; SUBMIT is sent alone here to show the re-send is harmless."""
    batches = stores.batches
    one_job(stores)  # the script is loaded
    record = batches.ops.new_record(
        JobRequest(question="q"), batch_id=None, seq=0, now=stores.now()
    )
    k = batches.keys
    key = k.job(record.job_id)
    args = [record.job_id, record.to_json(), repr(stores.now()), "1e12", "0", "0", 60, "x"]
    keys = [key, key, key, k.counts, k.due, k.deadlines, key, key]
    submit = stores.redis.register_script(lua.SUBMIT)
    assert resent(stores, lambda: submit(keys=keys, args=args)) == 1
    assert stores.jobs.counts()[JobStatus.PENDING] == 2  # counted once


def ended_with_webhook(stores: Stores) -> tuple[OutboxStore, str]:
    (job_id,) = stores.batches.submit(
        [JobRequest(question="q", webhook_url="http://127.0.0.1:9/hook")], batch=False
    ).job_ids
    stores.end(job_id)
    outbox = OutboxStore(stores.redis, stores.jobs.settings)
    outbox.claim(0)  # the scripts are loaded: what follows are pure re-sends
    outbox.take("warm", 1)
    outbox.attempted("warm", ok=False, status=None, error="", delay_s=1)
    return outbox, job_id


def test_resent_outbox_claim_take_and_attempt_act_once(stores: Stores) -> None:
    outbox, job_id = ended_with_webhook(stores)
    claimed = resent(stores, lambda: outbox.claim(10)).callbacks
    assert [c.callback_id for c in claimed] == [f"{job_id}.2.webhook"]
    callback_id = claimed[0].callback_id
    assert resent(stores, lambda: outbox.take(callback_id, 20)) is not None
    state = resent(
        stores,
        lambda: outbox.attempted(callback_id, ok=False, status=503, error="HTTP 503", delay_s=1),
    )
    assert state == "retrying"
    assert outbox.deliveries(job_id)[0].attempts == 1  # counted once
