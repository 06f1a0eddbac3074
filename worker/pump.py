"""The pump: a thread in every worker that turns due entries in Redis into task messages.

Why not Celery countdowns: on the Redis broker a countdown task waits unacknowledged in one
worker's memory, is redelivered past the visibility timeout (celery#4400, kombu#337), is
invisible to queue-length autoscaling and was lost or crashed workers on a Redis restart.
Here a due poll is a sorted-set entry until it is due, then a real queue entry.

The same loop sweeps, under a short lock so one worker does it each interval: overdue jobs
are made due (their task expires them), deadline entries of ended jobs are pruned, and
in-flight slots of finished jobs are reclaimed. (The jobs of dead workers are found sooner,
by the heartbeats of the live ones: worker/heartbeat.py.) Claimed entries are
re-scored to a lease end rather than removed, so a worker that dies between claiming and
publishing delays a job by a lease, never loses it.

Each round also publishes the due callbacks of the outbox (worker/callbacks.py): Celery
callbacks to the user's queue, webhook deliveries as `askq.deliver` tasks.

The loop also keeps the heartbeat file (ASKQ_HEARTBEAT_FILE) of the container probes: it is
touched every round whatever Redis does, so liveness means "this loop is not stuck"; its
content says whether Redis answered the last round (`ok`) or not, for readiness.
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

from worker.callbacks import CallbackPublisher
from worker.dispatch import Claim, DispatchStore
from worker.errors import StoreError
from worker.heartbeat import Heartbeat, process_heartbeat
from worker.limits import LimitStore
from worker.outbox import OutboxStore
from worker.redis_store import ServerClock, connect
from worker.settings import Settings, get_settings

log = logging.getLogger("askq.pump")

CLAIM_BATCH = 200
SPREAD = 8
"""A round's claims of one task go out in at least this many messages before any message
holds two jobs: a light load stays one job a message."""
IDLE_WAIT_S = 1.0
HELD_WAIT_S = 0.05
"""While due entries are held back (their queue is backed up), the pump looks again this
soon: a worker taking a message frees room without waking the pump."""
ERROR_BACKOFF_S = 1.0
BLOCKING_POP_SLACK_S = 0.1
PRECISE_WAIT_S = 0.05
"""Redis checks blocking-pop timeouts on its event loop tick (hz 10: up to 100 ms late,
measured here), so the pump blocks until just before the next due time and sleeps the last
stretch itself."""
QUIET_S = 60.0
"""While Redis stays away, the pump says so once a minute, not once a round."""


def pack(claims: list[Claim], most: int) -> list[list[Claim]]:
    """Task messages for a round's claims, each holding jobs of one task. A task with few
    claims gets one job a message (no job waits for another, several workers share them); a
    task with many is spread over SPREAD messages of up to `most` jobs each, so Celery's
    per-message cost is paid once for many jobs."""
    by_task: dict[str, list[Claim]] = {}
    for claim in claims:
        by_task.setdefault(claim.task, []).append(claim)
    messages = []
    for same in by_task.values():
        size = max(1, min(most, len(same) // SPREAD))
        messages += [same[i : i + size] for i in range(0, len(same), size)]
    return messages


class Pump:
    def __init__(self, app: Celery, settings: Settings, beat: Heartbeat) -> None:
        self.app = app
        self.settings = settings
        self.beat = beat
        client = connect(settings)
        self.dispatch = DispatchStore(client, settings)
        self.limits = LimitStore(client, settings)
        self.callbacks = CallbackPublisher(app, OutboxStore(client, settings), settings)
        self.clock = ServerClock()
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.stopping = threading.Event()
        self.heartbeat = Path(settings.heartbeat_file) if settings.heartbeat_file else None
        self.next_sweep = 0.0
        self.published = 0
        self.failing_since: float | None = None
        self.last_warning = 0.0
        self.unpublished: list[Claim] = []
        """Claims whose publication failed (a full or lost broker): published first next
        round, with the ticket they already hold, rather than a whole lease later."""

    def publish(self, claims: list[Claim]) -> None:
        self.unpublished = [*self.unpublished, *claims]
        messages = pack(self.unpublished, self.settings.max_jobs_per_message)
        with self.app.producer_or_acquire() as producer:
            for message in messages:
                task, ids = message[0].task, [claim.job_id for claim in message]
                self.app.send_task(
                    task,
                    args=[ids[0] if len(ids) == 1 else ids],
                    queue=task,
                    routing_key=task,
                    producer=producer,
                )
                sent = set(ids)
                self.unpublished = [c for c in self.unpublished if c.job_id not in sent]
                for job_id in ids:
                    self.beat.jobs.unreserve(job_id)
                self.published += 1

    def sweep(self) -> None:
        dispatch = self.dispatch
        if not dispatch.try_sweep_lock(self.holder, self.settings.sweep_interval_s * 0.9):
            return
        expired = dispatch.expire_overdue()
        if expired.pruned:
            log.info("sweep: pruned %d deadline entries of ended jobs", expired.pruned)
        freed = self.limits.reclaim_slots()
        if freed:
            log.warning("sweep: reclaimed %d in-flight slots of finished jobs", freed)

    def once(self) -> float:
        """One round: claim and publish what is due, sweep when it is time. Returns how long
        the loop may wait for a wake-up before the next round."""
        if time.monotonic() >= self.next_sweep:
            self.sweep()
            self.next_sweep = time.monotonic() + self.settings.sweep_interval_s
        if self.unpublished:
            self.publish([])
        claimed = self.dispatch.claim_due(CLAIM_BATCH, self.beat.worker_id)
        self.clock.sync(claimed.now)
        for claim in claimed.claims:
            self.beat.jobs.reserve(claim.job_id)  # listed by this worker until published
        if claimed.claims:
            self.publish(claimed.claims)
            if len(claimed.claims) == CLAIM_BATCH:
                return 0.0
        if claimed.held:
            return HELD_WAIT_S  # due work waits for a queue to drain: look again soon
        if self.callbacks.publish_due():
            return 0.0
        next_due = self.dispatch.next_due_at()
        wait = IDLE_WAIT_S if next_due is None else next_due - self.clock.now()
        return max(0.0, min(wait, IDLE_WAIT_S, self.next_sweep - time.monotonic()))

    def alive(self, state: str) -> None:
        """Touch the probes' heartbeat file: liveness reads its age, readiness its content."""
        if self.heartbeat is not None:
            with contextlib.suppress(OSError):  # a bad path must not stop the dispatching
                self.heartbeat.write_text(state)

    def trouble(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        if now - self.last_warning >= QUIET_S:
            self.last_warning = now
            log.warning("pump: %s (%s); retrying every %.0f s", what, exc, ERROR_BACKOFF_S)

    def recovered(self) -> None:
        if self.failing_since is not None:
            log.warning("pump: working again after %.1f s", time.monotonic() - self.failing_since)
            self.failing_since = None
            self.last_warning = 0.0

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                wait = self.once()
                self.recovered()
                self.alive("ok")
                if wait > BLOCKING_POP_SLACK_S + PRECISE_WAIT_S:
                    self.dispatch.wait_for_wake(wait - BLOCKING_POP_SLACK_S)
                elif wait > 0:
                    self.stopping.wait(wait)
            except StoreError as exc:
                self.alive(f"redis unavailable: {exc}")
                self.trouble("Redis unavailable", exc)
                self.stopping.wait(ERROR_BACKOFF_S)
            except Exception as exc:
                # Broker failures (kombu raises its own types; a full Redis refuses the
                # publish) must not end the pump thread.
                self.alive(f"broker unavailable: {type(exc).__name__}")
                self.trouble("cannot publish", exc)
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
        settings = get_settings()
        # this process's heartbeat: what it claims, the messages it receives, its tasks
        self.pump = Pump(parent.app, settings, process_heartbeat(settings))
        self.thread = threading.Thread(target=self.pump.run, name="askq-pump", daemon=True)
        self.thread.start()

    def stop(self, parent: Any) -> None:
        if self.pump is not None:
            self.pump.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=10)

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)
