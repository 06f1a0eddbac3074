"""Callbacks leaving askq: Celery tasks sent to the user's workers, and signed webhooks.

The pump calls `CallbackPublisher.publish_due` every round (one hook): each due callback of
the outbox (worker/outbox.py) is either a Celery callback, sent by name (`send_task`: askq's
workers never import the user's code) to ASKQ_CALLBACK_QUEUE with the payload as its one
argument and the callback id as its task id; or a webhook, for which the pump publishes
`askq.deliver` with the callback id only (secrets and payloads never travel in askq's own
messages). `deliver` makes one POST bounded by DELIVERY_TIMEOUT_S, signed as Standard
Webhooks sign (`webhook-id` = the callback id, so a receiver can drop a repeat), and records
the outcome; a failure makes the callback due again after a back-off, through the outbox like
any due poll: no task ever sleeps, and askq gives up after ASKQ_CALLBACK_RETRY_S.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from datetime import UTC, datetime

import httpx
import redis
from celery import Celery

from worker.celery_app import callback_queue
from worker.outbox import Callback, OutboxStore
from worker.redis_store import ServerClock
from worker.settings import Settings
from worker.signing import signed_headers

log = logging.getLogger("askq.callbacks")

DELIVER_TASK = "askq.deliver"
CLAIM_BATCH = 200
DELIVERY_TIMEOUT_S = 10.0
"""One webhook attempt: connect, send, and the reply's headers. Well below the outbox lease
(outbox.PUBLISH_LEASE_S), so a live attempt is never claimed twice."""
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 3600.0
USER_AGENT = "askq-webhooks/0.1"


def retry_delay(attempts: int, rng: random.Random) -> float:
    """Back-off after `attempts` failed tries: 1 s doubling to an hour, ±20% jitter so the
    retries of many callbacks to one receiver do not arrive together."""
    base = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** max(0, attempts - 1))
    return float(base * rng.uniform(0.8, 1.2))


class CallbackPublisher:
    """The pump's hook: publish what the outbox holds due."""

    def __init__(self, app: Celery, outbox: OutboxStore, settings: Settings) -> None:
        self.app = app
        self.outbox = outbox
        self.queue = callback_queue(settings)
        self.published = 0

    def publish_due(self) -> bool:
        """Publish due callbacks; True when there may be more due at once."""
        claimed = self.outbox.claim(CLAIM_BATCH).callbacks
        if not claimed:
            return False
        with self.app.producer_or_acquire() as producer:
            for callback in claimed:
                if callback.kind == "task":
                    self.app.send_task(
                        callback.target,
                        args=[callback.payload()],
                        task_id=callback.callback_id,
                        headers={"askq_callback_id": callback.callback_id},
                        queue=self.queue,
                        producer=producer,
                    )
                    self.outbox.sent(callback.callback_id)
                else:
                    self.app.send_task(
                        DELIVER_TASK,
                        args=[callback.callback_id],
                        queue=DELIVER_TASK,
                        routing_key=DELIVER_TASK,
                        producer=producer,
                    )
                self.published += 1
        return len(claimed) == CLAIM_BATCH


def webhook_body(callback: Callback) -> str:
    """The Standard Webhooks shape: `type`, `timestamp`, and the payload as `data`."""
    event = {
        "type": f"askq.{callback.event}",
        "timestamp": datetime.fromtimestamp(float(callback.fields["created_at"]), UTC).isoformat(),
        "data": callback.payload(),
    }
    return json.dumps(event, ensure_ascii=False)


class Deliverer:
    """Per worker process: the webhook HTTP client (never the API's: that one carries the
    API key), and the store."""

    def __init__(self, outbox: OutboxStore, settings: Settings, clock: ServerClock) -> None:
        self.outbox = outbox
        self.settings = settings
        self.clock = clock
        self.rng = random.Random()
        self.http = httpx.Client(
            headers={"User-Agent": USER_AGENT},
            timeout=httpx.Timeout(DELIVERY_TIMEOUT_S, connect=min(5.0, DELIVERY_TIMEOUT_S)),
            follow_redirects=False,
        )
        self.pid = os.getpid()

    def deliver(self, callback_id: str) -> str | None:
        """One attempt at one webhook; returns its state after, or None when this message
        was a duplicate (another task holds the callback)."""
        callback = self.outbox.take(callback_id, DELIVERY_TIMEOUT_S * 2)
        if callback is None:
            return None
        status: int | None = None
        error = ""
        secret = self.settings.callback_secret.get_secret_value()
        if not secret:
            error = "ASKQ_CALLBACK_SECRET is not set on the worker: nothing to sign with"
        else:
            body = webhook_body(callback)
            headers = signed_headers(secret, callback_id, self.clock.now(), body)
            headers["content-type"] = "application/json"
            try:
                # the reply's body is never read: a receiver cannot hold the worker with it
                with self.http.stream(
                    "POST", callback.target, content=body, headers=headers
                ) as reply:
                    status = reply.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
        ok = status is not None and 200 <= status < 300
        if status is not None and not ok:
            error = f"HTTP {status}"
        delay = retry_delay(callback.attempts + 1, self.rng)
        state = self.outbox.attempted(callback_id, ok=ok, status=status, error=error, delay_s=delay)
        if state == "given_up":
            log.warning(
                "webhook %s: given up after %d attempts (%s)",
                callback_id,
                callback.attempts + 1,
                error,
            )
        return state


_lock = threading.Lock()
_deliverer: Deliverer | None = None


def process_deliverer(client: redis.Redis, settings: Settings, clock: ServerClock) -> Deliverer:
    """This process's deliverer, built on first use after a fork (as worker/runtime.py)."""
    global _deliverer
    with _lock:
        if _deliverer is None or _deliverer.pid != os.getpid():
            _deliverer = Deliverer(OutboxStore(client, settings), settings, clock)
        return _deliverer
