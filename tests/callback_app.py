"""A user's own Celery app, as the callback tests run it: a separate worker (`celery -A
tests.callback_app worker -Q celery`) that never imports askq's code, whose tasks receive
askq's callbacks and drop repeats by callback id (the Celery task id askq gives each one).

What it received goes to Redis (USERCB_REDIS_URL), for the test to read: `usercb:records`
(job records, in arrival order), `usercb:batches` (batch summaries), `usercb:duplicates`
(repeats dropped).
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis
from celery import Celery

app = Celery("usercb", broker=os.environ.get("USERCB_BROKER_URL", "redis://localhost:6379/0"))
app.conf.update(
    task_acks_late=True, task_reject_on_worker_lost=True, worker_hijack_root_logger=False
)

_store: redis.Redis | None = None


def store() -> redis.Redis:
    global _store
    if _store is None:
        _store = redis.Redis.from_url(os.environ["USERCB_REDIS_URL"])
    return _store


def keep(callback_id: str, where: str, payload: dict[str, Any]) -> None:
    """The receiving side's dedupe: a callback id seen before is a redelivery."""
    if not store().set(f"usercb:seen:{callback_id}", "1", nx=True):
        store().incr("usercb:duplicates")
        return
    store().rpush(where, json.dumps({"callback_id": callback_id, "payload": payload}))


@app.task(name="usercb.on_done", bind=True)
def on_done(self: Any, record: dict[str, Any]) -> None:
    keep(self.request.id, "usercb:records", record)


@app.task(name="usercb.on_batch_done", bind=True)
def on_batch_done(self: Any, summary: dict[str, Any]) -> None:
    keep(self.request.id, "usercb:batches", summary)
