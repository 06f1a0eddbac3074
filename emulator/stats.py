"""Counters the tests and benchmarks read through GET /_emulator/stats."""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Any


class ActiveTracker:
    """Exact count of runs/responses not yet terminal, and the most ever at once.

    Progress is lazy (computed from the clock on read), so nothing fires when a run ends.
    Instead every run registers the time it will end (inf when unknown) and re-registers
    when an event moves that time (submit, cancel, an upstream answer). Ends are drained
    before each new start, so the maximum is taken at the only moments it can grow.
    """

    def __init__(self) -> None:
        self._ends: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self.active = 0
        self.max_active = 0

    def _drain(self, now: float) -> None:
        heap, ends = self._heap, self._ends
        while heap and heap[0][0] <= now:
            end, key = heapq.heappop(heap)
            if ends.get(key) == end:
                del ends[key]
                self.active -= 1

    def start(self, key: str, end: float, now: float) -> None:
        """A run became active at `now` and (as far as known) ends at `end`."""
        self._drain(now)
        self._ends[key] = end
        heapq.heappush(self._heap, (end, key))
        self.active += 1
        self.max_active = max(self.max_active, self.active)

    def move_end(self, key: str, end: float, now: float) -> None:
        """An event changed when an active run will end."""
        self._drain(now)
        if key in self._ends and self._ends[key] != end:
            self._ends[key] = end
            heapq.heappush(self._heap, (end, key))

    def count(self, now: float) -> int:
        self._drain(now)
        return self.active


class Stats:
    """Per-route, per-status and per-run counters; `snapshot()` feeds the stats route."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.status_codes: Counter[str] = Counter()
        self.runs_by_job: Counter[str] = Counter()
        self.gets_by_run: Counter[str] = Counter()
        self.tool_output_submissions: Counter[str] = Counter()
        self.cancel_requests: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.thread_busy_rejections = 0
        self.conversation_locked_rejections = 0
        self.idempotent_replays = 0
        self.runs_created = 0
        self.responses_created = 0
        self.request_times: list[float] = []
        self.tracker = ActiveTracker()

    def run_created(
        self, key: str, metadata: dict[str, Any] | None, end: float, now: float
    ) -> None:
        job = (metadata or {}).get("askq_job")
        if job is not None:
            self.runs_by_job[str(job)] += 1
        self.tracker.start(key, end, now)

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "status_codes": dict(self.status_codes),
            "runs_by_job": dict(self.runs_by_job),
            "gets_by_run": dict(self.gets_by_run),
            "active_runs": self.tracker.count(now),
            "max_active_runs": self.tracker.max_active,
            "runs_created": self.runs_created,
            "responses_created": self.responses_created,
            "thread_busy_rejections": self.thread_busy_rejections,
            "conversation_locked_rejections": self.conversation_locked_rejections,
            "idempotent_replays": self.idempotent_replays,
            "tool_output_submissions": dict(self.tool_output_submissions),
            "cancel_requests": dict(self.cancel_requests),
            "faults": dict(self.faults),
            "request_times": list(self.request_times),
            "total_requests": len(self.request_times),
        }
