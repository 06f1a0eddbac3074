"""The pump: a thread in every worker that turns due entries in Redis into task messages.

Why not Celery countdowns: on the Redis broker a countdown task waits unacknowledged in one
worker's memory, is redelivered past the visibility timeout (celery#4400, kombu#337), is
invisible to queue-length autoscaling and was lost or crashed workers on a Redis restart.
Here a due poll is a sorted-set entry until it is due, then a real queue entry.

The same loop sweeps, under a short lock so one worker does it each interval: overdue jobs
are made due (their task expires them), and in-flight slots of finished jobs are reclaimed.
Claimed entries are re-scored to a lease end rather than removed, so a worker that dies
between claiming and publishing (or while running the task) delays a job, never loses it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from celery import Celery, bootsteps

from worker.errors import StoreError
from worker.settings import Settings, get_settings
from worker.store import Claim, JobStore, connect

log = logging.getLogger("askq.pump")

CLAIM_BATCH = 200
IDLE_WAIT_S = 1.0
ERROR_BACKOFF_S = 1.0
BLOCKING_POP_SLACK_S = 0.1
PRECISE_WAIT_S = 0.05
"""Redis checks blocking-pop timeouts on its event loop tick (hz 10: up to 100 ms late,
measured here), so the pump blocks until just before the next due time and sleeps the last
stretch itself."""


class Pump:
    def __init__(self, app: Celery, settings: Settings, store: JobStore | None = None) -> None:
        self.app = app
        self.settings = settings
        self.store = store or JobStore(connect(settings), settings)
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.stopping = threading.Event()
        self.heartbeat = Path(settings.heartbeat_file) if settings.heartbeat_file else None
        self.next_sweep = 0.0
        self.published = 0

    def publish(self, claims: list[Claim]) -> None:
        with self.app.producer_or_acquire() as producer:
            for claim in claims:
                self.app.send_task(
                    claim.task,
                    args=[claim.job_id],
                    queue=claim.task,
                    routing_key=claim.task,
                    producer=producer,
                )
        self.published += len(claims)

    def sweep(self, now: float) -> None:
        if not self.store.try_sweep_lock(self.holder, self.settings.sweep_interval_s * 0.9):
            return
        overdue = self.store.overdue(now)
        if overdue:
            self.store.make_due_now(overdue, now)
        freed = self.store.reclaim_slots(now)
        if freed:
            log.warning("sweep: reclaimed %d in-flight slots of finished jobs", freed)

    def once(self) -> float:
        """One round: claim and publish what is due, sweep when it is time. Returns how long
        the loop may wait for a wake-up before the next round."""
        now = time.time()
        if now >= self.next_sweep:
            self.sweep(now)
            self.next_sweep = now + self.settings.sweep_interval_s
        if self.heartbeat is not None:
            with contextlib.suppress(OSError):  # a bad path must not stop the dispatching
                self.heartbeat.touch()
        claims = self.store.claim_due(now, CLAIM_BATCH)
        if claims:
            self.publish(claims)
            if len(claims) == CLAIM_BATCH:
                return 0.0
        next_due = self.store.next_due_at()
        wait = IDLE_WAIT_S if next_due is None else next_due - time.time()
        return max(0.0, min(wait, IDLE_WAIT_S, self.next_sweep - time.time()))

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                wait = self.once()
                if wait > BLOCKING_POP_SLACK_S + PRECISE_WAIT_S:
                    self.store.wait_for_wake(wait - BLOCKING_POP_SLACK_S)
                elif wait > 0:
                    self.stopping.wait(wait)
            except StoreError as exc:
                log.warning("pump: Redis unavailable (%s); retrying", exc)
                self.stopping.wait(ERROR_BACKOFF_S)
            except Exception:
                # Broker hiccups (kombu raises its own types) must not end the pump thread.
                log.exception("pump: unexpected error; retrying")
                self.stopping.wait(ERROR_BACKOFF_S)


class PumpStep(bootsteps.StartStopStep):
    """Runs the pump in a daemon thread of the worker's main process, after the pool
    exists (a plain Step's start is never called)."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}
    label = "askq pump"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.pump: Pump | None = None
        self.thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        self.pump = Pump(parent.app, get_settings())
        self.thread = threading.Thread(target=self.pump.run, name="askq-pump", daemon=True)
        self.thread.start()

    def stop(self, parent: Any) -> None:
        if self.pump is not None:
            self.pump.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=10)

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)
