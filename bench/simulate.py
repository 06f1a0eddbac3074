"""Poll policies on paper: exact requests per job and latency overhead for a list of run
durations, with zero network time. It runs in milliseconds, so it covers policies the
worker does not ship yet (predictive variants) and checks the live measurements.

Requests per Assistants job = POST /threads + POST /runs + the GETs of the run + one
GET /messages; the floor is 4 (one GET that finds the run completed).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from bench.infra import percentile
from worker.machine import PollPolicy

FIXED_REQUESTS = 3  # POST /threads, POST /runs, GET /messages
Schedule = Callable[[float, random.Random], tuple[int, float]]
"""(run duration, rng) → (GETs of the run, latency overhead)."""


def sdk(hint_s: float | None) -> Schedule:
    """Retrieve at once, then every hint (1 s without one): the tutorial loop / the SDK."""
    step = hint_s if hint_s is not None else 1.0

    def schedule(d: float, rng: random.Random) -> tuple[int, float]:
        k = math.floor(d / step + 1e-9)
        t = k * step if k * step >= d else (k + 1) * step
        return round(t / step) + 1, t - d

    return schedule


def askq(
    hint_s: float | None, policy: PollPolicy | None = None, expected: float | None = None
) -> Schedule:
    """`PollPolicy.delay` exactly as the worker calls it; `expected` feeds its predictive
    argument (what `ASKQ_POLL_PREDICT` would pass once durations are learned)."""
    p = policy or PollPolicy()

    def schedule(d: float, rng: random.Random) -> tuple[int, float]:
        t, polls = 0.0, 0
        while True:
            t += p.delay(polls, hint_s, rng, expected, t)
            polls += 1
            if t >= d:
                return polls, t - d

    return schedule


def quantile_first(durations: list[float], q: float, policy: PollPolicy | None = None) -> Schedule:
    """A proposal: first look at the q-quantile of learned durations, then askq's back-off
    restarted from `min_s`."""
    p = policy or PollPolicy()
    first = percentile(durations, q) or p.min_s

    def schedule(d: float, rng: random.Random) -> tuple[int, float]:
        t, polls = first, 1
        k = 0
        while t < d:
            t += p.delay(k, None, rng)
            k += 1
            polls += 1
        return polls, t - d

    return schedule


def quantile_ladder(
    durations: list[float], step: float = 0.1, policy: PollPolicy | None = None
) -> Schedule:
    """A proposal: look at the learned quantiles step, 2·step, … (each look has about the
    same chance of finding the run done), never closer than `min_s` apart, then askq's
    back-off past the largest."""
    p = policy or PollPolicy()
    marks: list[float] = []
    q = step
    while q < 1.0 - 1e-9:
        v = percentile(durations, q) or p.min_s
        if not marks or v - marks[-1] >= p.min_s:
            marks.append(v)
        q += step

    def schedule(d: float, rng: random.Random) -> tuple[int, float]:
        polls = 0
        for t in marks:
            polls += 1
            if t >= d:
                return polls, t - d
        t, k = marks[-1], 0
        while t < d:
            t += p.delay(k, None, rng)
            k += 1
            polls += 1
        return polls, t - d

    return schedule


def evaluate(schedule: Schedule, durations: list[float], seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    gets, over = [], []
    for d in durations:
        g, o = schedule(d, rng)
        gets.append(g)
        over.append(o)
    return {
        "requests_per_job": FIXED_REQUESTS + sum(gets) / len(gets),
        "overhead_p50": percentile(over, 0.5),
        "overhead_p95": percentile(over, 0.95),
    }


def table(workloads: dict[str, list[float]], hint_s: float) -> list[dict[str, Any]]:
    rows = []
    for name, ds in workloads.items():
        mean = sum(ds) / len(ds)
        policies: dict[str, Schedule] = {
            "fixed 1 s loop (tutorial, SDK without hint)": sdk(None),
            f"hint-exact ({hint_s * 1000:.0f} ms, SDK with hint)": sdk(hint_s),
            "askq default, no hint": askq(None),
            f"askq default, hint {hint_s * 1000:.0f} ms": askq(hint_s),
            "askq + PollPolicy expected_s=learned mean (no hint)": askq(None, expected=mean),
            "proposal: first look at learned p10, then back-off": quantile_first(ds, 0.10),
            "proposal: first look at learned p50, then back-off": quantile_first(ds, 0.50),
            "proposal: look at learned deciles p10, p20, …, then back-off": quantile_ladder(ds),
        }
        for label, sched in policies.items():
            rows.append({"workload": name, "policy": label, **evaluate(sched, ds)})
    return rows
