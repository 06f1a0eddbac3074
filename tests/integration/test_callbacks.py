"""Celery callbacks end to end: askq's workers send each ending job's record (and a batch's
summary) by task name to a separate user app's worker, exactly once per end, with the
callback id as the Celery task id; entry points: `askq ask/batch --on-done/--on-batch-done`,
the `on_done` field of a batch line, and the Python API's keyword arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import ASSISTANTS_ONLY, BOTH_CLIENTS, Askq, WorkerProcess, wait_until
from worker.callbacks import CallbackPublisher
from worker.celery_app import create_publisher
from worker.outbox import OutboxStore
from worker.states import JobStatus

pytestmark = ASSISTANTS_ONLY  # no protocol adapter takes part: the same transition for all

ON_DONE = "usercb.on_done"
ON_BATCH_DONE = "usercb.on_batch_done"


def start_user_worker(deployment: Askq, queue: str = "celery") -> WorkerProcess:
    """The user's own Celery worker: `tests.callback_app` on `queue`, no askq code."""
    log = deployment.tmp / f"user-worker-{queue}.log"
    env = deployment.env(
        USERCB_BROKER_URL=deployment.settings.broker_url,
        USERCB_REDIS_URL=deployment.settings.redis_url,
    )
    args = [
        sys.executable, "-m", "celery", "-A", "tests.callback_app", "worker", "-Q", queue,
        "--pool=threads", "--concurrency=4", "--hostname=user@%h", "--without-mingle",
        "--without-gossip", "--loglevel=INFO",
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=deployment.tmp,
            start_new_session=True,
        )  # fmt: skip
    worker = WorkerProcess(process, deployment.tmp / "none", log)
    deployment.workers.append(worker)
    wait_until(
        lambda: "ready" in worker.output() or not worker.alive(), 60, what="the user's worker"
    )
    assert worker.alive(), worker.output()[-3000:]
    return worker


def received(client: redis.Redis, key: str = "usercb:records") -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(key, 0, -1)]


def duplicates(client: redis.Redis) -> int:
    return int(client.get("usercb:duplicates") or 0)


@BOTH_CLIENTS
def test_every_entry_point_sends_its_callbacks_once(
    make_askq: Callable[..., Askq], tmp_path: Path
) -> None:
    deployment = make_askq()
    store = redis.Redis.from_url(deployment.settings.redis_url)
    api = deployment.client
    batch_id = api.submit_batch(
        [f"What is {i} + 1?" for i in range(8)],
        name="api",
        on_done=ON_DONE,
        on_batch_done=ON_BATCH_DONE,
    )
    lines = tmp_path / "lines.jsonl"
    lines.write_text(
        json.dumps({"question": "Line one?", "custom_id": "one", "on_done": ON_DONE})
        + "\n"
        + json.dumps({"question": "Line two?", "custom_id": "two"})
        + "\n"
    )
    cli_batch = deployment.cli("batch", str(lines), "--on-batch-done", ON_BATCH_DONE)
    assert cli_batch.returncode == 0, cli_batch.stderr
    asked = deployment.cli("ask", "What is 2 + 2?", "--on-done", ON_DONE)
    assert asked.returncode == 0, asked.stderr
    job_id = asked.stdout.strip()
    bad = deployment.cli("ask", "Hi?", "--on-done", "askq.start")
    assert bad.returncode == 2 and "askq's own" in bad.stderr

    deployment.start_worker()
    start_user_worker(deployment)
    wait_until(lambda: len(received(store)) >= 10, 90, what="ten job records")
    wait_until(lambda: len(received(store, "usercb:batches")) >= 2, 30, what="two summaries")

    records = {r["payload"]["job_id"]: r for r in received(store)}
    assert len(records) == len(received(store)) == 10  # nothing twice
    api_jobs = api.batch_store.batch_job_ids(batch_id)
    cli_batch_id = cli_batch.stdout.strip().splitlines()[-1]
    line_one = next(r for r in api.results(cli_batch_id) if r.custom_id == "one")
    assert set(records) == {*api_jobs, line_one.job_id, job_id}
    for record_id, got in records.items():
        assert got["payload"] == api.status(record_id).to_json_dict()  # type: ignore[union-attr]
        assert got["callback_id"].startswith(f"{record_id}.") and got["callback_id"].endswith(
            ".task"
        )
    summaries = {s["payload"]["batch_id"]: s["payload"] for s in received(store, "usercb:batches")}
    assert summaries[batch_id]["counts"] == {"completed": 8}
    assert summaries[batch_id]["name"] == "api"
    assert summaries[cli_batch_id]["total"] == 2

    shown = deployment.cli("status", job_id)
    assert f"callback task {ON_DONE}: sent" in shown.stdout, shown.stdout
    as_json = json.loads(deployment.cli("status", batch_id, "--json").stdout)
    assert [(c["kind"], c["state"]) for c in as_json["callbacks"]] == [("task", "sent")]
    assert duplicates(store) == 0


class DiesBeforeMarking(OutboxStore):
    """A pump that dies right after the broker took a callback, before it could mark it."""

    def sent(self, callback_id: str) -> None:
        raise SystemExit("killed between publish and mark")


def test_a_pump_dying_after_publishing_sends_again_and_the_user_drops_it(
    make_askq: Callable[..., Askq],
) -> None:
    """The crash the outbox is for, made to happen: the broker took the callback, the pump
    died before marking it sent. After its lease a live pump sends it again, under the same
    callback id, and the user's task drops the repeat."""
    deployment = make_askq()
    settings = deployment.settings
    store = redis.Redis.from_url(settings.redis_url)
    jobs = deployment.client.store
    job_id = deployment.client.ask("What is 1 + 1?", on_done=ON_DONE)
    loaded = jobs.load(job_id)  # ended here, without a worker: no pump has seen it yet
    ended = loaded.record.model_copy(update={"status": JobStatus.CANCELLED})
    assert jobs.transition(loaded, ended, next_task=None, due_at=None, now=jobs.server_time())
    outbox = OutboxStore(store, settings)
    app = create_publisher(settings)
    with pytest.raises(SystemExit):
        CallbackPublisher(app, DiesBeforeMarking(store, settings), settings).publish_due()
    app.pool.force_close_all()
    ((callback_id, lease_end),) = store.zrange(outbox.keys.outbox, 0, -1, withscores=True)
    assert lease_end > jobs.server_time()  # still claimed: not lost, not yet due again
    store.zadd(outbox.keys.outbox, {callback_id: 0})  # the dead pump's lease runs out
    deployment.start_worker()
    start_user_worker(deployment)
    wait_until(
        lambda: duplicates(store) == 1, 60, what="the callback sent again and its repeat dropped"
    )
    (got,) = received(store)
    assert got["callback_id"] == callback_id.decode() == f"{job_id}.{loaded.version + 1}.task"
    assert got["payload"]["status"] == "cancelled"
    assert outbox.deliveries(job_id)[0].state == "sent"
