"""A worker process's heartbeat: proof in Redis that it is alive, and which jobs it runs.

One call a beat per process (never per job), from a daemon thread started with the process's
runtime. The sweep treats a process whose heartbeat lapsed (ASKQ_WORKER_DEAD_AFTER_S) as dead
and makes its jobs due at once; a live process keeps the leases of the jobs it runs, so a slow
API call is never raced by a second dispatch. Each reply carries the server's time, which
keeps the process's clock (`ServerClock`) in step with Redis.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from worker.dispatch import DispatchStore
from worker.errors import StoreError
from worker.redis_store import ServerClock, connect
from worker.settings import Settings, get_settings

log = logging.getLogger("askq.heartbeat")

QUIET_S = 60.0
"""While Redis stays away, the failure is logged once a minute, not once a beat."""
RESERVATION_S = 10.0
"""How long a received message's job stays listed when no task of this process starts on it
(prefork: a child runs it, and its own take lists it): the time from receipt to the take."""


def new_worker_id() -> str:
    """Unique per process and per start (a pid is reused after a restart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RunningJobs:
    """The jobs this process's tasks are on right now (thread-safe; a job twice is counted),
    and those whose task messages it has received but not started yet (reserved): a worker
    killed with messages in its prefetch buffer must not leave their jobs a lease behind."""

    def __init__(self, reservation_s: float = RESERVATION_S) -> None:
        self._lock = threading.Lock()
        self._jobs: Counter[str] = Counter()
        self._reserved: dict[str, float] = {}
        self.reservation_s = reservation_s

    def reserve(self, job_id: str) -> None:
        """A task message for this job arrived. Forgotten when a task of this process starts
        on it, else (the task runs in another process: prefork) after `reservation_s`."""
        with self._lock:
            self._reserved[job_id] = time.monotonic()

    def unreserve(self, job_id: str) -> None:
        with self._lock:
            self._reserved.pop(job_id, None)

    @contextmanager
    def running(self, job_id: str) -> Iterator[None]:
        with self._lock:
            self._reserved.pop(job_id, None)
            self._jobs[job_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._jobs[job_id] -= 1
                if self._jobs[job_id] <= 0:
                    del self._jobs[job_id]

    def snapshot(self) -> list[str]:
        stale = time.monotonic() - self.reservation_s
        with self._lock:
            for job_id in [j for j, at in self._reserved.items() if at < stale]:
                del self._reserved[job_id]
            return list({*self._jobs, *self._reserved})


class Heartbeat:
    def __init__(
        self,
        dispatch: DispatchStore,
        worker_id: str,
        jobs: RunningJobs,
        clock: ServerClock,
        interval_s: float,
    ) -> None:
        self.dispatch = dispatch
        self.worker_id = worker_id
        self.jobs = jobs
        self.clock = clock
        self.interval_s = interval_s
        self.stopping = threading.Event()
        self._failing_since: float | None = None
        self._last_log = 0.0

    def beat(self) -> bool:
        """One beat; False (logged now and then) when Redis did not answer."""
        try:
            beat = self.dispatch.heartbeat(self.worker_id, self.jobs.snapshot())
        except StoreError as exc:
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
            if now - self._last_log >= QUIET_S:
                self._last_log = now
                log.warning("heartbeat: Redis unavailable (%s); retrying every beat", exc)
            return False
        self.clock.sync(beat.now)
        if beat.moved:
            log.warning(
                "heartbeat: %d jobs of workers whose heartbeat stopped moved on", beat.moved
            )
        if self._failing_since is not None:
            log.warning(
                "heartbeat: Redis back after %.1f s", time.monotonic() - self._failing_since
            )
            self._failing_since = None
            self._last_log = 0.0
        return True

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            self.beat()

    def start(self) -> threading.Thread:
        self.beat()
        thread = threading.Thread(target=self.run, name="askq-heartbeat", daemon=True)
        thread.start()
        return thread


_lock = threading.Lock()
_beat: Heartbeat | None = None
_pid = 0


def process_heartbeat(settings: Settings) -> Heartbeat:
    """This process's one heartbeat, started on first use after a fork: the worker's main
    process (pump, received messages; the tasks too with the thread pool) and each prefork
    child that runs tasks beat under their own ids."""
    global _beat, _pid
    with _lock:
        if _beat is None or _pid != os.getpid():
            _beat = Heartbeat(
                DispatchStore(connect(settings), settings),
                new_worker_id(),
                RunningJobs(),
                ServerClock(),
                settings.heartbeat_s,
            )
            _pid = os.getpid()
            _beat.start()
        return _beat


def reserve_on_receipt(request: Any = None, **_: Any) -> None:
    """Celery's `task_received` (in the process that consumes): the job of a message waiting
    in this worker's prefetch buffer is listed in its heartbeat from now on."""
    args = getattr(request, "args", None) or ()
    first = args[0] if args else None
    ids = [i for i in (first if isinstance(first, list) else [first]) if isinstance(i, str)]
    if ids:
        jobs = process_heartbeat(get_settings()).jobs
        for job_id in ids:
            jobs.reserve(job_id)
